//! Reconciliation of lost starts against Mints that differ from the contract's guesses: lists
//! without `input`, in another order or none; found, proven absent, or held for a decision. The
//! truth is the simulator's: starts billed per correlation id.

use std::time::Duration;

use mint_sim::admin::SeedInstances;
use mint_sim::{BehaviourOverrides, Faults, ListField, ListOrder};
use mintgate::config::PipelineConfig;
use mintgate::model::{ExecutionState, JobKind};

use crate::helpers::{Setup, TestApp, spawn_app, spawn_with};

const FLOW: &str = "flow-kyc-basic";

/// Requests an execution whose start reaches Mint, is billed, and whose answer is lost.
async fn lost_start(app: &TestApp) -> uuid::Uuid {
    app.set_faults(Faults {
        seed: Some(1),
        lost_start_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let id = app.request(FLOW).await;
    // Only the new start (a faster clock would bring the reconciliation due too).
    assert!(app.pipeline().run_once(&[JobKind::Start]).await.unwrap());
    app.set_faults(Faults::default()).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Starting, "{view:?}");
    assert!(view.instance_id.is_none());
    assert_eq!(starts_of(app, id).await, 1, "the lost start was billed");
    id
}

/// Requests an execution whose start is answered `5xx` before Mint commits it: ambiguous for the
/// service, but nothing was started.
async fn refused_start(app: &TestApp) -> uuid::Uuid {
    app.set_faults(Faults {
        seed: Some(2),
        server_error_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let id = app.request(FLOW).await;
    assert!(app.pipeline().run_once(&[JobKind::Start]).await.unwrap());
    app.set_faults(Faults::default()).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Starting, "{view:?}");
    assert_eq!(starts_of(app, id).await, 0);
    id
}

/// Starts billed for an execution's correlation id: the simulator's truth.
async fn starts_of(app: &TestApp, id: uuid::Uuid) -> u64 {
    app.admin
        .starts_per_correlation_id()
        .await
        .unwrap()
        .get(&id.to_string())
        .copied()
        .unwrap_or(0)
}

async fn list_behaviours(app: &TestApp, order: ListOrder) {
    app.admin
        .set_flow_behaviours(
            FLOW,
            BehaviourOverrides {
                list_omits: Some(vec![ListField::Input]),
                list_order: Some(order),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
}

/// Seeds `count` finished instances of the flow created a week ago, one a second, with inputs
/// naming other executions.
async fn seed_old(app: &TestApp, count: u64) {
    let week_ago = app.admin.now().await.unwrap() - chrono::TimeDelta::days(7);
    app.admin
        .seed_instances(
            FLOW,
            &SeedInstances {
                count,
                status: Some("Finished".to_owned()),
                created_at: Some(week_ago),
                interval_millis: 1000,
                duration_secs: 60,
                input: Some(serde_json::json!({"mintgateExecutionId": "someone-else-{{n}}"})),
                omit_ids: true,
                ..SeedInstances::default()
            },
        )
        .await
        .unwrap();
}

/// Rate units the simulator charged, by endpoint (a page or a read is one unit; a request
/// refused before admission, such as a 401 for a token that just expired, is none).
async fn requests(app: &TestApp, endpoint: &str) -> u64 {
    app.admin.usage().await.unwrap().clients["demo"]
        .units_by_endpoint
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

/// Lets the reconciliation delay pass and runs the start jobs.
async fn reconcile(app: &TestApp) {
    app.advance(Duration::from_secs(31)).await;
    while app.pipeline().run_once(&[JobKind::Start]).await.unwrap() {}
}

#[tokio::test]
async fn a_lost_start_is_found_when_the_list_omits_input_and_bills_once() {
    let app = spawn_app().await;
    list_behaviours(&app, ListOrder::NewestFirst).await;
    let id = lost_start(&app).await;
    let reads_before = requests(&app, "get_instance").await;
    reconcile(&app).await;

    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    let instance = view.instance_id.clone().unwrap();
    assert_eq!(
        app.admin.instance(instance.as_str()).await.unwrap().input["mintgateExecutionId"],
        id.to_string()
    );
    assert_eq!(starts_of(&app, id).await, 1, "billed once");
    // The list lacked input: the candidate was read.
    assert!(requests(&app, "get_instance").await > reads_before);
    // Mint gives the link only in the start answer, which was lost: the view says it is unknown
    // instead of leaving it silently empty.
    assert!(view.workflow_url.is_none());
    assert!(view.workflow_url_unknown, "{view:?}");
    assert!(view.summary.contains("link is unknown"), "{}", view.summary);
    // And the execution is followed to its end as any other.
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    assert_eq!(starts_of(&app, id).await, 1);
}

#[tokio::test]
async fn a_lost_start_is_found_in_an_oldest_first_list_reading_only_the_candidates_in_its_window() {
    let app = spawn_app().await;
    seed_old(&app, 250).await;
    list_behaviours(&app, ListOrder::OldestFirst).await;
    let id = lost_start(&app).await;
    let (pages_before, reads_before) = (
        requests(&app, "list_instances").await,
        requests(&app, "get_instance").await,
    );
    reconcile(&app).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    assert_eq!(starts_of(&app, id).await, 1);
    // 251 instances: three pages, newest last; the week-old ones are outside the window and are
    // never read, ours is the only candidate.
    assert_eq!(requests(&app, "list_instances").await - pages_before, 3);
    assert_eq!(requests(&app, "get_instance").await - reads_before, 1);
}

#[tokio::test]
async fn a_lost_start_is_found_in_a_shuffled_list() {
    let app = spawn_app().await;
    seed_old(&app, 60).await;
    list_behaviours(&app, ListOrder::Shuffled).await;
    let id = lost_start(&app).await;
    reconcile(&app).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    assert_eq!(starts_of(&app, id).await, 1);
}

#[tokio::test]
async fn a_start_proven_absent_is_started_again_once() {
    let app = spawn_app().await;
    seed_old(&app, 120).await;
    list_behaviours(&app, ListOrder::OldestFirst).await;
    let id = refused_start(&app).await;
    reconcile(&app).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    assert_eq!(starts_of(&app, id).await, 1);
    // A fresh start answer: its link is known.
    assert!(view.workflow_url.is_some());
    assert!(!view.workflow_url_unknown);
    let kinds: Vec<String> = app
        .pipeline()
        .store
        .events_for(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.iter().any(|k| k == "reconciled_absent"),
        "the proof is recorded: {kinds:?}"
    );
}

#[tokio::test]
async fn one_scan_serves_every_lost_start_of_the_flow() {
    let app = spawn_app().await;
    seed_old(&app, 150).await;
    list_behaviours(&app, ListOrder::UpdatedAtOldestFirst).await;
    let lost = [lost_start(&app).await, lost_start(&app).await];
    let refused = refused_start(&app).await;
    let pages_before = requests(&app, "list_instances").await;
    reconcile(&app).await;
    for id in lost.iter().chain([&refused]) {
        let view = app.execution(*id).await;
        assert_eq!(view.state, ExecutionState::Running, "{view:?}");
        assert_eq!(starts_of(&app, *id).await, 1, "{id}");
    }
    // 153 instances: two pages, walked once for the three executions.
    assert_eq!(requests(&app, "list_instances").await - pages_before, 2);
}

#[tokio::test]
async fn a_list_that_pages_inconsistently_holds_the_execution_for_a_decision() {
    let app = spawn_app().await;
    // 250 instances in a fresh order per page: the walk cannot be complete.
    seed_old(&app, 250).await;
    list_behaviours(&app, ListOrder::Shuffled).await;
    let id = refused_start(&app).await;
    reconcile(&app).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::NeedsDecision, "{view:?}");
    assert_eq!(starts_of(&app, id).await, 0, "never started on a guess");
    let reason = view.decision_reason.clone().unwrap();
    assert!(reason.contains("distinct"), "{reason}");
    assert!(
        view.summary.contains("operator's decision"),
        "{}",
        view.summary
    );
    // Held: nothing runs it again.
    app.advance(Duration::from_secs(3600)).await;
    app.run_until_idle().await;
    assert_eq!(starts_of(&app, id).await, 0);
    assert_eq!(app.execution(id).await.state, ExecutionState::NeedsDecision);
    // The gauge an alert watches.
    let metrics = app
        .http
        .get(app.operator_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "mintgate_executions_needing_decision 1"),
        "{metrics}"
    );
}

/// 100,000 instances with Mint's slow listing (100 µs per instance and page: 10 simulated
/// seconds a page), simulator and service at 1000 times real speed. A lost start at the head of a
/// newest-first list is found after one page and one read; one at the tail of an oldest-first list
/// is held for a decision once the scan's cost bound (here 30 units) is reached: bounded units,
/// bounded simulated time, no second start.
#[tokio::test]
async fn reconciliation_at_100000_instances_with_the_slow_listing_is_bounded() {
    let mut setup = Setup {
        pipeline: PipelineConfig {
            idle_wait: Duration::from_millis(50),
            // 1 simulated hour is 3.6 real seconds here: a loaded machine cannot lose the lease.
            lease: Duration::from_secs(3600),
            reconcile_max_units: 30,
            ..PipelineConfig::default()
        },
        time_scale: 1000.0,
        ..Setup::default()
    };
    setup.sim.service.list_delay_micros_per_instance = 100;
    let app = spawn_with(setup).await;
    seed_old(&app, 100_000).await;
    list_behaviours(&app, ListOrder::NewestFirst).await;

    let latency = |app: &TestApp| {
        let admin = app.admin.clone();
        async move { admin.usage().await.unwrap().clients["demo"].list_latency_micros }
    };
    let found = lost_start(&app).await;
    let (pages, reads, listed) = (
        requests(&app, "list_instances").await,
        requests(&app, "get_instance").await,
        latency(&app).await,
    );
    reconcile(&app).await;
    let view = app.execution(found).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    assert_eq!(starts_of(&app, found).await, 1);
    assert_eq!(requests(&app, "list_instances").await - pages, 1);
    assert_eq!(requests(&app, "get_instance").await - reads, 1);
    assert!(latency(&app).await - listed <= 10_100_000);

    list_behaviours(&app, ListOrder::OldestFirst).await;
    let held = lost_start(&app).await;
    let (pages, listed) = (requests(&app, "list_instances").await, latency(&app).await);
    reconcile(&app).await;
    let view = app.execution(held).await;
    assert_eq!(view.state, ExecutionState::NeedsDecision, "{view:?}");
    assert!(
        view.decision_reason
            .as_deref()
            .unwrap()
            .contains("cost bound"),
        "{view:?}"
    );
    assert_eq!(
        starts_of(&app, held).await,
        1,
        "never started again on a guess"
    );
    let walked = requests(&app, "list_instances").await - pages;
    assert!((1..=30).contains(&walked), "{walked} pages");
    // Each page is 10 simulated seconds of listing: bounded by the units.
    let simulated = latency(&app).await - listed;
    assert!(simulated <= 30 * 10_100_000, "{simulated} µs");
}

/// The scan's time bound holds too: 10,000 instances at 1 simulated second a page, one page at a
/// time, against a bound of 20 simulated seconds: held for a decision after about 20 pages.
#[tokio::test]
async fn the_scans_time_bound_holds_the_execution_for_a_decision() {
    let mut setup = Setup {
        pipeline: PipelineConfig {
            idle_wait: Duration::from_millis(50),
            lease: Duration::from_secs(3600),
            reconcile_max_duration: Duration::from_secs(20),
            reconcile_concurrency: 1,
            ..PipelineConfig::default()
        },
        time_scale: 1000.0,
        ..Setup::default()
    };
    setup.sim.service.list_delay_micros_per_instance = 100;
    let app = spawn_with(setup).await;
    seed_old(&app, 10_000).await;
    list_behaviours(&app, ListOrder::OldestFirst).await;
    let id = refused_start(&app).await;
    let pages = requests(&app, "list_instances").await;
    reconcile(&app).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::NeedsDecision, "{view:?}");
    assert!(
        view.decision_reason
            .as_deref()
            .unwrap()
            .contains("time bound"),
        "{view:?}"
    );
    assert_eq!(starts_of(&app, id).await, 0, "never started on a guess");
    let walked = requests(&app, "list_instances").await - pages;
    assert!((1..101).contains(&walked), "{walked} pages of 101");
}
