//! Behaviour 6: rate limits (weighted sliding window plus burst) and money.

use mint_sim::{Limits, SimConfig};

use crate::helpers::{TestSim, spawn_sim, spawn_sim_with};

async fn statuses(t: &TestSim, token: &str, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        let response = t.get(token, path).await;
        assert!(
            response.headers().get("retry-after").is_none(),
            "no Retry-After by default"
        );
        out.push(response.status().as_u16());
    }
    out
}

#[tokio::test]
async fn the_burst_rule_admits_20_units_in_any_second_and_a_429_costs_nothing() {
    let t = spawn_sim().await;
    let token = t.token("viewer").await;
    let got = statuses(&t, &token, "/api/flows", 23).await;
    assert_eq!(got[..20], [200; 20]);
    assert_eq!(got[20..], [429; 3]);
    let usage = t.usage_of("viewer").await;
    assert_eq!(usage.units, 20);
    assert_eq!(usage.throttled, 3);
    assert_eq!(usage.requests, 23 + 1, "the token request counts too");
    assert_eq!(usage.status_counts.get(&429), Some(&3));

    // The window slides: 999 ms later it is still full, at 1 s it is empty.
    t.admin
        .advance_clock(std::time::Duration::from_millis(999))
        .await
        .unwrap();
    assert_eq!(statuses(&t, &token, "/api/flows", 1).await, [429]);
    t.admin
        .advance_clock(std::time::Duration::from_millis(1))
        .await
        .unwrap();
    assert_eq!(statuses(&t, &token, "/api/flows", 1).await, [200]);
    assert_eq!(t.usage_of("viewer").await.units, 21);
}

#[tokio::test]
async fn the_main_window_admits_100_units_per_minute_with_downloads_costing_5() {
    let t = spawn_sim().await;
    let demo = t.token("demo").await;
    let id = t
        .admin
        .create_instances("flow-kyc-basic", 1, Some("Finished"))
        .await
        .unwrap()[0]
        .clone();
    let download = format!("/api/instances/{id}/result-file");
    // 4 downloads per second (20 units, the burst limit) for 5 seconds: 100 units.
    for second in 0..5 {
        assert_eq!(
            statuses(&t, &demo, &download, 4).await,
            [200; 4],
            "second {second}"
        );
        t.advance(1).await;
    }
    assert_eq!(statuses(&t, &demo, "/api/flows", 1).await, [429]);
    let usage = t.usage_of("demo").await;
    assert_eq!(usage.units, 100);
    assert_eq!(usage.units_by_endpoint["result_file"], 100);
    assert_eq!(usage.downloads_billed, 20);
    assert_eq!(usage.throttled, 1);

    // At t=60 s the first second's 20 units leave the window (the clock is at t=5 s).
    t.advance(54).await;
    assert_eq!(statuses(&t, &demo, "/api/flows", 1).await, [429]);
    t.advance(1).await;
    let demo = t.token("demo").await;
    assert_eq!(statuses(&t, &demo, &download, 4).await, [200; 4]);
    assert_eq!(statuses(&t, &demo, "/api/flows", 1).await, [429]);
    // Other clients have their own budget.
    let viewer = t.token("viewer").await;
    assert_eq!(statuses(&t, &viewer, "/api/flows", 1).await, [200]);
}

#[tokio::test]
async fn retry_after_is_sent_only_when_configured_and_is_exact() {
    let mut config = SimConfig::fixture();
    config.limits = Limits {
        retry_after: true,
        window_units: 10,
        ..Limits::default()
    };
    let t = spawn_sim_with(config).await;
    let token = t.token("viewer").await;
    for _ in 0..10 {
        assert_eq!(t.get(&token, "/api/flows").await.status(), 200);
    }
    t.advance(15).await;
    let response = t.get(&token, "/api/flows").await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "45");
}

#[tokio::test]
async fn every_start_is_billed() {
    let mut config = SimConfig::fixture();
    config.service.start_cents = 75;
    let t = spawn_sim_with(config).await;
    let demo = t.token("demo").await;
    let no_download = t.token("no-download").await;
    for _ in 0..3 {
        t.start_ok(&demo, "flow-kyc-basic").await;
    }
    t.start_ok(&no_download, "flow-kyc-video").await;
    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.clients["demo"].starts_billed, 3);
    assert_eq!(usage.clients["demo"].cents_owed, 225);
    assert_eq!(usage.clients["no-download"].starts_billed, 1);
    assert_eq!(usage.clients["no-download"].cents_owed, 75);
    assert_eq!(usage.clients["viewer"].cents_owed, 0);
    assert_eq!(t.admin.instances().await.unwrap().len(), 4);
}
