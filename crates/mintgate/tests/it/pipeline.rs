//! The pipeline end to end: start, follow, download, archive; and every way that goes wrong.

use std::collections::BTreeMap;
use std::time::Duration;

use mint_sim::Faults;
use mintgate::model::{ExecutionState, JobKind};

use crate::helpers::{Setup, TestApp, files_under, spawn_app, spawn_with};

/// Drives the user steps of every running execution to the end and lets the pipeline catch up,
/// moving time by `step` each round, until every execution is terminal or `rounds` run out.
async fn drive_to_the_end(app: &TestApp, ids: &[uuid::Uuid], step: Duration, rounds: usize) {
    for _ in 0..rounds {
        app.run_until_idle().await;
        let mut open = 0;
        for id in ids {
            let view = app.execution(*id).await;
            if view.state.is_terminal() {
                continue;
            }
            open += 1;
            if let Some(instance) = &view.instance_id {
                app.complete_user_steps(instance.as_str()).await;
            }
        }
        if open == 0 {
            return;
        }
        // `complete_user_steps` returned once each instance ended in the simulator, which ends
        // its webhook step only after the POST was answered: nothing is in flight here.
        app.advance(step).await;
    }
}

async fn assert_archived_with_the_simulators_hash(app: &TestApp, id: uuid::Uuid) {
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let archive = view
        .archive
        .expect("an archived execution shows its archive");
    let instance = view.instance_id.unwrap();
    let (expected, bytes) = app.admin.result_sha256(instance.as_str()).await.unwrap();
    assert_eq!(archive.sha256, expected);
    assert_eq!(archive.bytes as u64, bytes);
    let (on_disk, len) = mintgate::archive::hash_file(std::path::Path::new(&archive.path))
        .await
        .unwrap();
    assert_eq!((on_disk, len), (expected, bytes));
    assert!(archive.path.ends_with(&format!("{instance}.zip")));
    assert!(
        std::path::Path::new(&archive.path)
            .with_extension("json")
            .exists()
    );
}

#[tokio::test]
async fn an_execution_is_started_followed_by_webhook_and_archived_with_a_verified_hash() {
    let app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running);
    let instance = view.instance_id.clone().unwrap();
    assert!(view.workflow_url.is_some());

    app.complete_user_steps(instance.as_str()).await;
    app.advance(Duration::from_secs(30)).await;
    // The flow's last step posts the webhook: wait for it to be recorded.
    let store = app.pipeline().store.clone();
    app.eventually(Duration::from_secs(5), "the webhook is recorded", || {
        let store = store.clone();
        let instance = instance.clone();
        async move { !store.webhooks_for(&instance).await.unwrap().is_empty() }
    })
    .await;
    app.run_until_idle().await;
    assert_archived_with_the_simulators_hash(&app, id).await;

    let usage = app.admin.usage().await.unwrap();
    let demo = &usage.clients["demo"];
    assert_eq!(demo.starts_billed, 1);
    assert_eq!(demo.cents_owed, 50);
    assert_eq!(
        demo.requests_by_endpoint.get("result_file").copied(),
        Some(1)
    );
    // No poll was needed: the webhook brought the check forward (poll_grace has not passed).
    let checks = demo
        .requests_by_endpoint
        .get("get_instance")
        .copied()
        .unwrap_or(0);
    assert!(checks <= 2, "{checks} status calls");
    // Running again does nothing: an archived instance is never downloaded twice.
    app.advance(Duration::from_secs(3600)).await;
    app.run_until_idle().await;
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(1)
    );
}

