//! Item 2: cached tokens renewed from `expires_in`, single flight, 401 → renew once, actionable errors.

use std::time::Duration;

use mint_client::{AuthErrorKind, Error, ListFlows, MintClient};
use mint_sim::ClientConfig;
use secrecy::SecretString;

use crate::helpers;

#[tokio::test]
async fn a_token_that_expires_mid_run_costs_no_failed_call() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    for i in 0..10 {
        if i == 5 {
            // The server's token expires (600 s) while the client's own clock says it is fresh.
            sim.admin()
                .advance_clock(Duration::from_secs(601))
                .await
                .unwrap();
        }
        client
            .list_flows(&ListFlows::default())
            .await
            .expect("no call fails");
    }
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.tokens_issued, 2, "renewed once");
    assert_eq!(
        usage.status_counts.get(&401).copied().unwrap_or(0),
        1,
        "one 401, absorbed"
    );
    assert_eq!(
        usage.requests_by_endpoint["list_flows"], 11,
        "10 calls + the one that met the 401"
    );
}

#[tokio::test]
async fn the_token_is_renewed_ahead_of_expiry_from_expires_in() {
    let sim = helpers::sim().await;
    sim.admin()
        .put_client(ClientConfig {
            client_id: "short".into(),
            client_secret: "short-secret".into(),
            roles: vec!["Flow Viewer".into()],
            token_lifetime_secs: 1,
        })
        .await
        .unwrap();
    // The simulator's clock runs at a quarter of real time: the server keeps the token for 4 s of
    // real time, however slowly this machine gets to the next call, while the client renews it
    // 500 ms (its own, real time) after it arrived.
    sim.admin().set_time_scale(0.25).await.unwrap();
    let client = helpers::client(&sim, "short");
    let info = client.token_lifetime().await.unwrap();
    assert_eq!(
        info.expires_in,
        Duration::from_secs(1),
        "from the server, not a hard-coded 600"
    );
    assert_eq!(
        info.renew_after,
        Duration::from_millis(500),
        "tiny lifetime: renewed at half"
    );
    client.list_flows(&ListFlows::default()).await.unwrap();
    let before = helpers::usage(&sim, "short").await.tokens_issued;
    // Past the client's renewal point: the next call renews first. The wait is the subject of
    // the test (a token's age), not a synchronisation.
    tokio::time::sleep(Duration::from_millis(650)).await;
    client.list_flows(&ListFlows::default()).await.unwrap();
    let usage = helpers::usage(&sim, "short").await;
    assert_eq!(
        usage.tokens_issued,
        before + 1,
        "renewed from expires_in, before the server would refuse it"
    );
    assert_eq!(
        usage.status_counts.get(&401),
        None,
        "renewed before the server refused it"
    );
}

#[tokio::test]
async fn concurrent_calls_share_one_token_request() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let calls = (0..20).map(|_| {
        let c = client.clone();
        tokio::spawn(async move { c.list_flows(&ListFlows::default()).await })
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap().unwrap();
    }
    assert_eq!(helpers::usage(&sim, "demo").await.tokens_issued, 1);
}

#[tokio::test]
async fn a_revoked_token_is_renewed_once_and_the_call_retried() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    client.list_flows(&ListFlows::default()).await.unwrap();
    sim.admin().revoke_tokens("demo").await.unwrap();
    client.list_flows(&ListFlows::default()).await.unwrap();
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.tokens_issued, 2);
    assert_eq!(
        usage.requests_by_endpoint["list_flows"], 3,
        "two calls, one retried after its 401"
    );
    assert_eq!(usage.units, 2, "a 401 costs no units");
}

#[tokio::test]
async fn a_secret_with_trailing_whitespace_gives_an_actionable_invalid_client() {
    let sim = helpers::sim().await;
    let mut cfg = helpers::config(&sim, "demo");
    cfg.client_secret = SecretString::from("demo-secret\n");
    let client = MintClient::new(cfg).unwrap();
    let err = client.list_flows(&ListFlows::default()).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Auth {
                kind: AuthErrorKind::InvalidClient,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("client id or the client secret is wrong"),
        "{msg}"
    );
    assert!(msg.contains("whitespace"), "{msg}");
    assert!(
        !msg.contains("demo-secret"),
        "the secret never appears: {msg}"
    );
    assert!(!err.is_retryable());
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.tokens_issued, 0);
    assert_eq!(
        usage.requests_by_endpoint.get("list_flows"),
        None,
        "nothing sent without a token"
    );
}

#[tokio::test]
async fn a_wrong_scope_names_the_scope_mint_needs() {
    let sim = helpers::sim().await;
    let client = MintClient::new(helpers::config(&sim, "demo").scope("openid")).unwrap();
    let err = client.fetch_token().await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Auth {
                kind: AuthErrorKind::InvalidScope,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"signicat-api\""), "{err}");
}
