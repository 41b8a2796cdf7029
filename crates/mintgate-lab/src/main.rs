//! The `mintgate-lab` binary: every `mintgate` command (flattened from [`mintgate::cli`]) plus the
//! demo and the benchmarks, which run the service against an in-process Mint simulator. It is the
//! workspace's default binary, so `cargo run --release -- demo` runs the demo.
//!
//! Exit codes: 0 success, 1 user or configuration error, 2 remote or internal failure.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mintgate::cli::{Failure, GlobalArgs, block_on, exit_code};
use mintgate_lab::{bench, demo};

#[derive(Parser)]
#[command(
    name = "mintgate-lab",
    version,
    about = "mintgate with its lab: the demo and the benchmarks on an in-process Mint simulator, and every mintgate command",
    after_help = "Examples:\n  mintgate-lab demo                      # the whole pipeline against a simulated Mint, in about a minute\n  mintgate-lab bench download --size 2GiB\n  mintgate-lab bench replicas            # needs PostgreSQL and Redis\n  mintgate-lab doctor --all              # any mintgate command"
)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Run the main job on embedded defaults against an in-process, time-scaled Mint simulator.
    Demo(demo::DemoArgs),
    /// Benchmarks that hold the speed and memory goals.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    #[command(flatten)]
    Mintgate(mintgate::cli::Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    block_on(async move {
        match cli.command {
            LabCommand::Demo(mut args) => {
                args.verbose = cli.global.verbose > 0;
                exit_code(demo::run(args).await.map_err(Failure::internal))
            }
            LabCommand::Bench(command) => {
                exit_code(bench::run(command).await.map_err(Failure::internal))
            }
            LabCommand::Mintgate(command) => mintgate::cli::run(command, &cli.global).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::{Cli, LabCommand};

    /// The lab flattens mintgate's commands and global options beside its own: a name used twice
    /// (e.g. a command's `--verbose` beside the global `-v`) panics only when parsed.
    #[test]
    fn every_command_line_of_the_readme_parses() {
        Cli::command().debug_assert();
        for line in [
            "mintgate-lab demo",
            "mintgate-lab demo -v",
            "mintgate-lab -v demo",
            "mintgate-lab bench edge --json",
            "mintgate-lab bench archive --size 2GiB",
            "mintgate-lab bench reconcile",
            "mintgate-lab bench sim --json",
            "mintgate-lab bench download --size 2GiB --json",
            "mintgate-lab bench replicas --json",
            "mintgate-lab bench soak --executions 200 --kills 50 --json",
            "mintgate-lab bench quota --json",
            "mintgate-lab bench burst --json",
            "mintgate-lab bench ingest --json",
            "mintgate-lab bench ingest --connections 32 --seconds 5 --ceiling --json",
            "mintgate-lab bench events --json",
            "mintgate-lab bench report --from figures",
            "mintgate-lab doctor --all",
            "mintgate-lab -vv doctor --contract --json",
            "mintgate-lab webhook step --url https://kyc.example.com/webhooks/mint",
        ] {
            let parsed = Cli::try_parse_from(line.split(' '));
            assert!(parsed.is_ok(), "{line}: {:?}", parsed.err());
        }
        let cli = Cli::try_parse_from(["mintgate-lab", "demo", "-v"]).unwrap();
        assert_eq!(cli.global.verbose, 1);
        assert!(matches!(cli.command, LabCommand::Demo(_)));
    }
}