#[tokio::test]
async fn lost_start_answers_are_reconciled_and_never_billed_twice() {
    let app = spawn_app().await;
    app.set_faults(Faults {
        seed: Some(5),
        lost_start_rate: 0.3,
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.request("flow-kyc-basic").await);
    }
    for _ in 0..20 {
        app.run_until_idle().await;
        let mut pending = 0;
        for id in &ids {
            if app.execution(*id).await.instance_id.is_none() {
                pending += 1;
            }
        }
        if pending == 0 {
            break;
        }
        app.advance(Duration::from_secs(31)).await;
    }
    let instances = app.admin.instances().await.unwrap();
    let mut per_execution: BTreeMap<String, u64> = BTreeMap::new();
    for instance in &instances {
        let id = instance.input["mintgateExecutionId"]
            .as_str()
            .unwrap()
            .to_owned();
        *per_execution.entry(id).or_default() += 1;
    }
    let usage = app.admin.usage().await.unwrap();
    let demo = &usage.clients["demo"];
    assert!(
        demo.status_counts.values().sum::<u64>() > 0,
        "the simulator answered nothing?"
    );
    assert_eq!(per_execution.len(), 20, "every execution started once");
    assert!(per_execution.values().all(|n| *n == 1), "{per_execution:?}");
    assert_eq!(demo.starts_billed, 20);
    for id in &ids {
        let view = app.execution(*id).await;
        assert_eq!(view.state, ExecutionState::Running, "{view:?}");
        let instance = view.instance_id.unwrap();
        assert_eq!(
            app.admin.instance(instance.as_str()).await.unwrap().input["mintgateExecutionId"],
            id.to_string()
        );
    }
    // At least one answer was really lost, or this test proved nothing.
    let reconciled = instances.len() as u64;
    assert!(
        demo.requests_by_endpoint
            .get("list_instances")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(reconciled, 20);
}

#[tokio::test]
async fn with_webhooks_dropped_every_finished_instance_is_archived_by_the_poller() {
    let app = spawn_app().await;
    app.set_faults(Faults {
        seed: Some(9),
        webhook_drop_rate: 0.3,
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            app.request(if i % 2 == 0 {
                "flow-kyc-basic"
            } else {
                "flow-kyc-video"
            })
            .await,
        );
    }
    drive_to_the_end(&app, &ids, Duration::from_secs(6 * 60), 40).await;
    for id in &ids {
        assert_archived_with_the_simulators_hash(&app, *id).await;
    }
    let usage = app.admin.usage().await.unwrap();
    assert!(
        usage.webhooks.dropped > 0,
        "no webhook was dropped: {:?}",
        usage.webhooks
    );
    assert_eq!(usage.clients["demo"].starts_billed, 10);
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(10)
    );
}

#[tokio::test]
async fn a_crash_mid_download_is_finished_after_the_lease_without_a_second_archive() {
    let mut app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.complete_user_steps(&instance).await;
    app.advance(Duration::from_secs(30)).await;
    app.set_faults(Faults {
        seed: Some(1),
        slow_body_rate: 1.0,
        slow_body_bytes_per_sec: 32 * 1024,
        ..Faults::default()
    })
    .await;
    // Poll it (webhooks may or may not have arrived) and start the download in the background.
    app.advance(Duration::from_secs(10 * 60)).await;
    while app.pipeline().run_once(&[JobKind::Check]).await.unwrap() {}
    assert_eq!(app.execution(id).await.state, ExecutionState::Finished);
    let pipeline = app.pipeline().clone();
    let download = tokio::spawn(async move { pipeline.run_once(&[JobKind::Download]).await });
    let admin = app.admin.clone();
    app.eventually(Duration::from_secs(5), "the download has begun", || {
        let admin = admin.clone();
        async move { admin.usage().await.unwrap().clients["demo"].bytes_served > 0 }
    })
    .await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Downloading);
    // The crash: the worker dies mid-stream, holding its lease.
    download.abort();
    let _ = download.await;
    app.crash_and_restart().await;
    app.set_faults(Faults::default()).await;
    // Before the lease lapses nobody takes the job over.
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Downloading);
    app.advance(Duration::from_secs(6 * 60)).await;
    app.run_until_idle().await;
    assert_archived_with_the_simulators_hash(&app, id).await;
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(2)
    );
    app.advance(Duration::from_secs(3600)).await;
    app.run_until_idle().await;
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(2)
    );
    let archived: Vec<_> = files_under(&app.archive_dir())
        .into_iter()
        .filter(|p| p.ends_with(".zip"))
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
}

