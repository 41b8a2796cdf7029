//! Durable state behind one trait: executions, the job queue with leases, webhooks and events.
//!
//! Architecture invariant: every state change of an execution that a worker makes goes through
//! [`Store::finish_step`] (or [`Store::patch_under_lease`]), which first checks the worker's fencing
//! token, so a worker that lost its lease can never complete, reschedule or record anything.

mod intake_tx;
pub mod outbox;
pub mod postgres;
pub mod schema;
pub mod sql;
pub mod sqlite;

pub use outbox::{
    Delivery, DeliveryOutcome, EndpointFilter, EventStore, EventType, OutboxEvent, Redeliver,
};
pub use schema::{OpenMode, SchemaMismatch};

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use mint_client::{FlowId, InstanceId};

use crate::model::{
    Event, Execution, ExecutionState, Job, JobKind, JobPriority, Lease, Progress, WebhookRecord,
    WorkPause,
};

/// Rings idle workers when new work is durable, one bell per job kind: an accepted execution
/// wakes the start workers only, not every idle check and download worker (each of which would
/// claim nothing in a write transaction, behind the group commit, at every accepted request:
/// issue 16's profile of a burst).
#[derive(Debug, Default)]
pub struct Wake {
    kinds: [tokio::sync::Notify; 3],
}

impl Wake {
    fn index(kind: JobKind) -> usize {
        match kind {
            JobKind::Start => 0,
            JobKind::Check => 1,
            JobKind::Download => 2,
        }
    }

    /// Rings the idle workers of `kind`.
    pub fn notify(&self, kind: JobKind) {
        self.kinds[Self::index(kind)].notify_waiters();
    }

    /// Rings the idle workers of every kind (work of any kind, or of an unknown one, may be due).
    pub fn notify_waiters(&self) {
        for bell in &self.kinds {
            bell.notify_waiters();
        }
    }

    /// Resolves at the next ring for `kind`'s workers (see [`tokio::sync::Notify::notified`]).
    pub fn notified(&self, kind: JobKind) -> tokio::sync::futures::Notified<'_> {
        self.kinds[Self::index(kind)].notified()
    }
}

/// Intake before the executor: while the group-commit writer holds the turn (it has requests to
/// write, one batch after another), the store's other write transactions in this process (the
/// executor's claims and steps) wait before they begin, each at most [`IntakeTurn::MAX_YIELD`].
/// On SQLite they would otherwise queue for its one writer connection, so that each of a burst's
/// batches waited behind a queue of them; on PostgreSQL they share the machine's CPU and the
/// server's with the intake (issue 16: at a time scale of 120, the executor's starts took
/// about half of a 2-core machine and a burst's acceptance 2.3-2.7 s instead of 1.5-1.9 s). A
/// client waits for its request's acceptance; starts are paced by Mint's budget, which a pause
/// of a burst's length barely touches. The executor is slowed during a burst, never stopped.
#[derive(Debug, Default)]
pub struct IntakeTurn {
    held: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

impl IntakeTurn {
    /// The longest one write transaction waits for the intake's turn to end.
    pub const MAX_YIELD: std::time::Duration = std::time::Duration::from_millis(50);

