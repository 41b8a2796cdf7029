//! The checker's step: read an instance's state from Mint and act on it. The poller is this step on
//! its schedule; a webhook only brings the schedule forward.

use mint_client::{InstanceStatus, Progress as MintProgress};

use super::{MINT_RETENTION, Pipeline, StepResult, classify, on_not_found};
use crate::clock::delta;
use crate::model::{Execution, ExecutionState, Job, JobKind, JobPriority, Progress};
use crate::store::{ExecutionPatch, JobDisposition, NewJob, NotFound, StepOutcome};

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
    // One `GET` of the instance; its activities only when they can tell something new: the
    // instance runs and Mint's `updatedAt` differs from the one its progress was read at (or
    // there is none). An instance known to wait for its end user costs one unit a check.
    let instance = match client.get_instance(instance_id).await {
        Ok(instance) => instance,
        // A 404 is not the end by itself: Mint may answer one spuriously.
        Err(error @ (mint_client::Error::Expired { .. } | mint_client::Error::NotFound { .. })) => {
            return Ok(on_not_found(pipeline, execution, &error));
        }
        Err(error) => return Err(classify(&error, job.attempts).into()),
    };
    let via = if job.priority >= JobPriority::Webhook {
        "webhook"
    } else {
        "poll"
    };
    let updated_at = instance.updated_at.as_ref().map(|t| t.raw().to_owned());
    let unchanged = match (&execution.progress, &execution.progress_mint_updated_at) {
        (Some(known), Some(seen))
            if updated_at.as_ref() == Some(seen) && !pipeline.config.activities_every_check =>
        {
            Some(known.clone())
        }
        _ => None,
    };
    let progress = if instance.status != InstanceStatus::Running {
        MintProgress::classify(&instance, &[])
    } else if let Some(known) = unchanged {
        tracing::debug!(
            ?known,
            via,
            "instance checked; unchanged since its activities were read"
        );
        let since = match &known {
            Progress::WaitingForUser { since, .. } => *since,
            _ => None,
        };
        let outcome = still_running(pipeline, execution, known, since, via, updated_at);
        return Ok(answered(execution, outcome));
    } else {
        match client.activities(instance_id).await {
            Ok(activities) => MintProgress::classify(&instance, &activities),
            Err(
                error @ (mint_client::Error::Expired { .. } | mint_client::Error::NotFound { .. }),
            ) => {
                return Ok(on_not_found(pipeline, execution, &error));
            }
            Err(error) => return Err(classify(&error, job.attempts).into()),
        }
    };
    tracing::debug!(?progress, via, "instance checked");
    let outcome = match progress {
        MintProgress::Finished { at } => {
            // Mint's finishedAt is used only when plausible (not in the future, not before the
            // execution was created, parseable); else our own observation time. Logged once: the
            // execution leaves `running` here.
            let finished_at = match at.as_ref() {
                Some(t) => t.plausible(now, execution.created_at).unwrap_or_else(|| {
                    tracing::warn!(
                        finished_at = t.raw(),
                        "implausible finishedAt from Mint; using the time it was observed"
                    );
                    now
                }),
                None => {
                    tracing::warn!("Mint gave no finishedAt; using the time it was observed");
                    now
                }
            };
            StepOutcome::done()
                .with_patch(ExecutionPatch {
                    state: Some(ExecutionState::Finished),
                    mint_status: Some("Finished".to_owned()),
                    finished_at: Some(finished_at),
                    // Our own record of when it finished: expiry is judged by it.
                    finished_seen_at: Some(now),
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
            updated_at,
        ),
        MintProgress::WaitingForUser { step, since } => {
            let since = since.and_then(|t| t.plausible(now, execution.created_at));
            still_running(
                pipeline,
                execution,
                Progress::WaitingForUser { step, since },
                since,
                via,
                updated_at,
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
            // The client maps a 404 to an error (handled above); a status saying so is Mint's
            // own word, but still only a 404 by another name: treat it the same way.
            let error = mint_client::Error::Expired {
                instance_id: instance_id.clone(),
            };
            return Ok(on_not_found(pipeline, execution, &error));
        }
        unknown => {
            let status = match unknown {
                MintProgress::Unknown { status } => {
                    // A status this version does not know: keep watching, and say so.
                    tracing::warn!(status, "Mint reports a status this version does not know");
                    Some(status)
                }
                other => {
                    tracing::warn!(?other, "unexpected progress");
                    None
                }
            };
            let mut outcome = still_running(
                pipeline,
                execution,
                Progress::Unknown,
                None,
                via,
                updated_at,
            );
            if let (Some(status), Some(patch)) = (status, outcome.execution.as_mut()) {
                patch.mint_status = Some(status);
            }
            outcome
        }
    };
    Ok(answered(execution, outcome))
}

/// Mint answered: a run of 404s is over.
fn answered(execution: &Execution, mut outcome: StepOutcome) -> StepOutcome {
    if execution.not_found_since.is_some() {
        outcome
            .execution
            .get_or_insert_with(ExecutionPatch::default)
            .not_found = Some(NotFound::Answered);
    }
    outcome
}

/// The instance still runs: record what it does (with Mint's `updatedAt` it was read at) and
/// poll it again at its pace ([`Pipeline::next_poll`]).
fn still_running(
    pipeline: &Pipeline,
    execution: &Execution,
    progress: Progress,
    waiting_since: Option<chrono::DateTime<chrono::Utc>>,
    via: &str,
    mint_updated_at: Option<String>,
) -> StepOutcome {
    let now = pipeline.clock.now();
    let since = waiting_since.or(execution.started_at);
    let waiting = matches!(progress, Progress::WaitingForUser { .. });
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            mint_status: Some("Running".to_owned()),
            progress: Some(progress.clone()),
            progress_at: Some(now),
            progress_mint_updated_at: mint_updated_at,
            ..ExecutionPatch::default()
        })
        .with_job(JobDisposition::Retry {
            run_at: pipeline.next_poll(now, since, waiting),
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
