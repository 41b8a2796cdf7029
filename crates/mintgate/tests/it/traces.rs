//! Issue 13 item 6: OpenTelemetry traces. One execution is one trace, from the own API's request
//! (continuing the caller's `traceparent`) through each job step to each Mint call, received here
//! by a minimal OTLP/HTTP receiver; every Mint request carries that trace's `traceparent`, as a
//! recording proxy in front of the simulator sees. Off by default: nothing is exported, no exporter
//! is started and no Mint request carries a trace context.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse as _;
use mintgate::config::TelemetryConfig;
use mintgate::model::ExecutionState;
use mintgate::telemetry::Tracing;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::helpers::{API_KEY, Setup, capture_tracing, spawn_with};

/// The caller's trace context on `POST /v1/executions`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A minimal OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`;
/// collects the spans and the `service.name` they came with.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
    services: Arc<Mutex<Vec<String>>>,
    exports: Arc<Mutex<u32>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let receiver = self.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let receiver = receiver.clone();
                async move {
                    assert_eq!(
                        headers.get(header::CONTENT_TYPE).unwrap(),
                        "application/x-protobuf"
                    );
                    let request = ExportTraceServiceRequest::decode(body).unwrap();
                    *receiver.exports.lock().unwrap() += 1;
                    for resource_spans in request.resource_spans {
                        let service = resource_spans
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        receiver.services.lock().unwrap().push(service);
                        for scope in resource_spans.scope_spans {
                            receiver.spans.lock().unwrap().extend(scope.spans);
                        }
                    }
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                        .into_response()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }
}