#[tokio::test]
async fn a_429_storm_delays_starts_without_failing_them() {
    let app = spawn_app().await;
    app.set_faults(Faults {
        seed: Some(2),
        storm_rate: 1.0,
        storm_for_secs: 120,
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.request("flow-kyc-basic").await);
    }
    app.run_until_idle().await;
    for id in &ids {
        assert_eq!(app.execution(*id).await.state, ExecutionState::Queued);
        let jobs = app.pipeline().store.jobs_for(*id).await.unwrap();
        assert!(
            jobs.iter().all(|j| j.attempts == 0),
            "a 429 used up an attempt: {jobs:?}"
        );
    }
    assert!(app.admin.usage().await.unwrap().clients["demo"].throttled > 0);
    app.set_faults(Faults::default()).await;
    app.advance(Duration::from_secs(180)).await;
    app.run_until_idle().await;
    for id in &ids {
        assert_eq!(app.execution(*id).await.state, ExecutionState::Running);
    }
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"].starts_billed,
        5
    );
}

#[tokio::test]
async fn a_result_left_past_mints_deletion_is_reported_expired() {
    let app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.complete_user_steps(&instance).await;
    app.advance(Duration::from_secs(60)).await;
    let admin = app.admin.clone();
    app.eventually(
        Duration::from_secs(5),
        "the instance finishes in Mint",
        || {
            let admin = admin.clone();
            let instance = instance.clone();
            async move { admin.instance(&instance).await.unwrap().status == "Finished" }
        },
    )
    .await;
    // Nobody runs the pipeline for 31 days.
    app.advance(Duration::from_secs(31 * 24 * 3600)).await;
    app.run_until_idle().await;
    // We never saw it finish, so we have no deadline of our own: one 404 proves nothing yet...
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    // ...404s over `pipeline.expiry_404_span` (a day) do.
    let mut rounds = 0;
    while app.execution(id).await.state == ExecutionState::Running {
        rounds += 1;
        assert!(rounds <= 60, "never expired");
        app.advance(Duration::from_secs(31 * 60)).await;
        app.run_until_idle().await;
    }
    assert!(
        rounds >= 46,
        "expired after {rounds} half-hours, before the span"
    );
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Expired, "{view:?}");
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied()
            .unwrap_or(0),
        0
    );
}

#[tokio::test]
async fn abandoned_onboardings_fail_with_mints_generic_reason() {
    let app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    // The first step is automatic; then the end user is asked, and gives up.
    app.advance(Duration::from_secs(10)).await;
    app.admin
        .user_step(&instance, mint_sim::UserStepAction::Abandon)
        .await
        .unwrap();
    app.advance(app.config.pipeline.poll_grace + Duration::from_secs(60))
        .await;
    app.run_until_idle().await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Failed);
    assert!(
        view.failure_reason
            .unwrap()
            .contains("Workflow execution failed")
    );
}

#[tokio::test]
async fn a_running_instance_is_shown_waiting_for_its_end_user() {
    let app = spawn_app().await;
    let id = app.request("flow-kyc-video").await;
    app.run_until_idle().await;
    app.advance(app.config.pipeline.poll_grace + Duration::from_secs(60))
        .await;
    app.run_until_idle().await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running);
    assert!(
        view.summary
            .starts_with("waiting for the end user at step 'Identity document'"),
        "{}",
        view.summary
    );
}

#[tokio::test]
async fn background_workers_finish_the_job_on_their_own() {
    let app = spawn_with(Setup {
        background_workers: true,
        ..Setup::default()
    })
    .await;
    // With its workers running, the replica is ready.
    let ready = app
        .http
        .get(app.operator_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let id = app.request("flow-kyc-basic").await;
    app.eventually(
        Duration::from_secs(10),
        "the execution is running",
        || async { app.execution(id).await.instance_id.is_some() },
    )
    .await;
    let instance = app.instance_of(id).await;
    // Returns once the simulator has the instance finished (and its webhook answered).
    app.complete_user_steps(&instance).await;
    // The workers run on the service's clock: a check the webhook brought forward may be held
    // until poll_interval_min after the last one, so move time along while waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while app.execution(id).await.state != ExecutionState::Archived {
        assert!(
            std::time::Instant::now() < deadline,
            "not archived after 30 s: {:?}",
            app.execution(id).await
        );
        app.advance(Duration::from_secs(15)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_archived_with_the_simulators_hash(&app, id).await;
}
