//! Item 10: one span per request with the useful fields; never a token or a secret.

use std::io::Write;
use std::sync::{Arc, Mutex};

use mint_client::{ListFlows, StartInstance};
use tracing_subscriber::fmt::format::FmtSpan;

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

#[tokio::test]
async fn every_request_has_a_span_and_no_secret_is_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("mint_client=trace"))
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let guard = helpers::capture_tracing(subscriber);

    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    client.list_flows(&ListFlows::default()).await.unwrap();
    let _ = client
        .start_instance(&helpers::flow("flow-nope"), &StartInstance::default())
        .await
        .unwrap_err();
    drop(guard);

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("mint.request"), "{log}");
    for field in [
        "method=\"GET\"",
        "path=\"/api/flows\"",
        "status=200",
        "units=1",
        "attempt=1",
        "latency_ms=",
    ] {
        assert!(log.contains(field), "missing {field} in {log}");
    }
    assert!(
        log.contains("status=404") && log.contains("trace_id="),
        "the 404 carries Mint's trace id: {log}"
    );
    for secret in ["demo-secret", "Bearer ", "access_token"] {
        assert!(
            !log.to_lowercase().contains(&secret.to_lowercase()),
            "{secret} leaked: {log}"
        );
    }
    // The exchange log shows headers at trace, credentials redacted.
    let shown: Vec<&str> = log
        .match_indices("authorization: ")
        .map(|(i, _)| &log[i..])
        .collect();
    assert!(!shown.is_empty(), "{log}");
    assert!(
        shown
            .iter()
            .all(|rest| rest.starts_with("authorization: [redacted]")),
        "{log}"
    );
}
