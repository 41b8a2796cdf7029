//! Operator commands: `doctor`, `flows`, `start`, `status`, `download`, `inspect`, `dead-letters`.

use std::path::Path;

/// The operator commands (flattened into the `mintgate` command line).
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {}

/// Runs an operator command; answers the process exit code (0 success, 1 user or configuration
/// error, 2 remote or internal failure).
pub async fn run(command: OpsCommand, config: Option<&Path>) -> u8 {
    let _ = config;
    match command {}
}
