//! Application events: the outbox, the feed's reads and the deliveries' queue.
//!
//! One mechanism writes every event: [`SqlStore::patch_execution`](super::sql) reads the row it
//! changes before and after, and [`transitions`] says which events the change means
//! (`execution.started`, `execution.waiting_for_user`, `execution.archived`, `execution.failed`,
//! `execution.expired`, `execution.needs_decision`); `execution.at_risk` is written by
//! [`EventStore::flag_at_risk`] when it marks an execution at risk. Either way the event row is
//! written in the transaction of the change, so an application is told of a change if and only if
//! it committed.
//!
//! Architecture invariant: **`outbox.seq` is assigned in commit order.** A reader at cursor `n`
//! never meets a row with a smaller `seq` that commits later. SQLite writes one transaction at a
//! time; on PostgreSQL a `BIGSERIAL` is taken at insert and transactions commit in any order, so
//! each transaction takes a transaction-level advisory lock ([`Dialect::LOCK_OUTBOX`]) before its
//! first event and keeps it until it has committed (the lock is released after the commit is
//! visible): sequence numbers are handed out one committing transaction at a time.
//!
//! Deliveries are one row per event and endpoint (`event_deliveries`): an endpoint's fan-out moves
//! its cursor over the outbox (the same commit-ordered `seq` as the feed), and claims take a lease
//! and bump a fencing token, with `SKIP LOCKED` on PostgreSQL, like the job queue's. Only the
//! earliest pending delivery of an execution to an endpoint can be claimed: an execution's later
//! event is never sent before its earlier one was delivered or dead-lettered.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::Migrate;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Transaction, Type,
};
use uuid::Uuid;

use super::sql::{Dialect, SqlStore};
use crate::model::{Execution, ExecutionState, Progress};

/// What an application is told about, by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The instance started in Mint; `workflowUrl` is where to send the end user.
    Started,
    /// The instance waits for its end user (at a step).
    WaitingForUser,
    /// The result file is archived and verified.
    Archived,
    /// It will not finish (faulted, cancelled, refused for good).
    Failed,
    /// Mint deleted the instance before its result was archived.
    Expired,
    /// A lost start could neither be found nor proven absent: an operator decides.
    NeedsDecision,
    /// The result is not archived yet and Mint deletes it within `pipeline.at_risk_window`.
    AtRisk,
}

impl EventType {
    pub const ALL: [EventType; 7] = [
        Self::Started,
        Self::WaitingForUser,
        Self::Archived,
        Self::Failed,
        Self::Expired,
        Self::NeedsDecision,
        Self::AtRisk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "execution.started",
            Self::WaitingForUser => "execution.waiting_for_user",
            Self::Archived => "execution.archived",
            Self::Failed => "execution.failed",
            Self::Expired => "execution.expired",
            Self::NeedsDecision => "execution.needs_decision",
            Self::AtRisk => "execution.at_risk",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }
}

/// One event of the outbox, as the feed serves it and deliveries send it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// The feed's cursor: assigned in commit order.
    pub seq: i64,
    /// `msg_…`: the `webhook-id`, the same on every retry and redelivery.
    pub id: String,
    pub execution_id: Uuid,
    pub event_type: String,
    pub at: DateTime<Utc>,
    /// The JSON body, exactly as it is sent (and signed).
    pub payload: String,
}

/// The events a change of an execution means, from its state and progress before the change and
/// the row after it.
pub fn transitions(
    before_state: ExecutionState,
    before_progress: Option<&Progress>,
    after: &Execution,
) -> Vec<EventType> {
    let mut events = Vec::new();
    if after.state != before_state {
        match after.state {
            ExecutionState::Running => events.push(EventType::Started),
            ExecutionState::Archived => events.push(EventType::Archived),
            ExecutionState::Failed => events.push(EventType::Failed),
            ExecutionState::Expired => events.push(EventType::Expired),
            ExecutionState::NeedsDecision => events.push(EventType::NeedsDecision),
            _ => {}
        }
    }
    if after.state == ExecutionState::Running
        && let Some(Progress::WaitingForUser { step, .. }) = &after.progress
    {
        let waited_there_before = before_state == ExecutionState::Running
            && matches!(before_progress,
                Some(Progress::WaitingForUser { step: before, .. }) if before == step);
        if !waited_there_before {
            events.push(EventType::WaitingForUser);
        }
    }
    events
}

