//! The `Store` trait's contract, written once and run against SQLite and against PostgreSQL
//! (`MINTGATE_TEST_POSTGRES_URL`; each PostgreSQL test works in a schema of its own).

use std::collections::BTreeSet;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mint_client::{FlowId, InstanceId};
use mintgate::model::{
    ExecutionState, JobKind, JobPriority, JobState, Lease, Progress, WebhookRecord, WorkPause,
};
use mintgate::store::outbox::{DeliveryOutcome, EndpointFilter, OutboxEvent};
use mintgate::store::postgres::PgStore;
use mintgate::store::sql::Dialect;
use mintgate::store::sqlite::SqliteStore;
use mintgate::store::{
    self, Created, ExecutionPatch, JobDisposition, LeaseLost, NewExecution, NewJob, NotFound,
    OpenMode, SchemaMismatch, SharedStore, SpendRow, StepOutcome, WebhookRecorded, Write, Written,
};
use sqlx::sqlite::SqliteConnectOptions;
use uuid::Uuid;

use crate::helpers::{drop_postgres_schema, fresh_postgres_schema, postgres_server};

fn flow(id: &str) -> FlowId {
    FlowId::new(id).unwrap()
}

fn inst(id: &str) -> InstanceId {
    InstanceId::new(id).unwrap()
}

/// Runs one contract case against both stores.
macro_rules! store_contract {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::sqlite_store(&dir).await;
                    super::$case(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(server) = crate::helpers::postgres_server(concat!("store::postgres::", stringify!($case))) else {
                        return;
                    };
                    let (store, url) = super::postgres_store(&server).await;
                    super::$case(store).await;
                    crate::helpers::drop_postgres_schema(&url).await;
                }
            )*
        }
    };
}

store_contract!(
    creating_is_idempotent_by_key_and_refuses_a_reused_key,
    claims_take_priority_then_deadline_then_time,
    an_expired_lease_is_taken_over_with_a_new_token,
    a_stale_lease_can_neither_finish_nor_patch_nor_renew,
    an_execution_has_at_most_one_active_job_per_kind,
    a_webhook_body_is_recorded_once_and_brings_the_check_forward,
    a_dead_letter_keeps_its_errors_and_can_be_retried,
    concurrent_claims_never_hand_one_job_to_two_workers,
    batched_claims_never_hand_one_job_to_two_workers,
    webhooks_recorded_together_are_deduplicated_and_matched_one_by_one,
    a_batch_of_many_webhooks_finds_duplicates_across_its_runs_and_earlier_batches,
    a_webhook_that_cannot_be_recorded_does_not_take_its_batch_down,
    executions_created_together_honour_idempotency_keys_within_the_batch,
    a_batch_of_executions_is_stored_exactly_as_requested,
    a_new_execution_is_answered_exactly_as_it_reads_back,
    an_execution_that_cannot_be_created_does_not_take_its_batch_down,
    a_full_batch_of_both_kinds_is_committed_and_answered_in_order,
    webhooks_are_pruned_by_age_unmatched_sooner_in_batches,
    unarchived_lists_finished_executions_soonest_deadline_first,
    end_users_waiting_are_counted_and_listed_earliest_started_first,
    the_ledger_is_written_with_billed_count_and_summed_by_day_and_flow,
    settings_are_set_replaced_and_removed,
    paused_work_is_skipped_by_claims_until_its_pause_is_lifted,
    a_run_of_404s_is_counted_from_its_first_and_ended_by_an_answer,
    ambiguous_starts_findings_and_decisions,
    an_execution_keeps_the_trace_context_of_its_request,
    events_are_pruned_oldest_first_never_past_a_pending_delivery_or_the_fan_out,
);

async fn sqlite_store(dir: &tempfile::TempDir) -> SharedStore {
    Arc::new(
        SqliteStore::open(&dir.path().join("store.db"))
            .await
            .unwrap(),
    )
}

async fn postgres_store(server: &str) -> (SharedStore, String) {
    let url = fresh_postgres_schema(server).await;
    (Arc::new(PgStore::open_url(&url).await.unwrap()), url)
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

async fn create(store: &SharedStore, key: Option<&str>, input: serde_json::Value) -> Created {
    store
        .create_execution(NewExecution {
            id: Uuid::now_v7(),
            idempotency_key: key.map(str::to_owned),
            environment: "sandbox".to_owned(),
            flow_id: flow("flow-kyc-basic"),
            input,
            now: t0(),
            traceparent: None,
        })
        .await
        .unwrap()
}

async fn new_execution(store: &SharedStore) -> Uuid {
    match create(store, None, serde_json::json!({"n": Uuid::new_v4()})).await {
        Created::New(execution) => execution.id,
        other => panic!("expected a new execution, got {other:?}"),
    }
}

/// Claims and completes every due start job, applying `patch` to each execution.
async fn run_starts(store: &SharedStore, patch: impl Fn(Uuid) -> ExecutionPatch) {
    while let Some((job, lease)) = store
        .claim(&[JobKind::Start], "starter", t0(), t0() + secs(60))
        .await
        .unwrap()
    {
        let outcome = StepOutcome::done().with_patch(patch(job.execution_id));
        store
            .finish_step(&lease, job.execution_id, outcome, t0())
            .await
            .unwrap();
    }
}

fn check_job(execution_id: Uuid, run_at: DateTime<Utc>, priority: JobPriority) -> NewJob {
    NewJob {
        execution_id,
        kind: JobKind::Check,
        run_at,
        priority,
    }
}

fn is_lease_lost(error: &anyhow::Error) -> bool {
    error.downcast_ref::<LeaseLost>().is_some()
}

async fn creating_is_idempotent_by_key_and_refuses_a_reused_key(store: SharedStore) {
    let first = match create(&store, Some("key-1"), serde_json::json!({"a": 1})).await {
        Created::New(execution) => execution,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.state, ExecutionState::Queued);
    match create(&store, Some("key-1"), serde_json::json!({"a": 1})).await {
        Created::Existing(execution) => assert_eq!(execution.id, first.id),
        other => panic!("a retried request must find the first one: {other:?}"),
    }
    match create(&store, Some("key-1"), serde_json::json!({"a": 2})).await {
        Created::KeyConflict(execution) => assert_eq!(execution.id, first.id),
        other => panic!("a reused key with another request must conflict: {other:?}"),
    }
    let jobs = store.jobs_for(first.id).await.unwrap();
    assert_eq!(jobs.len(), 1, "one start job, made with the execution");
    assert_eq!(jobs[0].kind, JobKind::Start);
    assert_eq!(jobs[0].state, JobState::Ready);
    let events = store.events_for(first.id).await.unwrap();
    assert_eq!(events[0].kind, "requested");
}

async fn claims_take_priority_then_deadline_then_time(store: SharedStore) {
    let far = new_execution(&store).await;
    let webhook = new_execution(&store).await;
    let near = new_execution(&store).await;
    let later = new_execution(&store).await;
    run_starts(&store, |id| ExecutionPatch {
        deadline_at: if id == far {
            Some(t0() + secs(10 * 86_400))
        } else if id == near {
            Some(t0() + secs(86_400))
        } else {
            None
        },
        ..ExecutionPatch::state(ExecutionState::Running)
    })
    .await;
    for job in [
        check_job(far, t0(), JobPriority::Background),
        check_job(webhook, t0() + secs(1), JobPriority::Webhook),
        check_job(near, t0() + secs(2), JobPriority::Background),
        // Most urgent by priority, but not due yet.
        check_job(later, t0() + secs(3600), JobPriority::Interactive),
    ] {
        store.enqueue(job, t0()).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some((job, _)) = store
        .claim(&[JobKind::Check], "w", t0() + secs(5), t0() + secs(60))
        .await
        .unwrap()
    {
        order.push(job.execution_id);
    }
    assert_eq!(order, vec![webhook, near, far]);
    assert_eq!(
        store.next_due(&[JobKind::Check]).await.unwrap(),
        Some(t0() + secs(60)),
        "the earliest of the running leases and the waiting job"
    );
    assert!(
        store
            .claim(&[JobKind::Start], "w", t0() + secs(5), t0() + secs(60))
            .await
            .unwrap()
            .is_none(),
        "claims take only the kinds asked for"
    );
}

async fn an_expired_lease_is_taken_over_with_a_new_token(store: SharedStore) {
    let id = new_execution(&store).await;
    let (job, first) = store
        .claim(&[JobKind::Start], "a", t0(), t0() + secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.execution_id, id);
    assert!(
        store
            .claim(&[JobKind::Start], "b", t0() + secs(30), t0() + secs(90))
            .await
            .unwrap()
            .is_none(),
        "a held lease is not taken"
    );
    let (again, second) = store
        .claim(&[JobKind::Start], "b", t0() + secs(61), t0() + secs(121))
        .await
        .unwrap()
        .expect("an expired lease is taken over");
    assert_eq!(again.id, job.id);
    assert_eq!(second.owner, "b");
    assert!(
        second.token > first.token,
        "every claim bumps the fencing token"
    );
}

async fn a_stale_lease_can_neither_finish_nor_patch_nor_renew(store: SharedStore) {
    let id = new_execution(&store).await;
    let (_, stale) = store
        .claim(&[JobKind::Start], "a", t0(), t0() + secs(60))
        .await
        .unwrap()
        .unwrap();
    let (_, current) = store
        .claim(&[JobKind::Start], "b", t0() + secs(61), t0() + secs(121))
        .await
        .unwrap()
        .unwrap();
    let patch = ExecutionPatch::state(ExecutionState::Failed);
    let error = store
        .finish_step(
            &stale,
            id,
            StepOutcome::done().with_patch(patch.clone()),
            t0(),
        )
        .await
        .unwrap_err();
    assert!(is_lease_lost(&error), "{error:#}");
    let error = store
        .patch_under_lease(&stale, id, patch, t0())
        .await
        .unwrap_err();
    assert!(is_lease_lost(&error), "{error:#}");
    let error = store
        .renew_lease(&stale, t0() + secs(300))
        .await
        .unwrap_err();
    assert!(is_lease_lost(&error), "{error:#}");
    // A forged lease with the right token but another owner is refused too.
    let forged = Lease {
        owner: "a".to_owned(),
        ..current.clone()
    };
    assert!(is_lease_lost(
        &store
            .renew_lease(&forged, t0() + secs(300))
            .await
            .unwrap_err()
    ));
    assert_eq!(
        store.execution(id).await.unwrap().unwrap().state,
        ExecutionState::Queued,
        "nothing the stale holder wrote is visible"
    );
    store.renew_lease(&current, t0() + secs(300)).await.unwrap();
    store
        .finish_step(
            &current,
            id,
            StepOutcome::done().with_patch(ExecutionPatch::state(ExecutionState::Running)),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.execution(id).await.unwrap().unwrap().state,
        ExecutionState::Running
    );
}

async fn an_execution_has_at_most_one_active_job_per_kind(store: SharedStore) {
    let id = new_execution(&store).await;
    run_starts(&store, |_| ExecutionPatch::state(ExecutionState::Running)).await;
    store
        .enqueue(
            check_job(id, t0() + secs(600), JobPriority::Background),
            t0(),
        )
        .await
        .unwrap();
    store
        .enqueue(check_job(id, t0() + secs(10), JobPriority::Webhook), t0())
        .await
        .unwrap();
    // A later, lower-priority request does not push it back.
    store
        .enqueue(
            check_job(id, t0() + secs(900), JobPriority::Background),
            t0(),
        )
        .await
        .unwrap();
    let checks: Vec<_> = store
        .jobs_for(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == JobKind::Check)
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].run_at, t0() + secs(10));
    assert_eq!(checks[0].priority, JobPriority::Webhook);
    // Once done, a new one may be added.
    let (_, lease) = store
        .claim(&[JobKind::Check], "w", t0() + secs(10), t0() + secs(70))
        .await
        .unwrap()
        .unwrap();
    store
        .finish_step(&lease, id, StepOutcome::done(), t0() + secs(11))
        .await
        .unwrap();
    store
        .enqueue(
            check_job(id, t0() + secs(20), JobPriority::Background),
            t0(),
        )
        .await
        .unwrap();
    assert_eq!(store.jobs_for(id).await.unwrap().len(), 3);
}

