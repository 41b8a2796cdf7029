//! The one implementation of [`Store`]: [`SqlStore`], generic over the database.
//!
//! SQLite and PostgreSQL hold the same tables with the same column types (ids and JSON as text,
//! times as milliseconds since the epoch, flags as integers), and every statement here is written
//! once in the SQL both accept (`$n` placeholders, which SQLite reads as "argument n" too; upserts
//! with `ON CONFLICT`; `CASE` instead of `MAX`/`GREATEST`). What truly differs is a [`Dialect`]:
//! how a write transaction begins, row locks and `SKIP LOCKED` for claims (PostgreSQL, where
//! replicas write at once), the `NOTIFY` that wakes other replicas, the migrations and how a
//! database is opened (in `sqlite.rs` and `postgres.rs`).
//!
//! The `where` clauses below only say "this driver can run the statements": sqlx's traits for a
//! generic database are not implied, so they are spelt out once for the helpers and once for the
//! [`Store`] implementation.

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mint_client::{FlowId, InstanceId};
use sha2::{Digest, Sha256};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row,
    SqlSafeStr as _, Transaction, Type,
};
use uuid::Uuid;

use super::intake_tx::{IdleWriter, IntakeTx};
use super::schema::{self, OpenMode};
use super::{
    AuditRecord, Created, Erasure, ExecutionFilter, ExecutionPatch, JobDisposition, LeaseLost,
    NewExecution, NewJob, NotFound, Overview, SpendRow, StepOutcome, Store, WebhookRecorded, Write,
    Written,
};
use crate::model::{
    Event, Execution, ExecutionState, Job, JobError, JobKind, JobPriority, JobState, Lease,
    WebhookRecord, WorkPause,
};

/// What differs between the databases; everything else is shared.
pub trait Dialect: Database + sqlx::database::HasStatementCache {
    /// The statement that begins a write transaction. SQLite needs `BEGIN IMMEDIATE`: a deferred
    /// transaction that reads before it writes fails with `SQLITE_BUSY` at its first write instead
    /// of waiting for the lock.
    const BEGIN_WRITE: &'static str;
    /// Appended to a `SELECT` of a row the transaction then changes: PostgreSQL locks it
    /// (`FOR UPDATE`) so no other replica changes it meanwhile; SQLite's write transactions run
    /// one at a time and need nothing.
    const LOCK_ROW: &'static str;
    /// Appended to the claim's choice of a job (`jobs j`): PostgreSQL passes over rows that other
    /// replicas are claiming at that moment (`FOR UPDATE OF j SKIP LOCKED`) instead of waiting.
    const SKIP_LOCKED: &'static str;
    /// A statement, with the job kind as `$1`, that tells the other replicas new work is due; run
    /// inside the transaction that makes the work durable (PostgreSQL sends it on commit). `None`
    /// where one process owns the database and rings its own workers.
    const NOTIFY_WORK: Option<&'static str>;
    /// Counts the tables named `_sqlx_migrations` the connection sees (0 or 1): where sqlx
    /// records the migrations it applied.
    const MIGRATIONS_TABLE_COUNT: &'static str;
    /// Taken before a transaction's first outbox row and held until it commits, so `outbox.seq`
    /// is assigned in commit order (see `outbox.rs`). `None` where transactions write one at a
    /// time.
    const LOCK_OUTBOX: Option<&'static str> = None;
    /// Tells the other replicas, on commit, that events were written (`None` where one process
    /// owns the database).
    const NOTIFY_EVENTS: Option<&'static str> = None;
    /// Whether the write transactions of this process queue for one writer connection (SQLite):
    /// the intake then leaves it idle for the next writer ([`IntakeTx`]).
    const ONE_WRITER: bool = false;
    /// Whether a statement may hold `INSERT`s as `WITH` items (PostgreSQL); otherwise several
    /// statements go in one query (SQLite).
    const WRITING_CTES: bool = false;
    /// Whether one query may hold several statements, run in turn (SQLite): the intake's
    /// transaction then begins and ends inside its statements' queries ([`IntakeTx`]).
    const MULTI_STATEMENT_QUERIES: bool = false;

    /// A `FROM` item named `r` whose rows are the objects of a JSON array bound as `$1` (text),
    /// with `columns` (name and PostgreSQL type, `text` or `bigint`) read from each object's
    /// members of the same names. A batch of any size is then one statement text, prepared once
    /// and kept in the connection's statement cache, where a multi-row `VALUES` list of each size
    /// is a statement of its own (prepared again whenever the sizes outnumber the cache). SQLite's
    /// form (JSON1's `json_each`); PostgreSQL's is `json_to_recordset`.
    fn json_rows(columns: &[(&str, &str)]) -> String {
        let members: Vec<String> = columns
            .iter()
            .map(|(name, _)| format!("value ->> '{name}' AS {name}"))
            .collect();
        format!(
            "(SELECT {} FROM json_each($1) ORDER BY key) AS r",
            members.join(", ")
        )
    }

    /// The migrations of the schema this binary reads and writes.
    fn migrator() -> &'static Migrator;

    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Starts a task that rings `wake` when another replica makes work durable (see
    /// [`Store::spawn_wake_listener`]).
    fn spawn_wake_listener(
        _pool: &Pool<Self>,
        _wake: std::sync::Arc<super::Wake>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// Starts a task that rings `wake` when another replica commits events.
    fn spawn_events_listener(
        _pool: &Pool<Self>,
        _wake: std::sync::Arc<tokio::sync::Notify>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }
}

/// How many counted failures a job may have before it becomes a dead letter.
pub fn max_attempts(kind: JobKind) -> i64 {
    match kind {
        JobKind::Start => 12,
        JobKind::Check => 30,
        JobKind::Download => 8,
    }
}

/// The fingerprint of a create request, to tell a retried request from a different one that reuses
/// an idempotency key.
pub fn request_fingerprint(environment: &str, flow_id: &str, input: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(environment.as_bytes());
    hasher.update([0]);
    hasher.update(flow_id.as_bytes());
    hasher.update([0]);
    hasher.update(input.to_string().as_bytes());
    hex::encode(hasher.finalize())
}

/// The execution a new row of `new` is, exactly as a read of it answers (timestamps at the
/// stored millisecond, the input parsed from the stored text, the columns' defaults), without
/// reading it: `input` is the text stored for `new.input`.
fn queued_execution(new: &NewExecution, input: &str) -> anyhow::Result<Execution> {
    Ok(Execution::queued(
        new.id,
        new.idempotency_key.clone(),
        new.environment.clone(),
        new.flow_id.clone(),
        serde_json::from_str(input).context("stored input is not JSON")?,
        from_ms(ms(new.now)),
        new.traceparent.clone(),
    ))
}

/// The [`Store`] on one database. `SqliteStore` and `PgStore` are its two instances.
pub struct SqlStore<D: Database> {
    pool: Pool<D>,
    /// Rung after this process commits events (the feed's long polls and the deliveries wait on
    /// it); other replicas' commits ring it through `Dialect::spawn_events_listener`.
    events_wake: std::sync::Arc<tokio::sync::Notify>,
    /// Where write transactions run. On SQLite, one connection: SQLite takes one writer at a time,
    /// and writers that wait for it in SQLite's busy handler sleep in steps of milliseconds, where
    /// writers queued for the one connection go in turn at once. On PostgreSQL, `pool` itself.
    writer: Pool<D>,
    /// The group-commit writer's turn (see [`super::IntakeTurn`]).
    intake: std::sync::Arc<super::IntakeTurn>,
    /// The writer connection, idle since the intake's last commit (one writer only; see
    /// [`IntakeTx`]).
    idle_writer: std::sync::Arc<IdleWriter<D>>,
}

impl<D: Database> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            events_wake: self.events_wake.clone(),
            writer: self.writer.clone(),
            intake: self.intake.clone(),
            idle_writer: self.idle_writer.clone(),
        }
    }
}

impl<D: Database> SqlStore<D> {
    /// See [`super::EventStore::outbox_wake`].
    pub(super) fn events_wake(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        &self.events_wake
    }