    /// Takes the turn (the group-commit writer has requests to write).
    pub fn hold(&self) {
        self.held.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Ends the turn and lets the waiting transactions go.
    pub fn release(&self) {
        self.held.store(false, std::sync::atomic::Ordering::Release);
        self.released.notify_waiters();
    }

    /// Waits while the turn is held, at most [`Self::MAX_YIELD`].
    pub async fn yield_to_intake(&self) {
        let notified = self.released.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.held.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let _ = tokio::time::timeout(Self::MAX_YIELD, notified).await;
    }
}

/// A request to create an execution, as accepted by the own API.
#[derive(Debug, Clone)]
pub struct NewExecution {
    pub id: Uuid,
    pub idempotency_key: Option<String>,
    pub environment: String,
    pub flow_id: FlowId,
    pub input: serde_json::Value,
    pub now: DateTime<Utc>,
    /// The W3C `traceparent` of the request's span (with traces exported), stored so that the
    /// execution's jobs join the request's trace.
    pub traceparent: Option<String>,
}

/// The answer to [`Store::create_execution`].
#[derive(Debug, Clone)]
pub enum Created {
    /// A new execution (and its start job) is durable.
    New(Execution),
    /// The idempotency key was seen before with the same request: here is that execution.
    Existing(Execution),
    /// The idempotency key was seen before with a different request.
    KeyConflict(Execution),
}

/// Fields of an execution to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ExecutionPatch {
    pub state: Option<ExecutionState>,
    pub instance_id: Option<InstanceId>,
    pub workflow_url: Option<String>,
    pub mint_status: Option<String>,
    pub progress: Option<Progress>,
    pub progress_at: Option<DateTime<Utc>>,
    /// Mint's `updatedAt` when `progress` was read (kept with it: written, or cleared, whenever
    /// `progress` is written).
    pub progress_mint_updated_at: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub deadline_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub archive_path: Option<String>,
    pub sha256: Option<String>,
    pub bytes: Option<i64>,
    pub failure_reason: Option<String>,
    pub start_ambiguous: Option<bool>,
    /// When this start is sent (set with `start_ambiguous = true`).
    pub start_sent_at: Option<DateTime<Utc>>,
    pub workflow_url_unknown: Option<bool>,
    /// Why the execution needs a decision (with `state = needs_decision`; cleared whenever the
    /// state changes to anything else).
    pub decision_reason: Option<String>,
    pub start_attempts_add: i64,
    pub billed_add: i64,
    /// What the `billed_add` starts cost, in cents: recorded in the cost ledger in the same
    /// transaction.
    pub billed_cents: i64,
    /// When this service saw the instance finished.
    pub finished_seen_at: Option<DateTime<Utc>>,
    /// A `404` for the instance, or an answer that ends a run of them.
    pub not_found: Option<NotFound>,
}

/// What Mint's last answer about an instance says of its run of `404`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotFound {
    /// Mint answered for the instance: any run of `404`s is over.
    Answered,
    /// Another `404`: the run begins now (if none was running) and counts one more.
    Seen,
}

impl ExecutionPatch {
    pub fn state(state: ExecutionState) -> Self {
        Self {
            state: Some(state),
            ..Self::default()
        }
    }
}

/// What happens to the job a worker holds when its step ends.
#[derive(Debug, Clone)]
pub enum JobDisposition {
    /// The job's work is done.
    Done,
    /// Run it again at `run_at`. `error` is recorded; `counts` says whether it uses up an attempt
    /// (a 429 or an outage does not: they delay work, they never fail it).
    Retry {
        run_at: DateTime<Utc>,
        error: Option<String>,
        counts: bool,
        priority: Option<JobPriority>,
    },
    /// Give up: keep the job as a dead letter with its error chain, for an operator.
    Dead { error: String },
}

/// A job to add (or to bring forward, if one of that kind is already active for the execution).
#[derive(Debug, Clone)]
pub struct NewJob {
    pub execution_id: Uuid,
    pub kind: JobKind,
    pub run_at: DateTime<Utc>,
    pub priority: JobPriority,
}

/// Everything a worker's step changes, applied in one transaction under its lease.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub execution: Option<ExecutionPatch>,
    pub job: JobDisposition,
    pub enqueue: Vec<NewJob>,
    pub events: Vec<(String, serde_json::Value)>,
}

impl StepOutcome {
    pub fn done() -> Self {
        Self {
            execution: None,
            job: JobDisposition::Done,
            enqueue: Vec::new(),
            events: Vec::new(),
        }
    }

    pub fn with_patch(mut self, patch: ExecutionPatch) -> Self {
        self.execution = Some(patch);
        self
    }

    pub fn with_job(mut self, job: JobDisposition) -> Self {
        self.job = job;
        self
    }

    pub fn then(mut self, job: NewJob) -> Self {
        self.enqueue.push(job);
        self
    }

    pub fn event(mut self, kind: &str, detail: serde_json::Value) -> Self {
        self.events.push((kind.to_owned(), detail));
        self
    }
}

/// Raised when a worker's lease was lost (expired and claimed by another): it must stop at once.
#[derive(Debug, thiserror::Error)]
#[error("lease on job {0} was lost; another worker owns it now")]
pub struct LeaseLost(pub Uuid);

