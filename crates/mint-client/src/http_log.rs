//! Verbose HTTP logging: every exchange with Mint and its token endpoint, under one `tracing` target
//! ([`HTTP_LOG_TARGET`]), with secrets redacted before anything is formatted.
//!
//! Why a dedicated target: Signicat's go-live checklist asks for verbose HTTP logging to explain
//! cryptic errors, and an operator turns it on for this alone (`RUST_LOG=mint_client::http=debug`)
//! without drowning in the rest. What is logged:
//!
//! * `debug`: one event per exchange: method, path (never the query), status, latency, Mint's trace
//!   id, the call and attempt, and for an error status Mint's error body (JSON with sensitive
//!   fields redacted, at most [`LOGGED_BODY_BYTES_MAX`] bytes); a request that got no answer, with
//!   its error.
//! * `trace`: the request and response headers, with `Authorization`, cookies and every header whose
//!   name mentions a token, secret, key, password, signature, session or credential replaced by
//!   `[redacted]`.
//!
//! Never logged: request bodies (the token request's form may hold `client_secret`), successful
//! token answers (they hold `access_token`), result files.

use std::time::Duration;

use reqwest::header::HeaderMap;
use tracing::Level;

/// The `tracing` target of the exchange log.
pub const HTTP_LOG_TARGET: &str = "mint_client::http";

/// Most bytes of an error body logged.
pub const LOGGED_BODY_BYTES_MAX: usize = 1024;

const REDACTED: &str = "[redacted]";

/// Words that make a header name or a JSON key sensitive.
const SENSITIVE_WORDS: [&str; 10] = [
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "signature",
    "session",
    "credential",
    "apikey",
    "api-key",
];

/// Whether the exchange log is on at `debug` (so an error body worth reading is worth logging).
pub(crate) fn debug_enabled() -> bool {
    tracing::enabled!(target: HTTP_LOG_TARGET, Level::DEBUG)
}

/// Logs a request about to leave: at `trace`, its method, path and redacted headers.
pub(crate) fn request(method: &str, url: &url::Url, headers: &HeaderMap) {
    if tracing::enabled!(target: HTTP_LOG_TARGET, Level::TRACE) {
        tracing::trace!(
            target: HTTP_LOG_TARGET,
            method,
            path = url.path(),
            headers = %headers_for_log(headers),
            "request"
        );
    }
}

/// One answered exchange: at `debug` the summary (and for an error status the redacted, truncated
/// body, when it was read); at `trace` the response headers.
pub(crate) fn response(
    method: &str,
    url: &url::Url,
    status: u16,
    latency: Duration,
    trace_id: Option<&str>,
    headers: &HeaderMap,
    error_body: Option<&[u8]>,
) {
    let latency_ms = latency.as_millis() as u64;
    let path = url.path();
    match error_body.filter(|_| status >= 400) {
        Some(body) => tracing::debug!(
            target: HTTP_LOG_TARGET,
            method,
            path,
            status,
            latency_ms,
            trace_id,
            error_body = %body_for_log(body),
            "exchange"
        ),
        None => tracing::debug!(
            target: HTTP_LOG_TARGET,
            method,
            path,
            status,
            latency_ms,
            trace_id,
            "exchange"
        ),
    }
    if tracing::enabled!(target: HTTP_LOG_TARGET, Level::TRACE) {
        tracing::trace!(
            target: HTTP_LOG_TARGET,
            method,
            path,
            status,
            headers = %headers_for_log(headers),
            "response headers"
        );
    }
}

/// An exchange that got no answer (connection refused or cut, timeout).
pub(crate) fn no_answer(
    method: &str,
    url: &url::Url,
    latency: Duration,
    error: &(dyn std::error::Error + 'static),
) {
    tracing::debug!(
        target: HTTP_LOG_TARGET,
        method,
        path = url.path(),
        latency_ms = latency.as_millis() as u64,
        error = %error_chain(error),
        "exchange without an answer"
    );
}

/// An error with its sources, one line. reqwest's errors name the URL: only its path is kept, and
/// a URL never carries a secret here (the token request's credentials travel in a header or the
/// body), but a query could, so it is cut off.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    strip_queries(&text)
}

/// Removes every `?query` from URLs in a text (up to the next space or closing bracket).
fn strip_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_query = false;
    for c in text.chars() {
        if in_query {
            if c.is_whitespace() || matches!(c, ')' | ']' | '"' | '\'') {
                in_query = false;
                out.push(c);
            }
            continue;
        }
        if c == '?' && out.contains("://") {
            in_query = true;
            out.push_str("?[query]");
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether a header's value must not be logged.
pub(crate) fn is_sensitive_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // `WWW-Authenticate` only says why a token was refused (`error="invalid_token"`): useful, and
    // never a credential.
    if name == "www-authenticate" {
        return false;
    }
    name.ends_with("-key") || SENSITIVE_WORDS.iter().any(|w| name.contains(w))
}

fn is_sensitive_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('_', "-");
    key == "key" || key.ends_with("-key") || SENSITIVE_WORDS.iter().any(|w| key.contains(w))
}

