//! The `Store` trait's contract, written once and run against SQLite and against PostgreSQL
//! (`MINTGATE_TEST_POSTGRES_URL`; each PostgreSQL test works in a schema of its own).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use mintgate::model::{ExecutionState, JobKind, JobPriority, JobState, Lease, WebhookRecord};
use mintgate::store::postgres::PgStore;
use mintgate::store::sqlite::SqliteStore;
use mintgate::store::{
    Created, ExecutionPatch, JobDisposition, LeaseLost, NewExecution, NewJob, SharedStore,
    StepOutcome, WebhookRecorded,
};
use uuid::Uuid;

use crate::helpers::{drop_postgres_schema, fresh_postgres_schema, postgres_server};

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
            flow_id: "flow-kyc-basic".to_owned(),
            input,
            now: t0(),
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
        instance_id: Some("inst-1".to_owned()),
        ..ExecutionPatch::state(ExecutionState::Running)
    })
    .await;
    let record = |body: &str, instance: &str| WebhookRecord {
        id: Uuid::now_v7(),
        received_at: t0() + secs(5),
        instance_id: instance.to_owned(),
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
    assert_eq!(store.webhooks_for("inst-1").await.unwrap().len(), 1);
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
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..6 {
        let store = store.clone();
        workers.spawn(async move {
            let mut claimed = Vec::new();
            while let Some((job, lease)) = store
                .claim(
                    &[JobKind::Start],
                    &format!("w{worker}"),
                    t0(),
                    t0() + secs(60),
                )
                .await
                .unwrap()
            {
                claimed.push(job.id);
                store
                    .finish_step(&lease, job.execution_id, StepOutcome::done(), t0())
                    .await
                    .unwrap();
            }
            claimed
        });
    }
    let mut all = Vec::new();
    while let Some(claimed) = workers.join_next().await {
        all.extend(claimed.unwrap());
    }
    let distinct: BTreeSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(distinct.len(), JOBS);
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
    let wake = Arc::new(tokio::sync::Notify::new());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = here.listen(wake.clone(), shutdown.clone());
    // The listener subscribes asynchronously: enqueue until a notification arrives.
    let woken = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let notified = wake.notified();
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
