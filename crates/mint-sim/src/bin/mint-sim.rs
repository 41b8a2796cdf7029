//! `mint-sim`: run the Mint simulator, or benchmark it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use mint_sim::{SimConfig, Simulator};

/// A faithful, strict and unpleasant simulator of the Signicat Mint API.
#[derive(Debug, Parser)]
#[command(name = "mint-sim", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seed of ids, behaviours, faults and result-file contents.
    #[arg(long)]
    seed: Option<u64>,
    /// TOML configuration (see sim.example.toml); without it, the default fixture.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Simulated seconds per real second (0 freezes the clock).
    #[arg(long)]
    time_scale: Option<f64>,
    /// URL of every HTTP request step that names none (the default fixture's webhooks).
    #[arg(long)]
    webhook_url: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure result-file serving rate, small-request rate and peak memory (build with --release).
    Bench(mint_sim::bench::BenchArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "mint_sim=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Bench(args)) => mint_sim::bench::run(args).await,
        None => serve(cli).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mint-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let mut builder = Simulator::builder().listen(cli.listen);
    if let Some(path) = &cli.config {
        builder = builder.config(SimConfig::load(path)?);
    }
    if let Some(seed) = cli.seed {
        builder = builder.seed(seed);
    }
    if let Some(scale) = cli.time_scale {
        builder = builder.time_scale(scale);
    }
    if let Some(url) = cli.webhook_url {
        builder = builder.webhook_url(url);
    }
    let config = builder.effective_config()?;
    // Signals first: a harness may stop it as soon as it has read the address.
    let stop = stop_signal()?;
    let sim = builder.start().await?;
    let mut out = String::new();
    writeln!(out, "mint-sim listening on {}", sim.addr())?;
    writeln!(out, "  API base:       {}", sim.base_url())?;
    writeln!(out, "  token URL:      {}", sim.token_url())?;
    writeln!(out, "  admin API:      {}", sim.admin_url())?;
    writeln!(out, "  seed:           {}", config.seed)?;
    writeln!(out, "  time scale:     {}", config.time_scale)?;
    if let Some(url) = &config.webhook_url {
        writeln!(out, "  webhook URL:    {url}")?;
    }
    if config.behaviours == mint_sim::Behaviours::default() {
        writeln!(
            out,
            "  behaviours:     the contract (none of [behaviours] on)"
        )?;
    } else {
        writeln!(
            out,
            "  behaviours:     {}",
            serde_json::to_string(&config.behaviours)?
        )?;
    }
    writeln!(out, "  clients (id / secret / roles):")?;
    for client in &config.clients {
        writeln!(
            out,
            "    {} / {} / {}",
            client.client_id,
            client.client_secret,
            client.roles.join(", ")
        )?;
    }
    writeln!(out, "  flows (id / definition id / result file bytes):")?;
    for flow in &config.flows {
        writeln!(
            out,
            "    {} / {} / {}",
            flow.id, flow.definition_id, flow.result_file_bytes
        )?;
    }
    writeln!(out, "Press Ctrl-C to stop (SIGTERM also stops it).")?;
    // Whoever started it may read only the first line and close the pipe: that is no reason to
    // stop serving.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    stop.await?;
    sim.shutdown().await;
    Ok(())
}

/// Listens for Ctrl-C and, on Unix, SIGTERM (how a harness or a service manager stops it);
/// the returned future resolves on the first.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<()>>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        Ok(())
    })
}
