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
