//! The executor's step: start an execution's instance in Mint, exactly once.

use mint_client::StartInstance;

use super::reconcile::{self, Resolution};
use super::{Failure, Pipeline, StepResult, classify, keep_lease};
use crate::clock::delta;
use crate::model::CORRELATION_KEY;
use crate::model::{Execution, ExecutionState, Job, JobKind, JobPriority, Lease};
use crate::store::{ExecutionPatch, JobDisposition, NewJob, StepOutcome};

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
    let client = &pipeline.client_for(execution)?.at(job.priority.to_client());

    let mut proven_absent = None;
    if execution.start_ambiguous {
        // An earlier start may have reached Mint (its answer was lost, or the worker died while
        // it was in flight): find its instance, or prove there is none, before anything else.
        match reconcile::resolve(pipeline, client, lease, execution).await? {
            Resolution::Found(instance, scan) => {
                tracing::info!(
                    instance_id = instance.id.as_str(),
                    workflow_url_known = instance.workflow_url.is_some(),
                    "reconciled: the lost start had run"
                );
                crate::metrics::execution_started(execution.flow_id.as_str(), "reconciled");
                crate::metrics::reconciled("found");
                let workflow_url = instance.workflow_url.clone();
                return Ok(
                    started(pipeline, execution, *instance, workflow_url, "reconciled")
                        .event("reconcile_scan", scan),
                );
            }
            Resolution::Absent(scan) => {
                tracing::info!("reconciled: the lost start had not run (proven); starting again");
                crate::metrics::reconciled("absent");
                proven_absent = Some(scan);
            }
            Resolution::Undecided(reason, scan) => {
                tracing::warn!(
                    reason,
                    "reconciliation could neither find the instance nor rule it out: the \
                     execution waits for an operator's decision (mintgate decide)"
                );
                crate::metrics::reconciled("undecided");
                return Ok(StepOutcome::done()
                    .with_patch(ExecutionPatch {
                        state: Some(ExecutionState::NeedsDecision),
                        decision_reason: Some(reason.clone()),
                        ..ExecutionPatch::default()
                    })
                    .event("needs_decision", {
                        let mut scan = scan;
                        scan["reason"] = serde_json::Value::String(reason);
                        scan
                    }));
            }
        }
    }
    let mut outcome = send(
        pipeline,
        job,
        lease,
        execution,
        client,
        proven_absent.is_some(),
    )
    .await?;
    if let Some(scan) = proven_absent {
        outcome
            .events
            .insert(0, ("reconciled_absent".to_owned(), scan));
    }
    Ok(outcome)
}

/// Sends the start (unless the spend cap holds it), durably marked ambiguous while in flight.
async fn send(
    pipeline: &Pipeline,
    job: &Job,
    lease: &Lease,
    execution: &Execution,
    client: &mint_client::MintClient,
    proven_absent: bool,
) -> StepResult {
    let flow_id = &execution.flow_id;
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
        let held = StepOutcome::done().with_job(JobDisposition::Retry {
            run_at: until,
            error: Some("held: the monthly spend cap is reached".to_owned()),
            counts: false,
            priority: None,
        });
        // A lost start proven not to have run is no longer ambiguous while it waits.
        return Ok(if proven_absent {
            held.with_patch(ExecutionPatch {
                state: Some(ExecutionState::Queued),
                start_ambiguous: Some(false),
                ..ExecutionPatch::default()
            })
        } else {
            held
        });
    }

    // Durably record that a start may be in flight before sending it, and when it was sent.
    let now = pipeline.clock.now();
    pipeline
        .store
        .patch_under_lease(
            lease,
            execution.id,
            ExecutionPatch {
                state: Some(ExecutionState::Starting),
                start_ambiguous: Some(true),
                start_sent_at: Some(now),
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
            // Mint gives the link in the start answer only [model]: a start reconciled from a
            // list or an instance answer without it has lost it, and the view says so.
            workflow_url_unknown: Some(workflow_url.is_none()),
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