async fn a_webhook_body_is_recorded_once_and_brings_the_check_forward(store: SharedStore) {
    let id = new_execution(&store).await;
    run_starts(&store, |_| ExecutionPatch {
        instance_id: Some(inst("inst-1")),
        ..ExecutionPatch::state(ExecutionState::Running)
    })
    .await;
    let record = |body: &str, instance: &str| WebhookRecord {
        id: Uuid::now_v7(),
        received_at: t0() + secs(5),
        instance_id: inst(instance),
        claimed_status: Some("Finished".to_owned()),
        authentic: true,
        body_sha256: body.to_owned(),
        execution_id: None,
    };
    let check_at = t0() + secs(7);
    assert_eq!(
        store
            .record_webhook(record("sha-a", "inst-1"), check_at)
            .await
            .unwrap(),
        WebhookRecorded::Matched
    );
    assert_eq!(
        store
            .record_webhook(record("sha-a", "inst-1"), check_at)
            .await
            .unwrap(),
        WebhookRecorded::Duplicate
    );
    assert_eq!(
        store
            .record_webhook(record("sha-b", "inst-unknown"), check_at)
            .await
            .unwrap(),
        WebhookRecorded::Unmatched
    );
    assert_eq!(store.webhooks_for(&inst("inst-1")).await.unwrap().len(), 1);
    let check = store
        .jobs_for(id)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.kind == JobKind::Check)
        .expect("the webhook enqueued a check");
    assert_eq!(check.run_at, check_at);
    assert_eq!(check.priority, JobPriority::Webhook);
    assert_eq!(store.overview().await.unwrap().webhooks_recorded, 2);
}

async fn a_dead_letter_keeps_its_errors_and_can_be_retried(store: SharedStore) {
    let id = new_execution(&store).await;
    let (job, lease) = store
        .claim(&[JobKind::Start], "w", t0(), t0() + secs(60))
        .await
        .unwrap()
        .unwrap();
    store
        .finish_step(
            &lease,
            id,
            StepOutcome::done().with_job(JobDisposition::Retry {
                run_at: t0() + secs(30),
                error: Some("first: 400 bad input".to_owned()),
                counts: true,
                priority: None,
            }),
            t0(),
        )
        .await
        .unwrap();
    let (_, lease) = store
        .claim(&[JobKind::Start], "w", t0() + secs(30), t0() + secs(90))
        .await
        .unwrap()
        .unwrap();
    store
        .finish_step(
            &lease,
            id,
            StepOutcome::done().with_job(JobDisposition::Dead {
                error: "second: 400 bad input".to_owned(),
            }),
            t0() + secs(31),
        )
        .await
        .unwrap();
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, job.id);
    assert_eq!(dead[0].attempts, 2);
    let errors: Vec<&str> = dead[0].errors.iter().map(|e| e.error.as_str()).collect();
    assert_eq!(errors, ["first: 400 bad input", "second: 400 bad input"]);
    assert_eq!(store.overview().await.unwrap().dead_letters, 1);

    assert!(
        store
            .retry_dead_letter(job.id, t0() + secs(40))
            .await
            .unwrap()
    );
    assert!(
        !store
            .retry_dead_letter(job.id, t0() + secs(40))
            .await
            .unwrap(),
        "only a dead job can be retried"
    );
    assert!(store.dead_letters().await.unwrap().is_empty());
    let (again, _) = store
        .claim(&[JobKind::Start], "w", t0() + secs(40), t0() + secs(100))
        .await
        .unwrap()
        .expect("a retried dead letter is claimable");
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempts, 0);
    let events = store.events_for(id).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "dead_letter_retried"));
}

async fn concurrent_claims_never_hand_one_job_to_two_workers(store: SharedStore) {
    const JOBS: usize = 24;
    for _ in 0..JOBS {
        new_execution(&store).await;
    }
    let all = claim_in_parallel(&store, |store, owner| async move {
        store
            .claim(&[JobKind::Start], &owner, t0(), t0() + secs(60))
            .await
            .unwrap()
            .into_iter()
            .collect()
    })
    .await;
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(distinct.len(), JOBS);
}

/// Six workers claiming with `claim` (one batch per call) until it comes back empty, each
/// finishing every job it got under that job's lease; answers the ids claimed, by all of them.
async fn claim_in_parallel<F, Fut>(store: &SharedStore, claim: F) -> Vec<Uuid>
where
    F: Fn(SharedStore, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Vec<(mintgate::model::Job, Lease)>> + Send,
{
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let (store, claim) = (store.clone(), claim.clone());
        workers.spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let batch = claim(store.clone(), format!("w{worker}")).await;
                if batch.is_empty() {
                    return claimed;
                }
                for (job, lease) in batch {
                    claimed.push(job.id);
                    store
                        .finish_step(&lease, job.execution_id, StepOutcome::done(), t0())
                        .await
                        .unwrap();
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(claimed) = workers.join_next().await {
        all.extend(claimed.unwrap());
    }
    all
}

/// Workers claiming several jobs at a time, at once (on PostgreSQL each claim is a transaction of
/// its own on its own connection), never get the same job, and get each job's lease.
async fn batched_claims_never_hand_one_job_to_two_workers(store: SharedStore) {
    const JOBS: usize = 60;
    for _ in 0..JOBS {
        new_execution(&store).await;
    }
    let all = claim_in_parallel(&store, |store, owner| async move {
        let batch = store
            .claim_many(&[JobKind::Start], &owner, t0(), t0() + secs(60), 4)
            .await
            .unwrap();
        assert!(batch.len() <= 4, "{} jobs claimed at most 4", batch.len());
        for (job, lease) in &batch {
            assert_eq!(job.state, JobState::Running);
            // Each lease is the job's own: it finishes its job.
            assert_eq!(lease.token, job.lease_token);
        }
        batch
    })
    .await;
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(distinct.len(), JOBS);
    // A batched claim takes the most urgent first, as one claim does.
    let urgent = new_execution(&store).await;
    let background = new_execution(&store).await;
    store
        .enqueue(
            NewJob {
                execution_id: urgent,
                kind: JobKind::Check,
                run_at: t0(),
                priority: JobPriority::Webhook,
            },
            t0(),
        )
        .await
        .unwrap();
    store
        .enqueue(
            NewJob {
                execution_id: background,
                kind: JobKind::Check,
                run_at: t0() - secs(10),
                priority: JobPriority::Background,
            },
            t0(),
        )
        .await
        .unwrap();
    let batch = store
        .claim_many(&[JobKind::Check], "w", t0(), t0() + secs(60), 1)
        .await
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].0.execution_id, urgent);
}