/// Headers as one line, sensitive values redacted.
pub(crate) fn headers_for_log(headers: &HeaderMap) -> String {
    let mut parts = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let shown = if is_sensitive_header(name.as_str()) {
            REDACTED.to_owned()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        parts.push(format!("{name}: {shown}"));
    }
    parts.join("; ")
}

/// An error body for the log: JSON with sensitive fields redacted, else printable text; at most
/// [`LOGGED_BODY_BYTES_MAX`] bytes.
pub(crate) fn body_for_log(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(mut json) => {
            redact_json(&mut json);
            json.to_string()
        }
        Err(_) => body
            .iter()
            .take(LOGGED_BODY_BYTES_MAX + 1)
            .map(|&b| match b {
                b'\n' | b'\r' | b'\t' => ' ',
                0x20..=0x7e => char::from(b),
                _ => '.',
            })
            .collect(),
    };
    truncate(text)
}

fn truncate(mut text: String) -> String {
    if text.len() > LOGGED_BODY_BYTES_MAX {
        let mut cut = LOGGED_BODY_BYTES_MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if is_sensitive_key(key) {
                    *v = serde_json::Value::String(REDACTED.to_owned());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// The trace id Mint (or a proxy) put on an answer, from the usual headers, for logs and errors.
pub(crate) fn trace_id_of(headers: &HeaderMap) -> Option<String> {
    [
        "x-trace-id",
        "x-mint-trace-id",
        "traceparent",
        "x-request-id",
        "x-correlation-id",
    ]
    .iter()
    .find_map(|h| headers.get(*h))
    .and_then(|v| v.to_str().ok())
    .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn credentials_in_headers_are_redacted() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer abc.def"));
        h.insert("x-api-key", HeaderValue::from_static("k-123"));
        h.insert("x-mint-signature", HeaderValue::from_static("v1=beef"));
        h.insert("set-cookie", HeaderValue::from_static("sid=1"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert(
            "www-authenticate",
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        let line = headers_for_log(&h);
        for secret in ["abc.def", "k-123", "beef", "sid=1"] {
            assert!(!line.contains(secret), "{line}");
        }
        assert!(line.contains("content-type: application/json"), "{line}");
        assert!(line.contains("invalid_token"), "{line}");
    }

    #[test]
    fn sensitive_json_fields_are_redacted_and_long_bodies_cut() {
        let body = br#"{"error":"invalid_client","access_token":"t-1","nested":{"client_secret":"s-1","refresh_token":"r"},"traceId":"abc"}"#;
        let logged = body_for_log(body);
        assert!(
            !logged.contains("t-1") && !logged.contains("s-1"),
            "{logged}"
        );
        assert!(
            logged.contains("invalid_client") && logged.contains("traceId"),
            "{logged}"
        );
        let long = vec![b'x'; 5000];
        assert_eq!(
            body_for_log(&long).chars().count(),
            LOGGED_BODY_BYTES_MAX + 1
        );
        assert_eq!(body_for_log(b"<html>\n</html>"), "<html> </html>");
    }

    #[test]
    fn queries_are_cut_from_error_texts() {
        assert_eq!(
            strip_queries("error sending request for url (http://h/p?secret=1&x=2): boom"),
            "error sending request for url (http://h/p?[query]): boom"
        );
        assert_eq!(strip_queries("why? no url"), "why? no url");
    }

    proptest! {
        #[test]
        fn a_secret_under_a_sensitive_key_never_survives(
            key in "(access_token|client_secret|password|apiKey|x-api-key|sessionId)",
            secret in "[A-Za-z0-9]{12,24}",
            depth in 0usize..4,
        ) {
            let mut json = serde_json::json!({ key.clone(): secret.clone() });
            for _ in 0..depth {
                json = serde_json::json!({"wrap": [json]});
            }
            let logged = body_for_log(json.to_string().as_bytes());
            prop_assert!(!logged.contains(&secret), "{}", logged);
        }

        #[test]
        fn any_body_is_logged_without_panicking(body in prop::collection::vec(any::<u8>(), 0..3000)) {
            let _ = body_for_log(&body);
        }
    }

    #[test]
    fn trace_id_is_read_from_common_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(trace_id_of(&h), None);
        h.insert("x-request-id", HeaderValue::from_static("r-1"));
        h.insert("x-trace-id", HeaderValue::from_static("t-1"));
        assert_eq!(trace_id_of(&h).as_deref(), Some("t-1"));
    }
}
