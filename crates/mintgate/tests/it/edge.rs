//! The public edge (issue 11): two listeners, TLS reloaded without a restart, limits on headers,
//! bodies, time and connections, authentication before bodies are read.
//!
//! Raw TCP is used where a well-behaved client cannot misbehave on purpose (a body announced but
//! never sent, a header that never ends).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use mintgate::config::{Config, ListenerConfig};
use mintgate::server::{self, Listener};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::helpers::{API_KEY, Setup, TestApp, WEBHOOK_SECRET, spawn_with};

/// Two listeners: the public one on the test's port, the operator one on a port of its own.
fn two_listeners(config: &mut Config) {
    config.listeners.combined = false;
    config.listeners.operator.address = Some("127.0.0.1:0".parse().unwrap());
}

/// The shared-secret scheme (the default), with short limits a test can hit.
fn short_limits(config: &mut Config) {
    two_listeners(config);
    config.webhook.auth = mintgate::config::WebhookAuth::SharedSecret;
    for listener in [&mut config.listeners.public, &mut config.listeners.operator] {
        listener.header_read_timeout = Duration::from_millis(300);
        listener.body_read_timeout = Duration::from_millis(300);
    }
}

async fn spawn(configure: fn(&mut Config)) -> TestApp {
    spawn_with(Setup {
        configure,
        ..Setup::default()
    })
    .await
}

fn public(app: &TestApp) -> SocketAddr {
    app.address
}

fn operator(app: &TestApp) -> SocketAddr {
    app.app.as_ref().unwrap().operator_address()
}

/// Sends raw bytes and reads what comes back until the server closes or `within` passes.
async fn exchange(address: SocketAddr, request: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, within).await
}

async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> String {
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
}

