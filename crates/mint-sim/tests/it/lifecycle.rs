//! Behaviour 4: The instance lifecycle: automatic steps, user steps (manual and with a behaviour), the
//! HTTP request step and the final result.

use std::time::Duration;

use mint_sim::{FlowConfig, SimConfig, StepConfig, UserBehaviour, UserStepAction};
use serde_json::Value;

use crate::helpers::{WebhookReceiver, eventually, spawn_sim, spawn_sim_with};

async fn activities(t: &crate::helpers::TestSim, token: &str, id: &str) -> Vec<(String, String)> {
    let (status, body) = t
        .get_json(token, &format!("/api/instances/{id}/activities"))
        .await;
    assert_eq!(status, 200);
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert!(a["id"].is_string() && a["type"].is_string() && a["startedAt"].is_string());
            (
                a["name"].as_str().unwrap().to_owned(),
                a["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn manual_user_steps_wait_for_the_admin_api() {
    let receiver = WebhookReceiver::start().await;
    let mut config = SimConfig::fixture();
    config.webhook_url = Some(receiver.url.clone());
    let t = spawn_sim_with(config).await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-video").await;

    assert_eq!(
        activities(&t, &token, &id).await,
        pairs(&[("Prepare session", "Executing")])
    );
    t.advance(2).await;
    assert_eq!(
        activities(&t, &token, &id).await,
        pairs(&[
            ("Prepare session", "Completed"),
            ("Identity document", "Suspended")
        ])
    );
    // Waiting for the end user for a whole day: still Running, nothing happens.
    t.advance(86_400).await;
    let token = t.token("demo").await;
    let (_, instance) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(instance["status"], "Running");
    assert_eq!(activities(&t, &token, &id).await.len(), 2);

    t.admin
        .user_step(&id, UserStepAction::Complete)
        .await
        .unwrap();
    assert_eq!(
        activities(&t, &token, &id).await.last().unwrap(),
        &("Video selfie".to_owned(), "Suspended".to_owned())
    );
    // Not waiting at a user step any more once it runs automatic steps.
    t.admin
        .user_step(&id, UserStepAction::Complete)
        .await
        .unwrap();
    assert!(
        t.admin
            .user_step(&id, UserStepAction::Complete)
            .await
            .is_err()
    );
    t.advance(30).await;
    assert_eq!(
        activities(&t, &token, &id).await.last().unwrap(),
        &("Compose result".to_owned(), "Executing".to_owned())
    );
    let (_, instance) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(instance["status"], "Running");
    t.advance(10).await;
    t.wait_status(&id, "Finished").await;

    let (_, instance) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(instance["status"], "Finished");
    assert!(instance["finishedAt"].is_string());
    assert_eq!(
        instance["output"]["resultFile"]["sizeBytes"],
        200 * 1024 * 1024
    );
    let all = activities(&t, &token, &id).await;
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|(_, s)| s == "Completed"), "{all:?}");
    assert_eq!(all[5].0, "Notify");
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn abandoning_through_the_admin_api_faults_the_instance_generically() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-basic").await;
    assert!(
        t.admin
            .user_step(&id, UserStepAction::Abandon)
            .await
            .is_err(),
        "not waiting yet"
    );
    t.advance(2).await;
    t.admin
        .user_step(&id, UserStepAction::Abandon)
        .await
        .unwrap();
    let (_, instance) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(instance["status"], "Faulted");
    assert_eq!(
        instance["error"],
        serde_json::json!({ "message": "Workflow execution failed" })
    );
    assert!(instance["finishedAt"].is_string());
    let (status, _) = t
        .get_json(&token, &format!("/api/instances/{id}/result-file"))
        .await;
    assert_eq!(status, 409);
    t.advance(3600).await;
    assert_eq!(t.usage_of("demo").await.starts_billed, 1);
    assert_eq!(t.admin.usage().await.unwrap().webhooks.attempted, 0);
}

fn behaviour_flow(behaviour: UserBehaviour) -> FlowConfig {
    FlowConfig {
        id: "flow-behaved".to_owned(),
        definition_id: "def-behaved".to_owned(),
        name: "Behaved".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: 10_000,
        steps: vec![
            StepConfig::User {
                name: "Selfie".to_owned(),
                activity_type: "userTask".to_owned(),
                behaviour: Some(behaviour),
                timeout_secs: None,
            },
            StepConfig::webhook(),
        ],
    }
}

