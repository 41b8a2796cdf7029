//! Erasure and the retention policy's purge, shared by `mintgate erase`, `mintgate archive purge`
//! and the purge job of `serve`: the archived result goes (every version of it), its manifest
//! becomes a tombstone, the execution's personal fields are cleared, the cost ledger stays, and
//! every attempt (refusals included) is written to the audit log.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{Archive, RemoveError, TombstoneManifest};
use crate::model::{Execution, ExecutionState};
use crate::store::{AuditRecord, ERASED_FIELDS, Erasure, SharedStore};

/// Why an execution was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error(
        "the result of execution {execution_id} is under a {mode:?} retention lock until {until}; it cannot be erased before then"
    )]
    Locked {
        execution_id: uuid::Uuid,
        mode: super::LockMode,
        until: DateTime<Utc>,
    },
    #[error(
        "execution {execution_id} is still {state} (in flight in Mint); erase it once it has ended"
    )]
    InFlight {
        execution_id: uuid::Uuid,
        state: &'static str,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Who removes and why.
#[derive(Debug, Clone)]
pub struct Removal {
    /// `erased` (an operator) or `purged` (the retention policy).
    pub kind: &'static str,
    pub operator: String,
    pub reason: Option<String>,
    pub now: DateTime<Utc>,
}

impl Removal {
    /// The audit log's and the metric's name of the action: `purge` or `erase`.
    fn action(&self) -> &'static str {
        if self.kind == "purged" {
            "purge"
        } else {
            "erase"
        }
    }
}

/// Erases one execution: its archived result (refused under a retention lock), then its personal
/// fields, with a tombstone and an audit record. An execution erased before is left as it is and
/// its tombstone answered.
pub async fn erase(
    store: &SharedStore,
    archive: &Archive,
    execution: &Execution,
    removal: &Removal,
) -> Result<Erasure, EraseError> {
    if execution.state == ExecutionState::Erased
        && let Some(tombstone) = store.erasure(execution.id).await?
    {
        return Ok(tombstone);
    }
    if !execution.state.is_terminal() {
        let error = EraseError::InFlight {
            execution_id: execution.id,
            state: execution.state.as_str(),
        };
        audit(
            store,
            removal,
            execution,
            "refused",
            json!({"error": error.to_string()}),
        )
        .await?;
        return Err(error);
    }
    let result_key = match (
        &execution.archive_path,
        &execution.instance_id,
        execution.finished_at,
    ) {
        (Some(location), _, _) => archive.key_of(location),
        (None, Some(instance), Some(finished_at)) => {
            archive.result_key(instance.as_str(), finished_at).ok()
        }
        _ => None,
    };
    if let Some(key) = &result_key {
        let tombstone = TombstoneManifest {
            execution_id: execution.id.to_string(),
            environment: execution.environment.clone(),
            flow_id: execution.flow_id.to_string(),
            instance_id: execution
                .instance_id
                .as_ref()
                .map(|i| i.to_string())
                .unwrap_or_default(),
            archived_at: execution.archived_at.unwrap_or(removal.now),
            removed: removal.kind.to_owned(),
            removed_at: removal.now,
            removed_by: removal.operator.clone(),
        };
        match archive.remove(key, &tombstone, removal.now).await {
            Ok(()) => {}
            Err(RemoveError::Locked { mode, until }) => {
                let error = EraseError::Locked {
                    execution_id: execution.id,
                    mode,
                    until,
                };
                audit(
                    store,
                    removal,
                    execution,
                    "refused",
                    json!({"error": error.to_string(), "retainUntil": until}),
                )
                .await?;
                return Err(error);
            }
            Err(RemoveError::Other(error)) => {
                audit(
                    store,
                    removal,
                    execution,
                    "failed",
                    json!({"error": format!("{error:#}")}),
                )
                .await?;
                return Err(EraseError::Other(error));
            }
        }
    }
    let erasure = Erasure {
        execution_id: execution.id,
        kind: removal.kind.to_owned(),
        at: removal.now,
        operator: removal.operator.clone(),
        reason: removal.reason.clone(),
        removed: json!({
            "archive": result_key.as_deref().map(|k| archive.location(k)),
            "manifest": result_key.as_deref().map(|k| archive.location(&Archive::manifest_key(k))),
            "fields": ERASED_FIELDS,
            "eventDetails": true,
            "jobErrors": true,
        }),
    };
    store.erase(erasure.clone()).await?;
    audit(store, removal, execution, "done", erasure.removed.clone()).await?;
    Ok(erasure)
}

async fn audit(
    store: &SharedStore,
    removal: &Removal,
    execution: &Execution,
    outcome: &str,
    detail: serde_json::Value,
) -> anyhow::Result<()> {
    let action = removal.action();
    crate::metrics::archive_removal(action, if outcome == "done" { "done" } else { "refused" });
    store
        .audit(AuditRecord {
            at: removal.now,
            operator: removal.operator.clone(),
            action: action.to_owned(),
            target: execution.id.to_string(),
            outcome: outcome.to_owned(),
            detail,
        })
        .await
}

/// What one purge run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeReport {
    pub purged: usize,
    /// Still under a retention lock (the lock outlives the policy): tried again next run.
    pub locked: usize,
    pub failed: usize,
}

/// Purges results archived longer ago than `archive.retention.keep_for`: result and manifest
/// deleted, personal fields cleared, ledger kept. Nothing without a retention policy.
pub async fn purge_due(
    store: &SharedStore,
    archive: &Archive,
    now: DateTime<Utc>,
    batch: i64,
) -> anyhow::Result<PurgeReport> {
    let Some(policy) = &archive.settings().retention else {
        return Ok(PurgeReport::default());
    };
    let cutoff =
        now - chrono::TimeDelta::from_std(policy.keep_for).unwrap_or(chrono::TimeDelta::MAX);
    let removal = Removal {
        kind: "purged",
        operator: "retention policy".to_owned(),
        reason: Some(format!(
            "archived more than {} ago (`archive.retention.keep_for`)",
            humantime::format_duration(policy.keep_for)
        )),
        now,
    };
    let mut report = PurgeReport::default();
    for execution in store.archived_before(cutoff, batch).await? {
        match erase(store, archive, &execution, &removal).await {
            Ok(_) => report.purged += 1,
            Err(EraseError::Locked { until, .. }) => {
                tracing::warn!(execution_id = %execution.id, %until, "due for the purge but still locked");
                report.locked += 1;
            }
            Err(error) => {
                tracing::error!(execution_id = %execution.id, error = format!("{error:#}"), "purge failed");
                crate::metrics::archive_removal("purge", "failed");
                report.failed += 1;
            }
        }
    }
    Ok(report)
}
