//! Application events on their way out: signed deliveries to the configured endpoints
//! ([`Dispatcher`]) and the feed (`feed.rs`, `GET /v1/events`).
//!
//! The events themselves are written by the store, in the transaction of the change they report
//! (`store/outbox.rs`); this module only reads them. A [`Dispatcher`] runs on every replica with
//! the workers: it moves each endpoint's fan-out cursor (new deliveries), claims due deliveries
//! with a lease (`SKIP LOCKED` on PostgreSQL, so replicas share the work), sends each one signed
//! per the Standard Webhooks specification (`crate::signing`), and records the outcome under the
//! lease's fencing token: `delivered` on a `2xx`, else another attempt after the next wait of
//! `events.retry_schedule` (jittered), and a dead letter after the last. It also writes
//! `execution.at_risk` for results near Mint's deletion, every `events.at_risk_scan_interval`.
//!
//! Architecture invariants: **at least once, in order per execution and endpoint.** A delivery is
//! marked delivered only after a `2xx`, so a crash or a lost lease sends it again (with the same
//! `webhook-id`); and an execution's later event is not claimed for an endpoint while an earlier one
//! is pending there. **Attempts are bounded**: `events.timeout` for the whole exchange, no
//! redirect followed, at most [`RESPONSE_BYTES_MAX`] of an answer read; a secret never reaches a
//! log (keys live in `SigningKey`, URLs are logged without their query).

pub mod feed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::clock::{Clock, delta};
use crate::config::EventsConfig;
use crate::signing::{SigningKey, signature_header};
use crate::store::{Delivery, DeliveryOutcome, EndpointFilter, EventType, SharedStore};

/// The most of an endpoint's answer that is read (the rest is dropped with the connection).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// Events one fan-out moves an endpoint's cursor by at most (it runs again at once if full).
const FAN_OUT_BATCH: i64 = 1000;
/// The longest idle wait between looks at the queue when nothing rings.
const IDLE_WAIT_MAX: Duration = Duration::from_secs(5);
/// How much of an endpoint's error answer is kept with the delivery (for `mintgate events list`).
const ERROR_TEXT_MAX: usize = 300;

/// An endpoint ready to send to: its keys decoded, its filter parsed.
struct Endpoint {
    filter: EndpointFilter,
    url: Url,
    /// The current key first, then the previous one during a rotation.
    keys: Vec<SigningKey>,
}

/// The endpoints of a configuration as the store's filters (`redeliver` uses them too).
pub fn filters(config: &EventsConfig) -> Vec<EndpointFilter> {
    config
        .endpoints
        .iter()
        .map(|e| EndpointFilter {
            name: e.name.clone(),
            types: e.types.iter().filter_map(|t| EventType::parse(t)).collect(),
        })
        .collect()
}

/// Delivers events to the configured endpoints, and writes `execution.at_risk`.
pub struct Dispatcher {
    store: SharedStore,
    clock: Clock,
    endpoints: Vec<Endpoint>,
    names: Vec<String>,
    http: reqwest::Client,
    owner: String,
    retry_waits: Vec<Duration>,
    concurrency: usize,
    lease: Duration,
    at_risk_window: Duration,
    at_risk_scan_interval: Duration,
    /// Rung when an attempt ends: a slot is free, and the execution's next event may be due.
    finished: Notify,
}

