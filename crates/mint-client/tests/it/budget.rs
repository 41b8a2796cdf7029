//! Item 5: the weighted budget, 429 storms and a wrong limit that converges.
//!
//! The simulator's limits here are shrunk to 20 units per 2 s (burst 10 per second) so a test takes
//! seconds; the client's budget is scaled the same way.

use std::time::Duration;

use mint_client::{AdaptiveConfig, BudgetConfig, ListFlows, MintClient, Priority};
use mint_sim::{Faults, Limits, SimConfig, Simulator};

use crate::helpers;

fn small_limits() -> SimConfig {
    SimConfig {
        limits: Limits {
            window_secs: 2,
            window_units: 20,
            burst_window_millis: 1000,
            burst_units: 10,
            ..Limits::default()
        },
        ..SimConfig::default()
    }
}

fn adaptive_for_tests() -> AdaptiveConfig {
    AdaptiveConfig {
        default_pause: Duration::from_millis(300),
        recovery_interval: Duration::from_millis(250),
        recovery_step_fraction: 0.1,
        ceiling_memory: Duration::from_secs(30),
        ..AdaptiveConfig::default()
    }
}

/// The client's budget for `small_limits`, with 10 % headroom as by default.
fn right_budget() -> BudgetConfig {
    BudgetConfig {
        limit_units: 18,
        window: Duration::from_secs(2),
        burst_units: 9,
        burst_window: Duration::from_secs(1),
        adaptive: adaptive_for_tests(),
        ..BudgetConfig::default()
    }
}

async fn run_calls(client: &MintClient, tasks: usize, calls_per_task: usize) {
    let handles = (0..tasks).map(|_| {
        let c = client.at(Priority::Background);
        tokio::spawn(async move {
            for _ in 0..calls_per_task {
                c.list_flows(&ListFlows::default())
                    .await
                    .expect("every call succeeds");
            }
        })
    });
    for h in futures::future::join_all(handles).await {
        h.unwrap();
    }
}

async fn storm(sim: &Simulator, retry_after_secs: Option<u64>) {
    sim.admin()
        .set_faults(Faults {
            storm_for_secs: 1,
            storm_retry_after_secs: retry_after_secs,
            ..Faults::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_429_storm_without_retry_after_is_ridden_out_and_the_client_stays_under_budget_afterwards()
 {
    let sim = helpers::sim_with(small_limits()).await;
    let client = MintClient::new(helpers::config(&sim, "demo").budget(right_budget())).unwrap();
    client.fetch_token().await.unwrap();
    storm(&sim, None).await;
    run_calls(&client, 4, 3).await;
    let during = helpers::usage(&sim, "demo").await;
    assert!(during.throttled > 0, "the storm was served");
    let snapshot = client.budget().snapshot().await;
    assert!(snapshot.throttled_total > 0);
    run_calls(&client, 4, 5).await;
    let after = helpers::usage(&sim, "demo").await;
    assert_eq!(
        after.throttled, during.throttled,
        "no 429 once the storm was over"
    );
    let requests = after.requests_by_endpoint["list_flows"];
    assert_eq!(requests - after.throttled, 32, "every call answered once");
}

#[tokio::test]
async fn a_429_storm_with_retry_after_is_waited_out_not_hammered() {
    let sim = helpers::sim_with(small_limits()).await;
    let client = MintClient::new(helpers::config(&sim, "demo").budget(right_budget())).unwrap();
    client.fetch_token().await.unwrap();
    let started = tokio::time::Instant::now();
    storm(&sim, Some(1)).await;
    run_calls(&client, 4, 3).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let during = helpers::usage(&sim, "demo").await;
    // Each of the 4 tasks met the storm at most once or twice before waiting the whole second.
    assert!(
        during.throttled >= 1 && during.throttled <= 8,
        "throttled {}",
        during.throttled
    );
    run_calls(&client, 4, 5).await;
    let after = helpers::usage(&sim, "demo").await;
    assert_eq!(
        after.throttled, during.throttled,
        "no 429 once the storm was over"
    );
}

#[tokio::test]
async fn a_limit_set_too_high_converges_below_the_server_limit() {
    let sim = helpers::sim_with(small_limits()).await;
    // Three times the server's real limit: the client must learn it from 429s.
    let wrong = BudgetConfig {
        limit_units: 60,
        burst_units: 30,
        ..right_budget()
    };
    let client = MintClient::new(helpers::config(&sim, "demo").budget(wrong)).unwrap();
    client.fetch_token().await.unwrap();
    run_calls(&client, 6, 5).await;
    let learning = helpers::usage(&sim, "demo").await;
    assert!(learning.throttled > 0, "the wrong limit was hit");
    // What the client now admits in one server window (2 s = two burst windows).
    let s = client.budget().snapshot().await;
    let admitted = s.effective_limit_units.min(2 * s.burst_limit_units);
    assert!(
        admitted <= 20,
        "admits {admitted} per 2 s, over the server's 20: {s:?}"
    );
    run_calls(&client, 6, 5).await;
    let converged = helpers::usage(&sim, "demo").await;
    assert_eq!(
        converged.throttled, learning.throttled,
        "no 429 after converging"
    );
    let requests = converged.requests_by_endpoint["list_flows"];
    assert_eq!(
        requests - converged.throttled,
        60,
        "every call answered once"
    );
}

#[tokio::test]
async fn the_budget_is_spent_in_weighted_units_as_the_server_counts_them() {
    let sim = helpers::sim_with(helpers::unlimited()).await;
    let client = helpers::client(&sim, "demo");
    let id = helpers::finished_instance(&sim, &client, helpers::BASIC_FLOW).await;
    let mut sink = Vec::new();
    client
        .download_result(&id, &mut sink, &mint_client::DownloadOptions::default())
        .await
        .unwrap();
    let usage = helpers::usage(&sim, "demo").await;
    let snapshot = client.budget().snapshot().await;
    assert_eq!(usage.units_by_endpoint["result_file"], 5);
    assert_eq!(
        u64::from(snapshot.used_units),
        usage.units,
        "client and server agree on units"
    );
    assert_eq!(
        snapshot.remaining_units,
        snapshot.effective_limit_units - snapshot.used_units
    );
}
