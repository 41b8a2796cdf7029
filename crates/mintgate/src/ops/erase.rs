//! `mintgate erase`: removes one person's data when the law asks for it: the archived result
//! (every stored version), the personal content of its manifest (a tombstone replaces it) and the
//! execution's input and personal fields in the database. The cost ledger and a tombstone stay;
//! every attempt, refusals included, is written to the audit log with who asked and when.
//! Refused while a retention lock holds the result, saying until when.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::output::{CliError, CliResult, print_json, timestamp};
use crate::archive::retention::{EraseError, Removal, erase};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["execution", "instance"])))]
pub struct EraseArgs {
    /// The mintgate execution id.
    #[arg(long, value_name = "ID")]
    execution: Option<Uuid>,
    /// The Mint instance id.
    #[arg(long, value_name = "ID")]
    instance: Option<String>,
    /// Who asks (recorded in the audit log and the tombstone); default: the OS user.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Why (e.g. a ticket number); recorded with the tombstone.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the tombstone as JSON.
    #[arg(long)]
    json: bool,
    /// The time to compare retention locks against (RFC 3339), instead of the clock.
    #[arg(long, hide = true)]
    now: Option<DateTime<Utc>>,
}

/// The operator's name: `--operator`, else the OS user.
pub(super) fn operator_name(explicit: Option<String>) -> String {
    explicit
        .filter(|name| !name.trim().is_empty())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "unknown OS user".to_owned())
}

pub async fn run(args: EraseArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    config
        .archive
        .validate()
        .map_err(|e| CliError::user(format!("{e:#}")))?;
    let store = super::inspect::open_store(&config, crate::store::OpenMode::ReadWrite).await?;
    let archive =
        crate::app::open_archive(&config).map_err(|e| CliError::user(format!("{e:#}")))?;
    let execution = match (&args.execution, &args.instance) {
        (Some(id), _) => store.execution(*id).await?,
        (None, Some(instance)) => {
            let instance = mint_client::InstanceId::new(instance)
                .map_err(|e| CliError::user(e.to_string()))?;
            store.execution_by_instance(&instance).await?
        }
        (None, None) => None,
    };
    let Some(execution) = execution else {
        return Err(CliError::user(format!(
            "the service has no execution {}",
            args.execution
                .map(|id| id.to_string())
                .or(args.instance.clone())
                .unwrap_or_default()
        ))
        .hint("`mintgate inspect ID` takes an execution id or an instance id"));
    };
    let removal = Removal {
        kind: "erased",
        operator: operator_name(args.operator),
        reason: args.reason,
        now: super::now_or(args.now),
    };
    match erase(&store, &archive, &execution, &removal).await {
        Ok(tombstone) => {
            if args.json {
                print_json(&json!(tombstone));
            } else {
                println!(
                    "erased execution {} (instance {})",
                    execution.id,
                    execution
                        .instance_id
                        .as_ref()
                        .map_or("none", |i| i.as_str())
                );
                println!(
                    "  {} by {}; the cost ledger is kept",
                    timestamp(tombstone.at),
                    tombstone.operator
                );
                if let Some(location) = tombstone.removed["archive"].as_str() {
                    println!("  removed {location} (every version) and the manifest's personal content");
                }
            }
            Ok(())
        }
        Err(error @ EraseError::Locked { .. }) => Err(CliError::user(error.to_string()).hint(
            "a retention lock (`archive.object_lock`) cannot be lifted early in compliance mode; \
             in governance mode only a principal with s3:BypassGovernanceRetention can, outside mintgate",
        )),
        Err(error @ EraseError::InFlight { .. }) => Err(CliError::user(error.to_string())
            .hint("`mintgate inspect` shows where it is; erase it once it is archived, failed or expired")),
        Err(EraseError::Other(error)) => Err(CliError::remote(format!("{error:#}"))),
    }
}
