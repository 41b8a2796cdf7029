//! Webhook records are kept for a while, then pruned: a flood of authentic webhooks for unknown
//! instances must not fill the disk, and after Mint's own 30-day retention nothing can happen to an
//! instance any more.
//!
//! Records of webhooks that named no execution of ours go after `webhook.unmatched_retention`
//! (default 1 day); every other record after `webhook.retention` (default 30 days). A periodic task
//! deletes them in batches of [`PRUNE_BATCH_MAX`] (short transactions that never hold the writer
//! long) every `webhook.prune_interval`.
//!
//! Application events go after `events.retention` (default 30 days) once every configured
//! endpoint has them delivered or dead-lettered, oldest first; the feed answers a reader whose
//! cursor fell behind the pruned part with `410 cursor_expired` instead of skipping silently.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, delta};
use crate::config::{EventsConfig, WebhookConfig};
use crate::store::SharedStore;

/// Rows (webhook records, events) deleted in one transaction, at most.
pub const PRUNE_BATCH_MAX: i64 = 5_000;

/// Deletes every webhook record past its retention at `now`; answers how many went.
pub async fn prune_webhooks(
    store: &SharedStore,
    config: &WebhookConfig,
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let before = now - delta(config.retention);
    let unmatched_before = now - delta(config.unmatched_retention);
    in_batches(|| store.prune_webhooks(before, unmatched_before, PRUNE_BATCH_MAX)).await
}

/// Deletes the events older than `retention` at `now` that every endpoint of `endpoints` has
/// had delivered or dead-lettered (`EventStore::prune_events`); answers how many went.
pub async fn prune_events(
    store: &SharedStore,
    retention: Duration,
    endpoints: &[String],
    now: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let before = now - delta(retention);
    in_batches(|| store.prune_events(before, endpoints, PRUNE_BATCH_MAX)).await
}

/// Runs `batch` (one pruning transaction of at most [`PRUNE_BATCH_MAX`] rows) until a batch
/// comes back short; answers the rows deleted in all.
async fn in_batches<F, Fut>(mut batch: F) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = batch().await?;
        total += deleted;
        if deleted < PRUNE_BATCH_MAX as u64 {
            return Ok(total);
        }
        // Let the intake's writer in between batches.
        tokio::task::yield_now().await;
    }
}

/// Prunes webhook records and events every `webhook.prune_interval` (real time) until
/// `shutdown`.
pub fn spawn(
    store: SharedStore,
    config: WebhookConfig,
    events: &EventsConfig,
    clock: Clock,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let events_retention = events.retention;
    let endpoints: Vec<String> = events.endpoints.iter().map(|e| e.name.clone()).collect();
    tokio::spawn(async move {
        let interval = config.prune_interval.max(Duration::from_secs(1));
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            match prune_webhooks(&store, &config, clock.now()).await {
                Ok(0) => {}
                Ok(deleted) => {
                    crate::metrics::webhooks_pruned(deleted);
                    tracing::info!(deleted, "webhook records past their retention were pruned");
                }
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "pruning webhook records failed; trying again at the next interval"
                ),
            }
            match prune_events(&store, events_retention, &endpoints, clock.now()).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(deleted, "events past events.retention were pruned");
                }
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    "pruning events failed; trying again at the next interval"
                ),
            }
        }
    })
}