/// Counts for the status page and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub executions_by_state: Vec<(String, i64)>,
    pub jobs_ready: Vec<(String, i64)>,
    pub jobs_running: i64,
    pub dead_letters: i64,
    pub webhooks_recorded: i64,
    pub oldest_unarchived_finished_at: Option<DateTime<Utc>>,
    /// Running executions whose instance waits for its end user (all of them, counted).
    pub waiting_for_user: i64,
}

/// Filter for listing executions.
#[derive(Debug, Clone, Default)]
pub struct ExecutionFilter {
    pub state: Option<ExecutionState>,
    pub limit: i64,
}

/// A webhook outcome from [`Store::record_webhook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookRecorded {
    /// Recorded; it names an execution of ours whose check was brought forward.
    Matched,
    /// Recorded, but the instance is none of ours (or already done): nothing else happens.
    Unmatched,
    /// The same body was received before: nothing happens.
    Duplicate,
}

/// An accepted request to make durable before it is answered: what the group-commit writer
/// ([`crate::ingest`]) hands to [`Store::write_batch`].
#[derive(Debug, Clone)]
pub enum Write {
    /// `POST /v1/executions`: see [`Store::create_execution`].
    Execution(NewExecution),
    /// `POST /webhooks/mint`: see [`Store::record_webhook`].
    Webhook {
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    },
}

/// What a [`Write`] came to, once committed.
#[derive(Debug, Clone)]
pub enum Written {
    Execution(Box<Created>),
    Webhook(WebhookRecorded),
}

/// One line of the cost ledger: what one flow of one environment cost on one day.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpendRow {
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub environment: String,
    pub flow_id: String,
    pub executions: i64,
    pub cents: i64,
}

/// The tombstone of an execution whose archived result and personal fields were removed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Erasure {
    pub execution_id: Uuid,
    /// `erased` (an operator, on request) or `purged` (the retention policy).
    pub kind: String,
    pub at: DateTime<Utc>,
    /// Who: the operator (`--operator`, else the OS user), or `retention policy`.
    pub operator: String,
    pub reason: Option<String>,
    /// What was removed: the archive location and the database fields.
    pub removed: serde_json::Value,
}

/// One line of the audit log: an operator action on personal data, refusals included.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub operator: String,
    pub action: String,
    /// What it was done to (an execution id).
    pub target: String,
    /// `done`, `refused`, `failed`.
    pub outcome: String,
    pub detail: serde_json::Value,
}

/// The execution fields erasure clears: the request's input and everything derived from the
/// person's data. Ids, times, the environment, the flow and the bill stay.
pub const ERASED_FIELDS: [&str; 9] = [
    "input",
    "idempotency_key",
    "request_sha256",
    "workflow_url",
    "progress",
    "archive_path",
    "sha256",
    "bytes",
    "failure_reason",
];

/// What one scan of a flow's instances concluded for one ambiguous execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingOutcome {
    /// An instance carrying the execution's correlation id exists.
    Found,
    /// Proven absent: the complete list was walked and every candidate read.
    Absent,
    /// Neither found nor ruled out: the execution needs an operator's decision.
    Undecided,
}

impl FindingOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Found => "found",
            Self::Absent => "absent",
            Self::Undecided => "undecided",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Found, Self::Absent, Self::Undecided]
            .into_iter()
            .find(|o| o.as_str() == text)
    }
}

/// A scan's conclusion recorded for an execution whose own start job did not scan (one list walk
/// per flow serves every ambiguous execution of the flow).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub execution_id: Uuid,
    pub outcome: FindingOutcome,
    pub instance_id: Option<InstanceId>,
    /// When the scan began: an `absent` finding says nothing of starts sent after it.
    pub scan_started_at: DateTime<Utc>,
    /// The scan's figures, the reason if undecided, the candidates looked at.
    pub detail: serde_json::Value,
}

/// An operator's answer to an execution that needs a decision (`mintgate decide`).
#[derive(Debug, Clone)]
pub enum Decision {
    /// It was started: attach this instance (read from Mint by the command) and bill it once.
    Started {
        instance_id: InstanceId,
        mint_status: String,
        started_at: DateTime<Utc>,
        workflow_url: Option<String>,
        cents: i64,
    },
    /// It was not started: start it.
    NotStarted,
}

