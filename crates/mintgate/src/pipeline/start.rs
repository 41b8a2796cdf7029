//! The executor's step: start an execution's instance in Mint, exactly once.

use std::time::Duration;

use futures::StreamExt as _;
use mint_client::{FlowId, StartInstance};

use super::{Failure, Pipeline, StepResult, classify, keep_lease};
use crate::clock::delta;
use crate::model::CORRELATION_KEY;
use crate::model::{Execution, ExecutionState, Job, JobKind, JobPriority, Lease};
use crate::store::{ExecutionPatch, JobDisposition, NewJob, StepOutcome};

/// How far back (before the execution was accepted) a reconciliation looks, for clock skew.
const RECONCILE_SKEW: Duration = Duration::from_secs(10 * 60);
/// A reconciliation reads at most this many instances of the flow (newest first).
const RECONCILE_SCAN_MAX: usize = 5_000;

pub(super) async fn step(
    pipeline: &Pipeline,
    job: &Job,
    lease: &Lease,
    execution: &Execution,
) -> StepResult {
    if execution.state.is_terminal() || execution.instance_id.is_some() {
        // Started already (or given up): nothing to do.
        return Ok(StepOutcome::done());
    }
    let client = pipeline.client_for(execution)?.at(job.priority.to_client());
    let flow_id = &execution.flow_id;

    if execution.start_ambiguous {
        // An earlier start may have reached Mint (its answer was lost, or the worker died while
        // it was in flight): look for the instance before anything else.
        match find_instance(pipeline, &client, flow_id, execution).await {
            Ok(Some(instance)) => {
                tracing::info!(
                    instance_id = instance.id.as_str(),
                    "reconciled: the lost start had run"
                );
                crate::metrics::execution_started(execution.flow_id.as_str(), "reconciled");
                return Ok(started(pipeline, execution, instance, None, "reconciled"));
            }
            Ok(None) => {
                tracing::info!("reconciled: the lost start had not run; starting again");
            }
            Err(error) => {
                return Err(classify(&error, job.attempts).into());
            }
        }
    }

    // The monthly spend cap holds new starts in the queue (delayed, never failed).
    let now = pipeline.clock.now();
    if let Some(until) = crate::spend::held_until(
        pipeline.store.as_ref(),
        &pipeline.config,
        &execution.environment,
        now,
    )
    .await?
    {
        crate::metrics::start_held();
        tracing::info!(until = %until, "start held: the monthly spend cap is reached");
        return Ok(StepOutcome::done().with_job(JobDisposition::Retry {
            run_at: until,
            error: Some("held: the monthly spend cap is reached".to_owned()),
            counts: false,
            priority: None,
        }));
    }

    // Durably record that a start may be in flight before sending it.
    pipeline
        .store
        .patch_under_lease(
            lease,
            execution.id,
            ExecutionPatch {
                state: Some(ExecutionState::Starting),
                start_ambiguous: Some(true),
                start_attempts_add: 1,
                ..ExecutionPatch::default()
            },
            pipeline.clock.now(),
        )
        .await?;

    let mut input = match &execution.input {
        serde_json::Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    input.insert(
        CORRELATION_KEY.to_owned(),
        serde_json::Value::String(execution.id.to_string()),
    );
    let request = StartInstance {
        input: Some(serde_json::Value::Object(input)),
        workflow_url_ttl: None,
    };
    use mint_client::Error as E;
    // The start may wait long for budget units (behind other replicas' work): hold the lease
    // meanwhile, or another replica would take the job over, find no instance yet and start it too.
    let result = tokio::select! {
        result = client.start_instance(flow_id, &request) => result,
        lost = keep_lease(pipeline, lease) => return Err(lost),
    };
    match result {
        Ok(answer) => {
            crate::metrics::execution_started(execution.flow_id.as_str(), "started");
            Ok(started(
                pipeline,
                execution,
                answer.instance,
                answer.workflow_url,
                "started",
            ))
        }
        Err(E::Ambiguous { .. }) => {
            crate::metrics::start_ambiguous();
            let error = "the answer to the start was lost; the instance will be looked for before any retry";
            tracing::warn!(error);
            Ok(StepOutcome::done()
                .with_job(JobDisposition::Retry {
                    run_at: pipeline.clock.now() + delta(pipeline.config.reconcile_delay),
                    error: Some(error.to_owned()),
                    counts: true,
                    priority: None,
                })
                .event("start_ambiguous", serde_json::json!({})))
        }
        Err(error @ (E::NotFound { .. } | E::DefinitionIdAsFlowId { .. })) => {
            Ok(definitely_not_started(fail(execution, error.to_string())))
        }
        Err(
            error @ E::Api {
                status: 400..=499, ..
            },
        ) => Ok(definitely_not_started(fail(execution, error.to_string()))),
        Err(error @ (E::Api { status: 500.., .. } | E::NoAnswer { .. })) => {
            // The server answered an error after the request arrived: it may have committed.
            crate::metrics::start_ambiguous();
            let failure = classify(&error, job.attempts);
            let after = match &failure {
                Failure::Delay { after, .. } | Failure::Retry { after, .. } => *after,
                Failure::MissingRole { .. } => pipeline.config.reconcile_delay,
            };
            Ok(StepOutcome::done()
                .with_job(JobDisposition::Retry {
                    run_at: pipeline.clock.now()
                        + delta(after.max(pipeline.config.reconcile_delay)),
                    error: Some(error.to_string()),
                    counts: false,
                    priority: None,
                })
                .event(
                    "start_ambiguous",
                    serde_json::json!({"error": error.to_string()}),
                ))
        }
        Err(error) => {
            // Refused before it ran (429, not sent, missing role, token): nothing was started.
            let failure = classify(&error, job.attempts);
            let text = error.to_string();
            let (after, counts) = match &failure {
                Failure::Delay { after, .. } => (*after, false),
                Failure::Retry { after, .. } => (*after, true),
                Failure::MissingRole {
                    role, operation, ..
                } => {
                    // A missing role pauses the starts of this environment (no attempt used).
                    if let Some(paused) = pipeline
                        .pause_for_missing_role(job, execution, *role, *operation, &text)
                        .await
                    {
                        return Ok(definitely_not_started(paused).with_patch(ExecutionPatch {
                            state: Some(ExecutionState::Queued),
                            start_ambiguous: Some(false),
                            ..ExecutionPatch::default()
                        }));
                    }
                    (pipeline.config.role_probe_interval, false)
                }
            };
            if counts && job.attempts + 1 >= job.max_attempts {
                return Ok(definitely_not_started(StepOutcome::done().with_job(
                    JobDisposition::Dead {
                        error: text.clone(),
                    },
                ))
                .with_patch(ExecutionPatch {
                    state: Some(ExecutionState::Queued),
                    start_ambiguous: Some(false),
                    ..ExecutionPatch::default()
                })
                .event(
                    "dead_letter",
                    serde_json::json!({"kind": "start", "error": text}),
                ));
            }
            Ok(StepOutcome::done()
                .with_patch(ExecutionPatch {
                    state: Some(ExecutionState::Queued),
                    start_ambiguous: Some(false),
                    ..ExecutionPatch::default()
                })
                .with_job(JobDisposition::Retry {
                    run_at: pipeline.clock.now() + delta(after),
                    error: Some(text),
                    counts,
                    priority: None,
                }))
        }
    }
}

fn definitely_not_started(outcome: StepOutcome) -> StepOutcome {
    let mut outcome = outcome;
    let patch = outcome
        .execution
        .get_or_insert_with(ExecutionPatch::default);
    patch.start_ambiguous = Some(false);
    outcome
}

fn fail(execution: &Execution, reason: String) -> StepOutcome {
    tracing::warn!(reason, "execution failed for good");
    crate::metrics::execution_ended("failed", "start_refused");
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(ExecutionState::Failed),
            failure_reason: Some(reason.clone()),
            ..ExecutionPatch::default()
        })
        .event(
            "failed",
            serde_json::json!({"reason": reason, "flowId": execution.flow_id}),
        )
}

