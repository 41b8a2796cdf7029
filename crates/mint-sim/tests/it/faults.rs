//! Behaviour 10: seeded, rate-based fault injection.

use std::time::{Duration, Instant};

use mint_sim::{Faults, FlowConfig, SimConfig, StepConfig};

use crate::helpers::{TestSim, spawn_sim, spawn_sim_with};

async fn with_file(bytes: u64) -> (TestSim, String) {
    let mut config = SimConfig::fixture();
    config.flows.push(FlowConfig {
        id: "flow-file".to_owned(),
        definition_id: "def-file".to_owned(),
        name: "File".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: bytes,
        steps: vec![StepConfig::webhook()],
    });
    let t = spawn_sim_with(config).await;
    let id = t
        .admin
        .create_instances("flow-file", 1, Some("Finished"))
        .await
        .unwrap()
        .remove(0);
    (t, id)
}

#[tokio::test]
async fn server_errors_are_5xx_that_consume_units_and_are_reproducible() {
    let t = spawn_sim().await;
    let token = t.token("viewer").await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        t.admin
            .set_faults(Faults {
                seed: Some(99),
                server_error_rate: 0.5,
                ..Faults::default()
            })
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            let response = t.get(&token, "/api/flows").await;
            let status = response.status().as_u16();
            if status == 502 || status == 503 {
                assert_eq!(response.headers()["content-type"], "text/html");
            }
            statuses.push(status);
        }
        runs.push(statuses);
        t.advance(1).await;
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    let errors = runs[0].iter().filter(|s| **s >= 500).count();
    assert!((3..=17).contains(&errors), "{:?}", runs[0]);
    assert!(runs[0].iter().all(|s| [200, 500, 502, 503].contains(s)));
    let usage = t.usage_of("viewer").await;
    assert_eq!(usage.units, 40, "a 5xx consumed its unit");
    let five_xx: u64 = [500, 502, 503]
        .iter()
        .filter_map(|s| usage.status_counts.get(s))
        .sum();
    assert_eq!(five_xx as usize, errors * 2);
}

#[tokio::test]
async fn a_429_storm_refuses_everything_for_its_duration() {
    let t = spawn_sim().await;
    let token = t.token("viewer").await;
    t.admin
        .set_faults(Faults {
            storm_for_secs: 60,
            storm_retry_after_secs: Some(30),
            ..Faults::default()
        })
        .await
        .unwrap();
    for _ in 0..5 {
        let response = t.get(&token, "/api/flows").await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "30");
    }
    t.advance(59).await;
    assert_eq!(t.get(&token, "/api/flows").await.status(), 429);
    t.advance(1).await;
    assert_eq!(t.get(&token, "/api/flows").await.status(), 200);
    let usage = t.usage_of("viewer").await;
    assert_eq!((usage.throttled, usage.units), (6, 1));

    t.admin
        .set_faults(Faults {
            storm_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let response = t.get(&token, "/api/flows").await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_none());
}

#[tokio::test]
async fn result_bodies_can_be_cut_mid_way() {
    let (t, id) = with_file(1_000_000).await;
    t.admin
        .set_faults(Faults {
            cut_body_rate: 1.0,
            cut_body_at_fraction: 0.25,
            ..Faults::default()
        })
        .await
        .unwrap();
    let token = t.token("demo").await;
    let mut response = t
        .get(&token, &format!("/api/instances/{id}/result-file"))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], "1000000");
    let mut received = 0;
    let outcome = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => received += chunk.len(),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    assert!(
        outcome.is_err(),
        "the body ends in an error, not a clean end"
    );
    assert_eq!(received, 250_000);
    let usage = t.usage_of("demo").await;
    assert_eq!(usage.bytes_served, 250_000);
    assert_eq!(usage.downloads_billed, 1);
}

#[tokio::test]
async fn result_bodies_can_be_slow() {
    let (t, id) = with_file(100_000).await;
    t.admin
        .set_faults(Faults {
            slow_body_rate: 1.0,
            slow_body_bytes_per_sec: 400_000,
            ..Faults::default()
        })
        .await
        .unwrap();
    let token = t.token("demo").await;
    let started = Instant::now();
    let body = t
        .get(&token, &format!("/api/instances/{id}/result-file"))
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 100_000);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_lost_start_is_committed_and_billed_but_gets_no_response() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    t.admin
        .set_faults(Faults {
            lost_start_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let result = t
        .http
        .post(t.api("/api/flows/flow-kyc-basic/instances"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "input": { "customer": "lost" } }))
        .send()
        .await;
    let error = result.expect_err("no HTTP response at all");
    assert!(error.status().is_none(), "{error:?}");
    assert!(
        error.is_request() || error.is_connect() || error.is_body(),
        "{error:?}"
    );

    let instances = t.admin.instances().await.unwrap();
    assert_eq!(instances.len(), 1, "committed");
    assert_eq!(instances[0].input["customer"], "lost");
    let usage = t.usage_of("demo").await;
    assert_eq!((usage.starts_billed, usage.cents_owed), (1, 50));
    assert_eq!(usage.status_counts.get(&201), None);

    t.admin.set_faults(Faults::default()).await.unwrap();
    t.start_ok(&token, "flow-kyc-basic").await;
    assert_eq!(t.usage_of("demo").await.starts_billed, 2);
}
