//! Logging: JSON lines in production, plain text for people; `RUST_LOG` filters (default `info`).
//!
//! JSON lines carry the current span and the whole span list with their fields, so every line a
//! job's work logs names its `job_id`, `execution_id` and (once known) `instance_id`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the global subscriber once; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = if format == LogFormat::Json {
        tracing::subscriber::set_global_default(json_subscriber(std::io::stderr, filter))
            .map_err(|e| e.to_string())
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init()
            .map_err(|e| e.to_string())
    };
    let _ = result;
}

/// The production JSON subscriber, writing to `writer` (tests capture it).
pub fn json_subscriber<W>(writer: W, filter: EnvFilter) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .finish()
}
