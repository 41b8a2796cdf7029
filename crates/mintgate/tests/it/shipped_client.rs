//! The service with mint-client's shipped settings: the adaptive budget on, retries, backoff and
//! pauses as by default. The other tests of the service shorten them (`tune_mint_for_tests`: the
//! pipeline runs on an advanced clock, the client's own waits in real time); these check that the
//! settings users actually run with come through Mint's faults, against the simulator's truth.

use std::time::Duration;

use mint_sim::Faults;
use mintgate::model::ExecutionState;

use crate::helpers::{Setup, TestApp, spawn_with};

async fn shipped() -> TestApp {
    spawn_with(Setup {
        shipped_client: true,
        ..Setup::default()
    })
    .await
}

/// Drives every execution to an end: runs the due jobs, plays the end users of running instances
/// and lets simulated time pass, at most `rounds` times.
async fn drive_to_the_end(app: &TestApp, ids: &[uuid::Uuid], rounds: usize) {
    for _ in 0..rounds {
        app.run_until_idle().await;
        let mut open = 0;
        for id in ids {
            let view = app.execution(*id).await;
            if matches!(
                view.state,
                ExecutionState::Archived | ExecutionState::Failed | ExecutionState::Expired
            ) {
                continue;
            }
            open += 1;
            if let Some(instance) = &view.instance_id {
                let instance = instance.to_string();
                if app.admin.instance(&instance).await.unwrap().status == "Running" {
                    app.complete_user_steps(&instance).await;
                }
            }
        }
        if open == 0 {
            return;
        }
        app.advance(Duration::from_secs(60)).await;
    }
}

#[tokio::test]
async fn with_the_shipped_client_settings_a_faulty_mint_bills_each_start_once_and_archives_every_result()
 {
    let app = shipped().await;
    app.set_faults(Faults {
        seed: Some(5),
        server_error_rate: 0.1,
        lost_start_rate: 0.4,
        cut_body_rate: 0.3,
        cut_body_at_fraction: 0.5,
        webhook_drop_rate: 0.3,
        webhook_duplicate_rate: 0.3,
        // A 429 storm at the start, with Retry-After: the adaptive budget must slow down and
        // honour it (the shipped pause after a 429), without using up the jobs' attempts.
        storm_for_secs: 1,
        storm_retry_after_secs: Some(1),
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(app.request("flow-kyc-basic").await);
    }
    drive_to_the_end(&app, &ids, 40).await;

    let usage = app.admin.usage().await.unwrap();
    let demo = &usage.clients["demo"];
    // The faults were met, not dodged: the storm, 5xx answers, lost start answers (found again
    // by walking the flow's instances) and cut downloads (downloaded again).
    assert!(demo.throttled > 0, "the storm was served: {demo:?}");
    assert!(
        demo.status_counts.range(500..600).any(|(_, n)| *n > 0),
        "5xx were served: {demo:?}"
    );
    assert!(
        demo.requests_by_endpoint
            .get("list_instances")
            .copied()
            .unwrap_or(0)
            > 0,
        "a lost start was reconciled: {demo:?}"
    );
    assert!(
        demo.downloads_billed > 4,
        "a cut download was retried: {demo:?}"
    );
    assert_eq!(
        demo.starts_billed, 4,
        "each execution billed once: {demo:?}"
    );
    let results = app.admin.results(false).await.unwrap();
    for id in &ids {
        let view = app.execution(*id).await;
        assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
        let archive = view
            .archive
            .expect("an archived execution shows its archive");
        let instance = view.instance_id.unwrap();
        let (sha256, bytes) = results
            .get(instance.as_str())
            .expect("the simulator holds the result");
        assert_eq!((&archive.sha256, archive.bytes as u64), (sha256, *bytes));
        let (on_disk, len) = mintgate::archive::hash_file(std::path::Path::new(&archive.path))
            .await
            .unwrap();
        assert_eq!((&on_disk, len), (sha256, *bytes));
    }
    // The storm taught the shipped adaptive budget Mint's pace: it recorded the 429s it met.
    let client = app.pipeline().clients.get("sandbox").unwrap();
    let snapshot = client.budget().snapshot().await;
    assert_eq!(
        snapshot.throttled_total, demo.throttled,
        "the client's adaptive budget saw each of Mint's 429s: {snapshot:?}"
    );
}

#[tokio::test]
async fn with_the_shipped_client_settings_a_429_storm_uses_no_attempt_and_no_429_follows_it() {
    let app = shipped().await;
    app.set_faults(Faults {
        seed: Some(2),
        storm_for_secs: 2,
        storm_retry_after_secs: Some(1),
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(app.request("flow-kyc-basic").await);
    }
    // Real time passes for the storm (Mint's and our clocks both run at 1x here) while the jobs
    // are retried: the shipped budget waits out each Retry-After before anything else is sent.
    let during = loop {
        app.run_until_idle().await;
        let usage = app.admin.usage().await.unwrap();
        if usage.clients["demo"].starts_billed == 5 {
            break usage.clients["demo"].throttled;
        }
        app.advance(Duration::from_secs(5)).await;
    };
    assert!(during > 0, "the storm was served");
    for id in &ids {
        let jobs = app.pipeline().store.jobs_for(*id).await.unwrap();
        assert!(
            jobs.iter().all(|j| j.attempts == 0),
            "a 429 used up an attempt: {jobs:?}"
        );
        assert_eq!(app.execution(*id).await.state, ExecutionState::Running);
    }
    // Once the storm is over, the whole lifecycle runs without a single 429.
    drive_to_the_end(&app, &ids, 40).await;
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"].throttled, during,
        "no 429 after the storm"
    );
    for id in &ids {
        assert_eq!(app.execution(*id).await.state, ExecutionState::Archived);
    }
}