impl Dispatcher {
    /// A dispatcher for `config`'s endpoints (validated by `Config::validate`), claiming as
    /// `owner`.
    pub fn new(
        config: &EventsConfig,
        at_risk_window: Duration,
        store: SharedStore,
        clock: Clock,
        owner: String,
    ) -> anyhow::Result<Self> {
        let mut endpoints = Vec::new();
        for (endpoint, filter) in config.endpoints.iter().zip(filters(config)) {
            let mut keys = Vec::new();
            for secret in std::iter::once(&endpoint.secret).chain(&endpoint.previous_secret) {
                keys.push(SigningKey::parse(secret).map_err(|why| {
                    anyhow::anyhow!("`events.endpoints` {:?}: a secret {why}", endpoint.name)
                })?);
            }
            endpoints.push(Endpoint {
                filter,
                url: endpoint.url.clone(),
                keys,
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("mintgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            names: endpoints.iter().map(|e| e.filter.name.clone()).collect(),
            endpoints,
            store,
            clock,
            http,
            owner,
            retry_waits: config.retry_waits(),
            concurrency: config.concurrency,
            lease: config.lease,
            at_risk_window,
            at_risk_scan_interval: config.at_risk_scan_interval,
            finished: Notify::new(),
        })
    }

    /// Records the endpoints (a new one starts after the newest event); `Application::build`
    /// does it before the workers start.
    pub async fn register(&self) -> anyhow::Result<()> {
        self.store.register_endpoints(&self.names).await
    }

    /// Writes `execution.at_risk` for results Mint deletes within the window; answers how many.
    pub async fn flag_at_risk(&self) -> anyhow::Result<u64> {
        let now = self.clock.now();
        self.store
            .flag_at_risk(now + delta(self.at_risk_window), now, 500)
            .await
    }

    /// Moves every endpoint's cursor to the newest event, queueing its deliveries.
    pub async fn fan_out(&self) -> anyhow::Result<()> {
        for endpoint in &self.endpoints {
            while self
                .store
                .fan_out(&endpoint.filter, self.clock.now(), FAN_OUT_BATCH)
                .await?
                == FAN_OUT_BATCH as u64
            {}
        }
        Ok(())
    }

    /// One round, step by step (tests, the bench): fan out, claim up to `events.concurrency`
    /// due deliveries and send them all. Answers how many were attempted.
    pub async fn run_once(&self) -> anyhow::Result<usize> {
        self.fan_out().await?;
        let claimed = self.claim(self.concurrency).await?;
        let count = claimed.len();
        futures::future::join_all(claimed.into_iter().map(|d| self.deliver(d))).await;
        Ok(count)
    }

    async fn claim(&self, limit: usize) -> anyhow::Result<Vec<Delivery>> {
        let now = self.clock.now();
        self.store
            .claim_deliveries(
                &self.names,
                &self.owner,
                now,
                // The attempt's timeout is real time, so is the lease that must outlast it: on
                // a clock faster than real time (the lab, the tests) a lease in clock time lapsed
                // under a slow attempt and the delivery was sent twice.
                now + delta(self.clock.clock_time(self.lease)),
                i64::try_from(limit).unwrap_or(i64::MAX),
            )
            .await
    }

    /// Runs until `shutdown`: fan-out, claims and attempts as slots free up, the at-risk scan on
    /// its interval. Attempts in flight at shutdown are abandoned (their leases lapse and they are
    /// sent again: at least once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let wake = self.store.outbox_wake();
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut in_flight = tokio::task::JoinSet::new();
        let mut next_scan = Instant::now();
        while !shutdown.is_cancelled() {
            let committed = wake.notified();
            let finished = self.finished.notified();
            tokio::pin!(committed, finished);
            committed.as_mut().enable();
            finished.as_mut().enable();
            while in_flight.try_join_next().is_some() {}
            if Instant::now() >= next_scan {
                if let Err(error) = self.flag_at_risk().await {
                    tracing::warn!(error = format!("{error:#}"), "the at-risk scan failed");
                }
                next_scan = Instant::now() + self.clock.real(self.at_risk_scan_interval);
            }
            let mut full = false;
            if !self.endpoints.is_empty() {
                let round = async {
                    self.fan_out().await?;
                    let free = slots.available_permits();
                    if free == 0 {
                        return Ok(false);
                    }
                    let claimed = self.claim(free).await?;
                    let full = claimed.len() == free;
                    for delivery in claimed {
                        let Ok(permit) = slots.clone().acquire_owned().await else {
                            break;
                        };
                        let this = self.clone();
                        in_flight.spawn(async move {
                            let _permit = permit;
                            let ran = std::panic::AssertUnwindSafe(this.deliver(delivery))
                                .catch_unwind()
                                .await;
                            if ran.is_err() {
                                tracing::error!("an event delivery panicked; its lease lapses");
                            }
                            this.finished.notify_one();
                        });
                    }
                    anyhow::Ok(full)
                };
                match round.await {
                    Ok(more) => full = more,
                    Err(error) => {
                        tracing::warn!(error = format!("{error:#}"), "event delivery round failed")
                    }
                }
            }
            if full {
                // Every slot was filled: more may be due; wait for one to free.
                tokio::select! {
                    () = &mut finished => continue,
                    () = shutdown.cancelled() => break,
                }
            }
            let next = self
                .store
                .next_delivery_at(&self.names)
                .await
                .ok()
                .flatten();
            let cap = IDLE_WAIT_MAX.min(next_scan.saturating_duration_since(Instant::now()));
            let sleep = match next {
                Some(at) => self.clock.sleep_until(at, cap).boxed(),
                None => tokio::time::sleep(cap).boxed(),
            };
            tokio::select! {
                () = sleep => {}
                () = &mut committed => {}
                () = &mut finished => {}
                () = shutdown.cancelled() => break,
            }
        }
        in_flight.abort_all();
    }

    /// One attempt, and its outcome recorded (metrics and logs included).
    async fn deliver(&self, delivery: Delivery) {
        let Some(endpoint) = self
            .endpoints
            .iter()
            .find(|e| e.filter.name == delivery.endpoint)
        else {
            return;
        };
        let outcome = self.attempt(endpoint, &delivery).await;
        let now = self.clock.now();
        let outcome = match outcome {
            Ok(status) => DeliveryOutcome::Delivered { status },
            Err((status, error)) => DeliveryOutcome::Failed {
                status,
                error,
                retry_at: retry_at(
                    &self.retry_waits,
                    usize::try_from(delivery.attempts + 1).unwrap_or(usize::MAX),
                    now,
                    rand::random::<f64>(),
                ),
            },
        };
        match self
            .store
            .finish_delivery(&delivery, &self.owner, &outcome, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(
                    event_id = delivery.event.id,
                    endpoint = delivery.endpoint,
                    "a delivery's lease was lost; its outcome is not recorded (it is sent again)"
                );
                return;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    event_id = delivery.event.id,
                    "cannot record a delivery attempt; it is sent again after its lease"
                );
                return;
            }
        }
        let endpoint_label = delivery.endpoint.clone();
        match &outcome {
            DeliveryOutcome::Delivered { .. } => {
                let lag = (now - delivery.event.at).to_std().unwrap_or_default();
                crate::metrics::event_delivered(endpoint_label, lag);
            }
            DeliveryOutcome::Failed {
                status,
                error,
                retry_at,
            } => {
                crate::metrics::event_attempt_failed(endpoint_label.clone());
                if retry_at.is_none() {
                    crate::metrics::event_dead(endpoint_label);
                    tracing::error!(
                        event_id = delivery.event.id,
                        endpoint = delivery.endpoint,
                        attempts = delivery.attempts + 1,
                        status,
                        error,
                        "event delivery out of attempts: dead letter"
                    );
                } else {
                    tracing::info!(
                        event_id = delivery.event.id,
                        endpoint = delivery.endpoint,
                        attempts = delivery.attempts + 1,
                        status,
                        error,
                        retry_at = ?retry_at,
                        "event delivery failed; it will be retried"
                    );
                }
            }
        }
    }

    /// Sends one event. `Ok(status)` for a `2xx`; else the status (if any) and why.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        delivery: &Delivery,
    ) -> Result<u16, (Option<u16>, String)> {
        let body = delivery.event.payload.clone().into_bytes();
        // The receiver compares the timestamp with its own clock (replay protection): real time.
        let timestamp = Utc::now().timestamp();
        let signature = signature_header(&endpoint.keys, &delivery.event.id, timestamp, &body);
        let sent = self
            .http
            .post(endpoint.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.event.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(error) => return Err((None, describe(error))),
        };
        let status = response.status();
        // Read a bounded part of the answer: enough to reuse the connection for small ones, and
        // to say why a refusal happened.
        let mut answer = Vec::new();
        while answer.len() < RESPONSE_BYTES_MAX {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(error) if status.is_success() => {
                    // The endpoint said yes before the body broke off: it has the event.
                    tracing::debug!(error = %describe(error), "an endpoint's answer was cut");
                    break;
                }
                Err(error) => return Err((Some(status.as_u16()), describe(error))),
            }
        }
        if status.is_success() {
            return Ok(status.as_u16());
        }
        let why = if status.is_redirection() {
            format!("answered {status} (redirects are not followed)")
        } else {
            let text = String::from_utf8_lossy(&answer[..answer.len().min(ERROR_TEXT_MAX)])
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>();
            format!("answered {status}: {}", text.trim())
        };
        Err((Some(status.as_u16()), why))
    }
}

