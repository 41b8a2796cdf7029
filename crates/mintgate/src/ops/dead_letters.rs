//! `mintgate dead-letters`: jobs that ran out of attempts, with their error chains; `retry` puts
//! them back in the queue with fresh attempts. Reads (read-only) and writes (`retry`) the service's
//! database directly, never migrating it; a running service picks a retried job up at its next
//! look at the queue.

use std::path::Path;

use chrono::Utc;
use serde_json::json;
use uuid::Uuid;

use super::output::{CliError, CliResult, Table, print_json, timestamp};
use crate::store::OpenMode;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DeadLettersArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List the dead letters (the default).
    List,
    /// Put one dead letter (or all of them) back in the queue with fresh attempts.
    Retry {
        /// The dead letter's job id (from `mintgate dead-letters`).
        #[arg(
            value_name = "JOB_ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<String>,
        /// Retry every dead letter.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(args: DeadLettersArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let action = args.action.unwrap_or(Action::List);
    // Listing only reads; a retry writes (but never migrates: that is `mintgate serve`'s).
    let mode = match action {
        Action::List => OpenMode::ReadOnly,
        Action::Retry { .. } => OpenMode::ReadWrite,
    };
    let store = super::inspect::open_store(&config, mode).await?;
    match action {
        Action::List => {
            let jobs = store.dead_letters().await?;
            if args.json {
                print_json(&json!(jobs));
                return Ok(());
            }
            if jobs.is_empty() {
                println!("no dead letters");
                return Ok(());
            }
            let mut table = Table::new([
                "JOB ID",
                "KIND",
                "EXECUTION ID",
                "ATTEMPTS",
                "SINCE",
                "LAST ERROR",
            ]);
            for job in &jobs {
                table.row([
                    job.id.to_string(),
                    job.kind.as_str().to_owned(),
                    job.execution_id.to_string(),
                    job.attempts.to_string(),
                    timestamp(job.updated_at),
                    job.errors
                        .last()
                        .map(|e| first_line(&e.error))
                        .unwrap_or_default(),
                ]);
            }
            print!("{}", table.render(0));
            println!(
                "\n{} dead letter(s); `mintgate inspect <execution id>` shows each one's whole chain; \
                 `mintgate dead-letters retry <job id>` (or --all) puts them back in the queue",
                jobs.len()
            );
            Ok(())
        }
        Action::Retry { id, all } => {
            let ids: Vec<Uuid> = if all {
                store.dead_letters().await?.iter().map(|j| j.id).collect()
            } else {
                let text = id.unwrap_or_default();
                vec![Uuid::parse_str(&text).map_err(|_| {
                    CliError::user(format!("{text:?} is not a job id"))
                        .hint("`mintgate dead-letters` lists the dead letters with their job ids")
                })?]
            };
            let mut retried = Vec::new();
            for job in &ids {
                if store.retry_dead_letter(*job, Utc::now()).await? {
                    retried.push(*job);
                } else if !all {
                    return Err(CliError::user(format!("job {job} is not a dead letter"))
                        .hint("`mintgate dead-letters` lists the dead letters; it may have been retried already"));
                }
            }
            if args.json {
                print_json(&json!({"retried": retried}));
            } else if retried.is_empty() {
                println!("no dead letters to retry");
            } else {
                for job in &retried {
                    println!("retried job {job}");
                }
                println!(
                    "{} job(s) back in the queue with fresh attempts; the service runs them at its next look at the queue",
                    retried.len()
                );
            }
            Ok(())
        }
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() > 100 {
        format!("{}…", line.chars().take(99).collect::<String>())
    } else {
        line.to_owned()
    }
}
