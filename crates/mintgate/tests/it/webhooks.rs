//! The webhook receiver: authentication, validation, deduplication; a webhook is only a hint.

use std::time::Duration;

use mintgate::model::ExecutionState;
use mintgate::webhook::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign};

use crate::helpers::{TestApp, WEBHOOK_SECRET, spawn_app};

async fn post(app: &TestApp, body: &str, signed_with: Option<&str>) -> reqwest::Response {
    let mut request = app
        .http
        .post(app.url("/webhooks/mint"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(secret) = signed_with {
        let ts = chrono::Utc::now().timestamp();
        request = request.header(TIMESTAMP_HEADER, ts.to_string()).header(
            SIGNATURE_HEADER,
            sign(secret.as_bytes(), ts, body.as_bytes()),
        );
    }
    request.send().await.unwrap()
}

async fn recorded(app: &TestApp) -> i64 {
    app.pipeline()
        .store
        .overview()
        .await
        .unwrap()
        .webhooks_recorded
}

#[tokio::test]
async fn a_forged_webhook_is_refused_and_a_false_claim_is_confirmed_and_ignored() {
    let app = spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    let body = format!(r#"{{"instanceId":"{instance}","status":"Finished"}}"#);

    // Unsigned, or signed with another secret: refused, nothing stored.
    assert_eq!(post(&app, &body, None).await.status(), 401);
    assert_eq!(
        post(&app, &body, Some("not-the-secret-at-all!"))
            .await
            .status(),
        401
    );
    assert_eq!(recorded(&app).await, 0);

    // Authentic, but false (the end user has not finished): one status check, nothing else.
    let before = app.admin.usage().await.unwrap().clients["demo"].clone();
    assert_eq!(post(&app, &body, Some(WEBHOOK_SECRET)).await.status(), 200);
    assert_eq!(recorded(&app).await, 1);
    app.run_until_idle().await;
    let after = app.admin.usage().await.unwrap().clients["demo"].clone();
    let status_calls = |u: &mint_sim::ClientUsage| {
        u.requests_by_endpoint
            .get("get_instance")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(status_calls(&after) - status_calls(&before), 1);
    assert_eq!(after.requests_by_endpoint.get("result_file"), None);
    assert_eq!(app.execution(id).await.state, ExecutionState::Running);

    // Replayed: recorded once, no further call.
    assert_eq!(post(&app, &body, Some(WEBHOOK_SECRET)).await.status(), 200);
    app.run_until_idle().await;
    let replayed = app.admin.usage().await.unwrap().clients["demo"].clone();
    assert_eq!(status_calls(&replayed), status_calls(&after));
    assert_eq!(recorded(&app).await, 1);
}

#[tokio::test]
async fn a_webhook_for_an_unknown_instance_costs_nothing() {
    let app = spawn_app().await;
    let before = app.admin.usage().await.unwrap();
    let body = r#"{"instanceId":"00000000-0000-0000-0000-000000000001","status":"Finished"}"#;
    let response = post(&app, body, Some(WEBHOOK_SECRET)).await;
    assert_eq!(response.status(), 200);
    // The acknowledgement is a constant (no serialising per webhook), still JSON.
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), r#"{"received":true}"#);
    assert_eq!(recorded(&app).await, 1);
    app.run_until_idle().await;
    assert_eq!(app.admin.usage().await.unwrap(), before);
}

#[tokio::test]
async fn malformed_and_oversized_webhook_bodies_get_a_clear_4xx_and_store_nothing() {
    let app = spawn_app().await;
    for body in [
        "not json",
        "[1,2,3]",
        r#"{"status":"Finished"}"#,
        r#"{"instanceId":17}"#,
        r#"{"instanceId":"../../etc/passwd"}"#,
        r#"{"instanceId":"abc","status":{"nested":true}}"#,
    ] {
        let response = post(&app, body, Some(WEBHOOK_SECRET)).await;
        assert_eq!(response.status(), 400, "{body}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{error}"
        );
    }
    let huge = format!(
        r#"{{"instanceId":"abc","pad":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let response = post(&app, &huge, Some(WEBHOOK_SECRET)).await;
    assert_eq!(response.status(), 413);
    assert_eq!(recorded(&app).await, 0);
}

#[tokio::test]
async fn a_stale_signature_is_refused_as_a_replay() {
    let app = spawn_app().await;
    let body = r#"{"instanceId":"abc","status":"Finished"}"#;
    let ts = chrono::Utc::now().timestamp() - 3600;
    let response = app
        .http
        .post(app.url("/webhooks/mint"))
        .header(TIMESTAMP_HEADER, ts.to_string())
        .header(
            SIGNATURE_HEADER,
            sign(WEBHOOK_SECRET.as_bytes(), ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let _ = Duration::ZERO;
    assert_eq!(recorded(&app).await, 0);
}
