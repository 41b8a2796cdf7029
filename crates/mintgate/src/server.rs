//! The HTTP listeners: a public one (webhooks, `/healthz`) that faces the internet, and an operator
//! one (own API, status page, metrics, `/readyz`), each with its own address, TLS and limits.
//!
//! Why not `axum::serve`: it has no header read timeout, no connection limit and no TLS. Here each
//! connection is served by hyper's HTTP/1 server (header read timeout, header size limit; the
//! timeout also closes connections idle between requests), a semaphore bounds open connections
//! (more wait in the kernel's backlog, costing nothing), and the router gets the request limits in
//! one middleware: request ids, sensitive headers, caught panics, a request timeout, a bound on
//! requests in flight and a body deadline; body size limits are checked per route before the body
//! is read.
//!
//! HTTP/1.1 only: it is what Mint's HTTP request step and the operators' tools speak, and HTTP/2
//! would bring its own set of limits to get right (streams, resets, flow control).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::ListenerConfig;
use crate::tls::ReloadingCertificate;

/// The request id header, set on every request that has none and echoed on its answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// A listener, bound, with what it serves.
pub struct Listener {
    /// `public` or `operator` (log lines and metric labels).
    pub name: &'static str,
    pub tcp: TcpListener,
    pub config: ListenerConfig,
    pub tls: Option<Arc<ReloadingCertificate>>,
}

impl Listener {
    /// Binds `config.address` (or uses the listener given), and loads TLS if configured.
    pub async fn bind(
        name: &'static str,
        address: SocketAddr,
        given: Option<std::net::TcpListener>,
        config: &ListenerConfig,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let tcp = match given {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)?
            }
            None => TcpListener::bind(address)
                .await
                .with_context(|| format!("binding {address} (`listeners.{name}.address`)"))?,
        };
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(ReloadingCertificate::load(cert, key).with_context(|| {
                    format!("loading `listeners.{name}.tls_cert_file` and `tls_key_file`")
                })?)
            }
            _ => None,
        };
        Ok(Self {
            name,
            tcp,
            config: config.clone(),
            tls,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// `https` when TLS is on.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The request limits of a listener around `router`, outermost first: caught panics, sensitive
/// headers, request id, request timeout, requests in flight, body deadline. Body size limits are
/// per route ([`limit_body`]).
///
/// One middleware does them all, in that order: a layer each cost a boxed future, a clone of the
/// service under it and, for the request id, a request extension, on every request (issue 16).
pub fn with_limits(router: Router, config: &ListenerConfig, sensitive: Vec<HeaderName>) -> Router {
    let limits = Arc::new(Limits {
        sensitive,
        request_timeout: config.request_timeout,
        body_read_timeout: config.body_read_timeout,
        in_flight: Semaphore::new(config.requests_in_flight_max),
    });
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let limits = limits.clone();
            async move {
                // Caught panics: a handler that panics is answered 500 and its connection goes on.
                let guarded = std::panic::AssertUnwindSafe(limits.guard(request, next));
                match futures::FutureExt::catch_unwind(guarded).await {
                    Ok(response) => response,
                    Err(panic) => panic_response(panic),
                }
            }
        },
    ))
}

/// What [`with_limits`] holds for a listener.
struct Limits {
    /// Request headers whose values are never shown (`Debug`, traces).
    sensitive: Vec<HeaderName>,
    request_timeout: Duration,
    body_read_timeout: Duration,
    /// A place for each request being handled; more wait (within the request timeout): webhooks
    /// are sent once, so a short wait beats a refusal.
    in_flight: Semaphore,
}

impl Limits {
    async fn guard(&self, mut request: Request, next: Next) -> Response {
        let headers = request.headers_mut();
        for name in &self.sensitive {
            if let header::Entry::Occupied(mut entry) = headers.entry(name) {
                for value in entry.iter_mut() {
                    value.set_sensitive(true);
                }
            }
        }
        let request_id = match headers.get(REQUEST_ID_HEADER) {
            Some(given) => given.clone(),
            None => {
                let made = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                    .expect("a UUID is a header value");
                headers.insert(REQUEST_ID_HEADER, made.clone());
                made
            }
        };
        let span = request_span(&request);
        let limited = async {
            let Ok(_permit) = self.in_flight.acquire().await else {
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            };
            // The body must arrive within the body read timeout, however it trickles in.
            let (parts, body) = request.into_parts();
            let body = axum::body::Body::new(tower_http::timeout::DeadlineBody::new(
                self.body_read_timeout,
                body,
            ));
            next.run(Request::from_parts(parts, body)).await
        };
        let timed = tokio::time::timeout(
            self.request_timeout,
            tracing::Instrument::instrument(limited, span),
        );
        let mut response = timed
            .await
            .unwrap_or_else(|_| StatusCode::SERVICE_UNAVAILABLE.into_response());
        // Every answer carries the request's id (unless the handler set one).
        if !response.headers().contains_key(REQUEST_ID_HEADER) {
            response.headers_mut().insert(REQUEST_ID_HEADER, request_id);
        }
        response
    }
}

