//! The poller's pace, counted by the simulator (the units it charged by endpoint, never the
//! service's own bookkeeping): an instance waiting for its end user is polled at a backing-off pace with its
//! activities read once; a webhook costs one `GET` and no activities; a lost webhook is caught
//! within `pipeline.poll_interval_max`.

use std::time::Duration;

use mint_sim::Faults;
use mintgate::model::ExecutionState;

use crate::helpers::{TestApp, spawn_app};

/// The simulator's count of rate units the service's API client spent on `endpoint` (a request
/// refused for an expired token costs none: the test's accelerated clock expires the client's
/// token sooner than the client's own clock says, and the client asks again).
async fn charged(app: &TestApp, endpoint: &str) -> u64 {
    let usage = app.admin.usage().await.unwrap();
    let units = usage
        .clients
        .get("demo")
        .and_then(|c| c.units_by_endpoint.get(endpoint).copied())
        .unwrap_or(0);
    // Five units a result file, one any other request.
    if endpoint == "result_file" {
        units / 5
    } else {
        units
    }
}

/// Lets `minutes` of simulated time pass a minute at a time, running the due jobs each minute.
async fn pass_minutes(app: &TestApp, minutes: u64) {
    for _ in 0..minutes {
        app.advance(Duration::from_secs(60)).await;
        app.run_until_idle().await;
    }
}

/// Starts one execution and lets its first poll find it waiting for its end user. Answers the
/// execution, its instance and the status and activities reads before that poll (the role
/// probes at start read an instance too).
async fn waiting_execution(app: &TestApp) -> (uuid::Uuid, String, (u64, u64)) {
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    let before = (
        charged(app, "get_instance").await,
        charged(app, "activities").await,
    );
    pass_minutes(app, app.config.pipeline.poll_grace.as_secs() / 60 + 1).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    assert!(
        matches!(
            view.progress,
            Some(mintgate::model::Progress::WaitingForUser { .. })
        ),
        "{view:?}"
    );
    (id, instance, before)
}

#[tokio::test]
async fn an_instance_waiting_for_its_end_user_is_polled_at_a_backing_off_pace_with_its_activities_read_once()
 {
    let app = spawn_app().await;
    let (_, _, (reads_before, activities_before)) = waiting_execution(&app).await;
    let reads = || async { charged(&app, "get_instance").await - reads_before };
    let activities = || async { charged(&app, "activities").await - activities_before };
    assert_eq!(reads().await, 1, "the first poll");
    assert_eq!(activities().await, 1, "the first poll");
    // Three hours of an end user who does not come back.
    pass_minutes(&app, 180).await;
    let reads = reads().await;
    let config = &app.config.pipeline;
    let ceiling_minutes = config.poll_interval_max.as_secs() / 60;
    // Never unpolled longer than `poll_interval_max` (30 min): at least one read per 30 minutes
    // after the first; and backing off from `user_poll_interval_min` (15 min) to it: no more than
    // 15, 30, 60 minutes then every 30 (jittered down by at most a quarter) allow. Polling every
    // 30 s would have read 360 times.
    assert!(
        reads > 180 / ceiling_minutes,
        "{reads} reads in 3 h: a waiting instance went unpolled longer than {ceiling_minutes} min"
    );
    assert!(reads <= 11, "{reads} reads in 3 h of waiting");
    // Mint's `updatedAt` did not change: the activities were not read again.
    assert_eq!(activities().await, 1);
}

#[tokio::test]
async fn a_webhook_costs_exactly_one_get_and_no_activities() {
    let app = spawn_app().await;
    let (id, instance, _) = waiting_execution(&app).await;
    pass_minutes(&app, 2).await;
    let (reads, activities) = (
        charged(&app, "get_instance").await,
        charged(&app, "activities").await,
    );
    app.complete_user_steps(&instance).await;
    // The flow's last step posted the webhook (the simulator finishes it once it was answered).
    app.advance(app.config.webhook.settle).await;
    app.run_until_idle().await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    assert_eq!(charged(&app, "get_instance").await, reads + 1);
    assert_eq!(charged(&app, "activities").await, activities);
    assert_eq!(charged(&app, "result_file").await, 1);
}

#[tokio::test]
async fn a_lost_webhook_is_caught_within_the_longest_poll_interval() {
    let app = spawn_app().await;
    let (id, instance, _) = waiting_execution(&app).await;
    // The end user takes an hour; the flow's webhook is lost.
    pass_minutes(&app, 60).await;
    app.set_faults(Faults {
        webhook_drop_rate: 1.0,
        ..Faults::default()
    })
    .await;
    app.complete_user_steps(&instance).await;
    let finished = app.admin.instance(&instance).await.unwrap();
    assert_eq!(finished.status, "Finished", "{finished:?}");
    assert_eq!(
        app.admin.usage().await.unwrap().webhooks.dropped,
        1,
        "the webhook was lost"
    );
    let ceiling_minutes = app.config.pipeline.poll_interval_max.as_secs() / 60;
    let mut waited = 0;
    while app.execution(id).await.state != ExecutionState::Archived {
        assert!(
            waited <= ceiling_minutes,
            "not archived {waited} min after it finished with its webhook lost"
        );
        pass_minutes(&app, 1).await;
        waited += 1;
    }
    assert_eq!(charged(&app, "result_file").await, 1);
}
