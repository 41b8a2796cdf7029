//! The ground truth a seeded fault run (the soak) checks against: starts billed per correlation
//! id, the SHA-256 of every finished instance's result file, and the faults injected.

use mint_sim::{Faults, FlowConfig, Limits, SimConfig, StepConfig};
use serde_json::json;

use crate::helpers::{SEED, TestSim, spawn_sim_with};

async fn quick_sim() -> TestSim {
    let mut config = SimConfig::fixture();
    config.limits = Limits::unlimited();
    config.flows.push(FlowConfig {
        id: "flow-quick".to_owned(),
        definition_id: "def-quick".to_owned(),
        name: "Quick".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: 100_000,
        steps: vec![StepConfig::webhook()],
    });
    spawn_sim_with(config).await
}

#[tokio::test]
async fn starts_are_recorded_per_correlation_id_lost_answers_included() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let start = |input| {
        let t = &t;
        let token = &token;
        async move { t.start(token, "flow-quick", input).await.status().as_u16() }
    };
    assert_eq!(start(json!({ "mintgateExecutionId": "e-1" })).await, 201);
    assert_eq!(start(json!({ "mintgateExecutionId": "e-2" })).await, 201);
    assert_eq!(start(json!({ "other": 1 })).await, 201);
    t.admin
        .set_faults(Faults {
            lost_start_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    // The answer never comes, but the start was committed and billed: a second start for the
    // same execution is a double bill, and the truth shows it.
    let lost = t
        .http
        .post(t.api("/api/flows/flow-quick/instances"))
        .bearer_auth(&token)
        .json(&json!({ "input": { "mintgateExecutionId": "e-1" } }))
        .send()
        .await;
    assert!(lost.is_err(), "no answer at all");

    let per_id = t.admin.starts_per_correlation_id().await.unwrap();
    assert_eq!(per_id["e-1"], 2);
    assert_eq!(per_id["e-2"], 1);
    let starts = t.admin.starts().await.unwrap();
    assert_eq!(starts.correlation_input_key, "mintgateExecutionId");
    assert_eq!(starts.billed, 4);
    assert_eq!(starts.without_correlation_id.len(), 1);
    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.faults.lost_starts, 1);
    assert_eq!(usage.clients["demo"].starts_billed, 4);
}

#[tokio::test]
async fn results_give_the_sha256_of_every_finished_instance_and_faults_are_counted() {
    let t = quick_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-quick").await;
    t.wait_status(&id, "Finished").await;
    let running = t.start_ok(&token, "flow-kyc-basic").await;
    let seeded = t
        .admin
        .create_instances("flow-quick", 1, Some("Finished"))
        .await
        .unwrap()
        .remove(0);

    let results = t.admin.results(false).await.unwrap();
    assert_eq!(results.len(), 1, "{results:?}");
    assert_eq!(
        results[&id],
        mint_sim::result_file_sha256(SEED, &id, 100_000)
    );
    assert!(!results.contains_key(&running));
    let with_seeded = t.admin.results(true).await.unwrap();
    assert!(with_seeded.contains_key(&seeded) && with_seeded.len() == 2);

    t.admin
        .set_faults(Faults {
            server_error_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let status = t.get(&token, "/api/flows").await.status().as_u16();
    assert!(status >= 500, "{status}");
    t.admin
        .set_faults(Faults {
            cut_body_rate: 1.0,
            ..Faults::default()
        })
        .await
        .unwrap();
    let response = t
        .get(&token, &format!("/api/instances/{id}/result-file"))
        .await;
    assert!(response.bytes().await.is_err(), "cut part way");
    let faults = t.admin.usage().await.unwrap().faults;
    assert_eq!((faults.server_errors, faults.cut_bodies), (1, 1));
}