fn webhook(body_sha256: &str, instance: &str, received_at: DateTime<Utc>) -> WebhookRecord {
    WebhookRecord {
        id: Uuid::now_v7(),
        received_at,
        instance_id: inst(instance),
        claimed_status: Some("Finished".to_owned()),
        authentic: true,
        body_sha256: body_sha256.to_owned(),
        execution_id: None,
    }
}

async fn webhooks_recorded_together_are_deduplicated_and_matched_one_by_one(store: SharedStore) {
    let running = new_execution(&store).await;
    let finished = new_execution(&store).await;
    run_starts(&store, |id| {
        if id == running {
            ExecutionPatch {
                instance_id: Some(inst("inst-running")),
                ..ExecutionPatch::state(ExecutionState::Running)
            }
        } else {
            ExecutionPatch {
                instance_id: Some(inst("inst-finished")),
                ..ExecutionPatch::state(ExecutionState::Finished)
            }
        }
    })
    .await;
    let at = t0() + secs(5);
    let check_at = t0() + secs(7);
    let outcomes = record_together(
        &store,
        vec![
            (webhook("sha-a", "inst-running", at), check_at),
            // The same body again in the same batch (Mint sent it twice at once).
            (webhook("sha-a", "inst-running", at), check_at),
            (webhook("sha-b", "inst-running", at), check_at + secs(1)),
            (webhook("sha-c", "inst-unknown", at), check_at),
            (webhook("sha-d", "inst-finished", at), check_at),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        [
            WebhookRecorded::Matched,
            WebhookRecorded::Duplicate,
            WebhookRecorded::Matched,
            WebhookRecorded::Unmatched,
            WebhookRecorded::Unmatched,
        ]
    );
    // A later batch with a body seen before.
    let outcomes = record_together(
        &store,
        vec![
            (webhook("sha-c", "inst-unknown", at), check_at),
            (webhook("sha-e", "inst-unknown", at), check_at),
        ],
    )
    .await;
    assert_eq!(
        outcomes,
        [WebhookRecorded::Duplicate, WebhookRecorded::Unmatched]
    );

    let recorded = store.webhooks_for(&inst("inst-running")).await.unwrap();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(recorded.iter().all(|w| w.execution_id == Some(running)));
    assert_eq!(
        store
            .webhooks_for(&inst("inst-unknown"))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(store.overview().await.unwrap().webhooks_recorded, 5);
    // Two matched webhooks bring one check forward, to the earliest time they asked for.
    let checks: Vec<_> = store
        .jobs_for(running)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == JobKind::Check)
        .collect();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0].run_at, check_at);
    assert_eq!(checks[0].priority, JobPriority::Webhook);
    assert_eq!(checks[0].state, JobState::Ready);
    // A webhook for an execution that is no longer running is recorded and noted, nothing more.
    assert!(
        store
            .jobs_for(finished)
            .await
            .unwrap()
            .iter()
            .all(|j| j.kind != JobKind::Check)
    );
    let events = store.events_for(finished).await.unwrap();
    let noted = events
        .iter()
        .find(|e| e.kind == "webhook")
        .expect("the webhook is in the execution's events");
    assert_eq!(noted.detail["ignored"], "not running");
    let events = store.events_for(running).await.unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "webhook").count(), 2);
}

/// A batch longer than one statement's run (the store writes it in runs of a power of two):
/// duplicates within a run, across runs and from an earlier batch are all found, the other
/// webhooks are recorded once each, and a webhook for our running execution placed in a later run
/// still brings its check forward.
async fn a_batch_of_many_webhooks_finds_duplicates_across_its_runs_and_earlier_batches(
    store: SharedStore,
) {
    let running = new_execution(&store).await;
    run_starts(&store, |_| ExecutionPatch {
        instance_id: Some(inst("inst-ours")),
        ..ExecutionPatch::state(ExecutionState::Running)
    })
    .await;
    let at = t0() + secs(5);
    let earlier = record_together(&store, vec![(webhook("sha-early", "inst-e", at), at)]).await;
    assert_eq!(earlier, [WebhookRecorded::Unmatched]);
    // 300 webhooks: runs of 256, 32, 8 and 4.
    let mut batch: Vec<(WebhookRecord, DateTime<Utc>)> = (0..296)
        .map(|n| {
            (
                webhook(&format!("sha-{n}"), &format!("inst-{}", n % 50), at),
                at,
            )
        })
        .collect();
    batch.insert(1, (webhook("sha-0", "inst-0", at), at)); // same run as its first
    batch.push((webhook("sha-3", "inst-3", at), at)); // a later run
    batch.push((webhook("sha-early", "inst-e", at), at)); // an earlier batch
    batch.push((webhook("sha-ours", "inst-ours", at), at));
    assert_eq!(batch.len(), 300);
    let outcomes = record_together(&store, batch).await;
    let duplicates: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| **o == WebhookRecorded::Duplicate)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(duplicates, [1, 297, 298]);
    assert_eq!(outcomes[299], WebhookRecorded::Matched);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == WebhookRecorded::Unmatched)
            .count(),
        296
    );
    assert_eq!(store.overview().await.unwrap().webhooks_recorded, 1 + 297);
    let inst_0 = store.webhooks_for(&inst("inst-0")).await.unwrap();
    assert_eq!(inst_0.len(), 6, "{inst_0:?}");
    assert_eq!(
        inst_0.iter().filter(|w| w.body_sha256 == "sha-0").count(),
        1
    );
    assert!(
        store
            .jobs_for(running)
            .await
            .unwrap()
            .iter()
            .any(|j| j.kind == JobKind::Check && j.priority == JobPriority::Webhook)
    );
}

