//! Durable webhook ingest with group commit: webhooks that arrive together are recorded in one
//! transaction, so one fsync acknowledges many of them. Each request is answered only after the
//! transaction holding its webhook has committed.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::model::WebhookRecord;
use crate::store::{SharedStore, WebhookRecorded};

type Reply = oneshot::Sender<Result<WebhookRecorded, String>>;

/// The handle the webhook receiver records through.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<(WebhookRecord, DateTime<Utc>, Reply)>,
}

/// Webhooks waiting for the writer, at most (back-pressure beyond it).
const QUEUE_MAX: usize = 4096;
/// Webhooks committed together, at most.
const BATCH_MAX: usize = 256;

impl Ingest {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: SharedStore) -> Self {
        let (queue, mut receiver) =
            mpsc::channel::<(WebhookRecord, DateTime<Utc>, Reply)>(QUEUE_MAX);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH_MAX);
            while let Some(first) = receiver.recv().await {
                batch.push(first);
                while batch.len() < BATCH_MAX {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                let (records, replies): (Vec<_>, Vec<_>) = batch
                    .drain(..)
                    .map(|(record, check_at, reply)| ((record, check_at), reply))
                    .unzip();
                match store.record_webhooks(records).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(error) => {
                        let text = format!("{error:#}");
                        tracing::error!(error = text, "recording webhooks failed");
                        for reply in replies {
                            let _ = reply.send(Err(text.clone()));
                        }
                    }
                }
            }
        });
        Self { queue }
    }

    /// Records one webhook; answers once it is committed.
    pub async fn record(
        &self,
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    ) -> anyhow::Result<WebhookRecorded> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((record, check_at, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the webhook writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the webhook writer has stopped"))?
            .map_err(|e| anyhow::anyhow!(e))
    }
}