/// Every request's log lines carry its id, method and path (never its headers or body). With
/// traces exported, the span is the request's server span; an own API request (`/v1/…`) that
/// carries a W3C `traceparent` continues its caller's trace (webhooks and the operator pages start
/// their own: an outside sender does not choose what is sampled).
fn request_span(request: &Request) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "request",
        request_id,
        method = %request.method(),
        path = request.uri().path(),
        otel.kind = "server",
        otel.name = format!("{} {}", request.method(), span_route(request.uri().path())),
    );
    if request.uri().path().starts_with("/v1/")
        && let Some(traceparent) = header_text(request, "traceparent")
    {
        crate::telemetry::set_parent(&span, traceparent, header_text(request, "tracestate"));
    }
    span
}

fn header_text<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A span name for a path: ids (a long segment, or one with a digit other than a version such as
/// `v1`) become `{id}`, so that the names stay few (`GET /v1/executions/{id}`).
fn span_route(path: &str) -> String {
    let segments: Vec<&str> = path
        .split('/')
        .take(8)
        .map(|segment| {
            let version = segment.len() > 1
                && segment.starts_with('v')
                && segment[1..].bytes().all(|b| b.is_ascii_digit());
            if segment.len() > 24 || (!version && segment.bytes().any(|b| b.is_ascii_digit())) {
                "{id}"
            } else {
                segment
            }
        })
        .collect();
    segments.join("/")
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(detail, "a request handler panicked");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        axum::Json(serde_json::json!({"error": "internal", "message": "internal error; see the service log"})),
    )
        .into_response()
}

/// A body size limit for a route, checked before the body is read: a `Content-Length` above it
/// is answered `413` at once; a chunked body is cut where it passes the limit (the handler's body
/// extractor then answers `413`).
pub async fn limit_body(limit_bytes: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit_bytes as u64) {
        return too_large(limit_bytes);
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::Body::new(http_body_util::Limited::new(body, limit_bytes));
    next.run(Request::from_parts(parts, body)).await
}

pub(crate) fn too_large(limit_bytes: usize) -> Response {
    let mut response = (
        StatusCode::PAYLOAD_TOO_LARGE,
        axum::Json(serde_json::json!({
            "error": "body_too_large",
            "message": format!("the body is larger than {limit_bytes} bytes"),
        })),
    )
        .into_response();
    // The rest of the body is not read: the connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting and lets open requests
/// finish for up to `grace`.
pub fn spawn(
    listener: Listener,
    router: Router,
    grace: Duration,
    shutdown: CancellationToken,
    metrics: Arc<crate::metrics::Registry>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let Listener {
        name,
        tcp,
        config,
        tls,
    } = listener;
    let acceptor: Option<TlsAcceptor> = match &tls {
        Some(certificate) => match certificate.acceptor() {
            Ok(acceptor) => Some(acceptor),
            Err(error) => return tokio::spawn(async move { Err(error) }),
        },
        None => None,
    };
    let watcher = tls.map(|certificate| {
        certificate.spawn_watcher(config.tls_reload_interval, name, shutdown.clone())
    });
    let scope = metrics.clone();
    tokio::spawn(scope.scope(async move {
        let connections = Arc::new(Semaphore::new(config.connections_max));
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_header_size(config.header_bytes_max)
            .max_buf_size(config.header_bytes_max.max(8192) * 2);
        let http = Arc::new(http);
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => permit.expect("never closed"),
                () = shutdown.cancelled() => break,
            };
            let (stream, _peer) = tokio::select! {
                accepted = tcp.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors, or a connection reset before it was taken:
                        // wait a little rather than spin.
                        tracing::warn!(listener = name, %error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let service = TowerToHyperService::new(router.clone());
            let watch = graceful.watcher();
            let http = http.clone();
            let acceptor = acceptor.clone();
            let handshake_timeout = config.header_read_timeout;
            let open = metrics.clone();
            tokio::spawn(open.clone().scope(async move {
                let _permit = permit;
                metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN, "listener" => name)
                    .increment(1.0);
                let served = match acceptor {
                    None => {
                        let connection = http.serve_connection(TokioIo::new(stream), service);
                        watch.watch(connection).await
                    }
                    Some(acceptor) => {
                        // The handshake counts against the header read timeout: a client that
                        // opens a connection and says nothing is dropped just the same.
                        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await
                        {
                            Ok(Ok(stream)) => {
                                let connection =
                                    http.serve_connection(TokioIo::new(stream), service);
                                watch.watch(connection).await
                            }
                            Ok(Err(error)) => {
                                tracing::debug!(listener = name, %error, "TLS handshake failed");
                                Ok(())
                            }
                            Err(_) => Ok(()),
                        }
                    }
                };
                if let Err(error) = served {
                    tracing::debug!(listener = name, %error, "connection ended with an error");
                }
                metrics::gauge!(crate::metrics::HTTP_CONNECTIONS_OPEN, "listener" => name)
                    .decrement(1.0);
            }));
        }
        drop(tcp);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                listener = name,
                "open connections did not finish within the grace period"
            );
        }
        if let Some(watcher) = watcher {
            watcher.abort();
        }
        Ok(())
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn span_names_keep_routes_and_hide_ids() {
        assert_eq!(super::span_route("/v1/executions"), "/v1/executions");
        assert_eq!(
            super::span_route("/v1/executions/0193a4b2-7c1e-7000-8000-000000000000"),
            "/v1/executions/{id}"
        );
        assert_eq!(
            super::span_route("/v1/dead-letters/12/retry"),
            "/v1/dead-letters/{id}/retry"
        );
        assert_eq!(super::span_route("/webhooks/mint"), "/webhooks/mint");
        let long = format!("/{}", "a/".repeat(1000));
        assert!(super::span_route(&long).len() < 20);
    }
}