/// An HTTP error without its URL (a query may carry a token).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let error = error.without_url();
    let mut text = format!("{kind}: {error}");
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A retry wait spread by ±10 % (`draw` in 0..1): deliveries that failed together (an
/// endpoint's outage) do not all come back at the same instant.
fn jitter_with(wait: Duration, draw: f64) -> Duration {
    wait.mul_f64(0.9 + 0.2 * draw.clamp(0.0, 1.0))
}

/// When the next attempt of a failed delivery is due: `None` once the schedule is spent (a dead
/// letter). `attempts` counts the attempts made, the failed one included.
pub fn retry_at(
    waits: &[Duration],
    attempts: usize,
    now: DateTime<Utc>,
    draw: f64,
) -> Option<DateTime<Utc>> {
    let wait = waits.get(attempts.checked_sub(1)?)?;
    Some(now + delta(jitter_with(*wait, draw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_spans_about_three_days_and_then_dead_letters() {
        let waits = crate::config::EventsConfig::default().retry_waits();
        let total: Duration = waits.iter().sum();
        assert!(
            total > Duration::from_secs(70 * 3600) && total < Duration::from_secs(76 * 3600),
            "{total:?}"
        );
        let now = Utc::now();
        assert_eq!(
            retry_at(&waits, 1, now, 0.5),
            Some(now + delta(Duration::from_secs(5)))
        );
        assert!(retry_at(&waits, waits.len(), now, 0.5).is_some());
        assert_eq!(retry_at(&waits, waits.len() + 1, now, 0.5), None);
    }

    #[test]
    fn jitter_spreads_a_wait_by_a_tenth_either_way() {
        let wait = Duration::from_secs(100);
        assert_eq!(jitter_with(wait, 0.0), Duration::from_secs(90));
        assert_eq!(jitter_with(wait, 1.0), Duration::from_secs(110));
        let draws: std::collections::BTreeSet<_> = (0..50)
            .map(|_| jitter_with(wait, rand::random::<f64>()))
            .collect();
        assert!(draws.len() > 40, "no spread: {draws:?}");
    }
}
