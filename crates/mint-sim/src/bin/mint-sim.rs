//! `mint-sim`: run the Mint simulator, or benchmark it.

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
    let sim = builder.start().await?;
    println!("mint-sim listening on {}", sim.addr());
    println!("  API base:       {}", sim.base_url());
    println!("  token URL:      {}", sim.token_url());
    println!("  admin API:      {}", sim.admin_url());
    println!("  seed:           {}", config.seed);
    println!("  time scale:     {}", config.time_scale);
    if let Some(url) = &config.webhook_url {
        println!("  webhook URL:    {url}");
    }
    if config.behaviours == mint_sim::Behaviours::default() {
        println!("  behaviours:     the contract (none of [behaviours] on)");
    } else {
        println!(
            "  behaviours:     {}",
            serde_json::to_string(&config.behaviours)?
        );
    }
    println!("  clients (id / secret / roles):");
    for client in &config.clients {
        println!(
            "    {} / {} / {}",
            client.client_id,
            client.client_secret,
            client.roles.join(", ")
        );
    }
    println!("  flows (id / definition id / result file bytes):");
    for flow in &config.flows {
        println!(
            "    {} / {} / {}",
            flow.id, flow.definition_id, flow.result_file_bytes
        );
    }
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await?;
    sim.shutdown().await;
    Ok(())
}
