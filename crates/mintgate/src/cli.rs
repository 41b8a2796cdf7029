//! The `mintgate` command line as a library module: the `mintgate` binary is a thin wrapper over
//! it, and the lab binary (`mintgate-lab`) flattens the same [`Command`] beside `demo` and `bench`,
//! so both offer every production command with one definition.
//!
//! Exit codes: 0 success, 1 user or configuration error, 2 remote or internal failure.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::ops::{EXIT_REMOTE, EXIT_USER};

/// The `mintgate` command line.
#[derive(Debug, Parser)]
#[command(
    name = "mintgate",
    version,
    about = "A durable, budget-aware onboarding pipeline for the Signicat Mint API",
    after_help = "Examples:\n  mintgate serve --config mintgate.toml\n  mintgate doctor --all              # credentials, token and roles of every environment\n  mintgate status <instance id>      # what an instance is doing, in plain words\n  mintgate inspect <instance id>     # the chain the service recorded\n\nThe demo and the benchmarks are in the lab binary: cargo run --release -- demo"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// The configuration file (TOML); MINTGATE_… and MINT_… environment variables override it.
    #[arg(long, short, global = true, env = "MINTGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Operator commands: -v logs each Mint exchange (method, path, status, latency, trace id,
    /// Mint's error body), -vv also the headers; secrets and tokens are always redacted. RUST_LOG
    /// overrides. (`serve` logs per RUST_LOG and `service.log_format`.)
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The production commands: the service and the operator commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: own API, webhook receiver, executor, poller, downloader.
    Serve,
    #[command(flatten)]
    Ops(crate::ops::OpsCommand),
}

/// A failed command: its exit code and the error to print.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Something the user must change: configuration, arguments (exit code 1).
    pub fn user(error: anyhow::Error) -> Self {
        Self {
            code: EXIT_USER,
            error,
        }
    }

    /// A remote or internal failure (exit code 2).
    pub fn internal(error: anyhow::Error) -> Self {
        Self {
            code: EXIT_REMOTE,
            error,
        }
    }

    /// The exit code from the error's kind: a [`ConfigError`] anywhere in its chain is the user's
    /// to fix (1); anything else is a remote or internal failure (2).
    pub fn classify(error: anyhow::Error) -> Self {
        if error.chain().any(|cause| cause.is::<ConfigError>()) {
            Self::user(error)
        } else {
            Self::internal(error)
        }
    }
}

/// Prints a failure on stderr and answers the process exit code.
pub fn exit_code(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {:#}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}

/// Runs a command on a fresh multi-threaded runtime (the binaries' `main`).
pub fn block_on(command: impl Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(command),
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            ExitCode::from(EXIT_REMOTE)
        }
    }
}

/// Runs a production command and answers the process exit code.
pub async fn run(command: Command, global: &GlobalArgs) -> ExitCode {
    let config = global.config.as_deref();
    match command {
        // Operator commands report their own errors (with hints) and choose their exit code.
        Command::Ops(command) => {
            crate::telemetry::init_operator(global.verbose);
            ExitCode::from(crate::ops::run(command, config).await)
        }
        Command::Serve => exit_code(serve(config).await),
    }
}

async fn serve(config: Option<&Path>) -> Result<(), Failure> {
    let config = Config::load(config).map_err(|e| Failure::user(e.into()))?;
    let tracing = crate::telemetry::Tracing::start(&config.telemetry).map_err(Failure::classify)?;
    crate::telemetry::init(config.service.log_format, tracing.as_ref());
    let options = crate::app::BuildOptions {
        telemetry: tracing,
        ..crate::app::BuildOptions::default()
    };
    let app = crate::app::Application::build(config, options)
        .await
        .map_err(Failure::classify)?;
    app.run_until_signal().await.map_err(Failure::classify)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::Cli;

    /// Every command's definition is consistent (names used once, globals compatible) and the
    /// README's command lines parse.
    #[test]
    fn the_command_line_is_consistent_and_the_readme_lines_parse() {
        Cli::command().debug_assert();
        for line in [
            "mintgate serve --config mintgate.toml",
            "mintgate doctor --all",
            "mintgate -v doctor --contract --result-file skip --json",
            "mintgate doctor --e2e flow-kyc-basic --yes",
            "mintgate webhook test https://kyc.example.com/webhooks/mint -vv",
            "mintgate decide --execution 0190e6d4-0000-7000-8000-000000000001 --not-started",
            "mintgate inspect 0190e6d4-0000-7000-8000-000000000001 --json",
            "mintgate events list --state dead",
            "mintgate events --json",
            "mintgate events redeliver msg_0190e6d4000070008000000000000001",
            "mintgate events redeliver --since 2h --json",
        ] {
            let parsed = Cli::try_parse_from(line.split(' '));
            assert!(parsed.is_ok(), "{line}: {:?}", parsed.err());
        }
        assert!(Cli::try_parse_from(["mintgate", "doctor", "--e2e", "f", "--all"]).is_err());
        assert!(Cli::try_parse_from(["mintgate", "events", "redeliver"]).is_err());
        assert!(
            Cli::try_parse_from(["mintgate", "events", "redeliver", "msg_1", "--since", "2h"])
                .is_err()
        );
    }
}
