//! Logging: JSON lines in production, plain text for people; `RUST_LOG` filters (default `info`).
//!
//! JSON lines carry the current span and the whole span list with their fields, so every line a
//! job's work logs names its `job_id`, `execution_id` and (once known) `instance_id`.
//!
//! Traces (`[telemetry]`, off by default): the same `tracing` spans exported as OpenTelemetry spans
//! over OTLP/HTTP by [`Tracing`]. One execution is one trace: the own API's `request` span (a child
//! of the caller's `traceparent`, when it sent one), then each `job` span, whose parent is the
//! request's context stored with the execution (`executions.traceparent`), then mint-client's
//! `mint.request`/`mint.token` spans; every Mint request carries `traceparent` ([`TraceContext`]).

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber once (with `tracing`'s OpenTelemetry layer when traces are
/// exported); later calls do nothing.
pub fn init(format: LogFormat, tracing: Option<&Tracing>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = if format == LogFormat::Json {
        tracing::subscriber::set_global_default(
            json_subscriber(std::io::stderr, filter).with(tracing.map(Tracing::layer)),
        )
        .map_err(|e| e.to_string())
    } else {
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter);
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry()
                .with(fmt)
                .with(tracing.map(Tracing::layer)),
        )
        .map_err(|e| e.to_string())
    };
    let _ = result;
}

/// Exports the service's spans to an OTLP/HTTP collector while it lives. Cloning shares one
/// exporter; [`Tracing::shutdown`] sends what is left and stops it.
///
/// The SDK's batch processor exports from a thread of its own with a blocking HTTP client: the
/// service's runtime never waits for the collector, and a collector that is down costs dropped
/// spans (logged by the SDK), never the service's work.
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Starts the exporter of `[telemetry]`; `None` (nothing runs) when `otlp_endpoint` is unset.
    pub fn start(config: &TelemetryConfig) -> anyhow::Result<Option<Self>> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let Some(url) = config.traces_url() else {
            return Ok(None);
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url.as_str())
            .with_timeout(config.export_timeout)
            // The environment's OTEL_EXPORTER_OTLP_* headers stay out: `[telemetry]` is the
            // configuration.
            .with_headers(HashMap::new())
            .build()
            .map_err(|e| anyhow::anyhow!("building the OTLP exporter (`telemetry`): {e}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Some(Self { provider }))
    }

    /// The layer that turns this service's spans (and mint-client's) into OpenTelemetry spans,
    /// whatever `RUST_LOG` says about logs.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let tracer = self.provider.tracer("mintgate");
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(
                Targets::new()
                    .with_target("mintgate", tracing::Level::INFO)
                    .with_target("mint_client", tracing::Level::INFO),
            )
    }

    /// Exports the spans still buffered and stops the exporter (waits up to the export timeout,
    /// off the runtime's threads).
    pub async fn shutdown(&self) {
        let provider = self.provider.clone();
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => tracing::debug!("trace exporter stopped"),
            Ok(Err(error)) => tracing::warn!(%error, "trace exporter shutdown failed"),
            Err(error) => tracing::warn!(%error, "trace exporter shutdown failed"),
        }
    }
}

/// Adds the current span's W3C trace context (`traceparent`, `tracestate`) to every Mint request
/// (mint-client's [`Propagator`](mint_client::Propagator) hook, called inside each attempt's span).
/// Without an exported trace (telemetry off) it adds nothing.
#[derive(Debug, Default)]
pub struct TraceContext;

impl mint_client::Propagator for TraceContext {
    fn inject(&self, headers: &mut mint_client::TraceHeaders) {
        struct Into<'a>(&'a mut mint_client::TraceHeaders);
        impl Injector for Into<'_> {
            fn set(&mut self, key: &str, value: String) {
                self.0.set(key, value);
            }
        }
        let cx = tracing::Span::current().context();
        if cx.span().span_context().is_valid() {
            TraceContextPropagator::new().inject_context(&cx, &mut Into(headers));
        }
    }
}

/// The `traceparent` of a span's OpenTelemetry context (what an execution stores so that its jobs
/// join the request's trace); `None` without one (telemetry off).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` (not entered yet) a child of a W3C trace context: an incoming request's
/// `traceparent`/`tracestate`, or one an execution stored. A malformed value is ignored (the span
/// starts a trace of its own), as it is without telemetry.
pub fn set_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    struct Carrier<'a>(&'a str, Option<&'a str>);
    impl Extractor for Carrier<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            match key {
                "traceparent" => Some(self.0),
                "tracestate" => self.1,
                _ => None,
            }
        }
        fn keys(&self) -> Vec<&str> {
            vec!["traceparent", "tracestate"]
        }
    }
    let cx = TraceContextPropagator::new().extract(&Carrier(traceparent, tracestate));
    if cx.span().span_context().is_valid() {
        // Fails only without the OpenTelemetry layer (nothing to link) or once the span started.
        let _ = span.set_parent(cx);
    }
}

/// The operator commands' logging, on stderr as plain text (their answers are on stdout):
/// nothing by default, each HTTP exchange with Mint at `-v` (mint-client's `mint_client::http`
/// target at debug: method, path, status, latency, trace id, Mint's error body), headers too at
/// `-vv` (trace); `RUST_LOG` overrides both. mint-client redacts secrets and tokens before they
/// reach any subscriber.
pub fn init_operator(verbosity: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbosity {
            0 => "off",
            1 => "warn,mintgate=info,mint_client=info,mint_client::http=debug",
            _ => "info,mintgate=debug,mint_client=debug,mint_client::http=trace",
        })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}

/// The production JSON subscriber, writing to `writer` (tests capture it). `filter` applies to the
/// log lines only, so that a layer added to it (traces) sees spans that `RUST_LOG` does not log.
pub fn json_subscriber<W>(
    writer: W,
    filter: EnvFilter,
) -> impl tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .with_filter(filter),
    )
}