/// Webhook records go after their retention, those naming no execution of ours sooner, in
/// batches of at most `limit`.
async fn webhooks_are_pruned_by_age_unmatched_sooner_in_batches(store: SharedStore) {
    let running = new_execution(&store).await;
    run_starts(&store, |_| ExecutionPatch {
        instance_id: Some(inst("inst-ours")),
        ..ExecutionPatch::state(ExecutionState::Running)
    })
    .await;
    let mut batch = vec![(webhook("sha-ours", "inst-ours", t0()), t0())];
    for n in 0..5 {
        batch.push((webhook(&format!("sha-u{n}"), "inst-unknown", t0()), t0()));
    }
    batch.push((webhook("sha-new", "inst-new", t0() + secs(3600)), t0()));
    record_together(&store, batch).await;
    let recorded = || async { store.overview().await.unwrap().webhooks_recorded };
    assert_eq!(recorded().await, 7);

    // Unmatched records received before the cut-off go, two at a time; ours and the newer stay.
    let unmatched_before = t0() + secs(60);
    let before = t0() - secs(1);
    assert_eq!(
        store
            .prune_webhooks(before, unmatched_before, 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .prune_webhooks(before, unmatched_before, 2)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .prune_webhooks(before, unmatched_before, 2)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .prune_webhooks(before, unmatched_before, 2)
            .await
            .unwrap(),
        0
    );
    assert_eq!(recorded().await, 2);
    assert_eq!(
        store.webhooks_for(&inst("inst-ours")).await.unwrap().len(),
        1
    );
    assert!(
        store
            .webhooks_for(&inst("inst-ours"))
            .await
            .unwrap()
            .iter()
            .all(|w| w.execution_id == Some(running))
    );

    // After the retention, every record received before the cut-off, ours included.
    let before = t0() + secs(60);
    assert_eq!(store.prune_webhooks(before, before, 100).await.unwrap(), 1);
    assert!(
        store
            .webhooks_for(&inst("inst-ours"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.webhooks_for(&inst("inst-new")).await.unwrap().len(),
        1
    );
}

async fn a_webhook_that_cannot_be_recorded_does_not_take_its_batch_down(store: SharedStore) {
    let at = t0() + secs(5);
    let good = webhook("sha-good", "inst-x", at);
    // The same record id as `good` with another body: the database refuses it.
    let bad = WebhookRecord {
        body_sha256: "sha-bad".to_owned(),
        ..good.clone()
    };
    let after = webhook("sha-after", "inst-x", at);
    let outcomes = store
        .write_batch(
            [good, bad, after]
                .into_iter()
                .map(|record| Write::Webhook {
                    record,
                    check_at: at,
                })
                .collect(),
        )
        .await;
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    let recorded = store.webhooks_for(&inst("inst-x")).await.unwrap();
    assert_eq!(
        recorded
            .iter()
            .map(|w| w.body_sha256.as_str())
            .collect::<Vec<_>>(),
        ["sha-good", "sha-after"],
        "the good webhooks of the failed batch, before and after the bad one, are durable"
    );
}

/// Records webhooks in one batch, as the group-commit writer does; each must be recorded.
async fn record_together(
    store: &SharedStore,
    batch: Vec<(WebhookRecord, DateTime<Utc>)>,
) -> Vec<WebhookRecorded> {
    store
        .write_batch(
            batch
                .into_iter()
                .map(|(record, check_at)| Write::Webhook { record, check_at })
                .collect(),
        )
        .await
        .into_iter()
        .map(|outcome| match outcome.unwrap() {
            Written::Webhook(recorded) => recorded,
            other => panic!("a webhook was answered {other:?}"),
        })
        .collect()
}

fn new_request(key: Option<&str>, input: serde_json::Value) -> NewExecution {
    NewExecution {
        id: Uuid::now_v7(),
        idempotency_key: key.map(str::to_owned),
        environment: "sandbox".to_owned(),
        flow_id: flow("flow-kyc-basic"),
        input,
        now: t0(),
        traceparent: None,
    }
}

/// Two requests with the same idempotency key in one batch create one execution: the second finds
/// the first (the same request) or is refused (another request), as if they had come apart.
async fn executions_created_together_honour_idempotency_keys_within_the_batch(store: SharedStore) {
    let first = new_request(Some("key-a"), serde_json::json!({"n": 1}));
    let again = new_request(Some("key-a"), serde_json::json!({"n": 1}));
    let other = new_request(Some("key-a"), serde_json::json!({"n": 2}));
    let plain = new_request(None, serde_json::json!({"n": 3}));
    let webhook_between = Write::Webhook {
        record: webhook("sha-between", "inst-none", t0()),
        check_at: t0(),
    };
    let outcomes: Vec<Written> = store
        .write_batch(vec![
            Write::Execution(first.clone()),
            webhook_between,
            Write::Execution(again),
            Write::Execution(other),
            Write::Execution(plain.clone()),
        ])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created = |written: &Written| match written {
        Written::Execution(created) => (**created).clone(),
        other => panic!("an execution was answered {other:?}"),
    };
    match created(&outcomes[0]) {
        Created::New(e) => assert_eq!(e.id, first.id),
        other => panic!("expected a new execution, got {other:?}"),
    }
    assert!(matches!(
        outcomes[1],
        Written::Webhook(WebhookRecorded::Unmatched)
    ));
    match created(&outcomes[2]) {
        Created::Existing(e) => assert_eq!(e.id, first.id),
        other => panic!("expected the first execution again, got {other:?}"),
    }
    match created(&outcomes[3]) {
        Created::KeyConflict(e) => assert_eq!(e.id, first.id),
        other => panic!("expected a key conflict, got {other:?}"),
    }
    match created(&outcomes[4]) {
        Created::New(e) => assert_eq!(e.id, plain.id),
        other => panic!("expected a new execution, got {other:?}"),
    }
    // Two executions, one start job each; nothing for the refused or repeated requests.
    let all = store
        .executions(store::ExecutionFilter {
            state: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
    for id in [first.id, plain.id] {
        let jobs = store.jobs_for(id).await.unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].kind, JobKind::Start);
    }
}

/// A batch's executions travel to the database as one JSON array (one statement text whatever
/// the batch's size): what is stored is exactly what was requested, awkward characters, absent
/// keys and trace contexts included, with one start job and one `requested` event each.
async fn a_batch_of_executions_is_stored_exactly_as_requested(store: SharedStore) {
    let awkward = serde_json::json!({
        "quote": "she said \"hi\"", "backslash": "C:\\dir\\", "unicode": "Zoë 🚀 \u{7}",
        "nested": {"list": [1, 2.5, null, true], "empty": {}}, "big": 9007199254740993_i64,
    });
    let first = NewExecution {
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ..new_request(Some("key with 'quotes' and \"more\""), awkward.clone())
    };
    let second = NewExecution {
        environment: "production".to_owned(),
        now: t0() + secs(1),
        ..new_request(None, serde_json::json!({}))
    };
    let outcomes = store
        .write_batch(vec![
            Write::Execution(first.clone()),
            Write::Execution(second.clone()),
        ])
        .await;
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Ok(Written::Execution(created)) if matches!(**created, Created::New(_))),
            "{outcome:?}"
        );
    }
    for new in [&first, &second] {
        let stored = store.execution(new.id).await.unwrap().unwrap();
        assert_eq!(stored.input, new.input);
        assert_eq!(stored.idempotency_key, new.idempotency_key);
        assert_eq!(stored.environment, new.environment);
        assert_eq!(stored.flow_id, new.flow_id);
        assert_eq!(stored.traceparent, new.traceparent);
        assert_eq!(stored.created_at, new.now);
        assert_eq!(stored.updated_at, new.now);
        assert_eq!(stored.state, ExecutionState::Queued);
        let jobs = store.jobs_for(new.id).await.unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0].kind, JobKind::Start);
        assert_eq!(jobs[0].state, JobState::Ready);
        assert_eq!(jobs[0].run_at, new.now);
        let events = store.events_for(new.id).await.unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, "requested");
        assert_eq!(events[0].at, new.now);
        assert_eq!(
            events[0].detail,
            serde_json::json!({"flowId": new.flow_id.as_str(), "environment": new.environment})
        );
    }
    // The same request again (by key) is the same execution, found by its stored fingerprint.
    let again = NewExecution {
        id: Uuid::now_v7(),
        ..first.clone()
    };
    match store.create_execution(again).await.unwrap() {
        Created::Existing(e) => assert_eq!(e.id, first.id),
        other => panic!("expected the first execution again, got {other:?}"),
    }
}

