//! Operator commands: `doctor`, `flows`, `start`, `status`, `download`, `inspect`, `dead-letters`,
//! `decide`, `erase`, `archive`, `webhook`, `events`.
//!
//! They read the same configuration as `mintgate serve` (file, `MINTGATE_…` and `MINT_…`
//! variables) and check only what they use, so `doctor` works with nothing but Mint credentials.
//! Every command prints a human table by default and JSON with `--json`; errors say what to do next.
//! Exit codes: 0 success, 1 user or configuration error, 2 remote or internal failure.

mod archive;
mod contract;
mod dead_letters;
mod decide;
mod doctor;
mod download;
mod e2e;
mod erase;
mod events;
mod flows;
mod inspect;
mod output;
mod start;
mod status;
mod webhook;

use std::path::Path;

use chrono::{DateTime, Utc};
use mint_client::MintClient;

use crate::config::{Config, MintProfile};
use output::{CliError, CliResult};

pub use output::{EXIT_OK, EXIT_REMOTE, EXIT_USER};

/// The operator commands (flattened into the `mintgate` command line).
#[derive(Debug, clap::Subcommand)]
pub enum OpsCommand {
    /// Check each Mint environment: configuration, token, the three roles, budget.
    ///
    /// Roles are probed on ids that cannot exist (Mint checks the role before the resource: 403
    /// means the role is missing, 404 that it is present), so doctor never starts a billed execution.
    #[command(
        after_help = "Examples:\n  mintgate doctor                  # the default environment\n  mintgate doctor --all            # every environment, side by side\n  mintgate doctor --env production --json\n\nExit code 0 only if every check passed."
    )]
    Doctor(doctor::DoctorArgs),
    /// List the flows, with flow id and definition id side by side.
    #[command(
        after_help = "Examples:\n  mintgate flows\n  mintgate flows --search kyc --env production\n  mintgate flows --json | jq -r '.[].id'\n\nInstance calls take the flow id; the definition id is shared by every version of a flow."
    )]
    Flows(flows::FlowsArgs),
    /// Start an execution of a flow: through the service (budget, deduplication), or --direct.
    #[command(
        after_help = "Examples:\n  mintgate start flow-kyc-basic --input customer.json --idempotency-key signup-42\n  echo '{\"customer\":\"42\"}' | mintgate start flow-kyc-basic --input -\n  mintgate start flow-kyc-basic --direct    # straight to Mint: billed, no deduplication"
    )]
    Start(start::StartArgs),
    /// Show what an instance is doing, in plain words, with its steps.
    #[command(
        after_help = "Examples:\n  mintgate status 0f8e2c4a-…\n  mintgate status 0f8e2c4a-… --env production --json"
    )]
    Status(status::StatusArgs),
    /// Download an instance's result file, with its size and SHA-256.
    #[command(
        after_help = "Examples:\n  mintgate download 0f8e2c4a-…                 # to ./<instance id>.zip\n  mintgate download 0f8e2c4a-… -o result.zip\n\nA result file costs 5 budget units; Mint deletes it 30 days after the instance ended."
    )]
    Download(download::DownloadArgs),
    /// Show the whole chain the service recorded for an execution or an instance.
    #[command(
        after_help = "Examples:\n  mintgate inspect 0f8e2c4a-…        # a Mint instance id or a mintgate execution id\n  mintgate inspect 0f8e2c4a-… --json\n\nReads the service's database (`service.database_url`) directly."
    )]
    Inspect(inspect::InspectArgs),
    /// List dead letters (jobs out of attempts) or put them back in the queue.
    #[command(
        name = "dead-letters",
        after_help = "Examples:\n  mintgate dead-letters                 # list\n  mintgate dead-letters retry 0190…     # one job\n  mintgate dead-letters retry --all\n\nReads and writes the service's database (`service.database_url`) directly."
    )]
    DeadLetters(dead_letters::DeadLettersArgs),
    /// Decide an execution waiting for an operator (`needs_decision`: a lost start that could
    /// neither be found in Mint nor ruled out): it was started (attach the instance), or not (start it).
    #[command(
        after_help = "Examples:\n  mintgate inspect 0190…                                   # why, and the candidates looked at\n  mintgate decide --execution 0190… --started 0f8e2c4a-…   # it was started: attach that instance\n  mintgate decide --execution 0190… --not-started          # it was not: start it\n\n--started reads the instance from Mint first and warns when its input does not carry the\nexecution's id. Reads and writes the service's database (`service.database_url`) directly;\nthe decision is recorded as an event and in the audit log."
    )]
    Decide(decide::DecideArgs),
    /// Erase one person's data: the archived result, its manifest's personal content and the
    /// execution's input; keeps the cost ledger and a tombstone; writes an audit record.
    #[command(
        after_help = "Examples:\n  mintgate erase --execution 0190…  --reason 'GDPR request #812'\n  mintgate erase --instance 0f8e2c4a-… --operator alice\n\nRefused while a retention lock holds the result (it says until when). Reads and writes the\nservice's database and the archive directly."
    )]
    Erase(erase::EraseArgs),
    /// The archive: copy a local archive into object storage, purge what the retention policy
    /// no longer keeps, abort orphaned uploads.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// The webhook: the flow step that sends it, and a test of the public endpoint.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Application events: their deliveries to the configured endpoints, and redelivery.
    #[command(
        after_help = "Examples:\n  mintgate events                              # list deliveries\n  mintgate events list --state dead\n  mintgate events redeliver msg_0190…           # one event, to every endpoint that takes it\n  mintgate events redeliver --since 2026-12-01T08:00:00Z\n  mintgate events redeliver --since 2h\n\nReads and writes the service's database (`service.database_url`) directly."
    )]
    Events(events::EventsArgs),
}