/// What the recording proxy saw: method, path, `traceparent`.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A pass-through proxy in front of the simulator's API that notes each request's
/// `traceparent`. Answers its own base URL (the simulator's, on the proxy's address).
async fn recording_proxy(sim_base: &str, seen: Seen) -> String {
    let upstream = url::Url::parse(sim_base).unwrap();
    let origin = upstream.origin().ascii_serialization();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
        let (client, origin, seen) = (client.clone(), origin.clone(), seen.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let traceparent = parts
                .headers
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned());
            seen.lock().unwrap().push((
                parts.method.to_string(),
                parts.uri.path().to_owned(),
                traceparent,
            ));
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let mut forwarded = client.request(parts.method, format!("{origin}{path}"));
            for (name, value) in &parts.headers {
                if name != header::HOST && name != header::CONTENT_LENGTH {
                    forwarded = forwarded.header(name, value);
                }
            }
            let answer = forwarded.body(body).send().await.unwrap();
            let status = answer.status();
            let headers = answer.headers().clone();
            let mut response = answer.bytes().await.unwrap().into_response();
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != header::TRANSFER_ENCODING && name != header::CONNECTION {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut base = upstream;
    base.set_port(Some(proxy_address.port())).unwrap();
    base.to_string().trim_end_matches('/').to_owned()
}

/// The API requests the simulator served the client (its token endpoint is not behind the proxy).
fn api_requests(usage: &mint_sim::ClientUsage) -> u64 {
    usage
        .requests_by_endpoint
        .iter()
        .filter(|(endpoint, _)| *endpoint != "token")
        .map(|(_, n)| n)
        .sum()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A span's `kind` string attribute (the `job` spans' `kind` field).
fn attribute(span: &Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// Starts the service with `telemetry` (or none) and the Mint API behind a recording proxy.
async fn traced_app(
    telemetry: Option<(TelemetryConfig, Tracing)>,
    seen: Seen,
) -> crate::helpers::TestApp {
    let mut app = spawn_with(Setup::default()).await;
    let proxy = recording_proxy(&app.sim.base_url(), seen).await;
    let profile = app.config.mint.get_mut("sandbox").unwrap();
    profile.api_base = proxy.parse().unwrap();
    if let Some((config, tracing)) = telemetry {
        app.config.telemetry = config;
        app.telemetry = Some(tracing);
    }
    // Nothing has happened yet: start again with the changed configuration.
    app.crash_and_restart().await;
    app
}

#[tokio::test]
async fn one_execution_is_one_trace_from_the_request_through_each_job_to_each_mint_call() {
    let receiver = Receiver::default();
    let endpoint = receiver.start().await;
    let config = TelemetryConfig {
        otlp_endpoint: Some(endpoint.parse().unwrap()),
        service_name: "mintgate-under-test".to_owned(),
        ..TelemetryConfig::default()
    };
    let tracing = Tracing::start(&config).unwrap().expect("an exporter");
    // The test's runtime has one thread: the service's tasks report to this subscriber.
    let _guard = capture_tracing(tracing_subscriber::registry().with(tracing.layer()));
    let seen = Seen::default();
    let mut app = traced_app(Some((config, tracing.clone())), seen.clone()).await;

    // The caller sends its own trace context: the request continues it.
    let response = app
        .http
        .post(app.url("/v1/executions"))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({"flowId": "flow-kyc-basic", "input": {"customer": "c"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response
        .json::<mintgate::view::ExecutionView>()
        .await
        .unwrap()
        .id;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    // The simulator billed exactly one start, and every API request it served went through the
    // proxy (its own counts, not ours).
    let usage = app.admin.usage().await.unwrap().clients["demo"].clone();
    assert_eq!(usage.starts_billed, 1, "{usage:?}");
    assert_eq!(api_requests(&usage), seen.lock().unwrap().len() as u64);

    // A graceful shutdown exports what is left.
    app.app.take().unwrap().shutdown().await;
    let spans = receiver.spans.lock().unwrap().clone();
    assert!(*receiver.exports.lock().unwrap() >= 1);
    assert!(
        receiver
            .services
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.contains("mintgate-under-test")),
        "{:?}",
        receiver.services.lock().unwrap()
    );
    let by_id: BTreeMap<String, &Span> = spans.iter().map(|s| (hex(&s.span_id), s)).collect();
    assert_eq!(by_id.len(), spans.len(), "a span was exported twice");
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();

    // Every span of the execution (its request, its jobs, the Mint calls) is in the caller's
    // trace; the test's own reads of the execution and the webhook are traces of their own.
    let of_the_execution = |span: &&Span| {
        span.name == "POST /v1/executions"
            || span.name.starts_with("job ")
            || span.name.starts_with("mint.")
    };
    assert!(
        spans.iter().any(|s| s.name == "POST /webhooks/mint"),
        "{names:?}"
    );
    for span in spans.iter().filter(of_the_execution) {
        assert_eq!(
            hex(&span.trace_id),
            CALLER_TRACE,
            "{} is in another trace ({names:?})",
            span.name
        );
    }
    // The API request: a server span, child of the caller's span.
    let requests: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "POST /v1/executions")
        .collect();
    assert_eq!(requests.len(), 1, "{names:?}");
    let request = requests[0];
    assert_eq!(hex(&request.parent_span_id), CALLER_SPAN);
    assert_eq!(request.kind, SpanKind::Server as i32);
    let request_id = hex(&request.span_id);

    // The jobs: start, check(s), download, each a child of the request.
    let jobs: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("job "))
        .collect();
    let mut kinds: Vec<String> = Vec::new();
    for job in &jobs {
        assert_eq!(
            hex(&job.parent_span_id),
            request_id,
            "{} is not a child of the request",
            job.name
        );
        let kind = attribute(job, "kind").unwrap();
        assert_eq!(job.name, format!("job {kind}"));
        assert_eq!(
            attribute(job, "execution_id").unwrap(),
            id.to_string(),
            "{}",
            job.name
        );
        kinds.push(kind);
    }
    for kind in ["start", "check", "download"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} job: {kinds:?}");
    }

    // The Mint calls: each attempt's span lies under a job (or, for the flow check the API makes
    // before it accepts, under the request); each job kind made at least one.
    let ancestor_job = |span: &Span| -> Option<String> {
        let mut parent = hex(&span.parent_span_id);
        for _ in 0..16 {
            let up = by_id.get(&parent)?;
            if up.name.starts_with("job ") {
                return attribute(up, "kind");
            }
            if hex(&up.span_id) == request_id {
                return Some("request".to_owned());
            }
            parent = hex(&up.parent_span_id);
        }
        None
    };
    let calls: Vec<&Span> = spans.iter().filter(|s| s.name == "mint.request").collect();
    let mut calls_by_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for call in &calls {
        let job = ancestor_job(call)
            .unwrap_or_else(|| panic!("a Mint call outside the execution's spans: {call:?}"));
        calls_by_job
            .entry(job)
            .or_default()
            .push(attribute(call, "operation").unwrap_or_default());
    }
    for kind in ["start", "check", "download"] {
        assert!(
            calls_by_job.contains_key(kind),
            "no Mint call under a {kind} job: {calls_by_job:?}"
        );
    }

    // What Mint saw: every request carried `traceparent` in the caller's trace, naming the
    // exported span of its attempt as the parent.
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty());
    let call_ids: Vec<String> = calls.iter().map(|s| hex(&s.span_id)).collect();
    for (method, path, traceparent) in &seen {
        let traceparent = traceparent
            .as_deref()
            .unwrap_or_else(|| panic!("{method} {path} came without traceparent"));
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], CALLER_TRACE, "{method} {path}: {traceparent}");
        assert!(
            call_ids.iter().any(|id| id == parts[2]),
            "{method} {path}: {traceparent} names no exported mint.request span"
        );
        assert_eq!(parts[3], "01");
    }
    assert!(
        seen.iter().any(|(method, _, _)| method == "POST"),
        "the start went through the proxy: {seen:?}"
    );
}

#[tokio::test]
async fn without_the_setting_nothing_is_exported_and_mint_sees_no_trace_context() {
    // No `[telemetry]`: no exporter is started at all.
    assert!(
        Tracing::start(&TelemetryConfig::default())
            .unwrap()
            .is_none()
    );
    let seen = Seen::default();
    let app = traced_app(None, seen.clone()).await;
    let response = app
        .http
        .post(app.url("/v1/executions"))
        .bearer_auth(API_KEY)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({"flowId": "flow-kyc-basic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response
        .json::<mintgate::view::ExecutionView>()
        .await
        .unwrap()
        .id;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let usage = app.admin.usage().await.unwrap().clients["demo"].clone();
    assert_eq!(api_requests(&usage), seen.lock().unwrap().len() as u64);
    let stored = app.pipeline().store.execution(id).await.unwrap().unwrap();
    assert_eq!(stored.traceparent, None, "a trace context was stored");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(method, _, _)| method == "POST"),
        "{seen:?}"
    );
    for (method, path, traceparent) in &seen {
        assert_eq!(
            traceparent, &None,
            "{method} {path} carried a trace context"
        );
    }
}