/// A new execution's answer is built from the request, not read back from the database: it is
/// exactly what a read of the stored row answers (times at the stored millisecond, the input as
/// stored, every other column's default), whether every request of the batch was new or some key
/// was taken (the batch then reads its keys).
async fn a_new_execution_is_answered_exactly_as_it_reads_back(store: SharedStore) {
    // A time between two milliseconds, and floats whose text is not their shortest form.
    let now = t0() + TimeDelta::nanoseconds(123_456_789);
    let request = |key: Option<&str>, input: serde_json::Value| NewExecution {
        now,
        traceparent: key
            .map(|_| "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ..new_request(key, input)
    };
    let input = |n: i64| {
        serde_json::json!({
            "n": n, "tenth": 0.1, "third": 1.0 / 3.0, "tiny": 1.0e-7, "big": 1.0e300,
            "text": "Zoë \"🚀\"", "nested": {"list": [1, 2.5, null, true]},
        })
    };
    let taken = request(Some("taken"), input(0));
    store.create_execution(taken.clone()).await.unwrap();
    let all_new = vec![
        request(Some("a"), input(1)),
        request(None, input(2)),
        request(Some("b"), serde_json::json!({})),
    ];
    // Some keys taken: `taken` again (the same request) and "c" twice in the batch.
    let some_taken = vec![
        request(Some("c"), input(3)),
        NewExecution {
            id: Uuid::now_v7(),
            ..taken.clone()
        },
        request(None, input(4)),
        NewExecution {
            id: Uuid::now_v7(),
            ..request(Some("c"), input(3))
        },
        request(Some("d"), input(5)),
    ];
    for batch in [all_new, some_taken] {
        let outcomes = store
            .write_batch(batch.iter().cloned().map(Write::Execution).collect())
            .await;
        assert_eq!(outcomes.len(), batch.len());
        let mut new = 0;
        for (outcome, request) in outcomes.into_iter().zip(&batch) {
            let Written::Execution(created) = outcome.unwrap() else {
                panic!("an execution was answered with a webhook");
            };
            match *created {
                Created::New(answered) => {
                    new += 1;
                    assert_eq!(answered.id, request.id);
                    let read = store.execution(request.id).await.unwrap().unwrap();
                    assert_eq!(format!("{answered:?}"), format!("{read:?}"));
                    assert_eq!(store.jobs_for(request.id).await.unwrap().len(), 1);
                    assert_eq!(store.events_for(request.id).await.unwrap().len(), 1);
                }
                Created::Existing(found) => {
                    assert_ne!(found.id, request.id);
                    assert!(store.execution(request.id).await.unwrap().is_none());
                    let read = store.execution(found.id).await.unwrap().unwrap();
                    assert_eq!(format!("{found:?}"), format!("{read:?}"));
                }
                Created::KeyConflict(other) => panic!("unexpected key conflict with {}", other.id),
            }
        }
        assert_eq!(new, batch.len() - if batch.len() == 3 { 0 } else { 2 });
    }
}

/// A request the database refuses (here: an id already taken) fails alone; the requests before
/// and after it in the batch are durable with their start jobs.
async fn an_execution_that_cannot_be_created_does_not_take_its_batch_down(store: SharedStore) {
    let before = new_request(Some("before"), serde_json::json!({"n": 1}));
    let clash = NewExecution {
        idempotency_key: Some("clash".to_owned()),
        ..before.clone()
    };
    let after = new_request(None, serde_json::json!({"n": 2}));
    let outcomes = store
        .write_batch(vec![
            Write::Execution(before.clone()),
            Write::Execution(clash),
            Write::Execution(after.clone()),
        ])
        .await;
    assert_eq!(outcomes.len(), 3);
    let is_new = |outcome: &anyhow::Result<Written>| matches!(outcome, Ok(Written::Execution(created)) if matches!(**created, Created::New(_)));
    assert!(is_new(&outcomes[0]), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_err(), "{:?}", outcomes[1]);
    assert!(is_new(&outcomes[2]), "{:?}", outcomes[2]);
    for id in [before.id, after.id] {
        assert!(store.execution(id).await.unwrap().is_some());
        let jobs = store.jobs_for(id).await.unwrap();
        assert_eq!(jobs.len(), 1, "{jobs:?}");
    }
    let all = store
        .executions(store::ExecutionFilter {
            state: None,
            limit: 100,
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "{all:?}");
}

/// The largest batch the group-commit writer hands over, webhooks and executions interleaved:
/// within the database's limits (bound parameters, the statement journal of a statement that
/// touches hundreds of pages), and every write answered in its place.
async fn a_full_batch_of_both_kinds_is_committed_and_answered_in_order(store: SharedStore) {
    let at = t0() + secs(5);
    let batch: Vec<Write> = (0..mintgate::ingest::BATCH_MAX)
        .map(|i| {
            if i % 2 == 0 {
                Write::Webhook {
                    record: webhook(&format!("sha-{i}"), &format!("inst-{i}"), at),
                    check_at: at,
                }
            } else {
                Write::Execution(new_request(
                    Some(&format!("key-{i}")),
                    serde_json::json!({"n": i, "padding": "x".repeat(200)}),
                ))
            }
        })
        .collect();
    let ids: Vec<Option<Uuid>> = batch
        .iter()
        .map(|write| match write {
            Write::Execution(new) => Some(new.id),
            Write::Webhook { .. } => None,
        })
        .collect();
    let outcomes = store.write_batch(batch).await;
    assert_eq!(outcomes.len(), mintgate::ingest::BATCH_MAX);
    for (outcome, id) in outcomes.iter().zip(&ids) {
        match (outcome, id) {
            (Ok(Written::Execution(created)), Some(id)) => {
                assert!(
                    matches!(&**created, Created::New(e) if e.id == *id),
                    "{created:?}"
                );
            }
            (Ok(Written::Webhook(recorded)), None) => {
                assert_eq!(*recorded, WebhookRecorded::Unmatched);
            }
            other => panic!("answered out of place: {other:?}"),
        }
    }
    let overview = store.overview().await.unwrap();
    assert_eq!(
        overview.webhooks_recorded,
        (mintgate::ingest::BATCH_MAX / 2) as i64
    );
    let executions = store
        .executions(store::ExecutionFilter {
            state: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(executions.len(), mintgate::ingest::BATCH_MAX / 2);
}

async fn unarchived_lists_finished_executions_soonest_deadline_first(store: SharedStore) {
    let later = new_execution(&store).await;
    let sooner = new_execution(&store).await;
    let unknown = new_execution(&store).await;
    let archived = new_execution(&store).await;
    let running = new_execution(&store).await;
    let day = secs(86_400);
    run_starts(&store, |id| {
        let (state, deadline, finished) = if id == later {
            (
                ExecutionState::Finished,
                Some(t0() + day * 3),
                t0() + secs(30),
            )
        } else if id == sooner {
            (
                ExecutionState::Downloading,
                Some(t0() + day),
                t0() + secs(20),
            )
        } else if id == unknown {
            (ExecutionState::Finished, None, t0() + secs(10))
        } else if id == archived {
            (ExecutionState::Archived, Some(t0()), t0())
        } else {
            (ExecutionState::Running, Some(t0()), t0())
        };
        ExecutionPatch {
            deadline_at: deadline,
            finished_at: (state != ExecutionState::Running).then_some(finished),
            ..ExecutionPatch::state(state)
        }
    })
    .await;
    let ids = |executions: Vec<mintgate::model::Execution>| -> Vec<Uuid> {
        executions.into_iter().map(|e| e.id).collect()
    };
    assert_eq!(
        ids(store.unarchived(10).await.unwrap()),
        [sooner, later, unknown],
        "finished or downloading, soonest deletion deadline first, unknown deadlines last"
    );
    assert_eq!(ids(store.unarchived(2).await.unwrap()), [sooner, later]);
    assert!(!ids(store.unarchived(10).await.unwrap()).contains(&running));
    assert_eq!(
        store
            .overview()
            .await
            .unwrap()
            .oldest_unarchived_finished_at,
        Some(t0() + secs(10))
    );
    // Counted, not listed: the at-risk gauge covers every one of them.
    assert_eq!(store.unarchived_due_by(t0() + day).await.unwrap(), 1);
    assert_eq!(store.unarchived_due_by(t0() + day * 3).await.unwrap(), 2);
    assert_eq!(store.unarchived_due_by(t0()).await.unwrap(), 0);
}

/// End users waiting are counted over all running executions (the status page and the gauge),
/// and listed earliest started first, without inputs.
async fn end_users_waiting_are_counted_and_listed_earliest_started_first(store: SharedStore) {
    let mut waiting = Vec::new();
    for _ in 0..5 {
        waiting.push(new_execution(&store).await);
    }
    let processing = new_execution(&store).await;
    let finished = new_execution(&store).await;
    let order = waiting.clone();
    run_starts(&store, |id| {
        let (state, progress) = if id == processing {
            (
                ExecutionState::Running,
                Progress::Processing {
                    step: Some("verify".to_owned()),
                },
            )
        } else if id == finished {
            (ExecutionState::Finished, Progress::Unknown)
        } else {
            (
                ExecutionState::Running,
                Progress::WaitingForUser {
                    step: Some("Upload the passport".to_owned()),
                    since: None,
                },
            )
        };
        // The later in `waiting`, the earlier started.
        let rank = order.iter().position(|w| *w == id).unwrap_or(0) as i64;
        ExecutionPatch {
            progress: Some(progress),
            started_at: Some(t0() - secs(rank * 60)),
            ..ExecutionPatch::state(state)
        }
    })
    .await;
    assert_eq!(store.overview().await.unwrap().waiting_for_user, 5);
    let listed = store.waiting_for_user(2).await.unwrap();
    assert_eq!(
        listed.iter().map(|e| e.id).collect::<Vec<_>>(),
        [waiting[4], waiting[3]],
        "earliest started first"
    );
    assert!(listed.iter().all(|e| e.input.is_null()), "no input read");
}

async fn the_ledger_is_written_with_billed_count_and_summed_by_day_and_flow(store: SharedStore) {
    // t0 is 2027-01-15T08:00:00Z.
    let day = secs(86_400);
    let mut executions = Vec::new();
    for (environment, flow_id, billed_at, starts) in [
        ("sandbox", "flow-a", t0(), 1),
        ("sandbox", "flow-a", t0() + secs(3600), 2),
        ("sandbox", "flow-b", t0(), 1),
        ("prod", "flow-a", t0(), 1),
        ("sandbox", "flow-a", t0() + day, 1),
        ("sandbox", "flow-a", t0() + day * 17, 1),
    ] {
        let created = store
            .create_execution(NewExecution {
                id: Uuid::now_v7(),
                idempotency_key: None,
                environment: environment.to_owned(),
                flow_id: flow(flow_id),
                input: serde_json::json!({}),
                now: t0(),
                traceparent: None,
            })
            .await
            .unwrap();
        let Created::New(execution) = created else {
            panic!("{created:?}")
        };
        // Its start job is the only one due: bill it `starts` times (a start whose answer was
        // lost may have been billed before the retry that found the instance).
        for start in 0..starts {
            let (job, lease) = store
                .claim(&[JobKind::Start], "w", billed_at, billed_at + secs(60))
                .await
                .unwrap()
                .expect("the start job is due");
            assert_eq!(job.execution_id, execution.id);
            let outcome = StepOutcome::done().with_patch(ExecutionPatch {
                billed_add: 1,
                billed_cents: 50,
                ..ExecutionPatch::state(ExecutionState::Running)
            });
            let outcome = if start + 1 < starts {
                outcome.with_job(JobDisposition::Retry {
                    run_at: billed_at,
                    error: None,
                    counts: false,
                    priority: None,
                })
            } else {
                outcome
            };
            store
                .finish_step(&lease, execution.id, outcome, billed_at)
                .await
                .unwrap();
        }
        executions.push((execution.id, starts));
    }
    // A worker whose lease was lost bills nothing: no ledger line, no count.
    let stale_id = new_execution(&store).await;
    let (_, stale) = store
        .claim(&[JobKind::Start], "a", t0(), t0() + secs(60))
        .await
        .unwrap()
        .unwrap();
    let (_, _current) = store
        .claim(&[JobKind::Start], "b", t0() + secs(61), t0() + secs(121))
        .await
        .unwrap()
        .unwrap();
    let billed = StepOutcome::done().with_patch(ExecutionPatch {
        billed_add: 1,
        billed_cents: 50,
        ..ExecutionPatch::default()
    });
    assert!(is_lease_lost(
        &store
            .finish_step(&stale, stale_id, billed, t0())
            .await
            .unwrap_err()
    ));

    for (id, starts) in &executions {
        let execution = store.execution(*id).await.unwrap().unwrap();
        assert_eq!(execution.billed_count, *starts);
    }
    assert_eq!(
        store
            .execution(stale_id)
            .await
            .unwrap()
            .unwrap()
            .billed_count,
        0
    );
    let row = |day: &str, environment: &str, flow_id: &str, executions: i64| SpendRow {
        day: day.to_owned(),
        environment: environment.to_owned(),
        flow_id: flow_id.to_owned(),
        executions,
        cents: executions * 50,
    };
    assert_eq!(
        store.spend("2027-01").await.unwrap(),
        [
            row("2027-01-15", "prod", "flow-a", 1),
            row("2027-01-15", "sandbox", "flow-a", 3),
            row("2027-01-15", "sandbox", "flow-b", 1),
            row("2027-01-16", "sandbox", "flow-a", 1),
        ]
    );
    assert_eq!(
        store.spend("2027-02").await.unwrap(),
        [row("2027-02-01", "sandbox", "flow-a", 1)]
    );
    assert!(store.spend("2026-12").await.unwrap().is_empty());
}

async fn settings_are_set_replaced_and_removed(store: SharedStore) {
    assert_eq!(store.setting("spend_cap_cents").await.unwrap(), None);
    store
        .set_setting("spend_cap_cents", Some("10000"), t0())
        .await
        .unwrap();
    store.set_setting("other", Some("x"), t0()).await.unwrap();
    assert_eq!(
        store.setting("spend_cap_cents").await.unwrap().as_deref(),
        Some("10000")
    );
    store
        .set_setting("spend_cap_cents", Some("25000"), t0() + secs(1))
        .await
        .unwrap();
    assert_eq!(
        store.setting("spend_cap_cents").await.unwrap().as_deref(),
        Some("25000")
    );
    store
        .set_setting("spend_cap_cents", None, t0() + secs(2))
        .await
        .unwrap();
    assert_eq!(store.setting("spend_cap_cents").await.unwrap(), None);
    // Removing what is not set is no error; other settings stay.
    store
        .set_setting("spend_cap_cents", None, t0() + secs(3))
        .await
        .unwrap();
    assert_eq!(store.setting("other").await.unwrap().as_deref(), Some("x"));
}

async fn ambiguous_starts_findings_and_decisions(store: SharedStore) {
    use mintgate::store::{AuditRecord, Decision, Finding, FindingOutcome};
    let (a, b, c) = (
        new_execution(&store).await,
        new_execution(&store).await,
        new_execution(&store).await,
    );
    // All three sent and ambiguous; a is held for a decision, b and c wait for reconciliation.
    run_starts(&store, |id| ExecutionPatch {
        state: Some(if id == a {
            ExecutionState::NeedsDecision
        } else {
            ExecutionState::Starting
        }),
        start_ambiguous: Some(true),
        start_sent_at: Some(t0() + secs(1)),
        decision_reason: (id == a).then(|| "the scan's cost bound was reached".to_owned()),
        ..ExecutionPatch::default()
    })
    .await;
    let held = store.execution(a).await.unwrap().unwrap();
    assert_eq!(held.state, ExecutionState::NeedsDecision);
    assert_eq!(
        held.decision_reason.as_deref(),
        Some("the scan's cost bound was reached")
    );
    assert_eq!(held.start_sent_at, Some(t0() + secs(1)));
    let mut wanted: Vec<Uuid> = store
        .ambiguous_starts("sandbox", &flow("flow-kyc-basic"))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    wanted.sort();
    let mut expected = vec![b, c];
    expected.sort();
    assert_eq!(wanted, expected, "the held one is not looked for");
    assert!(
        store
            .ambiguous_starts("production", &flow("flow-kyc-basic"))
            .await
            .unwrap()
            .is_empty()
    );

    // Findings are recorded, replaced, and read back.
    assert_eq!(store.finding(b).await.unwrap(), None);
    let finding = |id, outcome, instance: Option<&str>| Finding {
        execution_id: id,
        outcome,
        instance_id: instance.map(inst),
        scan_started_at: t0() + secs(40),
        detail: serde_json::json!({"pages": 3}),
    };
    store
        .record_findings(
            vec![finding(b, FindingOutcome::Undecided, None)],
            t0() + secs(50),
        )
        .await
        .unwrap();
    store
        .record_findings(
            vec![
                finding(b, FindingOutcome::Found, Some("inst-b")),
                finding(c, FindingOutcome::Absent, None),
            ],
            t0() + secs(60),
        )
        .await
        .unwrap();
    assert_eq!(
        store.finding(b).await.unwrap(),
        Some(finding(b, FindingOutcome::Found, Some("inst-b")))
    );
    assert_eq!(
        store.finding(c).await.unwrap().unwrap().outcome,
        FindingOutcome::Absent
    );

    // A decision applies once, only to an execution waiting for one, with event and audit.
    let audit = |what: &str| AuditRecord {
        at: t0() + secs(90),
        operator: "alice".to_owned(),
        action: "decide".to_owned(),
        target: a.to_string(),
        outcome: "done".to_owned(),
        detail: serde_json::json!({"decision": what}),
    };
    assert!(
        !store
            .decide(
                b,
                Decision::NotStarted,
                audit("not_started"),
                t0() + secs(90)
            )
            .await
            .unwrap(),
        "b does not wait for a decision"
    );
    let started = Decision::Started {
        instance_id: inst("inst-a"),
        mint_status: "Running".to_owned(),
        started_at: t0() + secs(2),
        workflow_url: None,
        cents: 50,
    };
    assert!(
        store
            .decide(a, started.clone(), audit("started"), t0() + secs(90))
            .await
            .unwrap()
    );
    assert!(
        !store
            .decide(a, started, audit("started"), t0() + secs(91))
            .await
            .unwrap(),
        "decided once"
    );
    let decided = store.execution(a).await.unwrap().unwrap();
    assert_eq!(decided.state, ExecutionState::Running);
    assert_eq!(decided.instance_id, Some(inst("inst-a")));
    assert_eq!(decided.decision_reason, None, "cleared with the state");
    assert!(!decided.start_ambiguous);
    assert!(decided.workflow_url_unknown);
    assert_eq!(decided.billed_count, 1);
    let month = (t0() + secs(90)).format("%Y-%m").to_string();
    assert_eq!(
        store
            .spend(&month)
            .await
            .unwrap()
            .iter()
            .map(|r| r.cents)
            .sum::<i64>(),
        50
    );
    let jobs = store.jobs_for(a).await.unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.kind == JobKind::Check && j.state == JobState::Ready)
    );
    let events = store.events_for(a).await.unwrap();
    assert_eq!(events.last().unwrap().kind, "decided");
    assert_eq!(store.audit_for(&a.to_string()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_wakes_the_workers_of_another_replica_when_work_is_enqueued() {
    let Some(server) = postgres_server("store::postgres_wakes_the_workers_of_another_replica")
    else {
        return;
    };
    let url = fresh_postgres_schema(&server).await;
    let here = PgStore::open_url(&url).await.unwrap();
    let there: SharedStore = Arc::new(PgStore::open_url(&url).await.unwrap());
    let wake = Arc::new(mintgate::store::Wake::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = here.listen(wake.clone(), shutdown.clone());
    // The listener subscribes asynchronously: enqueue until a notification arrives. A new
    // execution's notification rings the start workers (the bell of its job's kind).
    let woken = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notified = wake.notified(JobKind::Start);
            tokio::pin!(notified);
            notified.as_mut().enable();
            new_execution(&there).await;
            if tokio::time::timeout(Duration::from_millis(500), notified)
                .await
                .is_ok()
            {
                return;
            }
        }
    })
    .await;
    shutdown.cancel();
    listener.await.unwrap();
    assert!(
        woken.is_ok(),
        "no NOTIFY reached the other replica's listener"
    );
    drop_postgres_schema(&url).await;
}

// Opening modes and schema versions: only `serve` migrates; the operator commands open the
// database as it is, read-only where they only read.

/// The versions a database records in `_sqlx_migrations`, read behind the store's back.
async fn schema_versions(url: &str) -> Vec<i64> {
    const APPLIED: &str = "SELECT version FROM _sqlx_migrations ORDER BY version";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(APPLIED).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_scalar(APPLIED).fetch_all(&pool).await.unwrap()
    }
}

/// Runs this binary's migrations up to `version` only, as an older mintgate would have left the
/// database.
async fn migrate_to(url: &str, version: i64) {
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        <sqlx::Postgres as Dialect>::migrator()
            .run_to(version, &pool)
            .await
            .unwrap();
    } else {
        let options = SqliteConnectOptions::from_str(url)
            .unwrap()
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        <sqlx::Sqlite as Dialect>::migrator()
            .run_to(version, &pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

/// Records a migration this binary does not know, as a newer mintgate would have.
async fn record_future_migration(url: &str) {
    const FUTURE: &str =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'from the future', TRUE, $1, 0)";
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query(FUTURE)
            .bind(vec![0u8])
            .execute(&pool)
            .await
            .unwrap();
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query(FUTURE)
            .bind(vec![0u8])
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
}

fn latest_version() -> i64 {
    let sqlite = <sqlx::Sqlite as Dialect>::migrator()
        .iter()
        .map(|m| m.version)
        .max();
    let postgres = <sqlx::Postgres as Dialect>::migrator()
        .iter()
        .map(|m| m.version)
        .max();
    assert_eq!(
        sqlite, postgres,
        "both dialects are at the same schema version"
    );
    sqlite.unwrap()
}

fn mismatch(error: &anyhow::Error) -> &SchemaMismatch {
    error
        .downcast_ref::<SchemaMismatch>()
        .unwrap_or_else(|| panic!("not a schema mismatch: {error:#}"))
}

/// The opening contract on a database `url` that does not exist yet (SQLite) or is empty.
async fn only_serve_migrates_and_other_schemas_are_refused(url: &str) {
    // Nothing there yet: the operator commands create and migrate nothing.
    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        assert!(store::open(url, mode).await.is_err(), "{mode:?}");
    }

    // An older schema: refused by the operator commands, with both versions named, and untouched.
    migrate_to(url, 1).await;
    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        let error = store::open(url, mode)
            .await
            .err()
            .expect("an older schema is refused");
        match mismatch(&error) {
            SchemaMismatch::Older { database, binary } => {
                assert_eq!(database.number, 1);
                assert_eq!(binary.number, latest_version());
            }
            other => panic!("{other:?}"),
        }
        let text = format!("{error:#}");
        assert!(text.contains("version 1 ("), "{text}");
        assert!(
            text.contains(&format!("version {} (", latest_version())),
            "{text}"
        );
        assert!(text.contains("run `mintgate serve` once"), "{text}");
    }
    assert_eq!(schema_versions(url).await, [1], "nothing migrated it");

    // `serve` migrates; then the operator commands open it.
    let served = store::open(url, OpenMode::Migrate).await.unwrap();
    assert_eq!(schema_versions(url).await.last(), Some(&latest_version()));
    let id = new_execution(&served).await;
    let read_only = store::open(url, OpenMode::ReadOnly).await.unwrap();
    assert_eq!(read_only.execution(id).await.unwrap().unwrap().id, id);
    assert_eq!(read_only.jobs_for(id).await.unwrap().len(), 1);
    // A read-only store cannot write, whatever it is asked.
    assert!(read_only.set_setting("k", Some("v"), t0()).await.is_err());
    assert!(
        read_only
            .enqueue(check_job(id, t0(), JobPriority::Webhook), t0())
            .await
            .is_err()
    );
    assert_eq!(served.setting("k").await.unwrap(), None);
    assert_eq!(served.jobs_for(id).await.unwrap().len(), 1);
    let read_write = store::open(url, OpenMode::ReadWrite).await.unwrap();
    read_write.set_setting("k", Some("v"), t0()).await.unwrap();
    assert_eq!(served.setting("k").await.unwrap().as_deref(), Some("v"));

    // A newer schema: refused by everyone, `serve` included (its tables may have changed).
    record_future_migration(url).await;
    for mode in [OpenMode::Migrate, OpenMode::ReadWrite, OpenMode::ReadOnly] {
        let error = store::open(url, mode)
            .await
            .err()
            .expect("a newer schema is refused");
        match mismatch(&error) {
            SchemaMismatch::Newer { database, binary } => {
                assert_eq!(database.number, 9999);
                assert_eq!(binary.number, latest_version());
            }
            other => panic!("{other:?}"),
        }
        assert!(
            format!("{error:#}").contains("upgrade mintgate"),
            "{error:#}"
        );
    }
    // The numbers the binary carries (assigned per task, so not necessarily contiguous).
    let mut expected: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?.split('_').next()?.parse().ok()
            })
            .collect();
    expected.sort_unstable();
    assert_eq!(expected.last(), Some(&latest_version()));
    expected.push(9999);
    assert_eq!(schema_versions(url).await, expected);
}