#[tokio::test]
async fn the_public_listener_serves_webhooks_and_health_and_nothing_of_the_operators() {
    let app = spawn(two_listeners).await;
    assert_ne!(public(&app), operator(&app));
    let get = |url: String| {
        let http = app.http.clone();
        async move {
            http.get(url)
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get(app.url("/healthz")).await, 200);
    for path in ["/", "/metrics", "/readyz", "/v1/executions", "/v1/budget"] {
        assert_eq!(
            get(app.url(path)).await,
            404,
            "{path} on the public listener"
        );
    }
    let webhook = app
        .http
        .post(app.url("/webhooks/mint"))
        .json(&serde_json::json!({"instanceId": "unknown-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        webhook.status(),
        401,
        "served (and refused: it is unsigned)"
    );

    // The operator listener has the rest, and no webhook receiver.
    for path in ["/", "/metrics", "/v1/executions", "/v1/budget", "/healthz"] {
        assert_eq!(
            get(app.operator_url(path)).await,
            200,
            "{path} on the operator listener"
        );
    }
    let on_operator = app
        .http
        .post(app.operator_url("/webhooks/mint"))
        .json(&serde_json::json!({"instanceId": "unknown-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_operator.status(), 404);
}

#[tokio::test]
async fn the_operator_api_still_needs_its_key_on_its_own_listener() {
    let app = spawn(two_listeners).await;
    let response = app
        .http
        .get(app.operator_url("/v1/executions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = app
        .http
        .get(app.operator_url("/v1/budget"))
        .bearer_auth("a-wrong-key-of-some-length")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test]
async fn a_body_announced_larger_than_the_limit_is_refused_before_it_is_sent() {
    let app = spawn(short_limits).await;
    // The body is announced but never sent: only a check of Content-Length can answer.
    let request = format!(
        "POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Mint-Webhook-Secret: {WEBHOOK_SECRET}\r\nContent-Length: 10000000\r\n\r\n"
    );
    let answer = exchange(public(&app), request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(413), "{answer}");

    let request = format!(
        "POST /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\nContent-Length: 5000000\r\n\r\n"
    );
    let answer = exchange(operator(&app), request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(413), "{answer}");
}

#[tokio::test]
async fn a_chunked_body_is_cut_where_it_passes_the_limit() {
    let app = spawn(short_limits).await;
    let limit = app.config.webhook.body_bytes_max;
    // Sent in chunks with no Content-Length, far beyond the limit.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..64).map(|_| Ok(vec![b' '; limit / 8])).collect();
    let response = app
        .http
        .post(app.url("/webhooks/mint"))
        .header("x-mint-webhook-secret", WEBHOOK_SECRET)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await;
    match response {
        Ok(response) => assert_eq!(response.status(), 413),
        // The server may close before the client has finished sending: also a refusal.
        Err(error) => assert!(
            error.is_request() || error.is_body(),
            "unexpected error: {error}"
        ),
    }
    let stored = app
        .pipeline()
        .store
        .overview()
        .await
        .unwrap()
        .webhooks_recorded;
    assert_eq!(stored, 0);
}

#[tokio::test]
async fn a_webhook_with_a_wrong_secret_is_refused_before_its_body_is_read() {
    let app = spawn(short_limits).await;
    // A body within the limit, announced and never sent: refused on the header alone.
    let request = "POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Mint-Webhook-Secret: not-the-secret-at-all\r\nContent-Length: 1000\r\n\r\n";
    let answer = exchange(public(&app), request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(401), "{answer}");
    assert!(answer.contains("bad_secret"), "{answer}");
}

#[tokio::test]
async fn an_own_api_request_without_a_key_is_refused_before_its_body_is_read() {
    let app = spawn(short_limits).await;
    let request = "POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    let answer = exchange(operator(&app), request.as_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status_of(&answer), Some(401), "{answer}");
}

#[tokio::test]
async fn a_connection_whose_header_never_ends_is_closed() {
    let app = spawn(short_limits).await;
    let mut stream = TcpStream::connect(public(&app)).await.unwrap();
    stream
        .write_all(b"POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    // Never finished: the server must close the connection (header_read_timeout = 300 ms).
    let answer = read_until_closed(&mut stream, Duration::from_secs(15)).await;
    let mut probe = [0u8; 1];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read(&mut probe)).await,
        Ok(Ok(0) | Err(_))
    );
    assert!(closed, "the slow connection is still open: {answer:?}");
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed() {
    let app = spawn(short_limits).await;
    let mut stream = TcpStream::connect(public(&app)).await.unwrap();
    let mut probe = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut probe)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the idle connection is still open"
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_is_cut_at_the_body_read_timeout() {
    let app = spawn(short_limits).await;
    let body = format!(r#"{{"instanceId":"inst-{}"}}"#, "x".repeat(50));
    let request = format!(
        "POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Mint-Webhook-Secret: {WEBHOOK_SECRET}\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    let answer = exchange(public(&app), request.as_bytes(), Duration::from_secs(15)).await;
    assert_eq!(status_of(&answer), Some(408), "{answer}");
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_given_one_is_kept() {
    let app = spawn(two_listeners).await;
    let response = app.http.get(app.url("/healthz")).send().await.unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let response = app
        .http
        .get(app.operator_url("/healthz"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn a_signature_list_is_refused_before_any_hashing() {
    // The helpers' scheme is HMAC.
    let app = spawn(two_listeners).await;
    let body = r#"{"instanceId":"unknown-1"}"#;
    let now = chrono::Utc::now().timestamp();
    let good = mintgate::webhook::sign(WEBHOOK_SECRET.as_bytes(), now, body.as_bytes());
    let post = |signatures: String| {
        app.http
            .post(app.url("/webhooks/mint"))
            .header(mintgate::webhook::TIMESTAMP_HEADER, now.to_string())
            .header(mintgate::webhook::SIGNATURE_HEADER, signatures)
            .body(body)
            .send()
    };
    let few = vec![format!("v1={}", "0".repeat(64)); 9].join(",") + "," + &good;
    let response = post(few).await.unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("too_many_signatures"),
        "refused for its count, although the right signature is in it"
    );
    // Thousands of entries do not even fit the header limit.
    let many = vec![format!("v1={}", "0".repeat(64)); 3000].join(",");
    assert_eq!(post(many).await.unwrap().status(), 431);
    // A rotation's two entries pass.
    let two = format!("v1={},{good}", "0".repeat(64));
    assert_eq!(post(two).await.unwrap().status(), 200);
}

/// Serves `router` with the limits of `config` on a port of its own.
async fn serve(router: Router, config: ListenerConfig) -> (SocketAddr, CancellationToken) {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = tcp.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let sensitive = vec![axum::http::header::AUTHORIZATION];
    let router = server::with_limits(router, &config, sensitive);
    server::spawn(
        Listener {
            name: "public",
            tcp,
            config,
            tls: None,
        },
        router,
        Duration::from_secs(1),
        shutdown.clone(),
        mintgate::metrics::Registry::new(),
    );
    (address, shutdown)
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_listener_keeps_serving() {
    async fn boom() -> &'static str {
        panic!("a bug")
    }
    let router = Router::new()
        .route("/boom", get(boom))
        .route("/fine", get(|| async { "fine" }));
    let (address, _stop) = serve(router, ListenerConfig::default()).await;
    let http = reqwest::Client::new();
    let boom = http
        .get(format!("http://{address}/boom"))
        .send()
        .await
        .unwrap();
    assert_eq!(boom.status(), 500);
    let fine = http
        .get(format!("http://{address}/fine"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.text().await.unwrap(), "fine");
}

#[tokio::test]
async fn secret_headers_are_marked_sensitive_for_every_handler() {
    let router = Router::new().route(
        "/look",
        get(|headers: axum::http::HeaderMap| async move {
            let value = &headers[axum::http::header::AUTHORIZATION];
            format!("{} {:?}", value.is_sensitive(), value)
        }),
    );
    let (address, _stop) = serve(router, ListenerConfig::default()).await;
    let text = reqwest::Client::new()
        .get(format!("http://{address}/look"))
        .bearer_auth("very-secret-key")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.starts_with("true"), "{text}");
    assert!(!text.contains("very-secret-key"), "{text}");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_wait_and_time_out_with_503() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let held = gate.clone();
    let router = Router::new().route(
        "/slow",
        get(move || {
            let held = held.clone();
            async move {
                held.notified().await;
                "done"
            }
        }),
    );
    let config = ListenerConfig {
        requests_in_flight_max: 1,
        request_timeout: Duration::from_millis(500),
        ..ListenerConfig::default()
    };
    let (address, _stop) = serve(router, config).await;
    let http = reqwest::Client::new();
    let url = format!("http://{address}/slow");
    // The first holds the only place until it times out; the second waits behind it and times
    // out too: both are answered 503 (not left hanging).
    let (first, second) = tokio::join!(http.get(&url).send(), http.get(&url).send());
    assert_eq!(first.unwrap().status(), 503);
    assert_eq!(second.unwrap().status(), 503);
    // A place freed: the next request is served once the handler may finish.
    let third = tokio::spawn({
        let http = http.clone();
        let url = url.clone();
        async move { http.get(&url).send().await.unwrap().status() }
    });
    let mut answered = false;
    for _ in 0..500 {
        gate.notify_waiters();
        if third.is_finished() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(answered, "the third request was never answered");
    assert_eq!(third.await.unwrap(), 200);
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_in_the_backlog_until_one_closes() {
    let router = Router::new().route("/fine", get(|| async { "fine" }));
    let config = ListenerConfig {
        connections_max: 2,
        header_read_timeout: Duration::from_secs(60),
        ..ListenerConfig::default()
    };
    let (address, _stop) = serve(router, config).await;
    let first = TcpStream::connect(address).await.unwrap();
    let _second = TcpStream::connect(address).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(700))
        .build()
        .unwrap();
    let url = format!("http://{address}/fine");
    assert!(
        http.get(&url).send().await.is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    let http = reqwest::Client::new();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
}

/// A self-signed certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
fn self_signed() -> (String, String, rustls::pki_types::CertificateDer<'static>) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    (
        generated.cert.pem(),
        generated.signing_key.serialize_pem(),
        generated.cert.der().clone(),
    )
}

/// `GET /healthz` over TLS, trusting only `root`; the answer's status line, or the TLS error.
async fn https_get(
    address: SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let answer = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    Ok(answer.lines().next().unwrap_or("").to_owned())
}

struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
    fn write(&self, cert: &str, key: &str) {
        // As a renewal tool does: write aside, then rename into place.
        std::fs::write(self.dir.path().join("cert.new"), cert).unwrap();
        std::fs::write(self.dir.path().join("key.new"), key).unwrap();
        std::fs::rename(self.dir.path().join("cert.new"), self.cert()).unwrap();
        std::fs::rename(self.dir.path().join("key.new"), self.key()).unwrap();
    }
}

async fn tls_listener(
    files: &TlsFiles,
) -> (
    SocketAddr,
    Arc<mintgate::tls::ReloadingCertificate>,
    CancellationToken,
) {
    let config = ListenerConfig {
        tls_cert_file: Some(files.cert()),
        tls_key_file: Some(files.key()),
        tls_reload_interval: Duration::from_millis(50),
        ..ListenerConfig::default()
    };
    let bound = Listener::bind("public", "127.0.0.1:0".parse().unwrap(), None, &config)
        .await
        .unwrap();
    assert_eq!(bound.scheme(), "https");
    let address = bound.local_addr().unwrap();
    let certificate = bound.tls.clone().unwrap();
    let shutdown = CancellationToken::new();
    let router = server::with_limits(
        Router::new().route("/healthz", get(|| async { "ok" })),
        &config,
        Vec::new(),
    );
    server::spawn(
        bound,
        router,
        Duration::from_secs(1),
        shutdown.clone(),
        mintgate::metrics::Registry::new(),
    );
    (address, certificate, shutdown)
}

#[tokio::test]
async fn https_is_served_and_a_renewed_certificate_is_taken_without_a_restart() {
    let files = TlsFiles {
        dir: tempfile::tempdir().unwrap(),
    };
    let (cert_a, key_a, root_a) = self_signed();
    let (cert_b, key_b, root_b) = self_signed();
    files.write(&cert_a, &key_a);
    let (address, _certificate, _stop) = tls_listener(&files).await;
    assert_eq!(
        https_get(address, &root_a).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    assert!(
        https_get(address, &root_b).await.is_err(),
        "B is not served yet"
    );
    // Plain HTTP on the TLS port gets no answer.
    let plain = exchange(
        address,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");

    files.write(&cert_b, &key_b);
    let mut renewed = false;
    // Polled for up to 20 s: the watcher's interval is short, but a loaded machine is slow.
    for _ in 0..800 {
        if https_get(address, &root_b).await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(renewed, "the renewed certificate was never served");
    assert!(https_get(address, &root_a).await.is_err(), "A is retired");
}

#[tokio::test]
async fn a_broken_certificate_pair_keeps_the_previous_one_in_service() {
    let files = TlsFiles {
        dir: tempfile::tempdir().unwrap(),
    };
    let (cert_a, key_a, root_a) = self_signed();
    let (_cert_b, key_b, _) = self_signed();
    files.write(&cert_a, &key_a);
    let (address, certificate, _stop) = tls_listener(&files).await;
    // A key that does not belong to the certificate, then a truncated certificate: neither is
    // taken (by the watcher or by this reload), A stays in service.
    files.write(&cert_a, &key_b);
    let error = format!("{:#}", certificate.reload().unwrap_err());
    assert!(error.contains("does not belong"), "{error}");
    assert_eq!(
        https_get(address, &root_a).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    files.write(&cert_a[..cert_a.len() / 2], &key_a);
    assert!(certificate.reload().is_err());
    assert_eq!(
        https_get(address, &root_a).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn a_listener_whose_certificate_does_not_load_refuses_to_start_naming_the_key() {
    let files = TlsFiles {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(files.cert(), "not a certificate").unwrap();
    std::fs::write(files.key(), "not a key").unwrap();
    let config = ListenerConfig {
        tls_cert_file: Some(files.cert()),
        tls_key_file: Some(files.key()),
        ..ListenerConfig::default()
    };
    let error = Listener::bind("public", "127.0.0.1:0".parse().unwrap(), None, &config)
        .await
        .err()
        .expect("refused");
    let text = format!("{error:#}");
    assert!(text.contains("listeners.public.tls_cert_file"), "{text}");
    assert!(!text.contains("not a key"), "{text}");
}

/// Posts an authentic (HMAC, the helpers' scheme) webhook with this body.
async fn post_signed(app: &TestApp, body: &str) -> u16 {
    let now = chrono::Utc::now().timestamp();
    app.http
        .post(app.url("/webhooks/mint"))
        .header(mintgate::webhook::TIMESTAMP_HEADER, now.to_string())
        .header(
            mintgate::webhook::SIGNATURE_HEADER,
            mintgate::webhook::sign(WEBHOOK_SECRET.as_bytes(), now, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Every request the simulator has seen from the service's API client.
async fn mint_requests(app: &TestApp) -> u64 {
    app.admin.usage().await.unwrap().clients["demo"].requests
}

#[tokio::test]
async fn webhooks_for_an_instance_checked_less_than_the_poll_floor_ago_cost_no_mint_call() {
    let app = crate::helpers::spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    // A first webhook brings a check forward: Mint is asked once.
    let before_first = mint_requests(&app).await;
    let body = |n: usize| format!(r#"{{"instanceId":"{instance}","status":"Finished","n":{n}}}"#);
    assert_eq!(post_signed(&app, &body(0)).await, 200);
    app.run_until_idle().await;
    let after_first = mint_requests(&app).await;
    assert!(after_first > before_first, "the first webhook is checked");

    // A flood of distinct authentic webhooks within poll_interval_min: recorded, answered, and not
    // one Mint call.
    for n in 1..=50 {
        assert_eq!(post_signed(&app, &body(n)).await, 200);
    }
    app.run_until_idle().await;
    assert_eq!(mint_requests(&app).await, after_first);
    let recorded = app
        .pipeline()
        .store
        .webhooks_for(&instance.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(recorded.len(), 51);

    // At the floor, the deferred check runs once.
    app.advance(app.config.pipeline.poll_interval_min).await;
    app.run_until_idle().await;
    let at_floor = mint_requests(&app).await;
    assert!(at_floor > after_first, "the check ran at the floor");
    assert!(
        at_floor - after_first <= after_first - before_first,
        "one check's worth of calls, not one per webhook"
    );
}

#[tokio::test]
async fn a_flood_of_authentic_webhooks_for_unknown_or_finished_instances_costs_nothing_at_mint() {
    let app = crate::helpers::spawn_app().await;
    // One execution taken to its end (archived).
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.complete_user_steps(instance.as_str()).await;
    app.advance(Duration::from_secs(30)).await;
    let store = app.pipeline().store.clone();
    let parsed: mint_client::InstanceId = instance.parse().unwrap();
    app.eventually(Duration::from_secs(5), "the flow's webhook", || {
        let store = store.clone();
        let parsed = parsed.clone();
        async move { !store.webhooks_for(&parsed).await.unwrap().is_empty() }
    })
    .await;
    app.run_until_idle().await;
    assert_eq!(
        app.execution(id).await.state,
        mintgate::model::ExecutionState::Archived
    );
    let before = app.admin.usage().await.unwrap();

    for n in 0..300 {
        let unknown = uuid::Uuid::new_v4();
        let body = format!(r#"{{"instanceId":"{unknown}","status":"Finished"}}"#);
        assert_eq!(post_signed(&app, &body).await, 200, "webhook {n}");
    }
    for n in 0..100 {
        let body = format!(r#"{{"instanceId":"{instance}","status":"Finished","n":{n}}}"#);
        assert_eq!(post_signed(&app, &body).await, 200, "webhook {n}");
    }
    app.run_until_idle().await;
    app.advance(Duration::from_secs(3600)).await;
    app.run_until_idle().await;
    // The simulator's ground truth: not one request, not one unit.
    assert_eq!(app.admin.usage().await.unwrap().clients, before.clients);
}

#[tokio::test]
async fn webhook_records_are_pruned_after_their_retention_unknown_instances_first() {
    let app = crate::helpers::spawn_app().await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    let known = format!(r#"{{"instanceId":"{instance}","status":"Finished"}}"#);
    assert_eq!(post_signed(&app, &known).await, 200);
    for _ in 0..20 {
        let unknown = uuid::Uuid::new_v4();
        let body = format!(r#"{{"instanceId":"{unknown}"}}"#);
        assert_eq!(post_signed(&app, &body).await, 200);
    }
    let store = app.pipeline().store.clone();
    let count = || async { store.overview().await.unwrap().webhooks_recorded };
    assert_eq!(count().await, 21);
    let webhook = &app.config.webhook;
    // Nothing is due yet.
    let now = app.clock.now();
    assert_eq!(
        mintgate::retention::prune_webhooks(&store, webhook, now)
            .await
            .unwrap(),
        0
    );
    // After a day and a bit: the unknown instances' records go, ours stays.
    let later = now + chrono::TimeDelta::from_std(webhook.unmatched_retention).unwrap();
    let later = later + chrono::TimeDelta::minutes(1);
    assert_eq!(
        mintgate::retention::prune_webhooks(&store, webhook, later)
            .await
            .unwrap(),
        20
    );
    assert_eq!(count().await, 1);
    // After the retention, every record.
    let much_later = now + chrono::TimeDelta::from_std(webhook.retention).unwrap();
    let much_later = much_later + chrono::TimeDelta::minutes(1);
    assert_eq!(
        mintgate::retention::prune_webhooks(&store, webhook, much_later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(count().await, 0);
}

fn long_status_cache(config: &mut Config) {
    config.service.status_cache_ttl = Duration::from_secs(60);
}

#[tokio::test]
async fn the_status_page_and_metrics_stay_cheap_with_50000_executions() {
    let app = spawn(long_status_cache).await;
    // 50,000 executions with a kilobyte of input each, written straight into the database.
    let path = app.config.service.database_url.sqlite_path().unwrap();
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let input = serde_json::json!({"customer": "x".repeat(1000)}).to_string();
    let now_ms = app.clock.now().timestamp_millis();
    let mut tx = pool.begin().await.unwrap();
    for n in 0..50_000u32 {
        let (state, progress) = match n % 4 {
            0 => (
                "running",
                Some(r#"{"kind":"waitingForUser","step":"Identity document","since":null}"#),
            ),
            1 => ("running", Some(r#"{"kind":"processing","step":null}"#)),
            2 => ("archived", None),
            _ => ("failed", None),
        };
        sqlx::query(
            "INSERT INTO executions (id, request_sha256, environment, flow_id, input, state,
                 instance_id, progress, created_at, updated_at, started_at, failure_reason)
             VALUES (?1, 'x', 'sandbox', 'flow-kyc-basic', ?2, ?3, ?4, ?5, ?6, ?6, ?6, ?7)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(&input)
        .bind(state)
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(progress)
        .bind(now_ms - i64::from(n))
        .bind((state == "failed").then_some("Mint reports the instance faulted"))
        .execute(&mut *tx)
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;

    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("12500"), "the counts by state are aggregates");
    assert!(
        !page.contains(&"x".repeat(1000)),
        "no input reaches the page"
    );
    // The page, then the metrics and the page again: one snapshot of the database for all.
    for _ in 0..5 {
        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(metrics.status(), 200);
        assert_eq!(
            app.http.get(app.url("/")).send().await.unwrap().status(),
            200
        );
    }
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let snapshots = text
        .lines()
        .find(|l| l.starts_with("mintgate_status_snapshots_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(snapshots, Some(1.0), "{text}");
    assert!(
        text.contains(r#"mintgate_executions{state="running"} 25000"#),
        "gauges from the aggregates"
    );

    // The lists the page reads carry no input.
    let store = app.pipeline().store.clone();
    let listed = store
        .executions_without_input(mintgate::store::ExecutionFilter {
            state: Some(mintgate::model::ExecutionState::Running),
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1000);
    assert!(listed.iter().all(|e| e.input.is_null()));
}
