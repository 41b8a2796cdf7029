//! The store for several replicas: PostgreSQL.
//!
//! The same tables and the same statements as [`super::sqlite`], with what a shared database adds:
//! claims take the most urgent due job with `FOR UPDATE SKIP LOCKED` (replicas never wait on each
//! other's rows), every write under a lease locks the job row and checks its fencing token first,
//! and new work is announced with `NOTIFY` so idle workers of every replica wake at once
//! ([`PgStore::spawn_wake_listener`]) instead of polling tightly.
//!
//! The schema is the connection's `search_path` (the default `public`, or e.g.
//! `postgres://…/db?options[search_path]=mintgate`); migrations are in `migrations/postgres`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::sqlite::{max_attempts, request_fingerprint};
use super::{
    Created, ExecutionFilter, ExecutionPatch, JobDisposition, LeaseLost, NewExecution, NewJob,
    Overview, SpendRow, StepOutcome, Store, WebhookRecorded,
};
use crate::model::{
    Event, Execution, ExecutionState, Job, JobError, JobKind, JobPriority, JobState, Lease,
    WebhookRecord,
};

/// The `LISTEN/NOTIFY` channel on which enqueued work is announced (the payload is the job kind).
pub const WAKE_CHANNEL: &str = "mintgate_jobs";

/// Connections per replica: workers claim and commit on short transactions, downloads hold none
/// while they stream.
const POOL_CONNECTIONS_MAX: u32 = 16;

/// The PostgreSQL implementation of [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://…` URL and runs the migrations.
    pub async fn open_url(url: &str) -> anyhow::Result<Self> {
        let options = PgConnectOptions::from_str(url)
            .context("parsing `service.database_url` as a PostgreSQL URL")?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_CONNECTIONS_MAX)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .context("connecting to PostgreSQL (`service.database_url`)")?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .context("migrating the PostgreSQL database")?;
        Ok(Self { pool })
    }

    /// The pool (tests inspect the database through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn begin(&self) -> anyhow::Result<Transaction<'static, Postgres>> {
        self.pool.begin().await.context("beginning a transaction")
    }

    /// Listens for [`WAKE_CHANNEL`] and rings `wake` at each notification, until `shutdown`.
    ///
    /// A lost connection is re-established (sqlx's listener reconnects on the next receive); while
    /// it is down the workers still find work through their timers (`pipeline.idle_wait`).
    pub fn listen(
        &self,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let mut listener = loop {
                let attempt = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen(WAKE_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(listener)
                };
                tokio::select! {
                    result = attempt => match result {
                        Ok(listener) => break listener,
                        Err(error) => {
                            tracing::warn!(%error, "cannot LISTEN for new work; retrying");
                        }
                    },
                    () = shutdown.cancelled() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shutdown.cancelled() => return,
                }
            };
            loop {
                tokio::select! {
                    received = listener.try_recv() => match received {
                        Ok(Some(_)) => wake.notify_waiters(),
                        // The connection was lost and will be re-established: work may have been
                        // announced meanwhile, so look now.
                        Ok(None) => wake.notify_waiters(),
                        Err(error) => {
                            tracing::warn!(%error, "LISTEN connection failed; retrying");
                            tokio::select! {
                                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                                () = shutdown.cancelled() => return,
                            }
                        }
                    },
                    () = shutdown.cancelled() => return,
                }
            }
        })
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

fn execution_from_row(row: &PgRow) -> anyhow::Result<Execution> {
    let state: String = row.try_get("state")?;
    let input: String = row.try_get("input")?;
    let progress: Option<String> = row.try_get("progress")?;
    Ok(Execution {
        id: uuid(&row.try_get::<String, _>("id")?)?,
        idempotency_key: row.try_get("idempotency_key")?,
        environment: row.try_get("environment")?,
        flow_id: row.try_get("flow_id")?,
        input: serde_json::from_str(&input).context("stored input is not JSON")?,
        state: ExecutionState::parse(&state)
            .with_context(|| format!("unknown stored execution state {state:?}"))?,
        instance_id: row.try_get("instance_id")?,
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
        start_attempts: row.try_get("start_attempts")?,
        billed_count: row.try_get("billed_count")?,
    })
}