/// The durable state of the service. SQLite by default; PostgreSQL for several replicas.
#[async_trait]
pub trait Store: EventStore + Send + Sync + 'static {
    /// Makes a new execution and its start job durable in one transaction (or finds the earlier one
    /// with the same idempotency key).
    async fn create_execution(&self, new: NewExecution) -> anyhow::Result<Created>;

    async fn execution(&self, id: Uuid) -> anyhow::Result<Option<Execution>>;

    async fn execution_by_instance(
        &self,
        instance_id: &InstanceId,
    ) -> anyhow::Result<Option<Execution>>;

    async fn executions(&self, filter: ExecutionFilter) -> anyhow::Result<Vec<Execution>>;

    /// Claims the most urgent due job of one of `kinds`: ready jobs whose time has come, and
    /// running jobs whose lease has expired (their worker died). Bumps the fencing token.
    async fn claim(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> anyhow::Result<Option<(Job, Lease)>> {
        Ok(self
            .claim_many(kinds, owner, now, lease_until, 1)
            .await?
            .into_iter()
            .next())
    }

    /// Claims up to `limit` due jobs of `kinds` in one transaction, the most urgent first, each
    /// as [`Store::claim`] would (its own bumped fencing token). Replicas claiming at once never
    /// get the same job (PostgreSQL skips the rows another transaction is claiming).
    async fn claim_many(
        &self,
        kinds: &[JobKind],
        owner: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> anyhow::Result<Vec<(Job, Lease)>>;

    /// Extends a lease; fails with [`LeaseLost`] if it is no longer held.
    async fn renew_lease(&self, lease: &Lease, until: DateTime<Utc>) -> anyhow::Result<()>;

    /// Changes an execution while holding a lease (e.g. `downloading`), without ending the job.
    async fn patch_under_lease(
        &self,
        lease: &Lease,
        execution_id: Uuid,
        patch: ExecutionPatch,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// Ends a step: applies the execution patch, disposes of the job, enqueues follow-ups and
    /// records events, all in one transaction, only if the lease is still held. Only follow-ups due
    /// by `now` are announced to the workers of other replicas; they find later ones by their timers.
    async fn finish_step(
        &self,
        lease: &Lease,
        execution_id: Uuid,
        outcome: StepOutcome,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()>;

    /// Adds a job, or brings an active one of the same kind forward (earlier time, higher priority).
    async fn enqueue(&self, job: NewJob, now: DateTime<Utc>) -> anyhow::Result<()>;

    /// The earliest time a job becomes due (ready jobs) or a lease expires (running jobs).
    async fn next_due(&self, kinds: &[JobKind]) -> anyhow::Result<Option<DateTime<Utc>>>;

    async fn jobs_for(&self, execution_id: Uuid) -> anyhow::Result<Vec<Job>>;

    async fn dead_letters(&self) -> anyhow::Result<Vec<Job>>;

    /// Puts a dead letter back in the queue with fresh attempts. Answers false if it is not dead.
    async fn retry_dead_letter(&self, job_id: Uuid, now: DateTime<Utc>) -> anyhow::Result<bool>;

    /// Records a webhook durably, dedupes it by its body, and brings the named execution's check
    /// forward (to `check_at`, at webhook priority) when it is one of ours and still in flight.
    async fn record_webhook(
        &self,
        record: WebhookRecord,
        check_at: DateTime<Utc>,
    ) -> anyhow::Result<WebhookRecorded>;

    /// Makes several accepted requests durable (the group commit of [`crate::ingest`]): a store
    /// may commit them in one transaction (one fsync for all). Answers one outcome per write, in
    /// order; a write that fails fails alone, never the others. Within one batch, writes see each
    /// other as if they had come one after the other (the second of two executions with the same
    /// idempotency key finds the first). The default makes them durable one by one.
    async fn write_batch(&self, batch: Vec<Write>) -> Vec<anyhow::Result<Written>> {
        let mut outcomes = Vec::with_capacity(batch.len());
        for write in batch {
            outcomes.push(self.write_one(write).await);
        }
        outcomes
    }

    /// The turn the group-commit writer holds while it has requests to write ([`IntakeTurn`]);
    /// `None` where the store's other writes do not give way to it.
    fn intake_turn(&self) -> Option<Arc<IntakeTurn>> {
        None
    }

    /// Makes one accepted request durable in a transaction of its own.
    async fn write_one(&self, write: Write) -> anyhow::Result<Written> {
        match write {
            Write::Execution(new) => self
                .create_execution(new)
                .await
                .map(|created| Written::Execution(Box::new(created))),
            Write::Webhook { record, check_at } => self
                .record_webhook(record, check_at)
                .await
                .map(Written::Webhook),
        }
    }

    async fn webhooks_for(&self, instance_id: &InstanceId) -> anyhow::Result<Vec<WebhookRecord>>;

    async fn events_for(&self, execution_id: Uuid) -> anyhow::Result<Vec<Event>>;

    async fn overview(&self) -> anyhow::Result<Overview>;

    /// Executions finished in Mint but not archived, soonest deadline first.
    async fn unarchived(&self, limit: i64) -> anyhow::Result<Vec<Execution>>;

    /// Like [`Store::executions`] without the `input` column (it is `null` in the answer): for
    /// the status page and the metrics, which show states, never an end user's data, and must
    /// cost the same whatever the inputs weigh.
    async fn executions_without_input(
        &self,
        filter: ExecutionFilter,
    ) -> anyhow::Result<Vec<Execution>> {
        self.executions(filter).await
    }

    /// Like [`Store::unarchived`] without the `input` column.
    async fn unarchived_without_input(&self, limit: i64) -> anyhow::Result<Vec<Execution>> {
        self.unarchived(limit).await
    }

    /// How many executions finished in Mint but not archived have a deletion deadline before
    /// `horizon` (counted, however many).
    async fn unarchived_due_by(&self, horizon: DateTime<Utc>) -> anyhow::Result<i64>;

    /// Running executions whose instance waits for its end user, the earliest started first, at
    /// most `limit`, without the `input` column (a wait begins after its start, so the longest
    /// waits are among the first).
    async fn waiting_for_user(&self, limit: i64) -> anyhow::Result<Vec<Execution>>;

    /// Deletes webhook records received before `before`, and those that named no execution of ours
    /// received before `unmatched_before`; at most `limit` at a time (a short transaction). Answers
    /// how many went. A replay of a pruned body is recorded again and, as a hint, costs at most one
    /// check no sooner than the poll floor.
    async fn prune_webhooks(
        &self,
        before: DateTime<Utc>,
        unmatched_before: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<u64> {
        let _ = (before, unmatched_before, limit);
        anyhow::bail!("this store does not prune webhooks")
    }

    /// Is the database reachable?
    async fn ping(&self) -> anyhow::Result<()>;

    /// Pauses a kind of work in an environment (the API client lacks a role): claims skip its
    /// jobs, on every replica, until [`Store::lift_pauses`]. Pausing what is paused already keeps
    /// its `since` and its probe schedule.
    async fn pause_work(&self, pause: &WorkPause) -> anyhow::Result<()>;

    /// Every paused kind of work.
    async fn work_pauses(&self) -> anyhow::Result<Vec<WorkPause>>;

    /// Takes the next probe of `role` in `environment` if it is due (one replica does it):
    /// answers whether this caller should probe now.
    async fn claim_role_probe(
        &self,
        environment: &str,
        role: &str,
        now: DateTime<Utc>,
        next: DateTime<Utc>,
    ) -> anyhow::Result<bool>;

    /// Resumes the work paused for want of `role` in `environment`; answers how many pauses ended.
    async fn lift_pauses(&self, environment: &str, role: &str) -> anyhow::Result<u64>;

    /// The executions of one flow of one environment whose start is ambiguous (an instance may
    /// exist), without their input: what one scan of the flow looks for.
    async fn ambiguous_starts(
        &self,
        environment: &str,
        flow_id: &FlowId,
    ) -> anyhow::Result<Vec<Execution>> {
        let _ = (environment, flow_id);
        anyhow::bail!("this store cannot reconcile")
    }

    /// Records what a scan found for other executions, and brings their start jobs forward so they
    /// use it.
    async fn record_findings(
        &self,
        findings: Vec<Finding>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let _ = (findings, now);
        anyhow::bail!("this store cannot reconcile")
    }

    /// The last finding a scan recorded for an execution.
    async fn finding(&self, execution_id: Uuid) -> anyhow::Result<Option<Finding>> {
        let _ = execution_id;
        Ok(None)
    }

    /// Applies an operator's decision to an execution in `needs_decision`, with an event and an
    /// audit record, in one transaction. Answers false (and changes nothing) if the execution is
    /// not waiting for a decision.
    async fn decide(
        &self,
        execution_id: Uuid,
        decision: Decision,
        audit: AuditRecord,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let _ = (execution_id, decision, audit, now);
        anyhow::bail!("this store cannot record decisions")
    }

    /// Starts a task that rings `wake` whenever another process (another replica) makes work
    /// durable, until `shutdown`. Stores only one process uses need none: the process rings `wake`
    /// itself.
    fn spawn_wake_listener(
        &self,
        _wake: Arc<Wake>,
        _shutdown: tokio_util::sync::CancellationToken,
    ) -> Option<tokio::task::JoinHandle<()>> {
        None
    }

    /// The cost ledger of one month (`YYYY-MM`, UTC), by day, environment and flow. Ledger lines are
    /// written by [`Store::finish_step`] when a patch has `billed_add`.
    async fn spend(&self, month: &str) -> anyhow::Result<Vec<SpendRow>> {
        let _ = month;
        anyhow::bail!("this store keeps no cost ledger")
    }

    /// An operator setting (e.g. the spend cap), if set.
    async fn setting(&self, key: &str) -> anyhow::Result<Option<String>> {
        let _ = key;
        anyhow::bail!("this store keeps no settings")
    }

    /// Removes an execution's personal fields ([`ERASED_FIELDS`]), the details of its events and
    /// the errors of its jobs, records the tombstone and an `erased` event, and sets its state to
    /// `erased`, in one transaction. The cost ledger is kept.
    async fn erase(&self, erasure: Erasure) -> anyhow::Result<()> {
        let _ = erasure;
        anyhow::bail!("this store cannot erase")
    }

    /// The tombstone of an erased execution.
    async fn erasure(&self, execution_id: Uuid) -> anyhow::Result<Option<Erasure>> {
        let _ = execution_id;
        Ok(None)
    }

    /// Archived executions archived at or before `archived_before`, oldest first: the purge job's
    /// candidates.
    async fn archived_before(
        &self,
        archived_before: DateTime<Utc>,
        limit: i64,
    ) -> anyhow::Result<Vec<Execution>> {
        let _ = (archived_before, limit);
        Ok(Vec::new())
    }

    /// Points an execution's archive location elsewhere (`archive migrate`), if it still is
    /// `from`. Answers whether it changed.
    async fn relocate_archive(
        &self,
        execution_id: Uuid,
        from: &str,
        to: &str,
    ) -> anyhow::Result<bool> {
        let _ = (execution_id, from, to);
        anyhow::bail!("this store cannot relocate archives")
    }

    /// Appends to the audit log.
    async fn audit(&self, record: AuditRecord) -> anyhow::Result<()> {
        let _ = record;
        anyhow::bail!("this store keeps no audit log")
    }

    /// The audit log of one target, oldest first.
    async fn audit_for(&self, target: &str) -> anyhow::Result<Vec<AuditRecord>> {
        let _ = target;
        Ok(Vec::new())
    }

    /// Sets (or, with `None`, removes) an operator setting.
    async fn set_setting(
        &self,
        key: &str,
        value: Option<&str>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let _ = (key, value, now);
        anyhow::bail!("this store keeps no settings")
    }
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the store a `service.database_url` names (`postgres://…` or `sqlite://…`) in `mode`.
pub async fn open(url: &str, mode: OpenMode) -> anyhow::Result<SharedStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::PgStore::open_url_with(url, mode).await?));
    }
    Ok(Arc::new(
        sqlite::SqliteStore::open_url_with(url, mode).await?,
    ))
}