    /// Rings the events' waiters if `emitted` (after a commit).
    fn events_committed(&self, emitted: bool) {
        if emitted {
            self.events_wake.notify_waiters();
        }
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn opt_ms(at: Option<DateTime<Utc>>) -> Option<i64> {
    at.map(ms)
}

fn from_ms(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or(DateTime::UNIX_EPOCH)
}

fn opt_from_ms(value: Option<i64>) -> Option<DateTime<Utc>> {
    value.map(from_ms)
}

fn uuid(text: &str) -> anyhow::Result<Uuid> {
    Uuid::parse_str(text).with_context(|| format!("a stored id is not a UUID: {text:?}"))
}

/// Due jobs of each priority a claim considers, the longest-due first: the claim's cost is bounded
/// by it, not by the queue's length. Mint's deletion deadline orders the jobs within it (for
/// downloads, due about when their instance finished, the two orders agree but for retries).
const CLAIM_WINDOW: usize = 128;

/// The kinds as SQL literals (`'start', 'check'`). They are [`JobKind::as_str`]'s fixed words,
/// never outside input, so they are inlined: one statement for both databases (SQLite cannot bind
/// a list).
fn kinds_sql(kinds: &[JobKind]) -> String {
    if kinds.is_empty() {
        return "NULL".to_owned();
    }
    kinds
        .iter()
        .map(|kind| format!("'{}'", kind.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `count` groups of `width` numbered placeholders (`$1`, `$2`, …, which both databases read as
/// "argument n"), each group written by `group`, joined by commas: the `VALUES` of a statement
/// for several rows.
fn placeholders(count: usize, width: usize, group: impl Fn(&[String]) -> String) -> String {
    (0..count)
        .map(|row| {
            let numbers: Vec<String> = (1..=width)
                .map(|k| format!("${}", row * width + k))
                .collect();
            group(&numbers)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_error(errors_json: &str, at: DateTime<Utc>, error: &str) -> String {
    let mut errors: Vec<JobError> = serde_json::from_str(errors_json).unwrap_or_default();
    errors.push(JobError {
        at,
        error: error.to_owned(),
    });
    // Keep the chain bounded: the first errors and the most recent ones tell the story.
    const ERRORS_KEPT: usize = 20;
    if errors.len() > ERRORS_KEPT {
        errors.drain(5..errors.len() - (ERRORS_KEPT - 5));
    }
    serde_json::to_string(&errors).unwrap_or_else(|_| "[]".to_owned())
}

/// `SELECT` of every column of an execution but `input` (read as `null`), then `$rest`: for the
/// status page, the metrics and the scans, which never show an end user's data and must cost the
/// same whatever the inputs weigh. One list, so a new column cannot be forgotten in one query.
macro_rules! without_input {
    ($rest:literal) => {
        concat!(
            "SELECT id, idempotency_key, request_sha256, environment, flow_id, 'null' AS input,
                    state, instance_id, workflow_url, mint_status, progress, progress_at,
                    created_at, updated_at, started_at, finished_at, deadline_at, archived_at,
                    archive_path, sha256, bytes, failure_reason, start_ambiguous, start_attempts,
                    billed_count, finished_seen_at, not_found_since, not_found_count,
                    start_sent_at, workflow_url_unknown, decision_reason, traceparent,
                    progress_mint_updated_at ",
            $rest
        )
    };
}
pub(super) use without_input as without_input_sql;

/// What enqueueing a job does when its execution has an active job of its kind: the earlier due
/// time (unless it is running), the higher priority.
macro_rules! upsert_job {
    () => {
        "ON CONFLICT (execution_id, kind) WHERE state IN ('ready', 'running') DO UPDATE SET
       run_at = CASE WHEN jobs.state = 'ready' AND excluded.run_at < jobs.run_at THEN excluded.run_at ELSE jobs.run_at END,
       priority = CASE WHEN excluded.priority > jobs.priority THEN excluded.priority ELSE jobs.priority END,
       updated_at = excluded.updated_at"
    };
}
const UPSERT_JOB: &str = upsert_job!();

const INSERT_JOB: &str = concat!(
    "INSERT INTO jobs (id, execution_id, kind, state, priority, run_at, max_attempts, created_at, updated_at)
     VALUES ($1, $2, $3, 'ready', $4, $5, $6, $7, $7) ",
    upsert_job!()
);

const PATCH_EXECUTION: &str = "UPDATE executions SET
       state = COALESCE($2, state),
       instance_id = COALESCE($3, instance_id),
       workflow_url = COALESCE($4, workflow_url),
       mint_status = COALESCE($5, mint_status),
       progress = COALESCE($6, progress),
       progress_at = COALESCE($7, progress_at),
       started_at = COALESCE($8, started_at),
       finished_at = COALESCE($9, finished_at),
       deadline_at = COALESCE($10, deadline_at),
       archived_at = COALESCE($11, archived_at),
       archive_path = COALESCE($12, archive_path),
       sha256 = COALESCE($13, sha256),
       bytes = COALESCE($14, bytes),
       failure_reason = COALESCE($15, failure_reason),
       start_ambiguous = COALESCE($16, start_ambiguous),
       start_attempts = start_attempts + $17,
       billed_count = billed_count + $18,
       updated_at = $19,
       finished_seen_at = COALESCE($20, finished_seen_at),
       not_found_since = CASE $21 WHEN 1 THEN NULL WHEN 2 THEN COALESCE(not_found_since, $19) ELSE not_found_since END,
       not_found_count = CASE $21 WHEN 1 THEN 0 WHEN 2 THEN not_found_count + 1 ELSE not_found_count END,
       start_sent_at = COALESCE($22, start_sent_at),
       workflow_url_unknown = COALESCE($23, workflow_url_unknown),
       decision_reason = CASE WHEN $2 IS NOT NULL AND $2 <> 'needs_decision' THEN NULL
                              ELSE COALESCE($24, decision_reason) END,
       progress_mint_updated_at = CASE WHEN $6 IS NULL THEN progress_mint_updated_at ELSE $25 END
     WHERE id = $1";

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
    /// Checks the schema of a connected database against this binary's and, in
    /// [`OpenMode::Migrate`], brings it up to date.
    /// Write transactions run on `writer` (see [`SqlStore`]).
    pub(super) async fn from_pools(
        pool: Pool<D>,
        writer: Pool<D>,
        mode: OpenMode,
    ) -> anyhow::Result<Self> {
        let found = Self::applied_migrations(&pool).await?;
        let binary = schema::expected(D::migrator());
        match mode {
            OpenMode::Migrate => {
                schema::check_not_newer(&found, &binary)?;
                D::migrator()
                    .run(&pool)
                    .await
                    .with_context(|| format!("migrating the {} database", D::NAME))?;
            }
            OpenMode::ReadWrite | OpenMode::ReadOnly => schema::check_current(&found, &binary)?,
        }
        Ok(Self {
            pool,
            events_wake: Default::default(),
            writer,
            intake: Default::default(),
            idle_writer: Default::default(),
        })
    }

    /// The migrations the database records (none if it has no migration table yet).
    async fn applied_migrations(pool: &Pool<D>) -> anyhow::Result<Vec<schema::Migration>> {
        let tables: i64 = sqlx::query_scalar(D::MIGRATIONS_TABLE_COUNT)
            .fetch_one(pool)
            .await
            .context("looking for the database's schema version")?;
        if tables == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await
        .context("reading the database's schema version")?;
        rows.iter()
            .map(|row| {
                Ok(schema::Migration {
                    version: row.try_get("version")?,
                    description: row.try_get("description")?,
                    checksum: row.try_get("checksum")?,
                    success: row.try_get("success")?,
                })
            })
            .collect()
    }

    /// The pool (tests inspect the database through it).
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// Begins a write transaction (the store's own statements, and tests that hold one open).
    pub async fn write(&self) -> anyhow::Result<Transaction<'static, D>> {
        // Intake first (see `IntakeTurn`).
        self.intake.yield_to_intake().await;
        let conn = self.writer_connection().await?;
        Transaction::begin(conn, Some(D::BEGIN_WRITE.into_sql_str()))
            .await
            .context("beginning a write transaction")
    }

    /// A connection to write on: the one the intake left idle, or one from the writer pool.
    async fn writer_connection(&self) -> anyhow::Result<sqlx::pool::PoolConnection<D>> {
        if let Some(conn) = self.idle_writer.take() {
            return Ok(conn);
        }
        self.writer
            .acquire()
            .await
            .context("waiting for the database's writer connection")
    }

    /// Begins a transaction of the intake itself (a group commit, or one of its requests written
    /// alone after the batch failed): it holds the turn, so it never yields to it.
    async fn write_intake(&self) -> anyhow::Result<IntakeTx<D>> {
        let conn = self.writer_connection().await?;
        let idle = D::ONE_WRITER.then(|| self.idle_writer.clone());
        Ok(IntakeTx::new(conn, idle))
    }

    /// Writes accepted requests in one transaction of the intake ([`IntakeTx`]), answered in the
    /// order of `batch`. An error before the commit (nothing of the batch was written) gives the
    /// batch back with it. After the commit, an execution whose answer could not be read is
    /// answered with its own error: written again, a request without a key would be a second
    /// execution.
    async fn write_together(
        &self,
        batch: Vec<Write>,
    ) -> Result<Vec<anyhow::Result<Written>>, (anyhow::Error, Vec<Write>)> {
        let executions: Vec<&NewExecution> = batch
            .iter()
            .filter_map(|write| match write {
                Write::Execution(new) => Some(new),
                Write::Webhook { .. } => None,
            })
            .collect();
        let webhooks: Vec<(&WebhookRecord, DateTime<Utc>)> = batch
            .iter()
            .filter_map(|write| match write {
                Write::Webhook { record, check_at } => Some((record, *check_at)),
                Write::Execution(_) => None,
            })
            .collect();
        let inputs: Vec<String> = executions.iter().map(|new| new.input.to_string()).collect();
        let fingerprints: Vec<String> = executions
            .iter()
            .map(|new| request_fingerprint(&new.environment, new.flow_id.as_str(), &new.input))
            .collect();
        // New executions have no instance yet: no webhook of the batch can name one, so the two
        // kinds are written apart, each with a statement per table for all of them.
        let committed = async {
            let mut tx = self.write_intake().await?;
            let written = async {
                let inserted = Self::insert_executions(
                    &mut tx,
                    &executions,
                    &fingerprints,
                    &inputs,
                    webhooks.is_empty(),
                )
                .await?;
                let recorded = Self::record_webhooks_in(&mut tx, &webhooks).await?;
                anyhow::Ok((inserted, recorded))
            }
            .await;
            match written {
                Ok(written) => {
                    tx.commit().await?;
                    Ok(written)
                }
                Err(error) => {
                    tx.rollback().await;
                    Err(error)
                }
            }
        }
        .await;
        let (inserted, recorded) = match committed {
            Ok(committed) => committed,
            Err(error) => return Err((error, batch)),
        };
        let mut created = self
            .created_answers(&executions, &fingerprints, &inputs, inserted)
            .await;
        created.reverse();
        let mut recorded = recorded.into_iter();
        Ok(batch
            .iter()
            .map(|write| match write {
                Write::Execution(_) => created
                    .pop()
                    .context("a write of the batch has no answer")?
                    .map(|created| Written::Execution(Box::new(created))),
                Write::Webhook { .. } => recorded
                    .next()
                    .map(Written::Webhook)
                    .context("a write of the batch has no answer"),
            })
            .collect())
    }

    pub(super) fn execution_from_row(row: &D::Row) -> anyhow::Result<Execution> {
        let state: String = row.try_get("state")?;
        let input: String = row.try_get("input")?;
        let progress: Option<String> = row.try_get("progress")?;
        Ok(Execution {
            id: uuid(&row.try_get::<String, _>("id")?)?,
            idempotency_key: row.try_get("idempotency_key")?,
            environment: row.try_get("environment")?,
            flow_id: FlowId::new(row.try_get::<String, _>("flow_id")?)
                .context("a stored flow id")?,
            input: serde_json::from_str(&input).context("stored input is not JSON")?,
            state: ExecutionState::parse(&state)
                .with_context(|| format!("unknown stored execution state {state:?}"))?,
            instance_id: row
                .try_get::<Option<String>, _>("instance_id")?
                .map(InstanceId::new)
                .transpose()
                .context("a stored instance id")?,
            workflow_url: row.try_get("workflow_url")?,
            mint_status: row.try_get("mint_status")?,
            progress: progress.and_then(|p| serde_json::from_str(&p).ok()),
            progress_at: opt_from_ms(row.try_get("progress_at")?),
            created_at: from_ms(row.try_get("created_at")?),
            updated_at: from_ms(row.try_get("updated_at")?),
            started_at: opt_from_ms(row.try_get("started_at")?),
            finished_at: opt_from_ms(row.try_get("finished_at")?),
            deadline_at: opt_from_ms(row.try_get("deadline_at")?),
            archived_at: opt_from_ms(row.try_get("archived_at")?),
            archive_path: row.try_get("archive_path")?,
            sha256: row.try_get("sha256")?,
            bytes: row.try_get("bytes")?,
            failure_reason: row.try_get("failure_reason")?,
            start_ambiguous: row.try_get::<i64, _>("start_ambiguous")? != 0,
            start_sent_at: opt_from_ms(row.try_get("start_sent_at")?),
            workflow_url_unknown: row.try_get::<i64, _>("workflow_url_unknown")? != 0,
            decision_reason: row.try_get("decision_reason")?,
            start_attempts: row.try_get("start_attempts")?,
            billed_count: row.try_get("billed_count")?,
            finished_seen_at: opt_from_ms(row.try_get("finished_seen_at")?),
            not_found_since: opt_from_ms(row.try_get("not_found_since")?),
            not_found_count: row.try_get("not_found_count")?,
            traceparent: row.try_get("traceparent")?,
            progress_mint_updated_at: row.try_get("progress_mint_updated_at")?,
        })
    }

    fn job_from_row(row: &D::Row) -> anyhow::Result<Job> {
        let kind: String = row.try_get("kind")?;
        let state: String = row.try_get("state")?;
        let errors: String = row.try_get("errors")?;
        Ok(Job {
            id: uuid(&row.try_get::<String, _>("id")?)?,
            execution_id: uuid(&row.try_get::<String, _>("execution_id")?)?,
            kind: JobKind::parse(&kind)
                .with_context(|| format!("unknown stored job kind {kind:?}"))?,
            state: JobState::parse(&state)
                .with_context(|| format!("unknown stored job state {state:?}"))?,
            priority: JobPriority::from_i64(row.try_get("priority")?),
            run_at: from_ms(row.try_get("run_at")?),
            attempts: row.try_get("attempts")?,
            max_attempts: row.try_get("max_attempts")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_until: opt_from_ms(row.try_get("lease_until")?),
            lease_token: row.try_get("lease_token")?,
            errors: serde_json::from_str(&errors).unwrap_or_default(),
            created_at: from_ms(row.try_get("created_at")?),
            updated_at: from_ms(row.try_get("updated_at")?),
        })
    }

    fn webhook_from_row(row: &D::Row) -> anyhow::Result<WebhookRecord> {
        let execution_id: Option<String> = row.try_get("execution_id")?;
        Ok(WebhookRecord {
            id: uuid(&row.try_get::<String, _>("id")?)?,
            received_at: from_ms(row.try_get("received_at")?),
            instance_id: InstanceId::new(row.try_get::<String, _>("instance_id")?)
                .context("a stored instance id")?,
            claimed_status: row.try_get("claimed_status")?,
            authentic: row.try_get::<i64, _>("authentic")? != 0,
            body_sha256: row.try_get("body_sha256")?,
            execution_id: execution_id.as_deref().map(uuid).transpose()?,
        })
    }

    /// Tells the other replicas (if any) that a job of `kind` may be due, on commit.
    async fn notify_work(tx: &mut Transaction<'static, D>, kind: JobKind) -> anyhow::Result<()> {
        if let Some(statement) = D::NOTIFY_WORK {
            sqlx::query(statement)
                .bind(kind.as_str())
                .execute(&mut **tx)
                .await
                .context("notifying the replicas of new work")?;
        }
        Ok(())
    }

    /// Enqueues a job and tells the workers of every replica on commit.
    async fn insert_job(
        tx: &mut Transaction<'static, D>,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        Self::insert_job_row(tx, job, now).await?;
        Self::notify_work(tx, job.kind).await
    }

    async fn insert_job_row(
        tx: &mut Transaction<'static, D>,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        sqlx::query(INSERT_JOB)
            .bind(Uuid::now_v7().to_string())
            .bind(job.execution_id.to_string())
            .bind(job.kind.as_str())
            .bind(job.priority as i64)
            .bind(ms(job.run_at))
            .bind(max_attempts(job.kind))
            .bind(ms(now))
            .execute(&mut **tx)
            .await
            .context("enqueueing a job")?;
        Ok(())
    }

    /// Enqueues a step's follow-up job. Unlike [`Self::insert_job`], it tells the workers (of
    /// every replica) only about a job due now: a job due later is found by their timers, which
    /// read the next due time whenever they go idle and look again at least every
    /// `pipeline.idle_wait`, as a rescheduled retry always was. A notification for it woke every
    /// idle worker of every pool to claim nothing: once per start (its first check, due after
    /// `pipeline.poll_grace`), that cost more database time than the starts themselves (issue 16).
    async fn insert_follow_up(
        tx: &mut Transaction<'static, D>,
        job: &NewJob,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if job.run_at <= now {
            return Self::insert_job(tx, job, now).await;
        }
        Self::insert_job_row(tx, job, now).await
    }

    async fn insert_event(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
        at: DateTime<Utc>,
        kind: &str,
        detail: &serde_json::Value,
    ) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO events (execution_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(execution_id.to_string())
            .bind(ms(at))
            .bind(kind)
            .bind(detail.to_string())
            .execute(&mut **tx)
            .await
            .context("recording an event")?;
        Ok(())
    }

    async fn insert_audit(
        tx: &mut Transaction<'static, D>,
        record: &AuditRecord,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, operator, action, target, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(ms(record.at))
        .bind(record.operator.as_str())
        .bind(record.action.as_str())
        .bind(record.target.as_str())
        .bind(record.outcome.as_str())
        .bind(record.detail.to_string())
        .execute(&mut **tx)
        .await
        .context("writing the audit log")?;
        Ok(())
    }

    /// Applies a patch inside `tx`; a change of state or progress writes the events it means to
    /// the outbox in the same transaction (`outbox.rs`). Answers whether it wrote any.
    pub async fn patch_execution(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
        patch: &ExecutionPatch,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        match Self::patch_execution_deferring_events(tx, execution_id, patch, now).await? {
            Some(before) => Self::emit_changes(tx, execution_id, before, now).await,
            None => Ok(false),
        }
    }

    /// [`Self::patch_execution`] without its outbox rows: answers what
    /// [`Self::emit_changes`] needs to write them, which the caller does as the transaction's last
    /// statements. On PostgreSQL the first outbox row takes the outbox's sequence lock until the
    /// commit, and every transaction that writes an event queues behind it: the fewer statements
    /// after it, the shorter each holds it (a start's step was the longest queue, issue 16).
    async fn patch_execution_deferring_events(
        tx: &mut Transaction<'static, D>,
        execution_id: Uuid,
        patch: &ExecutionPatch,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<(ExecutionState, Option<crate::model::Progress>)>> {
        // Only a change that may mean an event reads (and locks) the row before it: a patch that
        // sets neither progress nor a state that emits one, like the mark `starting` sent before
        // each start, is one statement fewer (two, with the read after it).
        let may_emit =
            patch.progress.is_some() || patch.state.is_some_and(super::outbox::entering_may_emit);
        let before = if may_emit {
            Self::state_before(tx, execution_id).await?
        } else {
            None
        };
        let progress = patch
            .progress
            .as_ref()
            .map(serde_json::to_string)
            .transpose()?;
        sqlx::query(PATCH_EXECUTION)
            .bind(execution_id.to_string())
            .bind(patch.state.map(|s| s.as_str()))
            .bind(patch.instance_id.as_ref().map(InstanceId::as_str))
            .bind(patch.workflow_url.as_deref())
            .bind(patch.mint_status.as_deref())
            .bind(progress)
            .bind(opt_ms(patch.progress_at))
            .bind(opt_ms(patch.started_at))
            .bind(opt_ms(patch.finished_at))
            .bind(opt_ms(patch.deadline_at))
            .bind(opt_ms(patch.archived_at))
            .bind(patch.archive_path.as_deref())
            .bind(patch.sha256.as_deref())
            .bind(patch.bytes)
            .bind(patch.failure_reason.as_deref())
            .bind(patch.start_ambiguous.map(i64::from))
            .bind(patch.start_attempts_add)
            .bind(patch.billed_add)
            .bind(ms(now))
            .bind(opt_ms(patch.finished_seen_at))
            .bind(match patch.not_found {
                None => 0_i64,
                Some(NotFound::Answered) => 1,
                Some(NotFound::Seen) => 2,
            })
            .bind(opt_ms(patch.start_sent_at))
            .bind(patch.workflow_url_unknown.map(i64::from))
            .bind(patch.decision_reason.as_deref())
            .bind(patch.progress_mint_updated_at.as_deref())
            .execute(&mut **tx)
            .await
            .context("updating an execution")?;
        // Architecture invariant: the ledger line is written in the same transaction as
        // `billed_count`, so the ledger is the bill.
        if patch.billed_add > 0 {
            sqlx::query(
                "INSERT INTO spend_ledger (execution_id, environment, flow_id, billed_at, day, month, cents)
                 SELECT id, environment, flow_id, $2, $3, $4, $5 FROM executions WHERE id = $1",
            )
            .bind(execution_id.to_string())
            .bind(ms(now))
            .bind(now.format("%Y-%m-%d").to_string())
            .bind(now.format("%Y-%m").to_string())
            .bind(patch.billed_cents)
            .execute(&mut **tx)
            .await
            .context("recording a billed start in the cost ledger")?;
        }
        Ok(before)
    }

    /// Checks that `lease` is still the current one (and, on PostgreSQL, locks the job row until
    /// commit); any later statement of the transaction runs only if it is. Answers the job's
    /// error chain.
    async fn check_lease(
        tx: &mut Transaction<'static, D>,
        lease: &Lease,
    ) -> anyhow::Result<String> {
        let statement = format!(
            "SELECT errors FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND lease_owner = $3{}",
            D::LOCK_ROW
        );
        let row = sqlx::query(AssertSqlSafe(statement))
            .bind(lease.job_id.to_string())
            .bind(lease.token)
            .bind(&lease.owner)
            .fetch_optional(&mut **tx)
            .await
            .context("checking a lease")?;
        match row {
            Some(row) => Ok(row.try_get("errors")?),
            None => Err(LeaseLost(lease.job_id).into()),
        }
    }

    /// Answers a batch's new executions once it committed, in the order of `batch`, given how
    /// many of them [`Self::insert_executions`] inserted: all of them, or a read of the batch's
    /// keys tells which (see [`Self::insert_executions`]).
    ///
    /// `ON CONFLICT … DO NOTHING` rather than look-then-insert: two replicas may take the same
    /// retried request at once; the second insert waits for the first to commit, then does
    /// nothing. Within the batch, a request whose key an earlier one used is not inserted either
    /// (the statement sees its own rows), and is answered as it would be after that one.
    async fn created_answers(
        &self,
        batch: &[&NewExecution],
        fingerprints: &[String],
        inputs: &[String],
        affected: u64,
    ) -> Vec<anyhow::Result<Created>> {
        // No `RETURNING`: a new row holds what the request said and the columns' defaults, so its
        // execution is built here ([`queued_execution`]) rather than read back (each row a
        // message from SQLite's thread, and most of a batch's time on PostgreSQL in issue 16).
        // Only when some row was not inserted (its key was taken) does one more statement read
        // the batch's keys: what they hold now, committed (their requests and fingerprints never
        // change). A request without a key is always inserted; one with a key, when its key's
        // execution is its own. A request whose answer cannot be read is answered with its own
        // error.
        let all_inserted = affected == batch.len() as u64;
        let by_key = if all_inserted {
            Ok(std::collections::HashMap::new())
        } else {
            self.executions_by_key(batch).await
        };
        batch
            .iter()
            .zip(fingerprints)
            .zip(inputs)
            .map(|((new, fingerprint), input)| {
                let Some(key) = new.idempotency_key.as_deref().filter(|_| !all_inserted) else {
                    return Ok(Created::New(queued_execution(new, input)?));
                };
                let by_key = by_key.as_ref().map_err(|error| {
                    anyhow::anyhow!(
                        "execution {}: the batch was committed, but whether this request made it or found it could not be read: {error:#}",
                        new.id
                    )
                })?;
                let (stored, execution) = by_key.get(key).with_context(|| {
                    format!(
                        "execution {} was neither created nor found by its key",
                        new.id
                    )
                })?;
                Ok(if execution.id == new.id {
                    Created::New(queued_execution(new, input)?)
                } else if stored == fingerprint {
                    Created::Existing(execution.clone())
                } else {
                    Created::KeyConflict(execution.clone())
                })
            })
            .collect()
    }

    /// The executions of the batch's idempotency keys, as committed: (stored request fingerprint,
    /// execution) by key.
    async fn executions_by_key(
        &self,
        batch: &[&NewExecution],
    ) -> anyhow::Result<std::collections::HashMap<String, (String, Execution)>> {
        let mut keys: Vec<&str> = batch
            .iter()
            .filter_map(|new| new.idempotency_key.as_deref())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut by_key = std::collections::HashMap::new();
        if keys.is_empty() {
            return Ok(by_key);
        }
        let statement = format!(
            "SELECT * FROM executions WHERE idempotency_key IN ({})",
            placeholders(keys.len(), 1, |p| p[0].clone())
        );
        let mut lookup = sqlx::query(AssertSqlSafe(statement));
        for key in &keys {
            lookup = lookup.bind(*key);
        }
        for row in lookup
            .fetch_all(&self.pool)
            .await
            .context("looking up idempotency keys")?
        {
            let stored: String = row.try_get("request_sha256")?;
            let execution = Self::execution_from_row(&row)?;
            if let Some(key) = execution.idempotency_key.clone() {
                by_key.insert(key, (stored, execution));
            }
        }
        Ok(by_key)
    }

    /// Inserts a batch's executions, their start jobs and their `requested` events in one round
    /// trip (one JSON array, the same statement text whatever the batch's size), the rows in the
    /// batch's order (the first request of a key is the one inserted); a request whose key is
    /// taken (before, or earlier in the batch) is not inserted, nor are its job and event.
    /// Answers how many executions were inserted. `last`: nothing follows in the transaction.
    async fn insert_executions(
        tx: &mut IntakeTx<D>,
        batch: &[&NewExecution],
        fingerprints: &[String],
        inputs: &[String],
        last: bool,
    ) -> anyhow::Result<u64> {
        if batch.is_empty() {
            return Ok(0);
        }
        let rows: Vec<serde_json::Value> = batch
            .iter()
            .zip(fingerprints)
            .zip(inputs)
            .map(|((new, fingerprint), input)| {
                let detail = serde_json::json!({
                    "flowId": new.flow_id,
                    "environment": new.environment,
                });
                serde_json::json!({
                    "id": new.id.to_string(),
                    "idempotency_key": new.idempotency_key,
                    "request_sha256": fingerprint,
                    "environment": new.environment,
                    "flow_id": new.flow_id.as_str(),
                    "input": input,
                    "at": ms(new.now),
                    "traceparent": new.traceparent,
                    "job_id": Uuid::now_v7().to_string(),
                    "detail": detail.to_string(),
                })
            })
            .collect();
        let columns = D::json_rows(&[
            ("id", "text"),
            ("idempotency_key", "text"),
            ("request_sha256", "text"),
            ("environment", "text"),
            ("flow_id", "text"),
            ("input", "text"),
            ("at", "bigint"),
            ("traceparent", "text"),
            ("job_id", "text"),
            ("detail", "text"),
        ]);
        let insert_executions = "INSERT INTO executions (id, idempotency_key, request_sha256, environment, flow_id, input, state, created_at, updated_at, traceparent)
             SELECT r.id, r.idempotency_key, r.request_sha256, r.environment, r.flow_id, r.input, 'queued', r.at, r.at, r.traceparent";
        let insert_jobs = format!(
            "INSERT INTO jobs (id, execution_id, kind, state, priority, run_at, max_attempts, created_at, updated_at)
             SELECT r.job_id, r.id, 'start', 'ready', {}, r.at, {}, r.at, r.at",
            JobPriority::Interactive as i64,
            max_attempts(JobKind::Start),
        );
        let insert_events = "INSERT INTO events (execution_id, at, kind, detail) SELECT r.id, r.at, 'requested', r.detail";
        let json = serde_json::Value::Array(rows).to_string();
        if D::WRITING_CTES {
            // One statement, its inserts as writing CTEs (and the replicas told of the new jobs
            // on commit).
            let notify = match D::NOTIFY_WORK {
                Some(notify) => format!(
                    "{} WHERE EXISTS (SELECT 1 FROM e)",
                    notify.replace("$1", &format!("'{}'", JobKind::Start.as_str()))
                ),
                None => "SELECT 1 WHERE false".to_owned(),
            };
            let statement = format!(
                "WITH r AS (SELECT * FROM {columns}),
                 e AS ({insert_executions} FROM r WHERE true
                       ON CONFLICT (idempotency_key) DO NOTHING RETURNING id),
                 j AS ({insert_jobs} FROM r JOIN e ON e.id = r.id),
                 v AS ({insert_events} FROM r JOIN e ON e.id = r.id),
                 n AS ({notify})
                 SELECT (SELECT COUNT(*) FROM e) AS inserted, (SELECT COUNT(*) FROM n) AS notified"
            );
            let statement = tx.statement(&statement, last).await?;
            let row = sqlx::query(AssertSqlSafe(statement))
                .bind(json)
                .fetch_one(tx.conn()?)
                .await
                .context("inserting executions")?;
            let inserted: i64 = row.try_get("inserted")?;
            Ok(u64::try_from(inserted).unwrap_or_default())
        } else {
            // Three statements in one query (one round trip to SQLite's thread, which may also
            // begin and commit the transaction), `$1` the same argument in each. A job and an
            // event go with each execution the first inserted: its id is new (a request's id taken
            // already fails the statement). The count is the last insert's (`changes()`): the
            // statements' own counts, summed by sqlx, would also count a `BEGIN` and a `COMMIT`
            // as the connection's previous insert.
            let inserted = "EXISTS (SELECT 1 FROM executions e WHERE e.id = r.id)";
            let statement = format!(
                "{insert_executions} FROM {columns} WHERE true ON CONFLICT (idempotency_key) DO NOTHING;
                 {insert_jobs} FROM {columns} WHERE {inserted};
                 {insert_events} FROM {columns} WHERE {inserted};
                 SELECT changes() AS inserted"
            );
            let statement = tx.statement(&statement, last).await?;
            let rows = sqlx::query(AssertSqlSafe(statement))
                .bind(json)
                .fetch_all(tx.conn()?)
                .await
                .context("inserting executions")?;
            let row = rows.first().context("inserting executions: no count")?;
            let inserted: i64 = row.try_get("inserted")?;
            Ok(u64::try_from(inserted).unwrap_or_default())
        }
    }

    /// Records events inside the intake's `tx`, with one statement for all of them; `last`:
    /// nothing follows in the transaction.
    async fn insert_events(
        tx: &mut IntakeTx<D>,
        events: &[(Uuid, DateTime<Utc>, &str, serde_json::Value)],
        last: bool,
    ) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let statement = format!(
            "INSERT INTO events (execution_id, at, kind, detail) VALUES {}",
            placeholders(events.len(), 4, |p| format!(
                "({}, {}, {}, {})",
                p[0], p[1], p[2], p[3]
            ))
        );
        let statement = tx.statement(&statement, last).await?;
        let details: Vec<String> = events.iter().map(|e| e.3.to_string()).collect();
        let mut query = sqlx::query(AssertSqlSafe(statement));
        for ((execution_id, at, kind, _), detail) in events.iter().zip(&details) {
            query = query
                .bind(execution_id.to_string())
                .bind(ms(*at))
                .bind(*kind)
                .bind(detail.as_str());
        }
        query
            .execute(tx.conn()?)
            .await
            .context("recording events")?;
        Ok(())
    }

    /// Records webhooks inside `tx` (see [`Store::record_webhook`] and [`Store::write_batch`]);
    /// answers in the order of `batch`. A body seen before, or earlier in the batch, is a
    /// duplicate.
    ///
    /// One statement whatever the batch size ([`Dialect::json_rows`]: the webhooks as one JSON
    /// array), prepared once: it matches each webhook to the execution of its instance, inserts
    /// it unless its body was seen before, and returns the inserted ones with their execution's
    /// state, so a webhook not returned is a duplicate. (Issue 16 measured it against multi-row
    /// `VALUES` statements in runs of a power of two, with a match, an insert and a look-up of
    /// duplicates each: the same ingest rate within the noise, so the one mechanism of every
    /// other batch insert is kept.)
    ///
    /// Then, in the same transaction and its last statements: one upsert of a `check` job for
    /// every running execution a new webhook named ([`Self::insert_checks`]), and one insert of
    /// their events.
    async fn record_webhooks_in(
        tx: &mut IntakeTx<D>,
        batch: &[(&WebhookRecord, DateTime<Utc>)],
    ) -> anyhow::Result<Vec<WebhookRecorded>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(serde::Serialize)]
        struct Row<'a> {
            id: Uuid,
            received_at: i64,
            instance_id: &'a str,
            claimed_status: Option<&'a str>,
            authentic: i64,
            body_sha256: &'a str,
        }
        // Built for each batch (a static in a generic function would be one for both
        // databases); the text is the same, so the prepared statement is the cached one.
        let statement = format!(
                "INSERT INTO webhooks (id, received_at, instance_id, claimed_status, authentic, body_sha256, execution_id)
                 SELECT r.id, r.received_at, r.instance_id, r.claimed_status, r.authentic, r.body_sha256, e.id
                 FROM {} LEFT JOIN executions e ON e.instance_id = r.instance_id WHERE true
                 ON CONFLICT (instance_id, body_sha256) DO NOTHING
                 RETURNING id, execution_id, (SELECT state FROM executions x WHERE x.id = webhooks.execution_id) AS state",
                D::json_rows(&[
                    ("id", "text"),
                    ("received_at", "bigint"),
                    ("instance_id", "text"),
                    ("claimed_status", "text"),
                    ("authentic", "bigint"),
                    ("body_sha256", "text"),
                ])
        );
        let rows: Vec<Row<'_>> = batch
            .iter()
            .map(|(record, _)| Row {
                id: record.id,
                received_at: ms(record.received_at),
                instance_id: record.instance_id.as_str(),
                claimed_status: record.claimed_status.as_deref(),
                authentic: i64::from(record.authentic),
                body_sha256: record.body_sha256.as_str(),
            })
            .collect();
        let json = serde_json::to_string(&rows).context("writing webhooks as JSON")?;
        let statement = tx.statement(&statement, false).await?;
        let returned = sqlx::query(AssertSqlSafe(statement))
            .bind(json)
            .fetch_all(tx.conn()?)
            .await
            .context("recording webhooks")?;
        let mut inserted = std::collections::HashMap::with_capacity(returned.len());
        for row in &returned {
            let id = uuid(&row.try_get::<String, _>("id")?)?;
            let execution = match row.try_get::<Option<String>, _>("execution_id")? {
                Some(execution_id) => Some((
                    uuid(&execution_id)?,
                    ExecutionState::parse(&row.try_get::<String, _>("state")?),
                )),
                None => None,
            };
            inserted.insert(id, execution);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        // The check due for each running execution a webhook named: the earliest, stamped with
        // the latest webhook (two webhooks of one execution make one upsert's row).
        let mut checks: std::collections::BTreeMap<Uuid, (DateTime<Utc>, DateTime<Utc>)> =
            std::collections::BTreeMap::new();
        for (record, check_at) in batch {
            let Some(execution) = inserted.get(&record.id) else {
                outcomes.push(WebhookRecorded::Duplicate);
                continue;
            };
            let outcome = match execution {
                Some((id, Some(ExecutionState::Running))) => {
                    checks
                        .entry(*id)
                        .and_modify(|(run_at, at)| {
                            *run_at = (*run_at).min(*check_at);
                            *at = (*at).max(record.received_at);
                        })
                        .or_insert((*check_at, record.received_at));
                    let detail = serde_json::json!({
                        "claimedStatus": record.claimed_status,
                        "authentic": record.authentic,
                    });
                    events.push((*id, record.received_at, "webhook", detail));
                    WebhookRecorded::Matched
                }
                Some((id, _)) => {
                    let detail = serde_json::json!({
                        "claimedStatus": record.claimed_status,
                        "authentic": record.authentic,
                        "ignored": "not running",
                    });
                    events.push((*id, record.received_at, "webhook", detail));
                    WebhookRecorded::Unmatched
                }
                None => WebhookRecorded::Unmatched,
            };
            outcomes.push(outcome);
        }
        Self::insert_checks(tx, &checks, events.is_empty()).await?;
        Self::insert_events(tx, &events, true).await?;
        Ok(outcomes)
    }

    /// Enqueues the `check` job of each execution in `checks` (due at, now) with
    /// [`JobPriority::Webhook`], in one upsert of the intake's `tx` (as [`INSERT_JOB`] does one
    /// job), and tells the workers of every replica on commit; `last`: nothing follows in the
    /// transaction.
    async fn insert_checks(
        tx: &mut IntakeTx<D>,
        checks: &std::collections::BTreeMap<Uuid, (DateTime<Utc>, DateTime<Utc>)>,
        last: bool,
    ) -> anyhow::Result<()> {
        if checks.is_empty() {
            return Ok(());
        }
        if let Some(notify) = D::NOTIFY_WORK {
            // Sent on commit, wherever it stands in the transaction.
            let notify = tx.statement(notify, false).await?;
            sqlx::query(AssertSqlSafe(notify))
                .bind(JobKind::Check.as_str())
                .execute(tx.conn()?)
                .await
                .context("notifying the replicas of new work")?;
        }
        let rows: Vec<serde_json::Value> = checks
            .iter()
            .map(|(execution_id, (run_at, at))| {
                serde_json::json!({
                    "id": Uuid::now_v7().to_string(),
                    "execution_id": execution_id.to_string(),
                    "run_at": ms(*run_at),
                    "at": ms(*at),
                })
            })
            .collect();
        let statement = format!(
            "INSERT INTO jobs (id, execution_id, kind, state, priority, run_at, max_attempts, created_at, updated_at)
             SELECT r.id, r.execution_id, '{}', 'ready', {}, r.run_at, {}, r.at, r.at FROM {} WHERE true
             {UPSERT_JOB}",
            JobKind::Check.as_str(),
            JobPriority::Webhook as i64,
            max_attempts(JobKind::Check),
            D::json_rows(&[
                ("id", "text"),
                ("execution_id", "text"),
                ("run_at", "bigint"),
                ("at", "bigint"),
            ]),
        );
        let statement = tx.statement(&statement, last).await?;
        sqlx::query(AssertSqlSafe(statement))
            .bind(serde_json::Value::Array(rows).to_string())
            .execute(tx.conn()?)
            .await
            .context("enqueueing checks")?;
        Ok(())
    }

    async fn count(&self, statement: &'static str) -> anyhow::Result<i64> {
        sqlx::query_scalar(statement)
            .fetch_one(&self.pool)
            .await
            .with_context(|| format!("counting ({statement})"))
    }

    async fn counts_by(&self, statement: &'static str) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(statement)
            .fetch_all(&self.pool)
            .await
            .with_context(|| format!("counting ({statement})"))?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("n")?)))
            .collect()
    }
}

#[async_trait]
impl<D> Store for SqlStore<D>
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
    async fn create_execution(&self, new: NewExecution) -> anyhow::Result<Created> {
        // An intake write (also the one-by-one fallback of a failed batch, which holds the turn).
        let written = self.write_together(vec![Write::Execution(new)]).await;
        match written.map_err(|(error, _)| error)?.pop() {
            Some(Ok(Written::Execution(created))) => Ok(*created),
            Some(Err(error)) => Err(error),
            _ => anyhow::bail!("no answer for a new execution"),
        }
    }

    async fn execution(&self, id: Uuid) -> anyhow::Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading an execution")?;
        row.as_ref().map(Self::execution_from_row).transpose()
    }

