//! An optional hook that adds trace-context headers (W3C `traceparent`, `tracestate`) to every
//! request, so Mint's side of a call can join the caller's trace.
//!
//! Why a hook and not an OpenTelemetry dependency: the client stays free of any tracing backend,
//! and the service decides which one it wires (and which versions). The hook is called on the
//! request's task, inside that attempt's `mint.request` (or `mint.token`) span, once per attempt, so
//! an OpenTelemetry bridge reads the current span's context and each attempt gets its own parent:
//!
//! ```ignore
//! // In the service, with `opentelemetry` and `tracing-opentelemetry`:
//! #[derive(Debug)]
//! struct Otel;
//! impl mint_client::Propagator for Otel {
//!     fn inject(&self, headers: &mut mint_client::TraceHeaders) {
//!         use tracing_opentelemetry::OpenTelemetrySpanExt;
//!         struct Into<'a>(&'a mut mint_client::TraceHeaders);
//!         impl opentelemetry::propagation::Injector for Into<'_> {
//!             fn set(&mut self, key: &str, value: String) { self.0.set(key, value) }
//!         }
//!         let cx = tracing::Span::current().context();
//!         opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Into(headers)));
//!     }
//! }
//! let config = config.propagator(std::sync::Arc::new(Otel));
//! ```

use std::fmt;

/// Headers the client itself sets, which a propagator may not replace.
const RESERVED: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "host",
    "content-type",
    "content-length",
    "accept",
    "range",
    "if-range",
];

/// The headers a [`Propagator`] adds to one request (OpenTelemetry's `Injector` shape: `set`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TraceHeaders {
    entries: Vec<(String, String)>,
}

impl TraceHeaders {
    /// Sets a header (replacing an earlier value of the same name). Names are case-insensitive.
    pub fn set(&mut self, name: &str, value: String) {
        let name = name.to_ascii_lowercase();
        self.entries.retain(|(n, _)| *n != name);
        self.entries.push((name, value));
    }

    /// The headers set so far.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Whether none was set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Adds trace-context headers to every request the client sends (token requests included).
///
/// Called synchronously once per attempt, inside the attempt's span: keep it cheap. Headers whose
/// name or value is not valid HTTP, and headers the client sets itself (`Authorization`, `Range`,
/// …), are dropped with a debug log.
pub trait Propagator: Send + Sync + fmt::Debug + 'static {
    /// Sets the headers for the current request, e.g. `traceparent` and `tracestate` from the
    /// current span's context.
    fn inject(&self, headers: &mut TraceHeaders);
}

/// Calls the propagator and adds its headers to a request.
pub(crate) fn apply(propagator: &dyn Propagator, headers: &mut reqwest::header::HeaderMap) {
    let mut trace = TraceHeaders::default();
    propagator.inject(&mut trace);
    for (name, value) in trace.iter() {
        if RESERVED.contains(&name) {
            tracing::debug!(
                target: crate::http_log::HTTP_LOG_TARGET,
                header = name,
                "the propagator may not set this header; dropped"
            );
            continue;
        }
        match (
            reqwest::header::HeaderName::from_bytes(name.as_bytes()),
            reqwest::header::HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.insert(n, v);
            }
            _ => tracing::debug!(
                target: crate::http_log::HTTP_LOG_TARGET,
                header = name,
                "the propagator gave an invalid header; dropped"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<(&'static str, &'static str)>);

    impl Propagator for Fixed {
        fn inject(&self, headers: &mut TraceHeaders) {
            for (n, v) in &self.0 {
                headers.set(n, (*v).to_owned());
            }
        }
    }

    #[test]
    fn valid_trace_headers_are_added_and_reserved_or_invalid_ones_dropped() {
        let p = Fixed(vec![
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("TraceState", "vendor=x"),
            ("Authorization", "Bearer stolen"),
            ("bad header", "x"),
            ("x-ok", "line\nbreak"),
        ]);
        let mut headers = reqwest::header::HeaderMap::new();
        apply(&p, &mut headers);
        assert_eq!(headers.len(), 2, "{headers:?}");
        assert_eq!(
            headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(headers["tracestate"], "vendor=x");
    }
}
