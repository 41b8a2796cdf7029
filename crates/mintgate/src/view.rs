//! What people and API clients see of an execution: the own API's JSON view, the state in plain
//! words and human time spans. Presentation only: the HTTP surface, the status page and the operator
//! commands all use it, and it depends on nothing but the model, so none of them depends on another
//! for it.

use chrono::{DateTime, Utc};
use mint_client::{FlowId, InstanceId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::model::{Execution, ExecutionState, Progress};

/// An execution as the own API shows it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionView {
    pub id: Uuid,
    pub flow_id: FlowId,
    pub environment: String,
    pub idempotency_key: Option<String>,
    pub state: ExecutionState,
    /// The state in plain words.
    pub summary: String,
    pub instance_id: Option<InstanceId>,
    pub workflow_url: Option<String>,
    /// True when the instance runs but its end user's link is unknown: the start's answer (the
    /// only place Mint gives it [model]) was lost and the instance was found by reconciliation.
    /// The application cannot send its end user to this instance; it may ask an operator, or
    /// offer the user another way.
    #[serde(default)]
    pub workflow_url_unknown: bool,
    pub progress: Option<Progress>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub archive: Option<ArchiveView>,
    pub failure_reason: Option<String>,
    /// Why the execution waits for an operator's decision (state `needs_decision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveView {
    pub path: String,
    pub sha256: String,
    pub bytes: i64,
    pub archived_at: Option<DateTime<Utc>>,
}

pub fn view(execution: &Execution, now: DateTime<Utc>) -> ExecutionView {
    let archive = match (&execution.archive_path, &execution.sha256, execution.bytes) {
        (Some(path), Some(sha256), Some(bytes)) if execution.state == ExecutionState::Archived => {
            Some(ArchiveView {
                path: path.clone(),
                sha256: sha256.clone(),
                bytes,
                archived_at: execution.archived_at,
            })
        }
        _ => None,
    };
    ExecutionView {
        id: execution.id,
        flow_id: execution.flow_id.clone(),
        environment: execution.environment.clone(),
        idempotency_key: execution.idempotency_key.clone(),
        state: execution.state,
        summary: summary(execution, now),
        instance_id: execution.instance_id.clone(),
        workflow_url: execution.workflow_url.clone(),
        workflow_url_unknown: execution.workflow_url.is_none() && execution.workflow_url_unknown,
        progress: if execution.state == ExecutionState::Running {
            execution.progress.clone()
        } else {
            None
        },
        created_at: execution.created_at,
        started_at: execution.started_at,
        finished_at: execution.finished_at,
        deadline_at: execution.deadline_at,
        archive,
        failure_reason: execution.failure_reason.clone(),
        decision_reason: execution.decision_reason.clone(),
    }
}

/// A span of time in the largest whole unit: "12 min", "3 days".
pub fn human_span(span: chrono::TimeDelta) -> String {
    let secs = span.num_seconds().max(0);
    match secs {
        0..=89 => format!("{secs} s"),
        90..=5399 => format!("{} min", (secs + 30) / 60),
        5400..=129_599 => format!("{} h", (secs + 1800) / 3600),
        _ => format!("{} days", (secs + 43_200) / 86_400),
    }
}

/// The state of an execution in plain words.
pub fn summary(execution: &Execution, now: DateTime<Utc>) -> String {
    let step = |s: &Option<String>| {
        s.as_ref()
            .map(|s| format!(" at step '{s}'"))
            .unwrap_or_default()
    };
    match execution.state {
        ExecutionState::Queued => "queued: waiting for the Mint budget to start it".to_owned(),
        ExecutionState::Starting if execution.start_ambiguous => {
            "starting: the answer to the start was lost; looking for the instance in Mint before any retry".to_owned()
        }
        ExecutionState::Starting => "starting in Mint".to_owned(),
        ExecutionState::NeedsDecision => format!(
            "needs an operator's decision: the answer to the start was lost and the instance could \
             neither be found in Mint nor ruled out ({}); nothing is started again until \
             `mintgate decide` says whether it was started",
            execution
                .decision_reason
                .as_deref()
                .unwrap_or("no reason recorded")
        ),
        ExecutionState::Running => {
            let what = match &execution.progress {
            Some(Progress::WaitingForUser { step: s, since }) => match since {
                Some(since) => format!(
                    "waiting for the end user{} for {}",
                    step(s),
                    human_span(now - *since)
                ),
                None => format!("waiting for the end user{}", step(s)),
            },
            Some(Progress::Processing { step: s }) => format!("processing{}", step(s)),
            _ => "running in Mint".to_owned(),
        };
            let link = if execution.workflow_url.is_none() && execution.workflow_url_unknown {
                " (the end user's link is unknown: the start's answer was lost)"
            } else {
                ""
            };
            what + link
        }
        ExecutionState::Finished => match execution.deadline_at {
            Some(deadline) => format!(
                "finished; result not archived yet, deleted by Mint in {}",
                human_span(deadline - now)
            ),
            None => "finished; result not archived yet".to_owned(),
        },
        ExecutionState::Downloading => "downloading the result file".to_owned(),
        ExecutionState::Archived => "archived and verified".to_owned(),
        ExecutionState::Failed => format!(
            "failed: {}",
            execution.failure_reason.as_deref().unwrap_or("unknown reason")
        ),
        ExecutionState::Expired => {
            "expired: Mint deleted the instance before its result was archived".to_owned()
        }
        ExecutionState::Erased => {
            "erased: the archived result and personal data were removed; the ledger remains"
                .to_owned()
        }
    }
}
