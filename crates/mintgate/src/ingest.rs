//! Durable intake with group commit: the accepted requests (new executions from `POST
//! /v1/executions`, webhooks from `POST /webhooks/mint`) that arrive together are made durable in
//! one transaction, so one fsync acknowledges many of them. Each request is answered only after
//! the transaction holding its write has committed.
//!
//! One writer task takes whatever is waiting when it is free (at most [`BATCH_MAX`]) and hands it
//! to [`crate::store::Store::write_batch`]: under light load a batch is one request and costs what
//! a transaction of its own would; under a burst, the requests that arrive while one batch
//! commits form the next. A write that fails fails alone (the store writes the batch again one by
//! one), and its request alone is answered with an error.
//!
//! The store writes a batch in the fewest round trips its database allows
//! ([`crate::store::Store::write_batch`]; on SQLite the transaction begins and commits inside the
//! batch's own queries).
//!
//! The writer holds the intake's turn while it has requests to write
//! ([`crate::store::IntakeTurn`]): the executor's transactions wait for the burst's batches (each
//! at most 50 ms) instead of each batch waiting behind a queue of them on SQLite's one writer
//! connection (two thirds of a batch's time in issue 16's measurement), or sharing the CPU with
//! them on PostgreSQL.

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use crate::model::WebhookRecord;
use crate::store::{Created, NewExecution, SharedStore, WebhookRecorded, Write, Written};

type Reply = oneshot::Sender<anyhow::Result<Written>>;

/// The handle the API and the webhook receiver write through.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<(Write, Reply)>,
}

/// Writes waiting for the writer, at most (back-pressure beyond it).
const QUEUE_MAX: usize = 8192;
/// How long the writer keeps the intake's turn after a batch for the next one (see
/// [`crate::store::IntakeTurn`]): the requests of a burst come back within it, answered.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);
/// Writes committed together, at most.
pub const BATCH_MAX: usize = 512;

impl Ingest {
    /// Starts the writer task; it ends when every handle is dropped.
    pub fn start(store: SharedStore) -> Self {
        let (queue, mut receiver) = mpsc::channel::<(Write, Reply)>(QUEUE_MAX);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH_MAX);
            // Intake before the executor (see `IntakeTurn`): the turn is held from a batch until
            // no request has come for `LINGER`.
            let turn = store.intake_turn();
            let mut held = false;
            loop {
                let received = if held {
                    tokio::time::timeout(LINGER, receiver.recv_many(&mut batch, BATCH_MAX))
                        .await
                        .ok()
                } else {
                    Some(receiver.recv_many(&mut batch, BATCH_MAX).await)
                };
                let Some(received) = received else {
                    // No request for `LINGER`: the burst is over, the executor goes on.
                    if let Some(turn) = &turn {
                        turn.release();
                    }
                    held = false;
                    continue;
                };
                if received == 0 {
                    break;
                }
                if let Some(turn) = &turn
                    && !held
                {
                    turn.hold();
                    held = true;
                }
                let (writes, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let outcomes = store.write_batch(writes).await;
                if outcomes.len() != replies.len() {
                    // A store that answers a batch with the wrong count is a bug: answer every
                    // request with an error rather than a wrong outcome.
                    tracing::error!(
                        writes = replies.len(),
                        outcomes = outcomes.len(),
                        "the store answered a batch with the wrong number of outcomes"
                    );
                    for reply in replies {
                        let _ = reply.send(Err(anyhow::anyhow!("the batch was not recorded")));
                    }
                    continue;
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    if let Err(error) = &outcome {
                        tracing::error!(
                            error = format!("{error:#}"),
                            "an accepted request could not be recorded"
                        );
                    }
                    let _ = reply.send(outcome);
                }
            }
            if let Some(turn) = &turn
                && held
            {
                turn.release();
            }
        });
        Self { queue }
    }

    async fn write(&self, write: Write) -> anyhow::Result<Written> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((write, reply))
            .await
            .map_err(|_| anyhow::anyhow!("the writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the writer has stopped"))?
    }

    /// Creates an execution and its start job; answers once they are committed.
    pub async fn create_execution(&self, new: NewExecution) -> anyhow::Result<Created> {
        match self.write(Write::Execution(new)).await? {
            Written::Execution(created) => Ok(*created),
            Written::Webhook(_) => anyhow::bail!("the writer answered a webhook for an execution"),
        }
    }

    /// Records one webhook; answers once it is committed.
    pub async fn record_webhook(
        &self,
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    ) -> anyhow::Result<WebhookRecorded> {
        match self.write(Write::Webhook { record, check_at }).await? {
            Written::Webhook(recorded) => Ok(recorded),
            Written::Execution(_) => {
                anyhow::bail!("the writer answered an execution for a webhook")
            }
        }
    }
}