#[tokio::test]
async fn sqlite_only_serve_migrates_and_other_schemas_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mintgate.db");
    let url = format!("sqlite://{}", path.display());
    only_serve_migrates_and_other_schemas_are_refused(&url).await;
}

#[tokio::test]
async fn postgres_only_serve_migrates_and_other_schemas_are_refused() {
    let Some(server) = postgres_server("store::postgres_only_serve_migrates") else {
        return;
    };
    let url = fresh_postgres_schema(&server).await;
    only_serve_migrates_and_other_schemas_are_refused(&url).await;
    drop_postgres_schema(&url).await;
}

#[tokio::test]
async fn sqlite_opening_read_only_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent").join("mintgate.db");
    let url = format!("sqlite://{}", path.display());
    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        let error = store::open(&url, mode)
            .await
            .err()
            .expect("no database there");
        assert!(
            format!("{error:#}").contains("there is no SQLite database"),
            "{error:#}"
        );
    }
    assert!(!dir.path().join("absent").exists());
}

#[tokio::test]
async fn an_empty_database_is_at_version_zero_and_stays_empty() {
    // SQLite: an empty file (e.g. touched by mistake).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    std::fs::write(&path, b"").unwrap();
    let url = format!("sqlite://{}", path.display());
    let error = store::open(&url, OpenMode::ReadOnly).await.err().unwrap();
    assert!(matches!(
        mismatch(&error),
        SchemaMismatch::Older { database, .. } if database.number == 0
    ));
    assert!(format!("{error:#}").contains("version 0 (no mintgate tables)"));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        0,
        "nothing was written"
    );

    // PostgreSQL: an empty schema.
    let Some(server) = postgres_server("store::an_empty_database_is_at_version_zero_on_postgres")
    else {
        return;
    };
    let url = fresh_postgres_schema(&server).await;
    for mode in [OpenMode::ReadOnly, OpenMode::ReadWrite] {
        let error = store::open(&url, mode).await.err().unwrap();
        assert!(matches!(
            mismatch(&error),
            SchemaMismatch::Older { database, .. } if database.number == 0
        ));
    }
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE schemaname = current_schema()",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(tables, 0, "nothing was created");
    pool.close().await;
    drop_postgres_schema(&url).await;
}

