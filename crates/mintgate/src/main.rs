//! The `mintgate` binary: a thin command line over the library.
//!
//! Exit codes: 0 success, 1 user or configuration error, 2 remote or internal failure.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mintgate",
    version,
    about = "A durable, budget-aware onboarding pipeline for the Signicat Mint API",
    after_help = "Examples:\n  mintgate demo                      # the whole pipeline against a simulated Mint, in about a minute\n  mintgate serve --config mintgate.toml\n  mintgate doctor --all              # credentials, token and roles of every environment\n  mintgate status <instance id>      # what an instance is doing, in plain words\n  mintgate bench download --size 2GiB"
)]
struct Cli {
    /// The configuration file (TOML); MINTGATE_… and MINT_… environment variables override it.
    #[arg(long, short, global = true, env = "MINTGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: own API, webhook receiver, executor, poller, downloader.
    Serve,
    /// Run the main job on embedded defaults against an in-process, time-scaled Mint simulator.
    Demo(mintgate::demo::DemoArgs),
    /// Benchmarks that hold the speed and memory goals.
    #[command(subcommand)]
    Bench(mintgate::bench::BenchCommand),
    #[command(flatten)]
    Ops(mintgate::ops::OpsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(2);
        }
    };
    let command = match cli.command {
        // Operator commands report their own errors (with hints) and choose their exit code.
        Command::Ops(command) => {
            return ExitCode::from(
                runtime.block_on(mintgate::ops::run(command, cli.config.as_deref())),
            );
        }
        command => command,
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Serve => serve(cli.config).await,
            Command::Demo(args) => mintgate::demo::run(args).await.map_err(internal),
            Command::Bench(command) => mintgate::bench::run(command).await.map_err(internal),
            Command::Ops(_) => unreachable!("operator commands returned above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

struct Failure {
    code: u8,
    error: anyhow::Error,
}

fn internal(error: anyhow::Error) -> Failure {
    Failure { code: 2, error }
}

fn user(error: anyhow::Error) -> Failure {
    Failure { code: 1, error }
}

async fn serve(config: Option<PathBuf>) -> Result<(), Failure> {
    let config = mintgate::config::Config::load(config.as_deref()).map_err(user)?;
    mintgate::telemetry::init(&config.service.log_format);
    let app = mintgate::app::Application::build(config, mintgate::app::BuildOptions::default())
        .await
        .map_err(|e| {
            if format!("{e:#}").contains("invalid configuration") {
                user(e)
            } else {
                internal(e)
            }
        })?;
    app.run_until_signal().await.map_err(internal)
}