/// Runs an operator command; answers the process exit code (0 success, 1 user or configuration
/// error, 2 remote or internal failure).
pub async fn run(command: OpsCommand, config: Option<&Path>) -> u8 {
    let result = match command {
        OpsCommand::Doctor(args) => doctor::run(args, config).await,
        OpsCommand::Flows(args) => flows::run(args, config).await,
        OpsCommand::Start(args) => start::run(args, config).await,
        OpsCommand::Status(args) => status::run(args, config).await,
        OpsCommand::Download(args) => download::run(args, config).await,
        OpsCommand::Inspect(args) => inspect::run(args, config).await,
        OpsCommand::DeadLetters(args) => dead_letters::run(args, config).await,
        OpsCommand::Decide(args) => decide::run(args, config).await,
        OpsCommand::Erase(args) => erase::run(args, config).await,
        OpsCommand::Archive(command) => archive::run(command, config).await,
        OpsCommand::Webhook(command) => webhook::run(command, config).await,
        OpsCommand::Events(args) => events::run(args, config).await,
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(error) => {
            error.report();
            error.code
        }
    }
}

/// `--env`: which Mint profile to use.
#[derive(Debug, Clone, clap::Args)]
pub struct EnvArg {
    /// The Mint environment (a `[mint.<name>]` profile); default: `default_environment`.
    #[arg(long = "env", value_name = "NAME")]
    pub env: Option<String>,
}

/// Loads the configuration without the service's own checks (the commands check what they use).
fn load_config(path: Option<&Path>) -> CliResult<Config> {
    Config::load_unchecked(path).map_err(|e| {
        CliError::user(format!("{e:#}")).hint(
            "configuration comes from --config FILE (or MINTGATE_CONFIG), MINTGATE_… variables \
             (`__` between nested keys) and MINT_CLIENT_ID / MINT_CLIENT_SECRET / MINT_API_BASE / \
             MINT_TOKEN_URL; see mintgate.example.toml",
        )
    })
}

/// The chosen environment's name and profile, validated.
fn pick_profile<'a>(config: &'a Config, env: &EnvArg) -> CliResult<(String, &'a MintProfile)> {
    let name = env
        .env
        .clone()
        .unwrap_or_else(|| config.default_environment.clone());
    let Some(profile) = config.mint.get(&name) else {
        let configured = config.mint.keys().cloned().collect::<Vec<_>>();
        let error = if configured.is_empty() {
            CliError::user("no Mint environment is configured").hint(format!(
                "add a [mint.{name}] profile to the configuration file, or set MINT_CLIENT_ID and \
                 MINT_CLIENT_SECRET"
            ))
        } else {
            CliError::user(format!("no Mint profile for environment {name:?}"))
                .hint(format!("configured: {}", configured.join(", ")))
        };
        return Err(error);
    };
    profile
        .validate(&name)
        .map_err(|e| CliError::user(format!("{e:#}")))?;
    Ok((name, profile))
}

/// A Mint client for a profile, on the system clock.
fn client_for(name: &str, profile: &MintProfile) -> CliResult<MintClient> {
    crate::app::mint_client(
        name,
        profile,
        &crate::clock::Clock::system(),
        Some(|mut config| {
            // An operator waits at a prompt: give up (and say so) rather than wait minutes for
            // budget units another process of the same API client is spending.
            config.budget.max_wait = Some(BUDGET_WAIT_MAX);
            config
        }),
        None,
    )
    .map_err(|e| CliError::user(format!("{e:#}")))
}

/// The longest an operator command waits for budget units.
const BUDGET_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(20);

/// The time commands compare against: the wall clock, or `--now` (hidden; tests and reproducing a
/// past report).
fn now_or(now: Option<DateTime<Utc>>) -> DateTime<Utc> {
    now.unwrap_or_else(Utc::now)
}
