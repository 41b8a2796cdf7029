//! The `mintgate` binary: the production service and the operator commands, a thin wrapper over
//! [`mintgate::cli`]. Exit codes: 0 success, 1 user or configuration error, 2 remote or internal
//! failure.

use std::process::ExitCode;

use clap::Parser as _;
use mintgate::cli::{Cli, block_on, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    block_on(run(cli.command, &cli.global))
}
