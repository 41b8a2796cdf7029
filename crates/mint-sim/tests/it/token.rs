//! Behaviour 1: The token endpoint.

use std::time::Duration;

use mint_sim::ClientConfig;
use serde_json::Value;

use crate::helpers::spawn_sim;

async fn post_form(
    t: &crate::helpers::TestSim,
    basic: Option<(&str, &str)>,
    form: &[(&str, &str)],
) -> (u16, Value, Option<String>) {
    let mut request = t.http.post(t.sim.token_url()).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, response.json().await.unwrap(), challenge)
}

const GOOD: [(&str, &str); 2] = [
    ("grant_type", "client_credentials"),
    ("scope", "signicat-api"),
];

#[tokio::test]
async fn basic_and_form_credentials_both_get_a_token_without_refresh_token() {
    let t = spawn_sim().await;
    let (status, body, _) = post_form(&t, Some(("demo", "demo-secret")), &GOOD).await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 600);
    assert_eq!(body["scope"], "signicat-api");
    assert!(body.get("refresh_token").is_none());

    let form = [
        GOOD[0],
        GOOD[1],
        ("client_id", "viewer"),
        ("client_secret", "viewer-secret"),
    ];
    let (status, body, _) = post_form(&t, None, &form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(t.usage_of("demo").await.tokens_issued, 1);
    assert_eq!(t.usage_of("viewer").await.tokens_issued, 1);
    assert_eq!(t.usage_of("viewer").await.requests_by_endpoint["token"], 1);
}

#[tokio::test]
async fn token_errors_are_oauth_shaped() {
    let t = spawn_sim().await;
    let demo = Some(("demo", "demo-secret"));
    type Case<'a> = (
        Option<(&'a str, &'a str)>,
        Vec<(&'a str, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (demo, vec![GOOD[1]], 400, "invalid_request"),
        (
            demo,
            vec![("grant_type", "password"), GOOD[1]],
            400,
            "unsupported_grant_type",
        ),
        (demo, vec![GOOD[0]], 400, "invalid_scope"),
        (
            demo,
            vec![GOOD[0], ("scope", "openid")],
            400,
            "invalid_scope",
        ),
        (
            Some(("demo", "wrong")),
            GOOD.to_vec(),
            401,
            "invalid_client",
        ),
        (
            Some(("demo", "demo-secret ")),
            GOOD.to_vec(),
            401,
            "invalid_client",
        ),
        (
            Some(("demo", "demo-secret\t")),
            GOOD.to_vec(),
            401,
            "invalid_client",
        ),
        (
            Some(("nobody", "demo-secret")),
            GOOD.to_vec(),
            401,
            "invalid_client",
        ),
        (None, GOOD.to_vec(), 401, "invalid_client"),
        (
            demo,
            vec![GOOD[0], GOOD[1], ("client_secret", "demo-secret")],
            400,
            "invalid_request",
        ),
        (
            None,
            vec![
                GOOD[0],
                GOOD[1],
                ("client_id", "demo"),
                ("client_secret", "demo-secret\n"),
            ],
            401,
            "invalid_client",
        ),
    ];
    for (basic, form, status, error) in cases {
        let (got, body, challenge) = post_form(&t, basic, &form).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{basic:?} {form:?}"
        );
        if got == 401 && basic.is_some() {
            assert!(challenge.is_some(), "Basic challenge on 401");
        }
    }
    // Not form-encoded at all.
    let response = t
        .http
        .post(t.sim.token_url())
        .basic_auth("demo", Some("demo-secret"))
        .json(&serde_json::json!({"grant_type": "client_credentials", "scope": "signicat-api"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let usage = t.usage_of("demo").await;
    assert_eq!(usage.tokens_issued, 0);
    assert_eq!(usage.status_counts.get(&401), Some(&4));
}

#[tokio::test]
async fn lifetime_is_per_client_and_an_expired_token_gets_401_invalid_token() {
    let t = spawn_sim().await;
    let mut client = ClientConfig::new("short", "short-secret", &["Flow Viewer"]);
    client.token_lifetime_secs = 30;
    t.admin.put_client(client).await.unwrap();
    let token = t.token("short").await;
    assert_eq!(t.get(&token, "/api/flows").await.status(), 200);

    t.admin
        .advance_clock(Duration::from_secs(29))
        .await
        .unwrap();
    assert_eq!(t.get(&token, "/api/flows").await.status(), 200);
    t.admin.advance_clock(Duration::from_secs(1)).await.unwrap();
    let response = t.get(&token, "/api/flows").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 401);
    assert!(body["traceId"].is_string());
    let usage = t.usage_of("short").await;
    assert_eq!(usage.status_counts.get(&401), Some(&1));
    assert_eq!(usage.units, 2, "a 401 consumes no units");
}

#[tokio::test]
async fn unknown_missing_and_revoked_tokens_get_401() {
    let t = spawn_sim().await;
    let response = t.get("not-a-token", "/api/flows").await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    let response = t.http.get(t.api("/api/flows")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");

    let token = t.token("demo").await;
    let other = t.token("viewer").await;
    assert_eq!(t.get(&token, "/api/flows").await.status(), 200);
    t.admin.revoke_tokens("demo").await.unwrap();
    assert_eq!(t.get(&token, "/api/flows").await.status(), 401);
    assert_eq!(t.get(&other, "/api/flows").await.status(), 200);
    let fresh = t.token("demo").await;
    assert_eq!(t.get(&fresh, "/api/flows").await.status(), 200);
}
