//! The checker's step: read an instance's state from Mint and act on it. The poller is this step on
//! its schedule; a webhook only brings the schedule forward.

use mint_client::Progress as MintProgress;

use super::{MINT_RETENTION, Pipeline, StepResult, classify};
use crate::clock::delta;
use crate::model::{Execution, ExecutionState, Job, JobKind, JobPriority, Progress};
use crate::store::{ExecutionPatch, JobDisposition, NewJob, StepOutcome};

pub(super) async fn step(pipeline: &Pipeline, job: &Job, execution: &Execution) -> StepResult {
    if execution.state != ExecutionState::Running {
        return Ok(StepOutcome::done());
    }
    let Some(instance_id) = &execution.instance_id else {
        return Ok(StepOutcome::done());
    };
    let now = pipeline.clock.now();
    // Webhooks bring a check forward, never closer than `poll_interval_min` to the last one: a
    // flood of authentic webhooks for one instance costs at most one Mint call per interval. The
    // check keeps its (webhook) priority and runs at the floor.
    if let Some(last) = execution.progress_at {
        let floor = last + delta(pipeline.config.poll_interval_min);
        if now < floor {
            return Ok(StepOutcome::done().with_job(JobDisposition::Retry {
                run_at: floor,
                error: None,
                counts: false,
                priority: Some(job.priority),
            }));
        }
    }
    let client = pipeline.client_for(execution)?.at(job.priority.to_client());
    let progress = match client.instance_progress(instance_id).await {
        Ok(progress) => progress,
        Err(mint_client::Error::Expired { .. } | mint_client::Error::NotFound { .. }) => {
            MintProgress::Expired
        }
        Err(error) => return Err(classify(&error, job.attempts).into()),
    };
    let via = if job.priority >= JobPriority::Webhook {
        "webhook"
    } else {
        "poll"
    };
    tracing::debug!(?progress, via, "instance checked");
    let outcome = match progress {
        MintProgress::Finished { at } => {
            // Mint's finishedAt is used only when plausible; else our own observation time.
            let finished_at = match at.as_ref() {
                Some(t) => t.plausible(now, execution.created_at).unwrap_or_else(|| {
                    tracing::warn!(
                        finished_at = t.raw(),
                        "implausible finishedAt from Mint; using the time it was observed"
                    );
                    now
                }),
                None => now,
            };
            StepOutcome::done()
                .with_patch(ExecutionPatch {
                    state: Some(ExecutionState::Finished),
                    mint_status: Some("Finished".to_owned()),
                    finished_at: Some(finished_at),
                    deadline_at: Some(finished_at + delta(MINT_RETENTION)),
                    ..ExecutionPatch::default()
                })
                .then(NewJob {
                    execution_id: execution.id,
                    kind: JobKind::Download,
                    run_at: now,
                    // Confirmed work: it goes before speculative polling.
                    priority: JobPriority::Webhook,
                })
                .event("finished", serde_json::json!({"via": via}))
        }
        MintProgress::Processing { step } => still_running(
            pipeline,
            execution,
            Progress::Processing { step },
            None,
            via,
        ),
        MintProgress::WaitingForUser { step, since } => {
            let since = since.and_then(|t| t.plausible(now, execution.created_at));
            still_running(
                pipeline,
                execution,
                Progress::WaitingForUser { step, since },
                since,
                via,
            )
        }
        MintProgress::Faulted { message } => {
            let message = message.unwrap_or_else(|| "no detail given".to_owned());
            crate::metrics::execution_ended(
                "failed",
                if message == "Workflow execution failed" {
                    "workflow_execution_failed"
                } else {
                    "faulted"
                },
            );
            ended(
                ExecutionState::Failed,
                "Faulted",
                Some(format!("Mint reports the instance faulted: {message}")),
                via,
            )
        }
        MintProgress::Cancelled => {
            crate::metrics::execution_ended("failed", "cancelled");
            ended(
                ExecutionState::Failed,
                "Cancelled",
                Some("the instance was cancelled in Mint".to_owned()),
                via,
            )
        }
        MintProgress::Expired => {
            crate::metrics::execution_ended("expired", "deleted_by_mint");
            ended(ExecutionState::Expired, "Expired", None, via)
        }
        MintProgress::Unknown { status } => {
            // A status this version does not know: keep watching, and say so.
            tracing::warn!(status, "Mint reports a status this version does not know");
            let mut outcome = still_running(pipeline, execution, Progress::Unknown, None, via);
            if let Some(patch) = outcome.execution.as_mut() {
                patch.mint_status = Some(status);
            }
            outcome
        }
        other => {
            tracing::warn!(?other, "unexpected progress");
            still_running(pipeline, execution, Progress::Unknown, None, via)
        }
    };
    Ok(outcome)
}

fn still_running(
    pipeline: &Pipeline,
    execution: &Execution,
    progress: Progress,
    waiting_since: Option<chrono::DateTime<chrono::Utc>>,
    via: &str,
) -> StepOutcome {
    let now = pipeline.clock.now();
    let since = waiting_since.or(execution.started_at);
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            mint_status: Some("Running".to_owned()),
            progress: Some(progress.clone()),
            progress_at: Some(now),
            ..ExecutionPatch::default()
        })
        .with_job(JobDisposition::Retry {
            run_at: pipeline.next_poll(now, since),
            error: None,
            counts: false,
            priority: Some(JobPriority::Background),
        })
        .event(
            "checked",
            serde_json::json!({"via": via, "progress": progress}),
        )
}

fn ended(state: ExecutionState, status: &str, reason: Option<String>, via: &str) -> StepOutcome {
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(state),
            mint_status: Some(status.to_owned()),
            failure_reason: reason.clone(),
            ..ExecutionPatch::default()
        })
        .event(
            state.as_str(),
            serde_json::json!({"via": via, "status": status, "reason": reason}),
        )
}
