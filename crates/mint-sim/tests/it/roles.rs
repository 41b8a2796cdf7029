//! Behaviour 2: Roles, checked before the resource is looked up.

use serde_json::{Value, json};

use crate::helpers::spawn_sim;

fn assert_terse_forbidden(body: &Value) {
    let object = body.as_object().expect("object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["status", "title", "traceId"]);
    assert_eq!(body["title"], "Forbidden");
    assert_eq!(body["status"], 403);
    let text = body.to_string();
    for role in ["Viewer", "Editor", "Download", "role"] {
        assert!(!text.contains(role), "403 names no role: {text}");
    }
}

#[tokio::test]
async fn each_missing_role_gives_a_terse_403() {
    let t = spawn_sim().await;
    // Flow Editor missing.
    let viewer = t.token("viewer").await;
    let response = t.start(&viewer, "flow-kyc-basic", json!({})).await;
    assert_eq!(response.status(), 403);
    assert_terse_forbidden(&response.json().await.unwrap());

    // Flow Instance Download missing.
    let demo = t.token("demo").await;
    let id = t.start_ok(&demo, "flow-kyc-basic").await;
    let no_download = t.token("no-download").await;
    let (status, body) = t
        .get_json(&no_download, &format!("/api/instances/{id}/result-file"))
        .await;
    assert_eq!(status, 403);
    assert_terse_forbidden(&body);

    // Flow Viewer missing.
    t.admin
        .put_client(mint_sim::ClientConfig::new(
            "editor-only",
            "editor-only-secret",
            &["Flow Editor"],
        ))
        .await
        .unwrap();
    let editor = t.token("editor-only").await;
    for path in [
        "/api/flows".to_owned(),
        "/api/flows/flow-kyc-basic/instances".to_owned(),
        format!("/api/instances/{id}"),
        format!("/api/instances/{id}/activities"),
    ] {
        let (status, body) = t.get_json(&editor, &path).await;
        assert_eq!(status, 403, "{path}");
        assert_terse_forbidden(&body);
    }
    let usage = t.usage_of("editor-only").await;
    assert_eq!(usage.status_counts.get(&403), Some(&4));
    assert_eq!(usage.units, 4, "a 403 still consumes its units");
}

#[tokio::test]
async fn the_role_is_checked_before_the_resource() {
    let t = spawn_sim().await;
    let viewer = t.token("viewer").await;
    let demo = t.token("demo").await;
    let no_download = t.token("no-download").await;
    assert_eq!(
        t.start(&viewer, "no-such-flow", json!({})).await.status(),
        403
    );
    assert_eq!(
        t.start(&demo, "no-such-flow", json!({})).await.status(),
        404
    );
    let path = "/api/instances/no-such-instance/result-file";
    assert_eq!(t.get(&no_download, path).await.status(), 403);
    assert_eq!(t.get(&demo, path).await.status(), 404);
    assert_eq!(t.usage_of("demo").await.starts_billed, 0);
}
