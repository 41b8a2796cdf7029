//! The own API: authentication, durability, idempotency, validation.

use serde_json::json;

use crate::helpers::{API_KEY, spawn_app};

#[tokio::test]
async fn the_own_api_refuses_calls_without_a_valid_key() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/v1/executions"))
        .json(&json!({"flowId": "flow-kyc-basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .post(app.url("/v1/executions"))
        .bearer_auth("wrong-key")
        .json(&json!({"flowId": "flow-kyc-basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        app.admin
            .usage()
            .await
            .unwrap()
            .clients
            .get("demo")
            .map_or(0, |c| c.starts_billed),
        0
    );
}

#[tokio::test]
async fn an_accepted_execution_survives_a_crash_right_after_the_answer() {
    let mut app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.crash_and_restart().await;
    let view = app.execution(id).await;
    assert_eq!(view.state.as_str(), "queued");
    app.run_until_idle().await;
    let view = app.execution(id).await;
    assert_eq!(view.state.as_str(), "running", "{view:?}");
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(usage.clients["demo"].starts_billed, 1);
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_execution() {
    let app = spawn_app().await;
    let body = json!({"flowId": "flow-kyc-basic", "input": {"a": 1}, "idempotencyKey": "k-1"});
    let first: serde_json::Value = app.post_execution(body.clone()).await.json().await.unwrap();
    let second = app.post_execution(body).await;
    assert_eq!(second.status(), 202);
    let second: serde_json::Value = second.json().await.unwrap();
    assert_eq!(first["id"], second["id"]);
    let conflict = app
        .post_execution(
            json!({"flowId": "flow-kyc-basic", "input": {"a": 2}, "idempotencyKey": "k-1"}),
        )
        .await;
    assert_eq!(conflict.status(), 409);
    app.run_until_idle().await;
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"].starts_billed,
        1
    );
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_store_nothing() {
    let app = spawn_app().await;
    for (body, code) in [
        (json!({"input": {}}), "invalid_body"),
        (json!({"flowId": "../x"}), "invalid_flow_id"),
        (
            json!({"flowId": "flow-kyc-basic", "input": [1, 2]}),
            "invalid_input",
        ),
        (
            json!({"flowId": "flow-kyc-basic", "input": {"mintgateExecutionId": "x"}}),
            "invalid_input",
        ),
        (
            json!({"flowId": "flow-kyc-basic", "environment": "production"}),
            "unknown_environment",
        ),
        (json!({"flowId": "flow-nope"}), "unknown_flow"),
    ] {
        let response = app.post_execution(body.clone()).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert_eq!(error["error"], code, "{body}: {error}");
    }
    let response = app
        .http
        .post(app.url("/v1/executions"))
        .bearer_auth(API_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let overview = app.pipeline().store.overview().await.unwrap();
    assert!(overview.executions_by_state.is_empty(), "{overview:?}");
}

#[tokio::test]
async fn a_definition_id_given_as_a_flow_id_is_refused_with_its_flow_ids() {
    let app = spawn_app().await;
    let response = app.post_execution(json!({"flowId": "def-kyc-basic"})).await;
    assert_eq!(response.status(), 400);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"], "definition_id_as_flow_id");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("flow-kyc-basic"),
        "{error}"
    );
}

#[tokio::test]
async fn the_flow_listing_is_cached() {
    let app = spawn_app().await;
    for _ in 0..5 {
        app.request("flow-kyc-basic").await;
    }
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("list_flows")
            .copied(),
        Some(1)
    );
    app.advance(std::time::Duration::from_secs(6 * 60)).await;
    app.request("flow-kyc-basic").await;
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("list_flows")
            .copied(),
        Some(2)
    );
}

/// `GET` on the operator listener with the API key; the status and the JSON body (or `null`).
async fn get_json(
    app: &crate::helpers::TestApp,
    path: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    let response = app
        .http
        .get(app.operator_url(path))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

fn item_ids(body: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn health_readiness_the_listing_by_state_and_the_dead_letters_answer_what_the_store_holds() {
    let app = spawn_app().await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The database answers, but this test drives the pipeline itself: no workers run, so the
    // replica is not ready to take work on its own.
    let ready = app
        .http
        .get(app.operator_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("workers_stopped"));

    let running = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let queued = app.request("flow-kyc-basic").await;
    let (status, body) = get_json(&app, "/v1/executions?state=running").await;
    assert_eq!(status, 200);
    assert_eq!(item_ids(&body), [running.to_string()]);
    let (_, body) = get_json(&app, "/v1/executions?state=queued").await;
    assert_eq!(item_ids(&body), [queued.to_string()]);
    let (_, body) = get_json(&app, "/v1/executions").await;
    let mut both = vec![running.to_string(), queued.to_string()];
    both.sort();
    assert_eq!(item_ids(&body), both);
    let (_, body) = get_json(&app, "/v1/executions?state=archived").await;
    assert_eq!(item_ids(&body), Vec::<String>::new());
    let (_, body) = get_json(&app, "/v1/executions?limit=1").await;
    assert_eq!(item_ids(&body).len(), 1);
    for bad in [
        "/v1/executions?state=bogus",
        "/v1/executions?limit=0",
        "/v1/executions?limit=1001",
    ] {
        let (status, body) = get_json(&app, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = get_json(&app, "/v1/dead-letters").await;
    assert_eq!(status, 200);
    assert_eq!(item_ids(&body), Vec::<String>::new());
    // The key is required.
    let response = app
        .http
        .get(app.operator_url("/v1/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}
