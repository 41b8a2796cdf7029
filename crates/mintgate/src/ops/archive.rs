//! `mintgate archive …`: `migrate` copies an archive (by default the local one) into another store,
//! verified and resumable; `purge` runs the retention policy's purge once; `clean-uploads` aborts
//! multipart uploads orphaned by a crash. They read the service's configuration and work on the
//! archive (and database) directly, while the service runs or not.

use std::path::Path;

use chrono::Utc;
use serde_json::json;
use url::Url;

use super::output::{CliError, CliResult, human_bytes, print_json};
use crate::archive::{Archive, ArchiveConfig};

#[derive(Debug, clap::Subcommand)]
pub enum ArchiveCommand {
    /// Copy every archived result into another store (e.g. a bucket), verified; re-running skips
    /// what is already there and verified, so an interrupted migration resumes.
    #[command(
        after_help = "Examples:\n  mintgate archive migrate --to s3://evidence/mintgate\n  mintgate archive migrate --from file:///var/lib/mintgate/archive --to s3://evidence/mintgate --json\n\nThe target uses the [archive] settings (endpoint, credentials, encryption, SSE, Object Lock)\nwith its URL replaced. The database's archive locations are updated to the copies; set\n`archive.url` to the target afterwards."
    )]
    Migrate {
        /// The target store's URL.
        #[arg(long, value_name = "URL")]
        to: Url,
        /// The source (default: the configured archive, i.e. `archive.url` or `service.archive_dir`).
        #[arg(long, value_name = "URL")]
        from: Option<Url>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the retention policy's purge now (`serve` runs it every `archive.retention.purge_interval`).
    Purge {
        #[arg(long)]
        json: bool,
    },
    /// Abort multipart uploads older than `archive.orphan_upload_age` (left by a crash), by the
    /// store's own upload times.
    CleanUploads {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(command: ArchiveCommand, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let user = |e: anyhow::Error| CliError::user(format!("{e:#}"));
    match command {
        ArchiveCommand::Migrate { to, from, json } => {
            let source_settings = ArchiveConfig {
                url: from.or_else(|| config.archive.url.clone()),
                ..config.archive.clone()
            };
            let target_settings = ArchiveConfig {
                url: Some(to),
                ..config.archive.clone()
            };
            let source =
                Archive::open(&source_settings, &config.service.archive_dir).map_err(user)?;
            let target =
                Archive::open(&target_settings, &config.service.archive_dir).map_err(user)?;
            if source.describe() == target.describe() {
                return Err(CliError::user(
                    "the source and the target are the same archive",
                ));
            }
            let store = match super::inspect::open_store(&config, crate::store::OpenMode::ReadWrite)
                .await
            {
                Ok(store) => Some(store),
                Err(error) => {
                    eprintln!(
                        "note: the service's database is not updated ({}); the copies are made all the same",
                        error.message
                    );
                    None
                }
            };
            let report = crate::archive::migrate::migrate(&source, &target, store.as_ref()).await?;
            if json {
                print_json(&json!(report));
            } else {
                println!(
                    "{} copied ({}), {} already there and verified, {} failed",
                    report.copied,
                    human_bytes(report.bytes),
                    report.already_there,
                    report.failed.len()
                );
                for (location, error) in &report.failed {
                    println!("  {location}: {error}");
                }
            }
            if report.failed.is_empty() {
                Ok(())
            } else {
                Err(CliError::remote(format!(
                    "{} result(s) could not be copied",
                    report.failed.len()
                ))
                .hint("run the same command again: what was copied and verified is skipped"))
            }
        }
        ArchiveCommand::Purge { json } => {
            let archive = crate::app::open_archive(&config).map_err(user)?;
            if archive.settings().retention.is_none() {
                return Err(CliError::user("no retention policy is configured")
                    .hint("set [archive.retention] keep_for = \"5years\""));
            }
            let store =
                super::inspect::open_store(&config, crate::store::OpenMode::ReadWrite).await?;
            let report =
                crate::archive::retention::purge_due(&store, &archive, Utc::now(), 10_000).await?;
            if json {
                print_json(&json!(report));
            } else {
                println!(
                    "purged {}, still locked {}, failed {}",
                    report.purged, report.locked, report.failed
                );
            }
            Ok(())
        }
        ArchiveCommand::CleanUploads { json } => {
            let archive = crate::app::open_archive(&config).map_err(user)?;
            let aborted = archive.abort_orphan_uploads(Utc::now(), true).await?;
            if json {
                print_json(&json!({"aborted": aborted}));
            } else {
                println!("aborted {aborted} orphaned upload(s)");
            }
            Ok(())
        }
    }
}