fn job_from_row(row: &PgRow) -> anyhow::Result<Job> {
    let kind: String = row.try_get("kind")?;
    let state: String = row.try_get("state")?;
    let errors: String = row.try_get("errors")?;
    Ok(Job {
        id: uuid(&row.try_get::<String, _>("id")?)?,
        execution_id: uuid(&row.try_get::<String, _>("execution_id")?)?,
        kind: JobKind::parse(&kind).with_context(|| format!("unknown stored job kind {kind:?}"))?,
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

fn webhook_from_row(row: &PgRow) -> anyhow::Result<WebhookRecord> {
    let execution_id: Option<String> = row.try_get("execution_id")?;
    Ok(WebhookRecord {
        id: uuid(&row.try_get::<String, _>("id")?)?,
        received_at: from_ms(row.try_get("received_at")?),
        instance_id: row.try_get("instance_id")?,
        claimed_status: row.try_get("claimed_status")?,
        authentic: row.try_get::<i64, _>("authentic")? != 0,
        body_sha256: row.try_get("body_sha256")?,
        execution_id: execution_id.as_deref().map(uuid).transpose()?,
    })
}

fn kind_names(kinds: &[JobKind]) -> Vec<String> {
    kinds.iter().map(|k| k.as_str().to_owned()).collect()
}

/// Tells every replica's listener that a job of `kind` may be due. Sent on commit (PostgreSQL holds
/// notifications until then, and folds identical ones of one transaction into one).
async fn notify_work(tx: &mut Transaction<'static, Postgres>, kind: JobKind) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(WAKE_CHANNEL)
        .bind(kind.as_str())
        .execute(&mut **tx)
        .await
        .context("notifying the replicas of new work")?;
    Ok(())
}

const INSERT_JOB: &str = "INSERT INTO jobs (id, execution_id, kind, state, priority, run_at, max_attempts, created_at, updated_at)
     VALUES ($1, $2, $3, 'ready', $4, $5, $6, $7, $7)
     ON CONFLICT (execution_id, kind) WHERE state IN ('ready', 'running') DO UPDATE SET
       run_at = CASE WHEN jobs.state = 'ready' AND excluded.run_at < jobs.run_at THEN excluded.run_at ELSE jobs.run_at END,
       priority = GREATEST(jobs.priority, excluded.priority),
       updated_at = excluded.updated_at";

async fn insert_job(
    tx: &mut Transaction<'static, Postgres>,
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
    notify_work(tx, job.kind).await
}

async fn insert_event(
    tx: &mut Transaction<'static, Postgres>,
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
       updated_at = $19
     WHERE id = $1";

async fn patch_execution(
    tx: &mut Transaction<'static, Postgres>,
    execution_id: Uuid,
    patch: &ExecutionPatch,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let progress = patch
        .progress
        .as_ref()
        .map(serde_json::to_string)
        .transpose()?;
    sqlx::query(PATCH_EXECUTION)
        .bind(execution_id.to_string())
        .bind(patch.state.map(|s| s.as_str()))
        .bind(patch.instance_id.as_deref())
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
        .execute(&mut **tx)
        .await
        .context("updating an execution")?;
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
    Ok(())
}

/// Checks that `lease` is still the current one; any later statement runs only if it is.
async fn check_lease(
    tx: &mut Transaction<'static, Postgres>,
    lease: &Lease,
) -> anyhow::Result<String> {
    let row = sqlx::query(
        "SELECT errors FROM jobs WHERE id = $1 AND lease_token = $2 AND state = 'running' AND lease_owner = $3 FOR UPDATE",
    )
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

#[async_trait]
impl Store for PgStore {
    async fn create_execution(&self, new: NewExecution) -> anyhow::Result<Created> {
        let fingerprint = request_fingerprint(&new.environment, &new.flow_id, &new.input);
        let mut tx = self.begin().await?;
        // ON CONFLICT rather than look-then-insert: two replicas may take the same retried request
        // at once; the second insert waits for the first to commit, then does nothing.
        let inserted = sqlx::query(
            "INSERT INTO executions (id, idempotency_key, request_sha256, environment, flow_id, input, state, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $7)
             ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(new.id.to_string())
        .bind(new.idempotency_key.as_deref())
        .bind(&fingerprint)
        .bind(&new.environment)
        .bind(&new.flow_id)
        .bind(new.input.to_string())
        .bind(ms(new.now))
        .execute(&mut *tx)
        .await
        .context("inserting an execution")?;
        if inserted.rows_affected() == 0 {
            tx.rollback().await.ok();
            let key = new.idempotency_key.as_deref().unwrap_or_default();
            let row = sqlx::query("SELECT * FROM executions WHERE idempotency_key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .context("looking up an idempotency key")?;
            let stored: String = row.try_get("request_sha256")?;
            let execution = execution_from_row(&row)?;
            return Ok(if stored == fingerprint {
                Created::Existing(execution)
            } else {
                Created::KeyConflict(execution)
            });
        }
        insert_job(
            &mut tx,
            &NewJob {
                execution_id: new.id,
                kind: JobKind::Start,
                run_at: new.now,
                priority: JobPriority::Interactive,
            },
            new.now,
        )
        .await?;
        insert_event(
            &mut tx,
            new.id,
            new.now,
            "requested",
            &serde_json::json!({"flowId": new.flow_id, "environment": new.environment}),
        )
        .await?;
        tx.commit().await.context("committing a new execution")?;
        let execution = self
            .execution(new.id)
            .await?
            .context("a committed execution is missing")?;
        Ok(Created::New(execution))
    }

    async fn execution(&self, id: Uuid) -> anyhow::Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading an execution")?;
        row.as_ref().map(execution_from_row).transpose()
    }

    async fn execution_by_instance(&self, instance_id: &str) -> anyhow::Result<Option<Execution>> {
        let row = sqlx::query("SELECT * FROM executions WHERE instance_id = $1")
            .bind(instance_id)
            .fetch_optional(&self.pool)
            .await
            .context("reading an execution by instance")?;
        row.as_ref().map(execution_from_row).transpose()
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
        rows.iter().map(execution_from_row).collect()
    }

    async fn claim(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> anyhow::Result<Option<(Job, Lease)>> {
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', lease_owner = $1, lease_until = $2,
                    lease_token = lease_token + 1, updated_at = $3
             WHERE id = (
                 SELECT j.id FROM jobs j JOIN executions e ON e.id = j.execution_id
                 WHERE j.kind = ANY($4)
                   AND ((j.state = 'ready' AND j.run_at <= $3)
                        OR (j.state = 'running' AND j.lease_until < $3))
                 ORDER BY j.priority DESC, e.deadline_at ASC NULLS LAST, j.run_at ASC
                 LIMIT 1
                 FOR UPDATE OF j SKIP LOCKED)
             RETURNING *",
        )
        .bind(owner)
        .bind(ms(lease_until))
        .bind(ms(now))
        .bind(kind_names(kinds))
        .fetch_optional(&self.pool)
        .await
        .context("claiming a job")?;
        let Some(row) = row else { return Ok(None) };
        let job = job_from_row(&row)?;
        let lease = Lease {
            job_id: job.id,
            token: job.lease_token,
            owner: owner.to_owned(),
        };
        Ok(Some((job, lease)))
    }

    async fn renew_lease(&self, lease: &Lease, until: DateTime<Utc>) -> anyhow::Result<()> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $4 WHERE id = $1 AND lease_token = $2 AND lease_owner = $3 AND state = 'running'",
        )
        .bind(lease.job_id.to_string())
        .bind(lease.token)
        .bind(&lease.owner)
        .bind(ms(until))
        .execute(&self.pool)
        .await
        .context("renewing a lease")?;
        if done.rows_affected() == 1 {
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
        let mut tx = self.begin().await?;
        check_lease(&mut tx, lease).await?;
        patch_execution(&mut tx, execution_id, &patch, now).await?;
        tx.commit().await.context("committing a patch")?;
        Ok(())
    }

    async fn finish_step(
        &self,
        lease: &Lease,
        execution_id: Uuid,
        outcome: StepOutcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        let errors = check_lease(&mut tx, lease).await?;
        if let Some(patch) = &outcome.execution {
            patch_execution(&mut tx, execution_id, patch, now).await?;
        }
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
            insert_job(&mut tx, job, now).await?;
        }
        for (kind, detail) in &outcome.events {
            insert_event(&mut tx, execution_id, now, kind, detail).await?;
        }
        tx.commit().await.context("committing a step")?;
        Ok(())
    }

    async fn enqueue(&self, job: NewJob, now: DateTime<Utc>) -> anyhow::Result<()> {
        let mut tx = self.begin().await?;
        insert_job(&mut tx, &job, now).await?;
        tx.commit().await.context("committing a job")?;
        Ok(())
    }

    async fn next_due(&self, kinds: &[JobKind]) -> anyhow::Result<Option<DateTime<Utc>>> {
        let next: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(CASE WHEN state = 'ready' THEN run_at ELSE lease_until END) FROM jobs
             WHERE state IN ('ready', 'running') AND kind = ANY($1)",
        )
        .bind(kind_names(kinds))
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
        rows.iter().map(job_from_row).collect()
    }

    async fn dead_letters(&self) -> anyhow::Result<Vec<Job>> {
        let rows = sqlx::query("SELECT * FROM jobs WHERE state = 'dead' ORDER BY updated_at, id")
            .fetch_all(&self.pool)
            .await
            .context("listing dead letters")?;
        rows.iter().map(job_from_row).collect()
    }

    async fn retry_dead_letter(&self, job_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT execution_id, kind FROM jobs WHERE id = $1 AND state = 'dead' FOR UPDATE",
        )
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
        .await?;
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
            notify_work(&mut tx, kind).await?;
        }
        insert_event(
            &mut tx,
            uuid(&execution_id)?,
            now,
            "dead_letter_retried",
            &serde_json::json!({"jobId": job_id, "kind": kind}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn record_webhook(
        &self,
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    ) -> anyhow::Result<WebhookRecorded> {
        let mut tx = self.begin().await?;
        let execution = sqlx::query("SELECT id, state FROM executions WHERE instance_id = $1")
            .bind(&record.instance_id)
            .fetch_optional(&mut *tx)
            .await
            .context("matching a webhook")?;
        let (execution_id, state) = match execution {
            Some(row) => (
                Some(uuid(&row.try_get::<String, _>("id")?)?),
                ExecutionState::parse(&row.try_get::<String, _>("state")?),
            ),
            None => (None, None),
        };
        let inserted = sqlx::query(
            "INSERT INTO webhooks (id, received_at, instance_id, claimed_status, authentic, body_sha256, execution_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (body_sha256) DO NOTHING",
        )
        .bind(record.id.to_string())
        .bind(ms(record.received_at))
        .bind(&record.instance_id)
        .bind(record.claimed_status.as_deref())
        .bind(i64::from(record.authentic))
        .bind(&record.body_sha256)
        .bind(execution_id.map(|id| id.to_string()))
        .execute(&mut *tx)
        .await
        .context("recording a webhook")?;
        if inserted.rows_affected() == 0 {
            tx.commit().await?;
            return Ok(WebhookRecorded::Duplicate);
        }
        let outcome = match (execution_id, state) {
            (Some(id), Some(ExecutionState::Running)) => {
                insert_job(
                    &mut tx,
                    &NewJob {
                        execution_id: id,
                        kind: JobKind::Check,
                        run_at: check_at,
                        priority: JobPriority::Webhook,
                    },
                    record.received_at,
                )
                .await?;
                insert_event(
                    &mut tx,
                    id,
                    record.received_at,
                    "webhook",
                    &serde_json::json!({"claimedStatus": record.claimed_status, "authentic": record.authentic}),
                )
                .await?;
                WebhookRecorded::Matched
            }
            (Some(id), _) => {
                insert_event(
                    &mut tx,
                    id,
                    record.received_at,
                    "webhook",
                    &serde_json::json!({"claimedStatus": record.claimed_status, "authentic": record.authentic, "ignored": "not running"}),
                )
                .await?;
                WebhookRecorded::Unmatched
            }
            _ => WebhookRecorded::Unmatched,
        };
        tx.commit().await.context("committing a webhook")?;
        Ok(outcome)
    }

    async fn webhooks_for(&self, instance_id: &str) -> anyhow::Result<Vec<WebhookRecord>> {
        let rows =
            sqlx::query("SELECT * FROM webhooks WHERE instance_id = $1 ORDER BY received_at, id")
                .bind(instance_id)
                .fetch_all(&self.pool)
                .await
                .context("listing webhooks")?;
        rows.iter().map(webhook_from_row).collect()
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
        let by_state = sqlx::query("SELECT state, COUNT(*) AS n FROM executions GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let ready =
            sqlx::query("SELECT kind, COUNT(*) AS n FROM jobs WHERE state = 'ready' GROUP BY kind")
                .fetch_all(&self.pool)
                .await?;
        let running: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'running'")
            .fetch_one(&self.pool)
            .await?;
        let dead: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'dead'")
            .fetch_one(&self.pool)
            .await?;
        let webhooks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhooks")
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(finished_at) FROM executions WHERE state IN ('finished', 'downloading')",
        )
        .fetch_one(&self.pool)
        .await?;
        let pairs = |rows: Vec<PgRow>, key: &str| -> anyhow::Result<Vec<(String, i64)>> {
            rows.iter()
                .map(|r| Ok((r.try_get::<String, _>(key)?, r.try_get::<i64, _>("n")?)))
                .collect()
        };
        Ok(Overview {
            executions_by_state: pairs(by_state, "state")?,
            jobs_ready: pairs(ready, "kind")?,
            jobs_running: running,
            dead_letters: dead,
            webhooks_recorded: webhooks,
            oldest_unarchived_finished_at: opt_from_ms(oldest),
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
        rows.iter().map(execution_from_row).collect()
    }

    async fn spend(&self, month: &str) -> anyhow::Result<Vec<SpendRow>> {
        let rows = sqlx::query(
            "SELECT day, environment, flow_id, COUNT(*) AS executions, SUM(cents)::BIGINT AS cents
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
        match value {
            Some(value) => {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(value)
                .bind(ms(now))
                .execute(&self.pool)
                .await
                .context("writing a setting")?;
            }
            None => {
                sqlx::query("DELETE FROM settings WHERE key = $1")
                    .bind(key)
                    .execute(&self.pool)
                    .await
                    .context("removing a setting")?;
            }
        }
        Ok(())
    }

    fn spawn_wake_listener(
        &self,
        wake: Arc<Notify>,
        shutdown: CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        Some(self.listen(wake, shutdown))
    }

    async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .context("pinging PostgreSQL")?;
        Ok(())
    }
}