#[tokio::test]
async fn sqlite_read_only_reads_what_a_stopped_service_left() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("mintgate.db").display());
    let served = SqliteStore::open_url(&url).await.unwrap();
    let id = new_execution(&(Arc::new(served.clone()) as SharedStore)).await;
    // The service stops: its last connection checkpoints the WAL and removes it.
    served.pool().close().await;
    let read_only = store::open(&url, OpenMode::ReadOnly).await.unwrap();
    assert_eq!(read_only.execution(id).await.unwrap().unwrap().id, id);
    assert_eq!(read_only.jobs_for(id).await.unwrap().len(), 1);
    assert!(read_only.set_setting("k", Some("v"), t0()).await.is_err());
}

fn pause(kind: JobKind, role: &str, next_probe_at: DateTime<Utc>) -> WorkPause {
    WorkPause {
        environment: "sandbox".to_owned(),
        kind,
        role: role.to_owned(),
        operation: "result_file".to_owned(),
        detail: "403".to_owned(),
        since: t0(),
        probed_at: None,
        next_probe_at,
    }
}

async fn paused_work_is_skipped_by_claims_until_its_pause_is_lifted(store: SharedStore) {
    let id = new_execution(&store).await;
    store
        .pause_work(&pause(JobKind::Start, "Flow Editor", t0() + secs(300)))
        .await
        .unwrap();
    // Pausing again keeps the first `since` and the probe schedule.
    let mut again = pause(JobKind::Start, "Flow Editor", t0() + secs(900));
    again.since = t0() + secs(60);
    store.pause_work(&again).await.unwrap();
    let pauses = store.work_pauses().await.unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(pauses[0].since, t0());
    assert_eq!(pauses[0].next_probe_at, t0() + secs(300));
    assert!(
        store
            .claim(&[JobKind::Start], "w", t0() + secs(5), t0() + secs(60))
            .await
            .unwrap()
            .is_none(),
        "a paused start is not claimed"
    );
    assert_eq!(
        store.next_due(&[JobKind::Start]).await.unwrap(),
        None,
        "idle workers do not wake for paused work"
    );
    // A pause in another environment, or of another kind, holds nothing here.
    let mut elsewhere = pause(JobKind::Check, "Flow Viewer", t0());
    elsewhere.environment = "production".to_owned();
    store.pause_work(&elsewhere).await.unwrap();
    // One replica takes each due probe.
    assert!(
        !store
            .claim_role_probe("sandbox", "Flow Editor", t0() + secs(10), t0() + secs(310))
            .await
            .unwrap(),
        "not due yet"
    );
    assert!(
        store
            .claim_role_probe("sandbox", "Flow Editor", t0() + secs(300), t0() + secs(600))
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_role_probe("sandbox", "Flow Editor", t0() + secs(300), t0() + secs(600))
            .await
            .unwrap(),
        "another replica took it"
    );
    assert_eq!(
        store.lift_pauses("sandbox", "Flow Editor").await.unwrap(),
        1
    );
    let (job, _) = store
        .claim(&[JobKind::Start], "w", t0() + secs(5), t0() + secs(60))
        .await
        .unwrap()
        .expect("the start is claimed once its pause is lifted");
    assert_eq!(job.execution_id, id);
    let left = store.work_pauses().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].environment, "production");
}

