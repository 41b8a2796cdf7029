//! The HTTP request step: one POST of the flow's webhook, no retry, a short timeout, and the
//! webhook faults (drop, duplicate, delay, reorder).
//!
//! The step completes (and the instance can become `Finished`) only after the POST was answered,
//! failed or timed out; a dropped, delayed or held-back webhook completes the step at once, so the
//! hint arrives late or never while the instance is already finished.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::model;
use crate::shared::Shared;
use crate::state::WebhookJob;

enum Plan {
    Drop,
    Delay(Duration),
    Reorder(Duration),
    Duplicate,
    Normal,
}

/// Runs the HTTP request step of `job`.
pub(crate) async fn deliver(app: Arc<Shared>, job: WebhookJob) {
    let plan = {
        let mut st = app.lock();
        let faults = st.faults.clone();
        let delay = Duration::from_millis(faults.webhook_delay_millis);
        if st.draw(faults.webhook_drop_rate) {
            st.usage.webhooks.dropped += 1;
            Plan::Drop
        } else if st.draw(faults.webhook_delay_rate) {
            st.usage.webhooks.delayed += 1;
            Plan::Delay(delay)
        } else if st.draw(faults.webhook_reorder_rate) {
            st.usage.webhooks.reordered += 1;
            Plan::Reorder(delay)
        } else if st.draw(faults.webhook_duplicate_rate) {
            st.usage.webhooks.duplicated += 1;
            Plan::Duplicate
        } else {
            Plan::Normal
        }
    };
    match plan {
        Plan::Drop => step_done(&app, &job),
        Plan::Delay(delay) => {
            step_done(&app, &job);
            tokio::select! {
                _ = app.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => post(&app, &job).await,
            }
        }
        Plan::Reorder(delay) => {
            step_done(&app, &job);
            let previous = app.lock().held_webhook.replace(job.clone());
            if let Some(previous) = previous {
                post(&app, &previous).await;
            }
            tokio::select! {
                _ = app.cancel.cancelled() => {}
                _ = tokio::time::sleep(delay) => {
                    let held = {
                        let mut st = app.lock();
                        match &st.held_webhook {
                            Some(h) if h.seq == job.seq => st.held_webhook.take(),
                            _ => None,
                        }
                    };
                    if let Some(held) = held {
                        post(&app, &held).await;
                    }
                }
            }
        }
        Plan::Normal => {
            post(&app, &job).await;
            step_done(&app, &job);
            flush_held(&app).await;
        }
        Plan::Duplicate => {
            post(&app, &job).await;
            step_done(&app, &job);
            post(&app, &job).await;
            flush_held(&app).await;
        }
    }
}

/// Sends a webhook held back by the reorder fault, now that a later one went out.
async fn flush_held(app: &Arc<Shared>) {
    let held = app.lock().held_webhook.take();
    if let Some(held) = held {
        post(app, &held).await;
    }
}

fn step_done(app: &Arc<Shared>, job: &WebhookJob) {
    let jobs = {
        let (mut st, now) = app.current();
        st.webhook_step_done(job, now)
    };
    app.send_webhooks(jobs);
    app.wake();
}

/// One POST attempt; counts it as delivered (2xx) or failed.
async fn post(app: &Arc<Shared>, job: &WebhookJob) {
    let timeout = {
        let mut st = app.lock();
        st.usage.webhooks.attempted += 1;
        Duration::from_millis(st.service.webhook_timeout_millis)
    };
    let mut request = app
        .http
        .post(&job.url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .header("user-agent", "Signicat-Mint-HttpRequest/1.0 (mint-sim)");
    for (name, value) in &job.headers {
        request = request.header(name, value);
    }
    if let Some(secret) = &job.hmac_secret {
        // The timestamp is real wall-clock time: it protects a real delivery against replay, and a
        // receiver checks it against its own clock, which does not follow the simulated one.
        let timestamp = Utc::now().timestamp();
        let signature = sign(secret, timestamp, &job.body);
        request = request
            .header(model::SIGNATURE_TIMESTAMP_HEADER, timestamp.to_string())
            .header(model::SIGNATURE_HEADER, signature);
    }
    let result = tokio::select! {
        _ = app.cancel.cancelled() => return,
        result = request.body(job.body.clone()).send() => result,
    };
    let ok = matches!(&result, Ok(response) if response.status().is_success());
    let mut st = app.lock();
    if ok {
        st.usage.webhooks.delivered += 1;
    } else {
        st.usage.webhooks.failed += 1;
    }
}

/// `v1=<hex(HMAC-SHA256(secret, "<timestamp>.<body>"))>`, the value of `X-Mint-Signature`.
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let message = format!("{timestamp}.{body}");
    format!(
        "v1={}",
        hex::encode(hmac_sha256(secret.as_bytes(), message.as_bytes()))
    )
}

/// HMAC-SHA256 (RFC 2104) over sha2, so the simulator needs no extra crate.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut padded = [0u8; BLOCK];
    if key.len() > BLOCK {
        padded[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        padded[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(padded.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(padded.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }
}
