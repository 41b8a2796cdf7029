//! Issue 13 item 6: a [`Propagator`] adds trace-context headers to every request, token requests
//! and retries included, from the caller's context, inside each attempt's span.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use mint_client::{ListFlows, MintClient, MintConfig, Propagator, TraceHeaders};
use secrecy::SecretString;

use crate::helpers;

tokio::task_local! {
    /// The caller's trace id (what an OpenTelemetry context would hold).
    static CALLER_TRACE: &'static str;
}

/// Builds `traceparent` from the caller's trace id and a new span id per call, and notes the
/// span it was called in.
#[derive(Debug, Default)]
struct Counting {
    calls: AtomicU32,
    spans: Mutex<Vec<String>>,
}

impl Propagator for Counting {
    fn inject(&self, headers: &mut TraceHeaders) {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let span = tracing::Span::current()
            .metadata()
            .map_or("none", |m| m.name())
            .to_owned();
        self.spans.lock().unwrap().push(span);
        let Ok(trace) = CALLER_TRACE.try_with(|t| *t) else {
            return;
        };
        headers.set("traceparent", format!("00-{trace}-{n:016x}-01"));
        headers.set("tracestate", "mintgate=test".to_owned());
    }
}

/// What the server saw: path, `traceparent`, `tracestate`.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Option<String>)>>>;

fn note(seen: &Seen, path: &str, headers: &HeaderMap) {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    seen.lock()
        .unwrap()
        .push((path.to_owned(), header("traceparent"), header("tracestate")));
}

/// A token endpoint and `GET /mint/api/flows` that answers `503` once, then an empty page.
async fn recording_server(seen: Seen) -> String {
    let flows_calls = Arc::new(AtomicU32::new(0));
    let token_seen = seen.clone();
    let app = Router::new()
        .route(
            "/token",
            post(move |headers: HeaderMap| {
                let seen = token_seen.clone();
                async move {
                    note(&seen, "/token", &headers);
                    axum::Json(serde_json::json!({
                        "access_token": "t-1", "token_type": "Bearer", "expires_in": 600
                    }))
                }
            }),
        )
        .route(
            "/mint/api/flows",
            get(move |headers: HeaderMap| {
                let seen = seen.clone();
                let calls = flows_calls.clone();
                async move {
                    note(&seen, "/mint/api/flows", &headers);
                    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(serde_json::json!({})),
                        );
                    }
                    (
                        StatusCode::OK,
                        axum::Json(serde_json::json!({
                            "items": [], "totalCount": 0, "offset": 0, "limit": 100
                        })),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn every_request_and_every_attempt_carries_the_callers_trace_context() {
    // Spans exist only under a subscriber; the propagator checks it runs inside the attempt's.
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("mint_client=info"))
        .with_writer(std::io::sink)
        .finish();
    let _guard = helpers::capture_tracing(subscriber);
    let seen = Seen::default();
    let base = recording_server(seen.clone()).await;
    let propagator = Arc::new(Counting::default());
    let cfg = MintConfig::new(
        format!("{base}/mint"),
        format!("{base}/token"),
        "demo",
        SecretString::from("demo-secret"),
    )
    .retry(helpers::fast_retry())
    .propagator(propagator.clone());
    let client = MintClient::new(cfg).unwrap();

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    CALLER_TRACE
        .scope(trace, client.list_flows(&ListFlows::default()))
        .await
        .unwrap();

    let seen = seen.lock().unwrap().clone();
    let expected: Vec<(String, Option<String>, Option<String>)> =
        ["/token", "/mint/api/flows", "/mint/api/flows"]
            .iter()
            .enumerate()
            .map(|(i, path)| {
                (
                    (*path).to_owned(),
                    Some(format!("00-{trace}-{:016x}-01", i + 1)),
                    Some("mintgate=test".to_owned()),
                )
            })
            .collect();
    assert_eq!(
        seen, expected,
        "one fresh parent per attempt, the retry too"
    );
    assert_eq!(
        *propagator.spans.lock().unwrap(),
        ["mint.token", "mint.request", "mint.request"]
    );
}

#[tokio::test]
async fn without_a_propagator_no_trace_header_is_sent() {
    let seen = Seen::default();
    let base = recording_server(seen.clone()).await;
    let cfg = MintConfig::new(
        format!("{base}/mint"),
        format!("{base}/token"),
        "demo",
        SecretString::from("demo-secret"),
    )
    .retry(helpers::fast_retry());
    let client = MintClient::new(cfg).unwrap();
    client.list_flows(&ListFlows::default()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen.iter().all(|(_, p, s)| p.is_none() && s.is_none()),
        "{seen:?}"
    );
}
