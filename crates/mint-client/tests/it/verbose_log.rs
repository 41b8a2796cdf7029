//! Issue 13 item 5: the exchange log (`mint_client::http`) shows each exchange and never a secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use mint_client::{
    BoxFuture, ClientAuth, Error, HTTP_LOG_TARGET, ListFlows, LocalBudget, MemoryTokenStore,
    MintClient, SharedToken, StartInstance, TokenStore,
};
use secrecy::{ExposeSecret, SecretString};

use crate::helpers;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A token store that remembers every token the client fetched, so the test knows the values it
/// must not find in the log.
#[derive(Debug, Default)]
struct Recording {
    inner: MemoryTokenStore,
    seen: Mutex<Vec<String>>,
}

impl TokenStore for Recording {
    fn load(&self) -> BoxFuture<'_, Option<SharedToken>> {
        self.inner.load()
    }
    fn save(&self, token: SharedToken) -> BoxFuture<'_, ()> {
        self.seen
            .lock()
            .unwrap()
            .push(token.value.expose_secret().to_owned());
        self.inner.save(token)
    }
    fn try_lock_renewal(&self, hold: std::time::Duration) -> BoxFuture<'_, bool> {
        self.inner.try_lock_renewal(hold)
    }
    fn unlock_renewal(&self) -> BoxFuture<'_, ()> {
        self.inner.unlock_renewal()
    }
    fn discard(&self, value: &SecretString) -> BoxFuture<'_, ()> {
        self.inner.discard(value)
    }
}

fn recorded_client(
    sim: &mint_sim::Simulator,
    client_id: &str,
    auth: ClientAuth,
) -> (MintClient, Arc<Recording>) {
    let store = Arc::new(Recording::default());
    let cfg = helpers::config(sim, client_id).client_auth(auth);
    let budget = Arc::new(LocalBudget::new(cfg.budget.clone()));
    let client = MintClient::with_shared(cfg, budget, Some(store.clone())).unwrap();
    (client, store)
}

#[tokio::test]
async fn the_most_verbose_log_shows_every_exchange_and_no_secret_or_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Everything, every crate, at the most verbose level.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = helpers::capture_tracing(subscriber);

    let sim = helpers::sim().await;
    // The secret in an Authorization: Basic header, and in the form body (client_secret_post).
    let (demo, demo_tokens) = recorded_client(&sim, "demo", ClientAuth::Basic);
    let (viewer, viewer_tokens) = recorded_client(&sim, "viewer", ClientAuth::Body);

    demo.list_flows(&ListFlows::default()).await.unwrap();
    // A 403: the viewer may not start.
    let refused = viewer
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::MissingRole { .. }), "{refused}");
    // A 401: the token is revoked; the client renews once and the call succeeds.
    sim.admin().revoke_tokens("demo").await.unwrap();
    demo.list_flows(&ListFlows::default()).await.unwrap();
    drop(guard);

    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.tokens_issued, 2, "{usage:?}");
    assert_eq!(usage.status_counts.get(&401).copied(), Some(1), "{usage:?}");
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let exchanges: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(HTTP_LOG_TARGET) && l.contains(" exchange"))
        .collect();
    let has = |parts: &[&str]| {
        exchanges
            .iter()
            .any(|l| parts.iter().all(|p| l.contains(p)))
    };
    for expected in [
        &[
            "method=\"POST\"",
            "path=\"/auth/open/connect/token\"",
            "status=200",
            "latency_ms=",
        ][..],
        &["method=\"GET\"", "path=\"/mint/api/flows\"", "status=200"],
        &["method=\"GET\"", "path=\"/mint/api/flows\"", "status=401"],
        &[
            "method=\"POST\"",
            "path=\"/mint/api/flows/flow-kyc-basic/instances\"",
            "status=403",
            "trace_id=",
            "error_body=",
            "Forbidden",
        ],
    ] {
        assert!(has(expected), "no exchange with {expected:?} in:\n{log}");
    }
    // The trace level shows the headers, redacted.
    assert!(
        log.contains("authorization: [redacted]"),
        "request headers at trace: {log}"
    );
    assert!(log.contains("www-authenticate:"), "{log}");

    let tokens: Vec<String> = [demo_tokens, viewer_tokens]
        .iter()
        .flat_map(|s| s.seen.lock().unwrap().clone())
        .collect();
    assert_eq!(tokens.len(), 3, "two tokens for demo, one for viewer");
    // The Authorization: Basic value (base64 of "id:id-secret"), as reqwest builds it.
    let basic = |id: &str| {
        let request = reqwest::Client::new()
            .get("http://127.0.0.1/")
            .basic_auth(id, Some(format!("{id}-secret")))
            .build()
            .unwrap();
        let value = request.headers()["authorization"].to_str().unwrap();
        value.trim_start_matches("Basic ").to_owned()
    };
    let mut secrets = vec![
        "demo-secret".to_owned(),
        "viewer-secret".to_owned(),
        basic("demo"),
        basic("viewer"),
    ];
    secrets.extend(tokens);
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "{secret} leaked:\n{log}");
    }
    sim.shutdown().await;
}