    async fn execution_by_instance(
        &self,
        instance_id: &InstanceId,
    ) -> anyhow::Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE instance_id = $1")
            .bind(instance_id.as_str())
            .fetch_optional(&self.pool)
            .await
            .context("reading an execution by instance")?;
        row.as_ref().map(Self::execution_from_row).transpose()
    }

    async fn executions(&self, filter: ExecutionFilter) -> anyhow::Result<Vec<Execution>> {
        let limit = if filter.limit <= 0 { 100 } else { filter.limit };
        let rows = sqlx::query(
            "SELECT * FROM executions WHERE ($1 IS NULL OR state = $1) ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(filter.state.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing executions")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn claim_many(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<(Job, Lease)>> {
        // The candidates are read as ranges of an index, however long the queue: for each
        // priority the longest-due `CLAIM_WINDOW` jobs, and the jobs whose lease lapsed, each with
        // what ranks it; the most urgent of them are chosen (priority, then Mint's deletion
        // deadline, then time) and leased. Each step is materialized, so it is made once
        // (PostgreSQL locks the chosen rows, skipping those another replica is claiming).
        //
        // The chosen step joins the jobs to the ordered candidates by primary key alone, so
        // PostgreSQL reads them one by one and stops once enough are locked; the update checks
        // again that each is still due (a job another replica claimed after this statement's
        // snapshot is locked but not updated), in a `CASE` that no index serves. A check that an
        // index served made a hash of every due job look the cheaper plan, and the whole queue
        // was read on every claim (10,000 queued starts: 5-10 ms a claim, about a core of the
        // server at the budget's start rate; issue 16).
        let candidate = "j.id, j.priority, e.deadline_at, j.run_at";
        let not_paused = "NOT EXISTS (SELECT 1 FROM work_pauses p
                                      WHERE p.environment = e.environment AND p.kind = j.kind)";
        let mut windows: Vec<String> = [
            JobPriority::Interactive,
            JobPriority::Webhook,
            JobPriority::Background,
        ]
        .into_iter()
        .map(|priority| {
            format!(
                "SELECT * FROM (SELECT {candidate} FROM jobs j JOIN executions e ON e.id = j.execution_id
                     WHERE j.state = 'ready' AND j.kind IN ({kinds}) AND j.priority = {priority}
                       AND j.run_at <= $3 AND {not_paused}
                     ORDER BY j.run_at LIMIT {CLAIM_WINDOW}) AS due_{priority}",
                kinds = kinds_sql(kinds),
                priority = priority as i64,
            )
        })
        .collect();
        windows.push(format!(
            "SELECT * FROM (SELECT {candidate} FROM jobs j JOIN executions e ON e.id = j.execution_id
                 WHERE j.state = 'running' AND j.kind IN ({kinds}) AND j.lease_until < $3
                   AND {not_paused}
                 ORDER BY j.lease_until LIMIT {CLAIM_WINDOW}) AS lapsed",
            kinds = kinds_sql(kinds),
        ));
        let statement = format!(
            "WITH candidates AS MATERIALIZED ({windows}),
             chosen AS MATERIALIZED (
                 SELECT j.id FROM (SELECT * FROM candidates
                                   ORDER BY priority DESC, deadline_at ASC NULLS LAST, run_at ASC) c
                     JOIN jobs j ON j.id = c.id
                 ORDER BY c.priority DESC, c.deadline_at ASC NULLS LAST, c.run_at ASC
                 LIMIT $4 {skip_locked})
             UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
                    lease_token = lease_token + 1, updated_at = $3
             WHERE id IN (SELECT id FROM chosen)
               AND CASE state WHEN 'ready' THEN run_at <= $3
                              WHEN 'running' THEN lease_until < $3 ELSE false END
             RETURNING *",
            windows = windows.join(" UNION ALL "),
            skip_locked = D::SKIP_LOCKED,
        );
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let mut tx = self.write().await?;
        // Planned at each claim, for the queue as it is then: PostgreSQL keeps a prepared
        // statement's generic plan, and one made while the queue was short (before a burst, or
        // before the tables' first `ANALYZE`) hashed the whole queue on every claim later on.
        let rows = sqlx::query(AssertSqlSafe(statement))
            .persistent(false)
            .bind(owner)
            .bind(ms(lease_until))
            .bind(ms(now))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await
            .context("claiming jobs")?;
        tx.commit().await.context("committing a claim")?;
        let mut claimed = rows
            .iter()
            .map(|row| {
                let job = Self::job_from_row(row)?;
                let lease = Lease {
                    job_id: job.id,
                    token: job.lease_token,
                    owner: owner.to_owned(),
                };
                Ok((job, lease))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // `RETURNING` keeps no order: the most urgent first, as chosen.
        claimed.sort_by(|(a, _), (b, _)| b.priority.cmp(&a.priority).then(a.run_at.cmp(&b.run_at)));
        Ok(claimed)
    }

    async fn renew_lease(&self, lease: &Lease, until: DateTime<Utc>) -> anyhow::Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $4 WHERE id = $1 AND lease_token = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(lease.token)
        .bind(&lease.owner)
        .bind(ms(until))
        .execute(&mut *self.writer_connection().await?)
        .await
        .context("renewing a lease")?;
        if D::rows_affected(&done) == 1 {
            Ok(())
        } else {
            Err(LeaseLost(lease.job_id).into())
        }
    }

    async fn patch_under_lease(
        &self,
        lease: &Lease,
        execution_id: Uuid,
        patch: ExecutionPatch,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        Self::check_lease(&mut tx, lease).await?;
        let emitted = Self::patch_execution(&mut tx, execution_id, &patch, now).await?;
        tx.commit().await.context("committing a patch")?;
        self.events_committed(emitted);
        Ok(())
    }

    async fn finish_step(
        &self,
        lease: &Lease,
        execution_id: Uuid,
        outcome: StepOutcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        let errors = Self::check_lease(&mut tx, lease).await?;
        // The outbox rows go last (see `patch_execution_deferring_events`).
        let before = match &outcome.execution {
            Some(patch) => {
                Self::patch_execution_deferring_events(&mut tx, execution_id, patch, now).await?
            }
            None => None,
        };
        match &outcome.job {
            JobDisposition::Done => {
                sqlx::query(
                    "UPDATE jobs SET state = 'done', lease_owner = NULL, lease_until = NULL, updated_at = $2 WHERE id = $1",
                )
                .bind(lease.job_id.to_string())
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .context("completing a job")?;
            }
            JobDisposition::Retry {
                run_at,
                error,
                counts,
                priority,
            } => {
                let errors = match error {
                    Some(error) => push_error(&errors, now, error),
                    None => errors,
                };
                sqlx::query(
                    "UPDATE jobs SET state = 'ready', lease_owner = NULL, lease_until = NULL,
                            run_at = $2, attempts = attempts + $3, errors = $4,
                            priority = COALESCE($5, priority), updated_at = $6
                     WHERE id = $1",
                )
                .bind(lease.job_id.to_string())
                .bind(ms(*run_at))
                .bind(i64::from(*counts))
                .bind(errors)
                .bind(priority.map(|p| p as i64))
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .context("rescheduling a job")?;
            }
            JobDisposition::Dead { error } => {
                sqlx::query(
                    "UPDATE jobs SET state = 'dead', lease_owner = NULL, lease_until = NULL,
                            attempts = attempts + 1, errors = $2, updated_at = $3
                     WHERE id = $1",
                )
                .bind(lease.job_id.to_string())
                .bind(push_error(&errors, now, error))
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .context("dead-lettering a job")?;
            }
        }
        for job in &outcome.enqueue {
            Self::insert_follow_up(&mut tx, job, now).await?;
        }
        for (kind, detail) in &outcome.events {
            Self::insert_event(&mut tx, execution_id, now, kind, detail).await?;
        }
        let emitted = match before {
            Some(before) => Self::emit_changes(&mut tx, execution_id, before, now).await?,
            None => false,
        };
        tx.commit().await.context("committing a step")?;
        self.events_committed(emitted);
        Ok(())
    }

    async fn enqueue(&self, job: NewJob, now: DateTime<Utc>) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        Self::insert_job(&mut tx, &job, now).await?;
        tx.commit().await.context("committing a job")?;
        Ok(())
    }

    async fn next_due(&self, kinds: &[JobKind]) -> anyhow::Result<Option<DateTime<Utc>>> {
        // The first of each, read in index order (not a minimum over the whole queue).
        let statement = format!(
            "SELECT MIN(at) FROM (
                 SELECT at FROM (SELECT j.run_at AS at FROM jobs j JOIN executions e ON e.id = j.execution_id
                     WHERE j.state = 'ready' AND j.kind IN ({kinds}) AND {not_paused}
                     ORDER BY j.run_at LIMIT 1) AS ready
                 UNION ALL
                 SELECT at FROM (SELECT j.lease_until AS at FROM jobs j JOIN executions e ON e.id = j.execution_id
                     WHERE j.state = 'running' AND j.kind IN ({kinds}) AND {not_paused}
                     ORDER BY j.lease_until LIMIT 1) AS running
             ) AS next",
            kinds = kinds_sql(kinds),
            not_paused = "NOT EXISTS (SELECT 1 FROM work_pauses p
                                      WHERE p.environment = e.environment AND p.kind = j.kind)",
        );
        let next: Option<i64> = sqlx::query_scalar(AssertSqlSafe(statement))
            .fetch_one(&self.pool)
            .await
            .context("finding the next due job")?;
        Ok(next.map(from_ms))
    }

    async fn jobs_for(&self, execution_id: Uuid) -> anyhow::Result<Vec<Job>> {
        let rows =
            sqlx::query("SELECT * FROM jobs WHERE execution_id = $1 ORDER BY created_at, id")
                .bind(execution_id.to_string())
                .fetch_all(&self.pool)
                .await
                .context("listing an execution's jobs")?;
        rows.iter().map(Self::job_from_row).collect()
    }

    async fn dead_letters(&self) -> anyhow::Result<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'dead' ORDER BY updated_at, id")
            .fetch_all(&self.pool)
            .await
            .context("listing dead letters")?;
        rows.iter().map(Self::job_from_row).collect()
    }

    async fn retry_dead_letter(&self, job_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let mut tx = self.write().await?;
        let statement = format!(
            "SELECT execution_id, kind FROM jobs WHERE id = $1 AND state = 'dead'{}",
            D::LOCK_ROW
        );
        let row = sqlx::query(AssertSqlSafe(statement))
            .bind(job_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .context("reading a dead letter")?;
        let Some(row) = row else {
            return Ok(false);
        };
        let execution_id: String = row.try_get("execution_id")?;
        let kind: String = row.try_get("kind")?;
        // A newer active job of the same kind makes this one redundant: close it instead.
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE execution_id = $1 AND kind = $2 AND state IN ('ready', 'running')",
        )
        .bind(&execution_id)
        .bind(&kind)
        .fetch_one(&mut *tx)
        .await
        .context("looking for an active job of the dead letter's kind")?;
        let new_state = if active > 0 { "done" } else { "ready" };
        sqlx::query(
            "UPDATE jobs SET state = $2, attempts = 0, run_at = $3, priority = $4, updated_at = $3 WHERE id = $1",
        )
        .bind(job_id.to_string())
        .bind(new_state)
        .bind(ms(now))
        .bind(JobPriority::Interactive as i64)
        .execute(&mut *tx)
        .await
        .context("retrying a dead letter")?;
        if new_state == "ready"
            && let Some(kind) = JobKind::parse(&kind)
        {
            Self::notify_work(&mut tx, kind).await?;
        }
        let detail = serde_json::json!({"jobId": job_id, "kind": kind});
        Self::insert_event(
            &mut tx,
            uuid(&execution_id)?,
            now,
            "dead_letter_retried",
            &detail,
        )
        .await?;
        tx.commit()
            .await
            .context("committing a retried dead letter")?;
        Ok(true)
    }

    async fn record_webhook(
        &self,
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    ) -> anyhow::Result<WebhookRecorded> {
        // An intake write (also the one-by-one fallback of a failed batch, which holds the turn).
        let written = self
            .write_together(vec![Write::Webhook { record, check_at }])
            .await;
        match written.map_err(|(error, _)| error)?.pop() {
            Some(Ok(Written::Webhook(recorded))) => Ok(recorded),
            Some(Err(error)) => Err(error),
            _ => anyhow::bail!("no answer for a webhook"),
        }
    }

    async fn write_batch(&self, batch: Vec<Write>) -> Vec<anyhow::Result<Written>> {
        // Group commit: one transaction (one fsync) for every request that arrived meanwhile.
        let batch_len = batch.len();
        match self.write_together(batch).await {
            Ok(outcomes) => outcomes,
            // One failing write must not fail the others, and two replicas' batches may deadlock
            // on PostgreSQL (each waits for a row the other inserted): write them one by one,
            // each in its own transaction, in the same order.
            Err((error, batch)) if batch_len > 1 => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    writes = batch_len,
                    "committing a batch together failed; writing its requests one by one"
                );
                let mut outcomes = Vec::with_capacity(batch_len);
                for write in batch {
                    outcomes.push(self.write_one(write).await);
                }
                outcomes
            }
            Err((error, _)) => vec![Err(error)],
        }
    }

    fn intake_turn(&self) -> Option<std::sync::Arc<super::IntakeTurn>> {
        Some(self.intake.clone())
    }

    async fn webhooks_for(&self, instance_id: &InstanceId) -> anyhow::Result<Vec<WebhookRecord>> {
        let rows =
            sqlx::query("SELECT * FROM webhooks WHERE instance_id = $1 ORDER BY received_at, id")
                .bind(instance_id.as_str())
                .fetch_all(&self.pool)
                .await
                .context("listing webhooks")?;
        rows.iter().map(Self::webhook_from_row).collect()
    }

    async fn events_for(&self, execution_id: Uuid) -> anyhow::Result<Vec<Event>> {
        let rows = sqlx::query("SELECT * FROM events WHERE execution_id = $1 ORDER BY id")
            .bind(execution_id.to_string())
            .fetch_all(&self.pool)
            .await
            .context("listing events")?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(Event {
                    execution_id,
                    at: from_ms(row.try_get("at")?),
                    kind: row.try_get("kind")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    async fn overview(&self) -> anyhow::Result<Overview> {
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(finished_at) FROM executions WHERE state IN ('finished', 'downloading')",
        )
        .fetch_one(&self.pool)
        .await
        .context("finding the oldest unarchived execution")?;
        Ok(Overview {
            executions_by_state: self
                .counts_by("SELECT state AS name, COUNT(*) AS n FROM executions GROUP BY state")
                .await?,
            jobs_ready: self
                .counts_by(
                    "SELECT kind AS name, COUNT(*) AS n FROM jobs WHERE state = 'ready' GROUP BY kind",
                )
                .await?,
            jobs_running: self
                .count("SELECT COUNT(*) FROM jobs WHERE state = 'running'")
                .await?,
            dead_letters: self
                .count("SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
                .await?,
            webhooks_recorded: self.count("SELECT COUNT(*) FROM webhooks").await?,
            oldest_unarchived_finished_at: opt_from_ms(oldest),
            waiting_for_user: self
                .count(
                    "SELECT COUNT(*) FROM executions
                     WHERE state = 'running' AND progress LIKE '{\"kind\":\"waitingForUser\"%'",
                )
                .await?,
        })
    }

    async fn unarchived(&self, limit: i64) -> anyhow::Result<Vec<Execution>> {
        let rows = sqlx::query(
            "SELECT * FROM executions WHERE state IN ('finished', 'downloading')
             ORDER BY deadline_at ASC NULLS LAST LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing unarchived executions")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn executions_without_input(
        &self,
        filter: ExecutionFilter,
    ) -> anyhow::Result<Vec<Execution>> {
        let limit = if filter.limit <= 0 { 100 } else { filter.limit };
        let rows = sqlx::query(without_input!(
            "FROM executions WHERE ($1 IS NULL OR state = $1)
             ORDER BY created_at DESC, id DESC LIMIT $2"
        ))
        .bind(filter.state.map(|s| s.as_str()))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing executions")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn unarchived_due_by(&self, horizon: DateTime<Utc>) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM executions
             WHERE state IN ('finished', 'downloading') AND deadline_at <= $1",
        )
        .bind(ms(horizon))
        .fetch_one(&self.pool)
        .await
        .context("counting unarchived executions near their deadline")
    }

    async fn waiting_for_user(&self, limit: i64) -> anyhow::Result<Vec<Execution>> {
        // `progress` is the JSON of `model::Progress`, its tag first (`{"kind":"waitingForUser",…}`).
        let rows = sqlx::query(without_input!(
            "FROM executions
             WHERE state = 'running' AND progress LIKE '{\"kind\":\"waitingForUser\"%'
             ORDER BY started_at ASC NULLS LAST, id ASC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing executions waiting for their end user")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn unarchived_without_input(&self, limit: i64) -> anyhow::Result<Vec<Execution>> {
        let rows = sqlx::query(without_input!(
            "FROM executions WHERE state IN ('finished', 'downloading')
             ORDER BY deadline_at ASC NULLS LAST LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing unarchived executions")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn prune_webhooks(
        &self,
        before: DateTime<Utc>,
        unmatched_before: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64> {
        let mut tx = self.write().await?;
        let deleted = sqlx::query(
            "DELETE FROM webhooks WHERE id IN (
                 SELECT id FROM webhooks
                 WHERE received_at < $1 OR (execution_id IS NULL AND received_at < $2)
                 ORDER BY received_at LIMIT $3)",
        )
        .bind(ms(before))
        .bind(ms(unmatched_before))
        .bind(limit)
        .execute(&mut *tx)
        .await
        .context("pruning webhooks")?;
        tx.commit()
            .await
            .context("committing the webhook pruning")?;
        Ok(D::rows_affected(&deleted))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .with_context(|| format!("pinging {}", D::NAME))?;
        Ok(())
    }

    async fn pause_work(&self, pause: &WorkPause) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        sqlx::query(
            "INSERT INTO work_pauses (environment, kind, role, operation, detail, since, probed_at, next_probe_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (environment, kind) DO UPDATE SET
               role = excluded.role, operation = excluded.operation, detail = excluded.detail",
        )
        .bind(&pause.environment)
        .bind(pause.kind.as_str())
        .bind(&pause.role)
        .bind(&pause.operation)
        .bind(&pause.detail)
        .bind(ms(pause.since))
        .bind(opt_ms(pause.probed_at))
        .bind(ms(pause.next_probe_at))
        .execute(&mut *tx)
        .await
        .context("pausing work")?;
        tx.commit().await.context("committing a pause")?;
        Ok(())
    }

    async fn work_pauses(&self) -> anyhow::Result<Vec<WorkPause>> {
        let rows = sqlx::query("SELECT * FROM work_pauses ORDER BY environment, kind")
            .fetch_all(&self.pool)
            .await
            .context("reading the paused work")?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind")?;
                Ok(WorkPause {
                    environment: row.try_get("environment")?,
                    kind: JobKind::parse(&kind)
                        .with_context(|| format!("unknown stored job kind {kind:?}"))?,
                    role: row.try_get("role")?,
                    operation: row.try_get("operation")?,
                    detail: row.try_get("detail")?,
                    since: from_ms(row.try_get("since")?),
                    probed_at: opt_from_ms(row.try_get("probed_at")?),
                    next_probe_at: from_ms(row.try_get("next_probe_at")?),
                })
            })
            .collect()
    }

    async fn claim_role_probe(
        &self,
        environment: &str,
        role: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE work_pauses SET probed_at = $3, next_probe_at = $4
             WHERE environment = $1 AND role = $2 AND next_probe_at <= $3",
        )
        .bind(environment)
        .bind(role)
        .bind(ms(now))
        .bind(ms(next))
        .execute(&mut *tx)
        .await
        .context("claiming a role probe")?;
        tx.commit().await.context("committing a role probe claim")?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn lift_pauses(&self, environment: &str, role: &str) -> anyhow::Result<u64> {
        let mut tx = self.write().await?;
        let done = sqlx::query("DELETE FROM work_pauses WHERE environment = $1 AND role = $2")
            .bind(environment)
            .bind(role)
            .execute(&mut *tx)
            .await
            .context("resuming paused work")?;
        let lifted = D::rows_affected(&done);
        if lifted > 0 {
            // Other replicas' workers look again at once.
            for kind in [JobKind::Start, JobKind::Check, JobKind::Download] {
                Self::notify_work(&mut tx, kind).await?;
            }
        }
        tx.commit().await.context("committing resumed work")?;
        Ok(lifted)
    }

    fn spawn_wake_listener(
        &self,
        wake: std::sync::Arc<super::Wake>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        D::spawn_wake_listener(&self.pool, wake, shutdown)
    }

    async fn spend(&self, month: &str) -> anyhow::Result<Vec<SpendRow>> {
        let rows = sqlx::query(
            "SELECT day, environment, flow_id, COUNT(*) AS executions, CAST(SUM(cents) AS BIGINT) AS cents
             FROM spend_ledger WHERE month = $1
             GROUP BY day, environment, flow_id ORDER BY day, environment, flow_id",
        )
        .bind(month)
        .fetch_all(&self.pool)
        .await
        .context("reading the cost ledger")?;
        rows.iter()
            .map(|row| {
                Ok(SpendRow {
                    day: row.try_get("day")?,
                    environment: row.try_get("environment")?,
                    flow_id: row.try_get("flow_id")?,
                    executions: row.try_get("executions")?,
                    cents: row.try_get("cents")?,
                })
            })
            .collect()
    }

    async fn setting(&self, key: &str) -> anyhow::Result<Option<String>> {
        sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .context("reading a setting")
    }

    async fn set_setting(
        &self,
        key: &str,
        value: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(value)
                .bind(ms(now))
                .execute(&mut *tx)
                .await
                .context("writing a setting")?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(key)
                    .execute(&mut *tx)
                    .await
                    .context("removing a setting")?;
            }
        }
        tx.commit().await.context("committing a setting")?;
        Ok(())
    }

    async fn erase(&self, erasure: Erasure) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        let id = erasure.execution_id.to_string();
        let at = ms(erasure.at);
        let updated = sqlx::query(
            "UPDATE executions SET state = 'erased', input = '{}', idempotency_key = NULL,
                request_sha256 = 'erased', workflow_url = NULL, progress = NULL, archive_path = NULL,
                sha256 = NULL, bytes = NULL, failure_reason = NULL, updated_at = $2
             WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .context("erasing an execution's fields")?;
        if D::rows_affected(&updated) != 1 {
            anyhow::bail!("there is no execution {id} to erase");
        }
        sqlx::query("UPDATE events SET detail = '{}' WHERE execution_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .context("erasing an execution's event details")?;
        Self::erase_events(&mut tx, erasure.execution_id).await?;
        sqlx::query("UPDATE jobs SET errors = '[]' WHERE execution_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .context("erasing an execution's job errors")?;
        sqlx::query(
            "INSERT INTO erasures (execution_id, kind, at, operator, reason, removed)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(erasure.kind.as_str())
        .bind(at)
        .bind(erasure.operator.as_str())
        .bind(erasure.reason.as_deref())
        .bind(erasure.removed.to_string())
        .execute(&mut *tx)
        .await
        .context("recording the tombstone")?;
        sqlx::query("INSERT INTO events (execution_id, at, kind, detail) VALUES ($1, $2, $3, $4)")
            .bind(id.as_str())
            .bind(at)
            .bind(erasure.kind.as_str())
            .bind(
                serde_json::json!({"operator": erasure.operator, "reason": erasure.reason})
                    .to_string(),
            )
            .execute(&mut *tx)
            .await
            .context("recording the erasure event")?;
        tx.commit().await.context("committing an erasure")?;
        Ok(())
    }

    async fn erasure(&self, execution_id: Uuid) -> anyhow::Result<Option<Erasure>> {
        let row = sqlx::query(
            "SELECT kind, at, operator, reason, removed FROM erasures WHERE execution_id = $1",
        )
        .bind(execution_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .context("reading a tombstone")?;
        row.map(|row| {
            let removed: String = row.try_get("removed")?;
            Ok(Erasure {
                execution_id,
                kind: row.try_get("kind")?,
                at: from_ms(row.try_get("at")?),
                operator: row.try_get("operator")?,
                reason: row.try_get("reason")?,
                removed: serde_json::from_str(&removed)?,
            })
        })
        .transpose()
    }

    async fn archived_before(
        &self,
        archived_before: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Execution>> {
        let rows = sqlx::query(
            "SELECT * FROM executions WHERE state = 'archived' AND archived_at <= $1
             ORDER BY archived_at LIMIT $2",
        )
        .bind(ms(archived_before))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("reading executions due for the purge")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn relocate_archive(
        &self,
        execution_id: Uuid,
        from: &str,
        to: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write().await?;
        let updated = sqlx::query(
            "UPDATE executions SET archive_path = $3 WHERE id = $1 AND archive_path = $2",
        )
        .bind(execution_id.to_string())
        .bind(from)
        .bind(to)
        .execute(&mut *tx)
        .await
        .context("recording an archive's new location")?;
        tx.commit()
            .await
            .context("committing an archive's new location")?;
        Ok(D::rows_affected(&updated) == 1)
    }

    async fn audit(&self, record: AuditRecord) -> anyhow::Result<()> {
        let mut tx = self.write().await?;
        Self::insert_audit(&mut tx, &record).await?;
        tx.commit().await.context("committing the audit log")?;
        Ok(())
    }

    async fn audit_for(&self, target: &str) -> anyhow::Result<Vec<AuditRecord>> {
        let rows = sqlx::query(
            "SELECT at, operator, action, target, outcome, detail FROM audit_log
             WHERE target = $1 ORDER BY id",
        )
        .bind(target)
        .fetch_all(&self.pool)
        .await
        .context("reading the audit log")?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditRecord {
                    at: from_ms(row.try_get("at")?),
                    operator: row.try_get("operator")?,
                    action: row.try_get("action")?,
                    target: row.try_get("target")?,
                    outcome: row.try_get("outcome")?,
                    detail: serde_json::from_str(&detail)?,
                })
            })
            .collect()
    }

    async fn ambiguous_starts(
        &self,
        environment: &str,
        flow_id: &FlowId,
    ) -> anyhow::Result<Vec<Execution>> {
        let rows = sqlx::query(without_input!(
            "FROM executions
             WHERE start_ambiguous = 1 AND environment = $1 AND flow_id = $2
               AND instance_id IS NULL AND state IN ('queued', 'starting')
             ORDER BY created_at, id LIMIT 10000"
        ))
        .bind(environment)
        .bind(flow_id.as_str())
        .fetch_all(&self.pool)
        .await
        .context("listing a flow's ambiguous starts")?;
        rows.iter().map(Self::execution_from_row).collect()
    }

    async fn record_findings(
        &self,
        findings: Vec<super::Finding>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        if findings.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        for finding in &findings {
            let id = finding.execution_id.to_string();
            sqlx::query(
                "INSERT INTO reconcile_findings (execution_id, outcome, instance_id, scan_started_at, recorded_at, detail)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (execution_id) DO UPDATE SET outcome = excluded.outcome,
                   instance_id = excluded.instance_id, scan_started_at = excluded.scan_started_at,
                   recorded_at = excluded.recorded_at, detail = excluded.detail",
            )
            .bind(id.as_str())
            .bind(finding.outcome.as_str())
            .bind(finding.instance_id.as_ref().map(InstanceId::as_str))
            .bind(ms(finding.scan_started_at))
            .bind(ms(now))
            .bind(finding.detail.to_string())
            .execute(&mut *tx)
            .await
            .context("recording a reconciliation finding")?;
            // Its start job uses the finding at once instead of scanning again.
            sqlx::query(
                "UPDATE jobs SET run_at = $2, updated_at = $2
                 WHERE execution_id = $1 AND kind = 'start' AND state = 'ready' AND run_at > $2",
            )
            .bind(id.as_str())
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .context("bringing a start job forward")?;
        }
        Self::notify_work(&mut tx, JobKind::Start).await?;
        tx.commit()
            .await
            .context("committing reconciliation findings")?;
        Ok(())
    }

    async fn finding(&self, execution_id: Uuid) -> anyhow::Result<Option<super::Finding>> {
        let row = sqlx::query(
            "SELECT outcome, instance_id, scan_started_at, detail FROM reconcile_findings WHERE execution_id = $1",
        )
        .bind(execution_id.to_string())
        .fetch_optional(&self.pool)
        .await
        .context("reading a reconciliation finding")?;
        let Some(row) = row else { return Ok(None) };
        let outcome: String = row.try_get("outcome")?;
        let detail: String = row.try_get("detail")?;
        Ok(Some(super::Finding {
            execution_id,
            outcome: super::FindingOutcome::parse(&outcome)
                .with_context(|| format!("unknown stored finding {outcome:?}"))?,
            instance_id: row
                .try_get::<Option<String>, _>("instance_id")?
                .map(InstanceId::new)
                .transpose()
                .context("a stored instance id")?,
            scan_started_at: from_ms(row.try_get("scan_started_at")?),
            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        }))
    }

    async fn decide(
        &self,
        execution_id: Uuid,
        decision: super::Decision,
        audit: AuditRecord,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let mut tx = self.write().await?;
        let statement = format!("SELECT state FROM executions WHERE id = $1{}", D::LOCK_ROW);
        let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(statement))
            .bind(execution_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .context("reading the execution to decide")?;
        if state.as_deref() != Some(ExecutionState::NeedsDecision.as_str()) {
            tx.rollback().await.ok();
            return Ok(false);
        }
        let (patch, job, detail) = match decision {
            super::Decision::Started {
                instance_id,
                mint_status,
                started_at,
                workflow_url,
                cents,
            } => {
                let detail = serde_json::json!({
                    "decision": "started",
                    "instanceId": instance_id.as_str(),
                    "operator": audit.operator,
                    "workflowUrlKnown": workflow_url.is_some(),
                });
                (
                    ExecutionPatch {
                        state: Some(ExecutionState::Running),
                        instance_id: Some(instance_id),
                        workflow_url_unknown: Some(workflow_url.is_none()),
                        workflow_url,
                        mint_status: Some(mint_status),
                        started_at: Some(started_at),
                        start_ambiguous: Some(false),
                        billed_add: 1,
                        billed_cents: cents,
                        ..ExecutionPatch::default()
                    },
                    NewJob {
                        execution_id,
                        kind: JobKind::Check,
                        run_at: now,
                        priority: JobPriority::Interactive,
                    },
                    detail,
                )
            }
            super::Decision::NotStarted => (
                ExecutionPatch {
                    state: Some(ExecutionState::Queued),
                    start_ambiguous: Some(false),
                    ..ExecutionPatch::default()
                },
                NewJob {
                    execution_id,
                    kind: JobKind::Start,
                    run_at: now,
                    priority: JobPriority::Interactive,
                },
                serde_json::json!({"decision": "not_started", "operator": audit.operator}),
            ),
        };
        let emitted = Self::patch_execution(&mut tx, execution_id, &patch, now).await?;
        Self::insert_job(&mut tx, &job, now).await?;
        Self::insert_event(&mut tx, execution_id, now, "decided", &detail).await?;
        Self::insert_audit(&mut tx, &audit).await?;
        tx.commit().await.context("committing a decision")?;
        self.events_committed(emitted);
        Ok(true)
    }
}