async fn a_run_of_404s_is_counted_from_its_first_and_ended_by_an_answer(store: SharedStore) {
    let id = new_execution(&store).await;
    run_starts(&store, |_| ExecutionPatch::state(ExecutionState::Running)).await;
    store
        .enqueue(check_job(id, t0(), JobPriority::Background), t0())
        .await
        .unwrap();
    let step = |at: DateTime<Utc>, patch: ExecutionPatch| {
        let store = store.clone();
        async move {
            let (job, lease) = store
                .claim(&[JobKind::Check], "w", at, at + secs(60))
                .await
                .unwrap()
                .expect("a due check");
            let outcome = StepOutcome::done()
                .with_patch(patch)
                .with_job(JobDisposition::Retry {
                    run_at: at,
                    error: None,
                    counts: false,
                    priority: None,
                });
            store
                .finish_step(&lease, job.execution_id, outcome, at)
                .await
                .unwrap();
            store.execution(id).await.unwrap().unwrap()
        }
    };
    let seen = || ExecutionPatch {
        not_found: Some(NotFound::Seen),
        ..ExecutionPatch::default()
    };
    let execution = step(t0() + secs(10), seen()).await;
    assert_eq!(execution.not_found_since, Some(t0() + secs(10)));
    assert_eq!(execution.not_found_count, 1);
    let execution = step(t0() + secs(20), seen()).await;
    assert_eq!(
        execution.not_found_since,
        Some(t0() + secs(10)),
        "from the first"
    );
    assert_eq!(execution.not_found_count, 2);
    let execution = step(
        t0() + secs(30),
        ExecutionPatch {
            not_found: Some(NotFound::Answered),
            finished_seen_at: Some(t0() + secs(30)),
            ..ExecutionPatch::default()
        },
    )
    .await;
    assert_eq!(execution.not_found_since, None);
    assert_eq!(execution.not_found_count, 0);
    assert_eq!(execution.finished_seen_at, Some(t0() + secs(30)));
    let execution = step(t0() + secs(40), ExecutionPatch::default()).await;
    assert_eq!(execution.finished_seen_at, Some(t0() + secs(30)), "kept");
    assert_eq!(execution.not_found_count, 0);
}

/// The request's `traceparent` is stored with the execution and read back by every way of reading
/// one (its jobs' spans are its children); without one, none is made up.
async fn an_execution_keeps_the_trace_context_of_its_request(store: SharedStore) {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let traced = store
        .create_execution(NewExecution {
            id: Uuid::now_v7(),
            idempotency_key: Some("traced".to_owned()),
            environment: "sandbox".to_owned(),
            flow_id: flow("flow-kyc-basic"),
            input: serde_json::json!({}),
            now: t0(),
            traceparent: Some(TRACEPARENT.to_owned()),
        })
        .await
        .unwrap();
    let Created::New(traced) = traced else {
        panic!("{traced:?}")
    };
    assert_eq!(traced.traceparent.as_deref(), Some(TRACEPARENT));
    let plain = new_execution(&store).await;
    let read = store.execution(traced.id).await.unwrap().unwrap();
    assert_eq!(read.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(
        store.execution(plain).await.unwrap().unwrap().traceparent,
        None
    );
    let listed = store
        .executions_without_input(mintgate::store::ExecutionFilter::default())
        .await
        .unwrap();
    let found = listed.iter().find(|e| e.id == traced.id).unwrap();
    assert_eq!(found.traceparent.as_deref(), Some(TRACEPARENT));
    // The same request again (same key) answers the stored execution, trace context included.
    let again = store
        .create_execution(NewExecution {
            id: Uuid::now_v7(),
            idempotency_key: Some("traced".to_owned()),
            environment: "sandbox".to_owned(),
            flow_id: flow("flow-kyc-basic"),
            input: serde_json::json!({}),
            now: t0(),
            traceparent: None,
        })
        .await
        .unwrap();
    let Created::Existing(again) = again else {
        panic!("{again:?}")
    };
    assert_eq!(again.traceparent.as_deref(), Some(TRACEPARENT));
}

async fn events_are_pruned_oldest_first_never_past_a_pending_delivery_or_the_fan_out(
    store: SharedStore,
) {
    let crm = vec!["crm".to_owned()];
    let filter = EndpointFilter {
        name: "crm".to_owned(),
        types: Vec::new(),
    };
    store.register_endpoints(&crm).await.unwrap();
    for _ in 0..4 {
        new_execution(&store).await;
    }
    // Four `execution.started` events at t0 (seq 1 to 4 on a fresh store).
    run_starts(&store, |_| ExecutionPatch::state(ExecutionState::Running)).await;
    let seqs = |events: Vec<OutboxEvent>| events.iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = seqs(store.outbox_after(0, 100).await.unwrap());
    assert_eq!(all.len(), 4, "{all:?}");
    let later = t0() + secs(86_400);
    assert_eq!(store.events_pruned_through().await.unwrap(), 0);

    // Not older than `before`: nothing goes.
    assert_eq!(store.prune_events(t0(), &crm, 100).await.unwrap(), 0);
    // Not fanned out to `crm` yet: nothing goes.
    assert_eq!(store.prune_events(later, &crm, 100).await.unwrap(), 0);

    // The first two fanned out; one delivered, one a dead letter.
    assert_eq!(store.fan_out(&filter, t0(), 2).await.unwrap(), 2);
    finish_claimed(&store, &crm, |seq| {
        if seq == all[0] {
            DeliveryOutcome::Delivered { status: 200 }
        } else {
            DeliveryOutcome::Failed {
                status: Some(500),
                error: "answered 500".to_owned(),
                retry_at: None,
            }
        }
    })
    .await;
    // In batches: one, then the other; never past the fan-out.
    assert_eq!(store.prune_events(later, &crm, 1).await.unwrap(), 1);
    assert_eq!(store.events_pruned_through().await.unwrap(), all[0]);
    assert_eq!(store.prune_events(later, &crm, 100).await.unwrap(), 1);
    assert_eq!(store.events_pruned_through().await.unwrap(), all[1]);
    assert_eq!(store.prune_events(later, &crm, 100).await.unwrap(), 0);
    assert_eq!(seqs(store.outbox_after(0, 100).await.unwrap()), all[2..]);
    assert!(store.deliveries(None, 100).await.unwrap().is_empty());

    // The rest fanned out; the first delivered, the last still pending: only the first goes.
    assert_eq!(store.fan_out(&filter, t0(), 100).await.unwrap(), 2);
    finish_claimed(&store, &crm, |seq| {
        if seq == all[2] {
            DeliveryOutcome::Delivered { status: 204 }
        } else {
            DeliveryOutcome::Failed {
                status: None,
                error: "cannot connect".to_owned(),
                retry_at: Some(t0() + secs(300)),
            }
        }
    })
    .await;
    assert_eq!(store.prune_events(later, &crm, 100).await.unwrap(), 1);
    assert_eq!(store.events_pruned_through().await.unwrap(), all[2]);
    let left = store.deliveries(None, 100).await.unwrap();
    assert_eq!(
        left.iter()
            .map(|d| (d.seq, d.state.as_str()))
            .collect::<Vec<_>>(),
        [(all[3], "pending")]
    );

    // Once `crm` is no longer configured, its pending delivery holds nothing back.
    assert_eq!(store.prune_events(later, &[], 100).await.unwrap(), 1);
    assert_eq!(store.events_pruned_through().await.unwrap(), all[3]);
    assert!(store.outbox_after(0, 100).await.unwrap().is_empty());
    assert!(store.deliveries(None, 100).await.unwrap().is_empty());
}

/// Claims the due deliveries to `endpoints` (two expected) and records `outcome(seq)` for each.
async fn finish_claimed(
    store: &SharedStore,
    endpoints: &[String],
    outcome: impl Fn(i64) -> DeliveryOutcome,
) {
    let claimed = store
        .claim_deliveries(endpoints, "w", t0(), t0() + secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    for delivery in &claimed {
        let recorded = store
            .finish_delivery(delivery, "w", &outcome(delivery.seq), t0())
            .await
            .unwrap();
        assert!(recorded, "the lease was held");
    }
}