#[tokio::test]
async fn configured_behaviour_completes_dawdles_or_abandons() {
    let t = spawn_sim().await;
    // The typical population: 80% complete within 10 minutes, 10% dawdle for hours, 10% abandon.
    t.admin
        .put_flow(behaviour_flow(UserBehaviour::default()))
        .await
        .unwrap();
    let token = t.token("demo").await;
    let mut ids = Vec::new();
    for _ in 0..60 {
        ids.push(t.start_ok(&token, "flow-behaved").await);
        t.advance(1).await;
    }
    t.advance(600).await;
    let count = |instances: &[mint_sim::AdminInstance], status: &str| {
        instances.iter().filter(|i| i.status == status).count()
    };
    let instances = eventually(Duration::from_secs(10), "prompt users finish", || async {
        let all = t.admin.instances().await.unwrap();
        let running_webhooks = all
            .iter()
            .filter(|i| {
                i.activities
                    .last()
                    .is_some_and(|a| a.name == "Notify" && a.status == "Executing")
            })
            .count();
        (running_webhooks == 0).then_some(all)
    })
    .await;
    let finished = count(&instances, "Finished");
    assert!(
        (36..=58).contains(&finished),
        "about 80% of 60 finished promptly: {finished}"
    );
    assert_eq!(
        count(&instances, "Faulted"),
        0,
        "abandoned ones time out only after an hour"
    );

    t.advance(6 * 3600).await;
    let instances = eventually(Duration::from_secs(10), "everyone done", || async {
        let all = t.admin.instances().await.unwrap();
        (count(&all, "Running") == 0).then_some(all)
    })
    .await;
    let faulted = count(&instances, "Faulted");
    assert!(
        (1..=14).contains(&faulted),
        "about 10% abandoned: {faulted}"
    );
    for instance in instances.iter().filter(|i| i.status == "Faulted") {
        assert_eq!(
            instance.error.as_ref().unwrap(),
            &serde_json::json!({ "message": "Workflow execution failed" })
        );
    }
    assert_eq!(count(&instances, "Finished") + faulted, 60);
}

#[tokio::test]
async fn a_user_step_timeout_faults_a_waiting_instance() {
    let t = spawn_sim().await;
    let mut flow = behaviour_flow(UserBehaviour::default());
    flow.steps[0] = StepConfig::User {
        name: "Selfie".to_owned(),
        activity_type: "userTask".to_owned(),
        behaviour: None,
        timeout_secs: Some(900),
    };
    t.admin.put_flow(flow).await.unwrap();
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-behaved").await;
    t.advance(899).await;
    assert_eq!(t.admin_instance(&id).await.status, "Running");
    t.advance(1).await;
    let token = t.token("demo").await;
    let instance: Value = t.get_json(&token, &format!("/api/instances/{id}")).await.1;
    assert_eq!(instance["status"], "Faulted");
    let (_, list) = t
        .get_json(&token, &format!("/api/instances/{id}/activities"))
        .await;
    assert_eq!(list["items"][0]["status"], "Faulted");
}

#[tokio::test]
async fn failing_automatic_steps_fault_the_instance() {
    let t = spawn_sim().await;
    let mut flow = behaviour_flow(UserBehaviour::default());
    flow.steps = vec![
        StepConfig::Auto {
            name: "Check".to_owned(),
            activity_type: "verification".to_owned(),
            duration_secs: 10,
            failure_probability: 1.0,
        },
        StepConfig::webhook(),
    ];
    t.admin.put_flow(flow).await.unwrap();
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-behaved").await;
    t.advance(9).await;
    assert_eq!(t.admin_instance(&id).await.status, "Running");
    t.advance(1).await;
    let instance = t.admin_instance(&id).await;
    assert_eq!(instance.status, "Faulted");
    assert_eq!(
        instance.activities.len(),
        1,
        "the HTTP request step never started"
    );
}

#[tokio::test]
async fn the_workflow_url_opens_a_page_that_says_what_waits_until_the_link_expires() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let response = t
        .http
        .post(t.api("/api/flows/flow-kyc-basic/instances"))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "input": {}, "workflowUrlTtl": 60 }))
        .send()
        .await
        .unwrap();
    let started: serde_json::Value = response.json().await.unwrap();
    let url = started["workflowUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&t.sim.base_url()), "{url}");
    let open = || async {
        let response = t.http.get(&url).send().await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        (status, response.text().await.unwrap())
    };
    let (status, page) = open().await;
    assert_eq!(status, 200, "no token needed: it is the end user's browser");
    assert!(
        page.contains("Prepare session") && page.contains("in progress"),
        "{page}"
    );
    t.advance(2).await;
    let (_, page) = open().await;
    assert!(
        page.contains("Identity document") && page.contains("waiting for you"),
        "{page}"
    );
    t.advance(60).await;
    assert_eq!(open().await.0, 410, "workflowUrlTtl passed");
    let unknown = url.replace(
        started["id"].as_str().unwrap(),
        "00000000-0000-4000-8000-000000000000",
    );
    assert_eq!(t.http.get(&unknown).send().await.unwrap().status(), 404);

    let usage = t.admin.usage().await.unwrap();
    assert_eq!(usage.workflow_page_views, 2);
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("get_instance"),
        None,
        "not an API request"
    );
}