fn started(
    pipeline: &Pipeline,
    execution: &Execution,
    instance: mint_client::Instance,
    workflow_url: Option<String>,
    how: &str,
) -> StepOutcome {
    let now = pipeline.clock.now();
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(ExecutionState::Running),
            instance_id: Some(instance.id.clone()),
            workflow_url,
            mint_status: Some(instance.status.as_str().to_owned()),
            started_at: Some(
                instance
                    .created_at
                    .as_ref()
                    .and_then(|t| t.plausible(now, execution.created_at))
                    .unwrap_or(now),
            ),
            start_ambiguous: Some(false),
            billed_add: 1,
            billed_cents: i64::from(crate::spend::price_cents(
                &pipeline.config,
                &execution.environment,
            )),
            ..ExecutionPatch::default()
        })
        .then(NewJob {
            execution_id: execution.id,
            kind: JobKind::Check,
            run_at: now + delta(pipeline.config.poll_grace),
            priority: JobPriority::Background,
        })
        .event(how, serde_json::json!({"instanceId": instance.id.as_str()}))
}

/// Looks among the flow's instances (newest first) for the one carrying this execution's
/// correlation id. The list call is slow on busy flows, so it stops at instances older than the
/// execution.
async fn find_instance(
    pipeline: &Pipeline,
    client: &mint_client::MintClient,
    flow_id: &FlowId,
    execution: &Execution,
) -> Result<Option<mint_client::Instance>, mint_client::Error> {
    let wanted = execution.id.to_string();
    let oldest = execution.created_at - delta(RECONCILE_SKEW);
    let mut stream = std::pin::pin!(client.instances(flow_id));
    let mut seen = 0usize;
    // Stopping at old instances is only right if the list is newest first (the order is not
    // documented): check it as we go.
    let mut newest_first = true;
    let mut previous: Option<chrono::DateTime<chrono::Utc>> = None;
    while let Some(item) = stream.next().await {
        let instance = item?;
        seen += 1;
        // Comparisons only: an absurd createdAt cannot make them panic.
        let created_at = instance.created_at.as_ref().and_then(|t| t.parsed());
        if let (Some(prev), Some(at)) = (previous, created_at) {
            newest_first &= at <= prev;
        }
        previous = created_at.or(previous);
        let carries = instance
            .input
            .as_ref()
            .and_then(|input| input.get(CORRELATION_KEY))
            .and_then(|v| v.as_str())
            == Some(wanted.as_str());
        if carries {
            return Ok(Some(instance));
        }
        let too_old = newest_first && created_at.is_some_and(|at| at < oldest);
        if too_old || seen >= RECONCILE_SCAN_MAX {
            break;
        }
    }
    tracing::debug!(seen, "correlation id not found among the flow's instances");
    let _ = pipeline;
    Ok(None)
}
