//! What the handlers, the scheduler and the webhook tasks share: the state behind its one lock,
//! the clock, and the queue of webhooks to send.
//!
//! This module knows no handler: handlers depend on it, never the other way round. Webhook jobs
//! go into a queue that the server loop (`app.rs`) drains, so the state never has to call the
//! webhook sender.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::SimConfig;
use crate::result_file::mix64;
use crate::state::{State, WebhookJob};

/// Everything the handlers, the scheduler and the webhook tasks share.
pub(crate) struct Shared {
    state: Mutex<State>,
    pub clock: Clock,
    wake: Notify,
    webhooks: mpsc::UnboundedSender<WebhookJob>,
    pub http: reqwest::Client,
    pub cancel: CancellationToken,
    /// `http://host:port/mint`, for workflow URLs.
    pub base_url: String,
    trace_counter: AtomicU64,
}

impl Shared {
    /// The shared part of a simulator for a validated `config`, and the receiving end of its
    /// webhook queue.
    pub fn new(
        config: &SimConfig,
        base_url: String,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<WebhookJob>)> {
        let start = Utc::now();
        let start = DateTime::from_timestamp_millis(start.timestamp_millis()).unwrap_or(start);
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let (webhooks, queue) = mpsc::unbounded_channel();
        let shared = Self {
            state: Mutex::new(State::new(config, start)),
            clock: Clock::new(start, config.time_scale),
            wake: Notify::new(),
            webhooks,
            http,
            cancel: CancellationToken::new(),
            base_url,
            trace_counter: AtomicU64::new(config.seed),
        };
        Ok((Arc::new(shared), queue))
    }

    /// The state, as it is (no events run). Hold it briefly and never across an await.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent-enough data for a simulator.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state brought up to the simulated now (due events run, their webhooks queued), and
    /// that now.
    pub fn current(&self) -> (MutexGuard<'_, State>, DateTime<Utc>) {
        let now = self.clock.now();
        let mut st = self.lock();
        let jobs = st.process_due(now);
        self.send_webhooks(jobs);
        (st, now)
    }

    /// Queues the HTTP request steps of `jobs` (the server loop starts them).
    pub fn send_webhooks(&self, jobs: Vec<WebhookJob>) {
        for job in jobs {
            // Closed only once the server loop stopped: nothing is sent any more.
            let _ = self.webhooks.send(job);
        }
    }

    /// Resolves once the simulated clock has reached `due` (after `(due - now) / timeScale` of
    /// real time, sooner if the clock is advanced); at once while the clock is frozen, since a
    /// frozen clock cannot model a wait that no advance is known to end.
    pub async fn wait_until(&self, due: DateTime<Utc>) {
        loop {
            match self.clock.real_until(due) {
                None => return,
                Some(wait) if wait.is_zero() => return,
                // Re-read the clock now and then: an advance or a new scale changes the wait.
                Some(wait) => tokio::select! {
                    _ = tokio::time::sleep(wait.min(Duration::from_millis(100))) => {}
                    _ = self.cancel.cancelled() => return,
                },
            }
        }
    }

    /// Tells the scheduler that events or the clock changed.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Shared::wake`] is called.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    /// A W3C-style trace id, unique per answer.
    pub fn trace_id(&self) -> String {
        let n = self.trace_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "00-{:016x}{:016x}-{:016x}-01",
            mix64(n),
            mix64(n ^ 1),
            mix64(n ^ 2)
        )
    }
}