/// Whether a change that sets the state to `state`, and leaves the progress as it is, may mean an
/// event (see [`transitions`]): an execution that enters any other state, such as the executor's
/// `starting` before each start is sent, is changed without reading its row before and after.
pub fn entering_may_emit(state: ExecutionState) -> bool {
    matches!(
        state,
        ExecutionState::Running
            | ExecutionState::Archived
            | ExecutionState::Failed
            | ExecutionState::Expired
            | ExecutionState::NeedsDecision
    )
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The body of an event (Standard Webhooks' `type`, `timestamp`, `data`, plus its `id`). Never the
/// execution's input: its ids, state and times, and what the event is about.
pub fn payload(id: &str, event_type: EventType, at: DateTime<Utc>, e: &Execution) -> String {
    let mut data = serde_json::json!({
        "executionId": e.id,
        "idempotencyKey": e.idempotency_key,
        "environment": e.environment,
        "flowId": e.flow_id,
        "state": e.state.as_str(),
        "instanceId": e.instance_id,
        "createdAt": rfc3339(e.created_at),
        "startedAt": e.started_at.map(rfc3339),
        "finishedAt": e.finished_at.map(rfc3339),
        "deadlineAt": e.deadline_at.map(rfc3339),
    });
    let extra = match event_type {
        EventType::Started | EventType::WaitingForUser => serde_json::json!({
            "workflowUrl": e.workflow_url,
            "workflowUrlUnknown": e.workflow_url.is_none() && e.workflow_url_unknown,
            "step": match &e.progress {
                Some(Progress::WaitingForUser { step, .. }) if event_type == EventType::WaitingForUser => step.clone(),
                _ => None,
            },
        }),
        EventType::Archived => serde_json::json!({
            "archivedAt": e.archived_at.map(rfc3339),
            "sha256": e.sha256,
            "bytes": e.bytes,
        }),
        EventType::Failed | EventType::Expired => {
            serde_json::json!({ "reason": e.failure_reason })
        }
        EventType::NeedsDecision => serde_json::json!({ "reason": e.decision_reason }),
        EventType::AtRisk => serde_json::json!({}),
    };
    if let (Some(data), serde_json::Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    serde_json::json!({
        "id": id,
        "type": event_type.as_str(),
        "timestamp": rfc3339(at),
        "data": data,
    })
    .to_string()
}

/// The body an event keeps once its execution is erased: ids and the event, nothing derived from
/// the person's data.
fn erased_payload(id: &str, event_type: &str, at: DateTime<Utc>, execution_id: Uuid) -> String {
    serde_json::json!({
        "id": id,
        "type": event_type,
        "timestamp": rfc3339(at),
        "data": {"executionId": execution_id, "erased": true},
    })
    .to_string()
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub endpoint: String,
    pub seq: i64,
    pub execution_id: Uuid,
    /// `pending` (claimable, or leased), `delivered` or `dead`.
    pub state: String,
    /// Attempts made so far (before this one, for a claimed delivery).
    pub attempts: i64,
    pub next_at: DateTime<Utc>,
    pub lease_token: i64,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub event: OutboxEvent,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryOutcome {
    /// The endpoint answered `2xx`.
    Delivered { status: u16 },
    /// Anything else; tried again at `retry_at`, or a dead letter without one.
    Failed {
        status: Option<u16>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// An endpoint as the store needs it: its name and the event types it takes (all if empty).
#[derive(Debug, Clone)]
pub struct EndpointFilter {
    pub name: String,
    pub types: Vec<EventType>,
}

/// Which events `redeliver` sends again.
#[derive(Debug, Clone)]
pub enum Redeliver {
    /// One event, by its id (`msg_…`).
    Event(String),
    /// Every event written at or after this time.
    Since(DateTime<Utc>),
}

/// The outbox and its deliveries. Every [`super::Store`] is one.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Events after the cursor `after` (a `seq`), oldest first, at most `limit`.
    async fn outbox_after(&self, after: i64, limit: i64) -> anyhow::Result<Vec<OutboxEvent>>;

    /// One event by its id.
    async fn outbox_event(&self, id: &str) -> anyhow::Result<Option<OutboxEvent>>;

    /// Rung when events were committed: by this process after its commits, and (PostgreSQL) by
    /// [`EventStore::spawn_outbox_listener`] for other replicas' commits.
    fn outbox_wake(&self) -> Arc<tokio::sync::Notify>;

    /// Starts a task that rings [`EventStore::outbox_wake`] when another replica commits events,
    /// until `shutdown` (none where one process owns the database).
    fn spawn_outbox_listener(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>>;

    /// Writes `execution.at_risk` for executions finished in Mint, not archived, whose deletion
    /// deadline is before `horizon` (once per execution), at most `limit`. Answers how many.
    async fn flag_at_risk(
        &self,
        horizon: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64>;

    /// Records endpoints not seen before, their fan-out starting after the newest event.
    async fn register_endpoints(&self, names: &[String]) -> anyhow::Result<()>;

    /// Adds deliveries to `endpoint` for the events past its cursor (those its filter takes), at
    /// most `limit`, and moves the cursor. Answers how many events it passed.
    async fn fan_out(
        &self,
        endpoint: &EndpointFilter,
        now: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64>;

    /// Claims up to `limit` due deliveries to `endpoints` (each the earliest pending one of its
    /// execution at its endpoint), with a lease until `lease_until` and a new fencing token.
    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Delivery>>;

    /// Records an attempt's outcome if the lease is still held; answers whether it was.
    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        owner: &str,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool>;

    /// When the next pending delivery to `endpoints` is due (or its lease lapses).
    async fn next_delivery_at(&self, endpoints: &[String])
    -> anyhow::Result<Option<DateTime<Utc>>>;

    /// Deliveries, newest event first: of one `state` if given, at most `limit`.
    async fn deliveries(&self, state: Option<&str>, limit: i64) -> anyhow::Result<Vec<Delivery>>;

    /// Sends events again to `endpoints` (those whose filter takes them): each delivery pending
    /// now, with fresh attempts. Answers how many deliveries were queued.
    async fn redeliver(
        &self,
        which: &Redeliver,
        endpoints: &[EndpointFilter],
        now: DateTime<Utc>,
    ) -> anyhow::Result<u64>;

    /// Pending deliveries: how many, and the time of the oldest one's event (the lag).
    async fn delivery_backlog(&self) -> anyhow::Result<(i64, Option<DateTime<Utc>>)>;

    /// Deletes the oldest events, in `seq` order, up to the first one that is not older than
    /// `before`, still has a delivery pending to one of `endpoints` (the configured ones), or
    /// has not been fanned out to one of them yet; at most `limit`. Their deliveries go with
    /// them (delivered, dead letters, and any to an endpoint no longer configured). The highest
    /// `seq` deleted is recorded ([`EventStore::events_pruned_through`]) so the feed can tell a
    /// reader that it missed events rather than skip them silently. Answers how many went.
    async fn prune_events(
        &self,
        before: DateTime<Utc>,
        endpoints: &[String],
        limit: i64,
    ) -> anyhow::Result<u64>;

    /// The highest `seq` [`EventStore::prune_events`] has deleted (0: none yet).
    async fn events_pruned_through(&self) -> anyhow::Result<i64>;
}

/// The settings key under which the highest pruned `seq` is kept.
const PRUNED_THROUGH_KEY: &str = "events.pruned_through";

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn from_ms(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or(DateTime::UNIX_EPOCH)
}

/// Endpoint names as SQL literals: validated by the configuration as `[a-z0-9_-]{1,64}`, and
/// checked again here, so a list can be inlined (SQLite cannot bind one).
fn names_sql(names: &[String]) -> anyhow::Result<String> {
    if names.is_empty() {
        return Ok("NULL".to_owned());
    }
    for name in names {
        anyhow::ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'-'),
            "an endpoint name is not [a-z0-9_-]{{1,64}}: {name:?}"
        );
    }
    Ok(names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// A filter's event types as SQL (`AND type IN (…)`), empty for all; the words are
/// [`EventType::as_str`]'s.
fn types_sql(types: &[EventType]) -> String {
    if types.is_empty() {
        return String::new();
    }
    format!(
        " AND type IN ({})",
        types
            .iter()
            .map(|t| format!("'{}'", t.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

const DELIVERY_COLUMNS: &str = "d.endpoint, d.seq, d.execution_id, d.state, d.attempts, d.next_at,
     d.lease_token, d.last_status, d.last_error, d.delivered_at,
     o.id AS event_id, o.type AS event_type, o.at AS event_at, o.payload";

impl<D> SqlStore<D>
where
    D: Dialect,
    D::Connection: Migrate,
    D::Arguments: IntoArguments<D>,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: ColumnIndex<D::Row> + Encode<'a, D> + Type<D>,
    usize: ColumnIndex<D::Row>,
    for<'a> Option<&'a str>: Encode<'a, D> + Type<D>,
    for<'r> String: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> Option<String>: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> i64: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> Option<i64>: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> bool: Decode<'r, D> + Type<D>,
    for<'r> Vec<u8>: Decode<'r, D> + Type<D>,
{
    /// The state and progress of an execution about to change (locked until commit on
    /// PostgreSQL): what [`transitions`] compares the changed row with.
    pub(super) async fn state_before(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
    ) -> anyhow::Result<Option<(ExecutionState, Option<Progress>)>> {
        let statement = format!(
            "SELECT state, progress FROM executions WHERE id = $1{}",
            D::LOCK_ROW
        );
        let row = sqlx::query(AssertSqlSafe(statement))
            .bind(execution_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .context("reading an execution before its change")?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        let progress: Option<String> = row.try_get("progress")?;
        Ok(ExecutionState::parse(&state)
            .map(|state| (state, progress.and_then(|p| serde_json::from_str(&p).ok()))))
    }

    /// Writes the events a change means (see [`transitions`]); answers whether it wrote any.
    pub(super) async fn emit_changes(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
        before: (ExecutionState, Option<Progress>),
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let Some(after) = Self::execution_in(tx, execution_id).await? else {
            return Ok(false);
        };
        let events = transitions(before.0, before.1.as_ref(), &after);
        for event_type in &events {
            Self::append_event(tx, &after, *event_type, now).await?;
        }
        Ok(!events.is_empty())
    }

    async fn execution_in(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
    ) -> anyhow::Result<Option<Execution>> {
        let row = sqlx::query(super::sql::without_input_sql!(
            "FROM executions WHERE id = $1"
        ))
        .bind(execution_id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .context("reading a changed execution")?;
        row.as_ref().map(Self::execution_from_row).transpose()
    }

    /// Appends one event to the outbox, its `seq` taken in commit order (see the module's
    /// invariant), and tells the other replicas on commit.
    async fn append_event(
        tx: &mut Transaction<'static, D>,
        execution: &Execution,
        event_type: EventType,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if let Some(lock) = D::LOCK_OUTBOX {
            sqlx::query(lock)
                .execute(&mut **tx)
                .await
                .context("taking the outbox's sequence lock")?;
        }
        let id = format!("msg_{}", Uuid::now_v7().simple());
        sqlx::query(
            "INSERT INTO outbox (id, execution_id, type, at, payload) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_str())
        .bind(execution.id.to_string())
        .bind(event_type.as_str())
        .bind(ms(now))
        .bind(payload(&id, event_type, now, execution))
        .execute(&mut **tx)
        .await
        .context("writing an event to the outbox")?;
        if let Some(notify) = D::NOTIFY_EVENTS {
            sqlx::query(notify)
                .execute(&mut **tx)
                .await
                .context("notifying the replicas of an event")?;
        }
        Ok(())
    }

    /// Replaces the bodies of an erased execution's events by ids only.
    pub(super) async fn erase_events(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
    ) -> anyhow::Result<()> {
        let rows = sqlx::query("SELECT seq, id, type, at FROM outbox WHERE execution_id = $1")
            .bind(execution_id.to_string())
            .fetch_all(&mut **tx)
            .await
            .context("reading an erased execution's events")?;
        for row in rows {
            let id: String = row.try_get("id")?;
            let event_type: String = row.try_get("type")?;
            let at = from_ms(row.try_get("at")?);
            sqlx::query("UPDATE outbox SET payload = $2 WHERE seq = $1")
                .bind(row.try_get::<i64, _>("seq")?)
                .bind(erased_payload(&id, &event_type, at, execution_id))
                .execute(&mut **tx)
                .await
                .context("erasing an event's body")?;
        }
        Ok(())
    }

    fn outbox_from_row(row: &D::Row) -> anyhow::Result<OutboxEvent> {
        Ok(OutboxEvent {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            execution_id: Uuid::parse_str(&row.try_get::<String, _>("execution_id")?)
                .context("a stored execution id")?,
            event_type: row.try_get("type")?,
            at: from_ms(row.try_get("at")?),
            payload: row.try_get("payload")?,
        })
    }

    fn delivery_from_row(row: &D::Row) -> anyhow::Result<Delivery> {
        let execution_id = Uuid::parse_str(&row.try_get::<String, _>("execution_id")?)
            .context("a stored execution id")?;
        let seq: i64 = row.try_get("seq")?;
        Ok(Delivery {
            endpoint: row.try_get("endpoint")?,
            seq,
            execution_id,
            state: row.try_get("state")?,
            attempts: row.try_get("attempts")?,
            next_at: from_ms(row.try_get("next_at")?),
            lease_token: row.try_get("lease_token")?,
            last_status: row.try_get("last_status")?,
            last_error: row.try_get("last_error")?,
            delivered_at: row.try_get::<Option<i64>, _>("delivered_at")?.map(from_ms),
            event: OutboxEvent {
                seq,
                id: row.try_get("event_id")?,
                execution_id,
                event_type: row.try_get("event_type")?,
                at: from_ms(row.try_get("event_at")?),
                payload: row.try_get("payload")?,
            },
        })
    }
}

#[async_trait]
impl<D> EventStore for SqlStore<D>
where
    D: Dialect,
    D::Connection: Migrate,
    D::Arguments: IntoArguments<D>,
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    for<'a> &'a str: ColumnIndex<D::Row> + Encode<'a, D> + Type<D>,
    usize: ColumnIndex<D::Row>,
    for<'a> Option<&'a str>: Encode<'a, D> + Type<D>,
    for<'r> String: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> Option<String>: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> i64: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> Option<i64>: Encode<'r, D> + Decode<'r, D> + Type<D>,
    for<'r> bool: Decode<'r, D> + Type<D>,
    for<'r> Vec<u8>: Decode<'r, D> + Type<D>,
{
    async fn outbox_after(&self, after: i64, limit: i64) -> anyhow::Result<Vec<OutboxEvent>> {
        let rows = sqlx::query(
            "SELECT seq, id, execution_id, type, at, payload FROM outbox
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await
        .context("reading the event feed")?;
        rows.iter().map(Self::outbox_from_row).collect()
    }

    async fn outbox_event(&self, id: &str) -> anyhow::Result<Option<OutboxEvent>> {
        let row = sqlx::query(
            "SELECT seq, id, execution_id, type, at, payload FROM outbox WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await
        .context("reading an event")?;
        row.as_ref().map(Self::outbox_from_row).transpose()
    }

    fn outbox_wake(&self) -> Arc<tokio::sync::Notify> {
        self.events_wake().clone()
    }

    fn spawn_outbox_listener(
        &self,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        D::spawn_events_listener(self.pool(), self.events_wake().clone(), shutdown)
    }

    async fn flag_at_risk(
        &self,
        horizon: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64> {
        let mut tx = self.write().await?;
        let statement = format!(
            "SELECT id FROM executions
             WHERE state IN ('finished', 'downloading') AND deadline_at <= $1 AND at_risk_at IS NULL
             ORDER BY deadline_at LIMIT $2{}",
            D::LOCK_ROW
        );
        let ids: Vec<String> = sqlx::query_scalar(AssertSqlSafe(statement))
            .bind(ms(horizon))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .context("finding executions at risk")?;
        let mut flagged = 0;
        for id in &ids {
            sqlx::query("UPDATE executions SET at_risk_at = $2 WHERE id = $1")
                .bind(id.as_str())
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .context("marking an execution at risk")?;
            let id = Uuid::parse_str(id).context("a stored execution id")?;
            if let Some(execution) = Self::execution_in(&mut tx, id).await? {
                Self::append_event(&mut tx, &execution, EventType::AtRisk, now).await?;
                flagged += 1;
            }
        }
        tx.commit().await.context("committing executions at risk")?;
        if flagged > 0 {
            self.events_wake().notify_waiters();
        }
        Ok(flagged)
    }

    async fn register_endpoints(&self, names: &[String]) -> anyhow::Result<()> {
        names_sql(names)?;
        let mut tx = self.write().await?;
        for name in names {
            sqlx::query(
                "INSERT INTO event_endpoints (name, cursor_seq)
                 SELECT $1, COALESCE(MAX(seq), 0) FROM outbox WHERE true
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name.as_str())
            .execute(&mut *tx)
            .await
            // (`WHERE true`: SQLite would read `ON CONFLICT` as a join's `ON`.)
            .context("registering an event endpoint")?;
        }
        tx.commit().await.context("committing event endpoints")?;
        Ok(())
    }

    async fn fan_out(
        &self,
        endpoint: &EndpointFilter,
        now: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64> {
        names_sql(std::slice::from_ref(&endpoint.name))?;
        let mut tx = self.write().await?;
        let statement = format!(
            "SELECT cursor_seq FROM event_endpoints WHERE name = $1{}",
            D::LOCK_ROW
        );
        let cursor: Option<i64> = sqlx::query_scalar(AssertSqlSafe(statement))
            .bind(endpoint.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .context("reading an endpoint's cursor")?;
        let Some(cursor) = cursor else {
            anyhow::bail!("the event endpoint {:?} is not registered", endpoint.name);
        };
        // The bound first, then the rows up to it: everything up to a committed `seq` has
        // committed (the module's invariant), whatever commits meanwhile.
        let (upto, passed): (Option<i64>, i64) = {
            let row = sqlx::query(
                "SELECT MAX(seq) AS upto, COUNT(*) AS passed FROM
                   (SELECT seq FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2) AS next",
            )
            .bind(cursor)
            .bind(limit)
            .fetch_one(&mut *tx)
            .await
            .context("reading the events past an endpoint's cursor")?;
            (row.try_get("upto")?, row.try_get("passed")?)
        };
        let Some(upto) = upto else {
            tx.rollback().await.ok();
            return Ok(0);
        };
        let statement = format!(
            "INSERT INTO event_deliveries (endpoint, seq, execution_id, state, next_at, created_at, updated_at)
             SELECT $1, seq, execution_id, 'pending', $2, $2, $2 FROM outbox
             WHERE seq > $3 AND seq <= $4{}
             ON CONFLICT (endpoint, seq) DO NOTHING",
            types_sql(&endpoint.types)
        );
        sqlx::query(AssertSqlSafe(statement))
            .bind(endpoint.name.as_str())
            .bind(ms(now))
            .bind(cursor)
            .bind(upto)
            .execute(&mut *tx)
            .await
            .context("queueing an endpoint's deliveries")?;
        sqlx::query("UPDATE event_endpoints SET cursor_seq = $2 WHERE name = $1")
            .bind(endpoint.name.as_str())
            .bind(upto)
            .execute(&mut *tx)
            .await
            .context("moving an endpoint's cursor")?;
        tx.commit().await.context("committing a fan-out")?;
        Ok(u64::try_from(passed).unwrap_or(0))
    }

    async fn claim_deliveries(
        &self,
        endpoints: &[String],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Delivery>> {
        if endpoints.is_empty() || limit <= 0 {
            return Ok(Vec::new());
        }
        // The alias `j` is the one `Dialect::SKIP_LOCKED` names.
        let statement = format!(
            "WITH picked AS MATERIALIZED (
                 SELECT j.endpoint, j.seq FROM event_deliveries j
                 WHERE j.state = 'pending' AND j.endpoint IN ({names}) AND j.next_at <= $3
                   AND (j.lease_until IS NULL OR j.lease_until < $3)
                   AND NOT EXISTS (SELECT 1 FROM event_deliveries p
                                   WHERE p.endpoint = j.endpoint AND p.execution_id = j.execution_id
                                     AND p.seq < j.seq AND p.state = 'pending')
                 ORDER BY j.next_at, j.seq LIMIT $4 {skip_locked})
             UPDATE event_deliveries SET lease_owner = $1, lease_until = $2,
                    lease_token = lease_token + 1, updated_at = $3
             WHERE (endpoint, seq) IN (SELECT endpoint, seq FROM picked)
             RETURNING endpoint, seq",
            names = names_sql(endpoints)?,
            skip_locked = D::SKIP_LOCKED,
        );
        let mut tx = self.write().await?;
        let claimed = sqlx::query(AssertSqlSafe(statement))
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .context("claiming deliveries")?;
        let mut deliveries = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let endpoint: String = row.try_get("endpoint")?;
            let seq: i64 = row.try_get("seq")?;
            let statement = format!(
                "SELECT {DELIVERY_COLUMNS} FROM event_deliveries d JOIN outbox o ON o.seq = d.seq
                 WHERE d.endpoint = $1 AND d.seq = $2"
            );
            let row = sqlx::query(AssertSqlSafe(statement))
                .bind(endpoint.as_str())
                .bind(seq)
                .fetch_one(&mut *tx)
                .await
                .context("reading a claimed delivery")?;
            deliveries.push(Self::delivery_from_row(&row)?);
        }
        tx.commit().await.context("committing a delivery claim")?;
        Ok(deliveries)
    }

    async fn finish_delivery(
        &self,
        delivery: &Delivery,
        owner: &str,
        outcome: &DeliveryOutcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let (state, next_at, status, error, delivered_at) = match outcome {
            DeliveryOutcome::Delivered { status } => (
                "delivered",
                now,
                Some(i64::from(*status)),
                None,
                Some(ms(now)),
            ),
            DeliveryOutcome::Failed {
                status,
                error,
                retry_at,
            } => (
                if retry_at.is_some() {
                    "pending"
                } else {
                    "dead"
                },
                retry_at.unwrap_or(now),
                status.map(i64::from),
                Some(error.as_str()),
                None,
            ),
        };
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE event_deliveries SET state = $5, attempts = attempts + 1, next_at = $6,
                    lease_owner = NULL, lease_until = NULL, last_status = $7, last_error = $8,
                    delivered_at = COALESCE($9, delivered_at), updated_at = $10
             WHERE endpoint = $1 AND seq = $2 AND lease_token = $3 AND lease_owner = $4
               AND state = 'pending'",
        )
        .bind(delivery.endpoint.as_str())
        .bind(delivery.seq)
        .bind(delivery.lease_token)
        .bind(owner)
        .bind(state)
        .bind(ms(next_at))
        .bind(status)
        .bind(error)
        .bind(delivered_at)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .context("recording a delivery attempt")?;
        tx.commit().await.context("committing a delivery attempt")?;
        Ok(D::rows_affected(&done) == 1)
    }

    async fn next_delivery_at(
        &self,
        endpoints: &[String],
    ) -> anyhow::Result<Option<DateTime<Utc>>> {
        if endpoints.is_empty() {
            return Ok(None);
        }
        let statement = format!(
            "SELECT MIN(CASE WHEN lease_until IS NULL THEN next_at
                             WHEN lease_until > next_at THEN lease_until ELSE next_at END)
             FROM event_deliveries WHERE state = 'pending' AND endpoint IN ({})",
            names_sql(endpoints)?
        );
        let next: Option<i64> = sqlx::query_scalar(AssertSqlSafe(statement))
            .fetch_one(self.pool())
            .await
            .context("finding the next due delivery")?;
        Ok(next.map(from_ms))
    }

    async fn deliveries(&self, state: Option<&str>, limit: i64) -> anyhow::Result<Vec<Delivery>> {
        let statement = format!(
            "SELECT {DELIVERY_COLUMNS} FROM event_deliveries d JOIN outbox o ON o.seq = d.seq
             WHERE ($1 IS NULL OR d.state = $1) ORDER BY d.seq DESC, d.endpoint LIMIT $2"
        );
        let rows = sqlx::query(AssertSqlSafe(statement))
            .bind(state)
            .bind(limit.max(1))
            .fetch_all(self.pool())
            .await
            .context("listing deliveries")?;
        rows.iter().map(Self::delivery_from_row).collect()
    }

    async fn redeliver(
        &self,
        which: &Redeliver,
        endpoints: &[EndpointFilter],
        now: DateTime<Utc>,
    ) -> anyhow::Result<u64> {
        let (id, since) = match which {
            Redeliver::Event(id) => (Some(id.as_str()), None),
            Redeliver::Since(at) => (None, Some(ms(*at))),
        };
        let mut tx = self.write().await?;
        let mut queued = 0;
        for endpoint in endpoints {
            names_sql(std::slice::from_ref(&endpoint.name))?;
            // A delivery in flight loses its lease (its outcome is not recorded) and is sent
            // again.
            let statement = format!(
                "INSERT INTO event_deliveries (endpoint, seq, execution_id, state, next_at, created_at, updated_at)
                 SELECT $1, seq, execution_id, 'pending', $2, $2, $2 FROM outbox
                 WHERE (id = $3 OR ($3 IS NULL AND at >= $4)){}
                 ON CONFLICT (endpoint, seq) DO UPDATE SET state = 'pending', attempts = 0,
                   next_at = excluded.next_at, lease_owner = NULL, lease_until = NULL,
                   lease_token = event_deliveries.lease_token + 1, updated_at = excluded.updated_at",
                types_sql(&endpoint.types)
            );
            let done = sqlx::query(AssertSqlSafe(statement))
                .bind(endpoint.name.as_str())
                .bind(ms(now))
                .bind(id)
                .bind(since)
                .execute(&mut *tx)
                .await
                .context("queueing deliveries again")?;
            queued += D::rows_affected(&done);
        }
        tx.commit().await.context("committing redeliveries")?;
        Ok(queued)
    }

    async fn delivery_backlog(&self) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS pending, MIN(o.at) AS oldest FROM event_deliveries d
             JOIN outbox o ON o.seq = d.seq WHERE d.state = 'pending'",
        )
        .fetch_one(self.pool())
        .await
        .context("measuring the delivery backlog")?;
        Ok((
            row.try_get("pending")?,
            row.try_get::<Option<i64>, _>("oldest")?.map(from_ms),
        ))
    }

    async fn prune_events(
        &self,
        before: DateTime<Utc>,
        endpoints: &[String],
        limit: i64,
    ) -> anyhow::Result<u64> {
        let names = names_sql(endpoints)?;
        let mut tx = self.write().await?;
        // Each bound is the last `seq` that may go; the smallest wins. MIN over no rows is NULL:
        // no bound from that side.
        let statement = format!(
            "SELECT
               (SELECT MAX(seq) FROM (SELECT seq FROM outbox ORDER BY seq LIMIT $2) AS oldest) AS by_count,
               (SELECT MIN(seq) - 1 FROM outbox WHERE at >= $1) AS by_age,
               (SELECT MIN(seq) - 1 FROM event_deliveries
                 WHERE state = 'pending' AND endpoint IN ({names})) AS by_pending,
               (SELECT MIN(cursor_seq) FROM event_endpoints WHERE name IN ({names})) AS by_fan_out"
        );
        let row = sqlx::query(AssertSqlSafe(statement))
            .bind(ms(before))
            .bind(limit.max(1))
            .fetch_one(&mut *tx)
            .await
            .context("finding the events to prune")?;
        let bounds = ["by_count", "by_age", "by_pending", "by_fan_out"]
            .iter()
            .map(|column| row.try_get::<Option<i64>, _>(*column))
            .collect::<Result<Vec<_>, _>>()?;
        // No event at all (`by_count` NULL): nothing to do.
        let Some(upto) = bounds[0] else {
            tx.rollback().await.ok();
            return Ok(0);
        };
        let upto = bounds.iter().flatten().fold(upto, |a, b| a.min(*b));
        sqlx::query("DELETE FROM event_deliveries WHERE seq <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await
            .context("pruning event deliveries")?;
        let deleted = sqlx::query("DELETE FROM outbox WHERE seq <= $1")
            .bind(upto)
            .execute(&mut *tx)
            .await
            .context("pruning events")?;
        let deleted = D::rows_affected(&deleted);
        if deleted > 0 {
            // Only ever raised: the feed compares cursors with it.
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(PRUNED_THROUGH_KEY)
            .bind(upto.to_string())
            .bind(ms(Utc::now()))
            .execute(&mut *tx)
            .await
            .context("recording how far events were pruned")?;
        }
        tx.commit().await.context("committing an event prune")?;
        Ok(deleted)
    }

    async fn events_pruned_through(&self) -> anyhow::Result<i64> {
        let value: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(PRUNED_THROUGH_KEY)
            .fetch_optional(self.pool())
            .await
            .context("reading how far events were pruned")?;
        match value {
            None => Ok(0),
            Some(text) => text.parse().with_context(|| {
                format!("the setting {PRUNED_THROUGH_KEY} is not a number: {text:?}")
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execution(state: ExecutionState, progress: Option<Progress>) -> Execution {
        let now = Utc::now();
        Execution {
            state,
            workflow_url: Some("https://mint.example/w/1".to_owned()),
            progress,
            ..Execution::queued(
                Uuid::now_v7(),
                Some("order-1".to_owned()),
                "sandbox".to_owned(),
                mint_client::FlowId::new("flow-1").unwrap(),
                serde_json::json!({"name": "Ada Lovelace"}),
                now,
                None,
            )
        }
    }

    fn waiting(step: &str) -> Option<Progress> {
        Some(Progress::WaitingForUser {
            step: Some(step.to_owned()),
            since: None,
        })
    }

    #[test]
    fn each_state_an_application_cares_about_is_one_event() {
        use ExecutionState as S;
        for (before, after, expected) in [
            (S::Starting, S::Running, vec![EventType::Started]),
            (S::NeedsDecision, S::Running, vec![EventType::Started]),
            (S::Downloading, S::Archived, vec![EventType::Archived]),
            (S::Running, S::Failed, vec![EventType::Failed]),
            (S::Finished, S::Expired, vec![EventType::Expired]),
            (
                S::Starting,
                S::NeedsDecision,
                vec![EventType::NeedsDecision],
            ),
            (S::Running, S::Finished, vec![]),
            (S::Finished, S::Downloading, vec![]),
            (S::Queued, S::Starting, vec![]),
            (S::Archived, S::Archived, vec![]),
        ] {
            assert_eq!(
                transitions(before, None, &execution(after, None)),
                expected,
                "{before:?} → {after:?}"
            );
        }
    }

    #[test]
    fn entering_a_state_said_to_emit_nothing_emits_nothing_whatever_came_before() {
        for after in ExecutionState::ALL {
            if entering_may_emit(after) {
                continue;
            }
            for before in ExecutionState::ALL {
                for progress in [None, waiting("id")] {
                    // The progress is left as it was: the same before and after.
                    let changed = execution(after, progress.clone());
                    assert_eq!(
                        transitions(before, progress.as_ref(), &changed),
                        vec![],
                        "{before:?} → {after:?} ({progress:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn waiting_for_the_user_is_told_once_per_step() {
        let at_step = |step| execution(ExecutionState::Running, waiting(step));
        let running = ExecutionState::Running;
        assert_eq!(
            transitions(running, None, &at_step("id")),
            vec![EventType::WaitingForUser]
        );
        assert_eq!(
            transitions(running, waiting("id").as_ref(), &at_step("id")),
            vec![]
        );
        assert_eq!(
            transitions(running, waiting("id").as_ref(), &at_step("sign")),
            vec![EventType::WaitingForUser]
        );
        // Started straight into a wait: both, in that order.
        assert_eq!(
            transitions(ExecutionState::Starting, None, &at_step("id")),
            vec![EventType::Started, EventType::WaitingForUser]
        );
    }

    #[test]
    fn a_payload_never_carries_the_input() {
        let e = execution(ExecutionState::Running, None);
        let body = payload("msg_1", EventType::Started, Utc::now(), &e);
        assert!(!body.contains("Ada Lovelace"), "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["type"], "execution.started");
        assert_eq!(json["id"], "msg_1");
        assert_eq!(json["data"]["workflowUrl"], "https://mint.example/w/1");
        assert_eq!(json["data"]["idempotencyKey"], "order-1");
        assert_eq!(json["data"]["state"], "running");
    }
}
