//! Item 5: the weighted budget, 429 storms and a wrong limit that converges.
//!
//! The simulator's limits here are shrunk to 20 units per 2 s (burst 10 per second); the client's
//! budget is scaled the same way. Both run on one simulated time the test moves (see
//! [`shared_time`]), so what they admit does not depend on the machine's scheduling.

use std::sync::Arc;
use std::time::Duration;

use mint_client::{
    AdaptiveConfig, BudgetConfig, ListFlows, LocalBudget, ManualClock, MintClient, Priority,
};
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

/// Simulated time, shared: the simulator's clock is frozen and the client's budget runs on a
/// [`ManualClock`]; the test moves both (see [`run_calls`]) only while every task waits for the
/// budget. What the budget admits, what the simulator counts in its windows, how long pauses and
/// storms last: all of it is a function of this time, so the assertions hold whatever the
/// machine's scheduling (only the retry layer's short backoffs run in real time).
async fn shared_time(sim: &Simulator) -> Arc<ManualClock> {
    sim.admin().set_time_scale(0.0).await.unwrap();
    Arc::new(ManualClock::new())
}

/// How far time moves at each step.
const STEP: Duration = Duration::from_millis(50);

/// A client of the simulator's `demo` API client whose budget runs on `clock`. Its windows are a
/// [`STEP`] longer than `budget`'s: the budget's clock moves first and the simulator's follows,
/// so the simulator may see a request up to a step earlier than the budget admitted it, and a
/// unit must stay counted that much longer (what latency is for a real server, the lag is here).
fn client_on(sim: &Simulator, budget: BudgetConfig, clock: &Arc<ManualClock>) -> MintClient {
    let budget = BudgetConfig {
        window: budget.window + STEP,
        burst_window: budget.burst_window + STEP,
        ..budget
    };
    let config = helpers::config(sim, "demo").budget(budget.clone());
    let local = Arc::new(LocalBudget::with_clock(budget, clock.clone()));
    MintClient::with_shared(config, local, None).unwrap()
}

/// Runs `calls_per_task` calls on each of `tasks` tasks, moving time forward by [`STEP`] whenever
/// every unfinished task waits in the budget's queue (none has a request on its way or sleeps in
/// the retry layer): the budget's clock first, then the simulator's, which never runs ahead of
/// it nor lags by more than a step.
async fn run_calls(
    sim: &Simulator,
    client: &MintClient,
    clock: &ManualClock,
    tasks: usize,
    calls_per_task: usize,
) {
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let c = client.at(Priority::Background);
            tokio::spawn(async move {
                for _ in 0..calls_per_task {
                    c.list_flows(&ListFlows::default())
                        .await
                        .expect("every call succeeds");
                }
            })
        })
        .collect();
    loop {
        let unfinished = handles.iter().filter(|h| !h.is_finished()).count();
        if unfinished == 0 {
            break;
        }
        if client.budget().snapshot().await.waiting == unfinished {
            clock.advance(STEP);
            sim.admin().advance_clock(STEP).await.unwrap();
        }
        // Lets the tasks run (the condition above is what decides, not this pause).
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for h in handles {
        h.await.unwrap();
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
    let clock = shared_time(&sim).await;
    let client = client_on(&sim, right_budget(), &clock);
    client.fetch_token().await.unwrap();
    storm(&sim, None).await;
    run_calls(&sim, &client, &clock, 4, 3).await;
    let during = helpers::usage(&sim, "demo").await;
    // The first calls went out at once, inside the storm's simulated second.
    assert!(during.throttled > 0, "the storm was served");
    let snapshot = client.budget().snapshot().await;
    assert!(snapshot.throttled_total > 0);
    run_calls(&sim, &client, &clock, 4, 5).await;
    let after = helpers::usage(&sim, "demo").await;
    assert_eq!(
        after.throttled, during.throttled,
        "no 429 once the storm was over"
    );
    let requests = after.requests_by_endpoint["list_flows"];
    assert_eq!(requests - after.throttled, 32, "every call answered once");
    assert_eq!(after.units, 32, "units served: one a call");
}

#[tokio::test]
async fn a_429_storm_with_retry_after_is_waited_out_not_hammered() {
    let sim = helpers::sim_with(small_limits()).await;
    let clock = shared_time(&sim).await;
    let client = client_on(&sim, right_budget(), &clock);
    client.fetch_token().await.unwrap();
    let started = sim.admin().now().await.unwrap();
    storm(&sim, Some(1)).await;
    run_calls(&sim, &client, &clock, 4, 3).await;
    let waited = sim.admin().now().await.unwrap() - started;
    assert!(
        waited >= chrono::Duration::seconds(1),
        "Retry-After was honoured: {waited}"
    );
    let during = helpers::usage(&sim, "demo").await;
    // Each task met the storm at most twice: the first 429's pause (Retry-After, for everyone)
    // ends when the storm does (the simulator lags the budget by up to a step), the second's
    // after it.
    assert!(
        during.throttled >= 1 && during.throttled <= 8,
        "throttled {}",
        during.throttled
    );
    run_calls(&sim, &client, &clock, 4, 5).await;
    let after = helpers::usage(&sim, "demo").await;
    assert_eq!(
        after.throttled, during.throttled,
        "no 429 once the storm was over"
    );
    assert_eq!(after.units, 32, "units served: one a call");
}

#[tokio::test]
async fn a_limit_set_too_high_converges_below_the_server_limit() {
    let sim = helpers::sim_with(small_limits()).await;
    let clock = shared_time(&sim).await;
    // Three times the server's real limit: the client must learn it from 429s.
    let wrong = BudgetConfig {
        limit_units: 60,
        burst_units: 30,
        ..right_budget()
    };
    let client = client_on(&sim, wrong, &clock);
    client.fetch_token().await.unwrap();
    run_calls(&sim, &client, &clock, 6, 5).await;
    let learning = helpers::usage(&sim, "demo").await;
    assert!(learning.throttled > 0, "the wrong limit was hit");
    // What the client now admits in one server window (2 s = two burst windows).
    let s = client.budget().snapshot().await;
    let admitted = s.effective_limit_units.min(2 * s.burst_limit_units);
    assert!(
        admitted <= 20,
        "admits {admitted} per 2 s, over the server's 20: {s:?}"
    );
    run_calls(&sim, &client, &clock, 6, 5).await;
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
    assert_eq!(converged.units, 60, "units served: one a call");
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
