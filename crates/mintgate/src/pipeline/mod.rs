//! The workers: the executor (start jobs), the checker (the poller and the webhooks' confirmations)
//! and the downloader/archiver. Each job kind is one step function; [`Pipeline::run_once`] claims and
//! runs one job, so tests drive the pipeline one step at a time.
//!
//! Architecture invariants:
//! - A start is never sent twice blindly: before a start is sent, the execution is durably marked
//!   `start_ambiguous`; only a definite answer clears it. Whatever interrupts the start (a lost
//!   answer, a crash), the next attempt first looks for the instance by the correlation id in its
//!   input, so no execution is billed twice.
//! - Webhooks never change an execution by themselves: they only bring its check forward; the
//!   check reads the state from Mint.
//! - 429s and outages delay jobs without using up their attempts; other errors count, and a job
//!   out of attempts becomes a dead letter with its error chain.

mod check;
mod download;
mod pauses;
mod reconcile;
mod start;

pub use reconcile::{Candidate, ScanReport};

use std::collections::{BTreeMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use mint_client::MintClient;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::archive::Archive;
use crate::clock::{Clock, delta};
use crate::config::PipelineConfig;
use crate::model::{Execution, ExecutionState, Job, JobKind, Lease};
use crate::store::{ExecutionPatch, JobDisposition, LeaseLost, NotFound, SharedStore, StepOutcome};

/// Mint deletes an instance and its result file this long after the instance ended.
pub const MINT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The Mint API clients, one per configured environment.
#[derive(Clone, Default)]
pub struct Clients {
    by_environment: BTreeMap<String, MintClient>,
}

impl Clients {
    pub fn new(by_environment: BTreeMap<String, MintClient>) -> Self {
        Self { by_environment }
    }

    pub fn get(&self, environment: &str) -> anyhow::Result<&MintClient> {
        self.by_environment
            .get(environment)
            .ok_or_else(|| anyhow::anyhow!("no Mint client for environment {environment:?}"))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &MintClient)> {
        self.by_environment.iter()
    }
}

/// Everything the workers need.
pub struct Pipeline {
    pub store: SharedStore,
    pub clients: Clients,
    pub archive: Arc<Archive>,
    pub clock: Clock,
    pub config: PipelineConfig,
    /// This replica's name, recorded as the lease owner.
    pub owner: String,
    /// Rung when new work is durable, so idle workers (of the work's kind) look at once.
    pub wake: Arc<crate::store::Wake>,
    /// This service's metrics: every job step records into it.
    pub metrics: Arc<crate::metrics::Registry>,
    /// The live workers of each pool (`/readyz` fails when a pool has none).
    pub workers: Arc<WorkerPools>,
    /// Faults the tests inject where no outside input can cause them (a bug's panic).
    #[doc(hidden)]
    pub injected: InjectedFaults,
}

/// The live workers of each pool: a worker counts from the moment its loop starts until its task
/// ends (however it ends: a guard is dropped on return, on a panic and on abort).
#[derive(Debug, Default)]
pub struct WorkerPools {
    live: [AtomicUsize; 3],
    started: std::sync::atomic::AtomicBool,
}

impl WorkerPools {
    fn index(kind: JobKind) -> usize {
        match kind {
            JobKind::Start => 0,
            JobKind::Check => 1,
            JobKind::Download => 2,
        }
    }

    /// How many workers of `kind` are running.
    pub fn live(&self, kind: JobKind) -> usize {
        self.live[Self::index(kind)].load(Ordering::Relaxed)
    }

    /// Whether the workers were started (tests that drive steps themselves never start them).
    pub fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// The pools that were started and have no live worker left.
    pub fn without_live_worker(&self) -> Vec<JobKind> {
        if !self.started() {
            return Vec::new();
        }
        [JobKind::Start, JobKind::Check, JobKind::Download]
            .into_iter()
            .filter(|kind| self.live(*kind) == 0)
            .collect()
    }

    fn enter(self: &Arc<Self>, kind: JobKind) -> LiveWorker {
        self.live[Self::index(kind)].fetch_add(1, Ordering::Relaxed);
        LiveWorker {
            pools: self.clone(),
            kind,
        }
    }
}

/// Counts one worker as live while it exists.
struct LiveWorker {
    pools: Arc<WorkerPools>,
    kind: JobKind,
}

impl Drop for LiveWorker {
    fn drop(&mut self) {
        self.pools.live[WorkerPools::index(self.kind)].fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one pool's workers share: the jobs of the pool's last claim not taken yet, and how many
/// of its workers are idle (the size of its next claim; the executor's is its whole pool, see
/// [`ClaimPool::claim_size`]).
///
/// Every job here is leased (fenced) to this replica: a job that waited past its lease (this
/// replica stopped) is taken over like any other, and its late writes are refused.
#[derive(Default)]
struct ClaimPool {
    ready: std::sync::Mutex<VecDeque<(Job, Lease)>>,
    /// One claim at a time per pool: the idle workers wait for its share, not claim beside it.
    claiming: tokio::sync::Mutex<()>,
    idle: AtomicUsize,
    /// Rung when jobs are handed out, so idle workers waiting for work take them at once.
    handed: Notify,
    /// Claim a job for every worker of the pool, busy ones included (see [`ClaimPool::claim_size`]).
    claim_for_all: usize,
}

impl ClaimPool {
    /// The pool of `workers` workers of `kind`.
    ///
    /// The executor claims one job for each of its workers, not only for the idle ones: its
    /// workers finish one at a time, so a claim for the idle ones was a claim (a transaction) for
    /// each start, the dearest of a start's three on PostgreSQL (issue 16). A start step is short
    /// (its wait for budget units aside), so a job claimed for a busy worker waits for one step at
    /// most, far within its lease; if it waited past it, its late writes would be refused like any
    /// other's. Checks and downloads keep claiming for their idle workers only: a download holds
    /// its worker for minutes.
    fn new(kind: JobKind, workers: usize) -> Self {
        Self {
            claim_for_all: if kind == JobKind::Start { workers } else { 0 },
            ..Self::default()
        }
    }

    /// How many jobs the pool's next claim asks for.
    fn claim_size(&self) -> usize {
        self.idle
            .load(Ordering::Relaxed)
            .max(self.claim_for_all)
            .max(1)
    }

    fn has_ready(&self) -> bool {
        !self
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    fn take(&self) -> Option<(Job, Lease)> {
        self.ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
    }

    fn hand_out(&self, jobs: impl Iterator<Item = (Job, Lease)>) {
        let mut ready = self
            .ready
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = ready.len();
        ready.extend(jobs);
        if ready.len() > before {
            drop(ready);
            self.handed.notify_waiters();
        }
    }

    /// Counts a worker as idle while it lives, but for its [`ClaimPool::busy`] spells.
    fn idle_worker(&self) -> PoolCount<'_> {
        self.idle.fetch_add(1, Ordering::Relaxed);
        PoolCount {
            idle: &self.idle,
            busy: false,
        }
    }

    /// Counts a worker as busy (not idle) while it runs a job.
    fn busy(&self) -> PoolCount<'_> {
        self.idle.fetch_sub(1, Ordering::Relaxed);
        PoolCount {
            idle: &self.idle,
            busy: true,
        }
    }
}

/// Undoes a [`ClaimPool`] count when dropped (however the worker's step ends).
struct PoolCount<'a> {
    idle: &'a AtomicUsize,
    busy: bool,
}

impl Drop for PoolCount<'_> {
    fn drop(&mut self) {
        if self.busy {
            self.idle.fetch_add(1, Ordering::Relaxed);
        } else {
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Ends the leases of the jobs `pool` claimed ahead for its workers but never began (the executor
/// claims one for each of its workers), once the workers have stopped: another replica, or this one
/// restarted, takes them at once instead of after their lease. A job whose step had begun keeps
/// its lease: what it did before the shutdown is not known here, so it is taken over only when the
/// lease lapses. A lease that cannot be ended (the database is away) lapses as before.
async fn hand_back(store: &SharedStore, clock: &Clock, pool: &ClaimPool) {
    let mut handed_back = 0_u32;
    while let Some((job, lease)) = pool.take() {
        // A lease lapses when it ends before a claim's `now`: one that ended a moment ago.
        let lapsed = clock.now() - chrono::Duration::milliseconds(1);
        match store.renew_lease(&lease, lapsed).await {
            Ok(()) => handed_back += 1,
            Err(error) => tracing::warn!(
                job_id = %job.id,
                error = format!("{error:#}"),
                "a job claimed ahead keeps its lease until it lapses"
            ),
        }
    }
    if handed_back > 0 {
        tracing::info!(
            handed_back,
            "jobs claimed ahead but not begun were handed back"
        );
    }
}

/// Faults the integration tests inject to show the workers survive what no Mint answer or
/// request can cause any more (a bug's panic). Nothing in the configuration sets them.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct InjectedFaults {
    /// The next this many steps panic before they do anything.
    pub step_panics: AtomicU32,
    /// The next this many workers of each pool (start, check, download) end their loop, as a
    /// worker task that died would.
    pub worker_exits: [AtomicU32; 3],
}

impl InjectedFaults {
    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Makes the next `count` workers of `kind` end their loop.
    pub fn exit_workers(&self, kind: JobKind, count: u32) {
        self.worker_exits[WorkerPools::index(kind)].fetch_add(count, Ordering::Relaxed);
    }
}

/// What a step function answers: the outcome to commit, or an error that the runner turns into a
/// retry or a dead letter.
type StepResult = anyhow::Result<StepOutcome>;

/// A failure a step can classify: how the job should be retried.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A 429 or an outage: try again later without using up an attempt.
    Delay { after: Duration, error: String },
    /// A real error: try again later, using up an attempt.
    Retry { after: Duration, error: String },
    /// The API client lacks `role` in the job's environment: this kind of work pauses there (no
    /// attempt used) until a probe finds the role granted.
    MissingRole {
        role: mint_client::Role,
        operation: mint_client::Operation,
        error: String,
    },
}

impl Pipeline {
    /// Claims and runs one due job of one of `kinds`. Answers whether there was one.
    pub async fn run_once(&self, kinds: &[JobKind]) -> anyhow::Result<bool> {
        let now = self.clock.now();
        let Some((job, lease)) = self
            .store
            .claim(kinds, &self.owner, now, now + delta(self.config.lease))
            .await?
        else {
            return Ok(false);
        };
        self.run_claimed(job, lease).await;
        Ok(true)
    }

    /// Claims a due job of `kinds` for one of `pool`'s workers and runs it. Answers whether there
    /// was one. The jobs come from the pool's share of its last claim, or, when none is left, from
    /// a claim of one job for each of the pool's idle workers (one transaction for all of them;
    /// the executor's, for all its workers: [`ClaimPool::new`]).
    async fn run_next(&self, kinds: &[JobKind], pool: &ClaimPool) -> anyhow::Result<bool> {
        let claimed = match pool.take() {
            Some(claimed) => Some(claimed),
            None => {
                let _claiming = pool.claiming.lock().await;
                match pool.take() {
                    Some(claimed) => Some(claimed),
                    None => {
                        let now = self.clock.now();
                        let limit = pool.claim_size();
                        let mut jobs = self
                            .store
                            .claim_many(
                                kinds,
                                &self.owner,
                                now,
                                now + delta(self.config.lease),
                                limit,
                            )
                            .await?
                            .into_iter();
                        let first = jobs.next();
                        pool.hand_out(jobs);
                        first
                    }
                }
            }
        };
        let Some((job, lease)) = claimed else {
            return Ok(false);
        };
        let _busy = pool.busy();
        self.run_claimed(job, lease).await;
        Ok(true)
    }

    /// Runs one claimed job: its step, with its panics caught, and the outcome's commit.
    async fn run_claimed(&self, job: Job, lease: Lease) {
        let started = Instant::now();
        let execution = self.store.execution(job.execution_id).await;
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            kind = job.kind.as_str(),
            execution_id = %job.execution_id,
            instance_id = tracing::field::Empty,
            otel.name = format!("job {}", job.kind.as_str()),
        );
        // One execution, one trace: each of its jobs is a child of the request that created it.
        if let Ok(Some(Execution {
            traceparent: Some(traceparent),
            ..
        })) = &execution
        {
            crate::telemetry::set_parent(&span, traceparent, None);
        }
        self.metrics
            .scope(
                self.run_job(job, lease, execution, started)
                    .instrument(span),
            )
            .await;
    }

    async fn run_job(
        &self,
        job: Job,
        lease: Lease,
        execution: anyhow::Result<Option<Execution>>,
        started: Instant,
    ) {
        let kind = job.kind.as_str();
        let execution = match execution {
            Ok(Some(execution)) => execution,
            Ok(None) => {
                tracing::error!("job names an execution that does not exist");
                let outcome = StepOutcome::done().with_job(JobDisposition::Dead {
                    error: "the execution does not exist".to_owned(),
                });
                self.commit(&job, &lease, outcome, kind, started).await;
                return;
            }
            Err(error) => {
                // The database is unreachable: leave the job to its lease and try later.
                tracing::error!(error = format!("{error:#}"), "cannot read the execution");
                return;
            }
        };
        if let Some(instance_id) = &execution.instance_id {
            tracing::Span::current().record("instance_id", instance_id.as_str());
        }
        let step = async {
            if InjectedFaults::take(&self.injected.step_panics) {
                panic!("injected panic in the {kind} step");
            }
            match job.kind {
                JobKind::Start => start::step(self, &job, &lease, &execution).await,
                JobKind::Check => check::step(self, &job, &execution).await,
                JobKind::Download => download::step(self, &job, &lease, &execution).await,
            }
        };
        // Architecture invariant: a worker never dies of one job. A panic in a step (a bug, or
        // an answer nobody foresaw) becomes that job's error, retried and dead-lettered like any
        // other; the worker goes on with the next job.
        let outcome = match AssertUnwindSafe(step).catch_unwind().await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => match error.downcast_ref::<Failure>() {
                Some(Failure::MissingRole {
                    role,
                    operation,
                    error: text,
                }) => self
                    .pause_for_missing_role(&job, &execution, *role, *operation, text)
                    .await
                    .unwrap_or_else(|| self.failure_outcome(&job, error)),
                _ => self.failure_outcome(&job, error),
            },
            Err(panic) => {
                let message = panic_message(panic.as_ref());
                crate::metrics::step_panicked(kind);
                tracing::error!(
                    panic = message,
                    "the step panicked; the job will be retried"
                );
                self.failure_outcome(&job, anyhow::anyhow!("the {kind} step panicked: {message}"))
            }
        };
        self.commit(&job, &lease, outcome, kind, started).await;
    }

    /// Turns a step's error into a retry (with backoff) or, out of attempts, a dead letter.
    fn failure_outcome(&self, job: &Job, error: anyhow::Error) -> StepOutcome {
        let now = self.clock.now();
        if error.downcast_ref::<LeaseLost>().is_some() {
            // Nothing may be written: finish_step will refuse it too.
            return StepOutcome::done();
        }
        let (after, counts, text) = match error.downcast::<Failure>() {
            Ok(Failure::Delay { after, error }) => (after, false, error),
            Ok(Failure::Retry { after, error }) => (after, true, error),
            // Paused by `run_job` before it comes here; if recording the pause failed, wait for
            // the next probe without using an attempt.
            Ok(Failure::MissingRole { error, .. }) => {
                (self.config.role_probe_interval, false, error)
            }
            Err(other) => (jitter(backoff(job.attempts)), true, format!("{other:#}")),
        };
        if counts && job.attempts + 1 >= job.max_attempts {
            tracing::error!(
                error = text,
                attempts = job.attempts + 1,
                "job out of attempts: dead letter"
            );
            crate::metrics::dead_lettered(job.kind.as_str());
            return StepOutcome::done()
                .with_job(JobDisposition::Dead {
                    error: text.clone(),
                })
                .event(
                    "dead_letter",
                    serde_json::json!({"kind": job.kind.as_str(), "error": text}),
                );
        }
        tracing::warn!(error = text, counts, retry_in = ?after, "job will be retried");
        StepOutcome::done().with_job(JobDisposition::Retry {
            run_at: now + delta(after),
            error: Some(text),
            counts,
            priority: None,
        })
    }

    async fn commit(
        &self,
        job: &Job,
        lease: &Lease,
        outcome: StepOutcome,
        kind: &'static str,
        started: Instant,
    ) {
        let label = match &outcome.job {
            JobDisposition::Done => "done",
            JobDisposition::Retry { .. } => "retry",
            JobDisposition::Dead { .. } => "dead",
        };
        // Ring the idle workers for a follow-up due now only: one due later is found by their
        // timers (as the store tells other replicas, see `Store::finish_step`).
        let now = self.clock.now();
        let due: Vec<JobKind> = outcome
            .enqueue
            .iter()
            .filter(|job| job.run_at <= now)
            .map(|job| job.kind)
            .collect();
        match self
            .store
            .finish_step(lease, job.execution_id, outcome, now)
            .await
        {
            Ok(()) => {
                crate::metrics::job_finished(kind, label, started.elapsed());
                for kind in due {
                    self.wake.notify(kind);
                }
            }
            Err(error) if error.downcast_ref::<LeaseLost>().is_some() => {
                crate::metrics::job_finished(kind, "lease_lost", started.elapsed());
                tracing::warn!(
                    "lease lost before the step could be recorded; another worker owns the job"
                );
            }
            Err(error) => {
                crate::metrics::job_finished(kind, "error", started.elapsed());
                tracing::error!(
                    error = format!("{error:#}"),
                    "cannot record the step; the job will run again after its lease"
                );
            }
        }
    }

    /// Runs workers for every job kind until `shutdown`; answers when they have all stopped.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        self.workers.started.store(true, Ordering::Relaxed);
        let mut tasks = tokio::task::JoinSet::new();
        let pools = [
            (JobKind::Start, self.config.start_workers),
            (JobKind::Check, self.config.check_workers),
            (JobKind::Download, self.config.download_workers),
        ];
        let mut claim_pools = Vec::new();
        for (kind, count) in pools {
            let pool = Arc::new(ClaimPool::new(kind, count));
            claim_pools.push(pool.clone());
            for _ in 0..count {
                let pipeline = self.clone();
                let shutdown = shutdown.clone();
                let pool = pool.clone();
                tasks.spawn(async move { pipeline.worker(kind, &pool, shutdown).await });
            }
        }
        while let Some(ended) = tasks.join_next().await {
            if !shutdown.is_cancelled() {
                // Only a bug can end a worker early (its steps' panics are caught): say so;
                // `/readyz` fails once a pool has no live worker left.
                let how = match ended {
                    Ok(()) => "returned".to_owned(),
                    Err(error) if error.is_panic() => {
                        format!("panicked: {}", panic_message(error.into_panic().as_ref()))
                    }
                    Err(error) => error.to_string(),
                };
                tracing::error!(how, "a worker stopped before the shutdown");
            }
        }
        for pool in claim_pools {
            hand_back(&self.store, &self.clock, &pool).await;
        }
    }

    async fn worker(&self, kind: JobKind, pool: &ClaimPool, shutdown: CancellationToken) {
        let _live = self.workers.enter(kind);
        let _idle = pool.idle_worker();
        let kinds = [kind];
        // Whether to claim on this turn: after a job, a ring, or a wait that reached a due time.
        // A worker that its timer woke with nothing due reads when the next job is due (a read)
        // instead of claiming nothing (a write transaction): with a short `pipeline.idle_wait`,
        // idle pools' empty claims cost more database time than the busy pool's work (issue 16).
        let mut look = true;
        while !shutdown.is_cancelled() {
            if InjectedFaults::take(&self.injected.worker_exits[WorkerPools::index(kind)]) {
                tracing::error!(kind = kind.as_str(), "injected worker exit");
                return;
            }
            // Register for wake-ups before looking, so a notification between the look and the
            // wait is not missed.
            let notified = self.wake.notified(kind);
            tokio::pin!(notified);
            notified.as_mut().enable();
            let handed = pool.handed.notified();
            tokio::pin!(handed);
            handed.as_mut().enable();
            // Jobs handed to the pool are taken whatever the turn.
            let ran = if look || pool.has_ready() {
                tokio::select! {
                    ran = AssertUnwindSafe(self.run_next(&kinds, pool)).catch_unwind() => ran,
                    () = shutdown.cancelled() => break,
                }
            } else {
                Ok(Ok(false))
            };
            match ran {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => {}
                Ok(Err(error)) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        kind = kind.as_str(),
                        "worker cannot claim jobs"
                    );
                }
                Err(panic) => {
                    // Outside a step (claiming, recording): the job, if any, is taken over after
                    // its lease; this worker carries on after its idle wait.
                    let message = panic_message(panic.as_ref());
                    crate::metrics::step_panicked(kind.as_str());
                    tracing::error!(
                        panic = message,
                        kind = kind.as_str(),
                        "the worker panicked outside a step; it carries on"
                    );
                }
            }
            let next = self.store.next_due(&kinds).await;
            let cap = self.config.idle_wait;
            let sleep = match next {
                Ok(Some(at)) => self.clock.sleep_until(at, cap).boxed(),
                _ => tokio::time::sleep(cap).boxed(),
            };
            look = tokio::select! {
                () = sleep => match next {
                    Ok(next) => next.is_some_and(|at| at <= self.clock.now()),
                    // Unsure (the read failed): claim, as if something were due.
                    Err(_) => true,
                },
                () = &mut notified => true,
                () = &mut handed => true,
                () = shutdown.cancelled() => break,
            };
        }
    }

    /// When to poll a running instance next. Webhooks bring a check forward when something
    /// happens; the poll only catches what a lost webhook would miss, so it follows the instance's
    /// pace, as Mint describes it, and backs off:
    ///
    /// - waiting for its end user (`waiting`): after as long again as it has waited so far (a
    ///   person who has not acted in ten minutes is not expected within the next thirty seconds),
    ///   never sooner than `pipeline.user_poll_interval_min`;
    /// - Mint working on it: after a quarter of the time it has run, never sooner than
    ///   `pipeline.poll_interval_min`;
    ///
    /// and never later than `pipeline.poll_interval_max`: no instance goes unpolled longer, so a
    /// lost webhook is caught at most that long (plus jitter) after the instance finished, days
    /// before Mint's deletion.
    pub fn next_poll(
        &self,
        now: DateTime<Utc>,
        since: Option<DateTime<Utc>>,
        waiting: bool,
    ) -> DateTime<Utc> {
        let waited = since
            .and_then(|since| (now - since).to_std().ok())
            .unwrap_or(Duration::ZERO);
        let (pace, floor) = if waiting {
            (
                waited,
                self.config
                    .user_poll_interval_min
                    .max(self.config.poll_interval_min),
            )
        } else {
            (waited / 4, self.config.poll_interval_min)
        };
        // `max` then `min`, not `clamp`: a configuration built in code (not validated) with a
        // floor above the ceiling must not panic; the ceiling wins. Jittered down (instances
        // started together spread out), never below the floor, never above the ceiling.
        let ceiling = self.config.poll_interval_max;
        let interval = pace.max(floor).min(ceiling);
        now + delta(jitter(interval).max(floor.min(ceiling)))
    }

    pub(crate) fn client_for(&self, execution: &Execution) -> anyhow::Result<&MintClient> {
        self.clients.get(&execution.environment)
    }
}

/// Unbroken `404`s needed (besides `pipeline.expiry_404_span`) before an instance Mint should
/// still hold is taken for deleted.
pub const EXPIRY_404_COUNT_MIN: i64 = 3;

/// What a `404` for an instance means: `expired` only when it is true (Mint's deletion deadline
/// has passed by our own record of when the instance finished, or the `404`s have gone on
/// unbroken for `pipeline.expiry_404_span`); otherwise it is recorded and looked at again later,
/// without using an attempt.
pub(crate) fn on_not_found(
    pipeline: &Pipeline,
    execution: &Execution,
    error: &mint_client::Error,
) -> StepOutcome {
    let now = pipeline.clock.now();
    if let Some(deleted_after) = execution.deleted_by_mint_after()
        && now >= deleted_after
    {
        return expired(
            execution,
            format!(
                "Mint deleted the instance before its result was archived (it answers 404, and \
                 its deletion deadline {} has passed by our record of when it finished)",
                deleted_after.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        );
    }
    let since = execution.not_found_since.unwrap_or(now);
    let count = execution.not_found_count + 1;
    let span = pipeline.config.expiry_404_span;
    if count >= EXPIRY_404_COUNT_MIN && now - since >= delta(span) {
        return expired(
            execution,
            format!(
                "Mint has answered 404 for the instance {count} times since {} (more than \
                 `pipeline.expiry_404_span`, {}), before its deletion deadline by our record: \
                 taken for deleted",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(span)
            ),
        );
    }
    let again = (span / 4).clamp(
        pipeline.config.poll_interval_min,
        pipeline.config.poll_interval_max,
    );
    tracing::warn!(
        count,
        since = %since,
        error = %error,
        "Mint answered 404 for an instance it should still hold; looking again later"
    );
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            not_found: Some(NotFound::Seen),
            ..ExecutionPatch::default()
        })
        .with_job(JobDisposition::Retry {
            run_at: now + delta(jitter(again)),
            error: Some(format!(
                "{error} (404 number {count}; not taken for deleted yet)"
            )),
            counts: false,
            priority: None,
        })
        .event(
            "not_found",
            serde_json::json!({"count": count, "since": since, "error": error.to_string()}),
        )
}

/// Mint deleted the instance before its result was archived: the execution ends `expired`.
pub(crate) fn expired(execution: &Execution, reason: String) -> StepOutcome {
    crate::metrics::execution_ended("expired", "deleted_by_mint");
    tracing::error!(execution_id = %execution.id, reason, "execution expired");
    StepOutcome::done()
        .with_patch(ExecutionPatch {
            state: Some(ExecutionState::Expired),
            mint_status: Some("Expired".to_owned()),
            failure_reason: Some(reason.clone()),
            ..ExecutionPatch::default()
        })
        .with_job(JobDisposition::Done)
        .event("expired", serde_json::json!({"reason": reason}))
}

/// The text of a panic's payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Renews the lease every third of its length; answers (with the error) only if it is lost.
///
/// Steps that wait on Mint for long (a download; a start queued behind the shared budget) run
/// beside it, so their job is not taken over by another replica while they still work on it.
pub(crate) async fn keep_lease(pipeline: &Pipeline, lease: &Lease) -> anyhow::Error {
    let every = pipeline
        .clock
        .real(pipeline.config.lease / 3)
        .max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let until = pipeline.clock.now() + delta(pipeline.config.lease);
        if let Err(error) = pipeline.store.renew_lease(lease, until).await {
            tracing::warn!(
                error = format!("{error:#}"),
                "lease lost while the step was working; stopping it"
            );
            return error;
        }
    }
}

/// Exponential backoff for counted retries: 30 s, 1 min, 2 min, … capped at 30 min (before jitter).
pub fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
    (Duration::from_secs(30) * 2u32.pow(exponent)).min(Duration::from_secs(30 * 60))
}

/// A wait of our own choosing (a backoff, a delay through an outage) spread over its last quarter,
/// `[¾ wait, wait]`: jobs that failed together do not all come back at the same instant, and none
/// comes back later than the schedule says.
pub fn jitter(wait: Duration) -> Duration {
    jitter_with(wait, rand::random::<f64>())
}

/// A wait Mint asked for (`Retry-After`) spread over `[wait, 1¼ wait]`: never sooner than asked.
pub fn jitter_after(wait: Duration) -> Duration {
    wait + wait.mul_f64(0.25 * rand::random::<f64>())
}

fn jitter_with(wait: Duration, draw: f64) -> Duration {
    wait.mul_f64(1.0 - 0.25 * draw.clamp(0.0, 1.0))
}

/// Classifies a Mint client error for the job runner: what the work is not at fault for (`429`,
/// outages of Mint or its token endpoint, stalled or cut downloads, a result not ready yet) delays
/// it without using an attempt; a missing role pauses that kind of work; the rest are counted.
pub(crate) fn classify(error: &mint_client::Error, attempts: i64) -> Failure {
    use mint_client::ErrorKind as Kind;
    let text = error.to_string();
    match (error.kind(), error) {
        (Kind::RateLimited, _) => Failure::Delay {
            after: jitter_after(
                error
                    .retry_after()
                    .unwrap_or(Duration::from_secs(30))
                    .max(Duration::from_secs(5)),
            ),
            error: text,
        },
        (Kind::Outage | Kind::NotReady, _) => Failure::Delay {
            after: jitter(backoff(attempts).min(Duration::from_secs(120))),
            error: text,
        },
        (
            Kind::MissingRole,
            mint_client::Error::MissingRole {
                role, operation, ..
            },
        ) => Failure::MissingRole {
            role: *role,
            operation: *operation,
            error: text,
        },
        _ => Failure::Retry {
            after: jitter(backoff(attempts)),
            error: text,
        },
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Delay { error, .. }
            | Failure::Retry { error, .. }
            | Failure::MissingRole { error, .. } => f.write_str(error),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn jitter_spreads_a_wait_over_its_last_quarter_and_never_beyond() {
        let wait = Duration::from_secs(60);
        assert_eq!(jitter_with(wait, 0.0), wait);
        assert_eq!(jitter_with(wait, 1.0), Duration::from_secs(45));
        assert_eq!(jitter_with(wait, 0.5), Duration::from_millis(52_500));
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| jitter(wait)).collect();
        assert!(draws.len() > 40, "no spread: {draws:?}");
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_secs(45) && *d <= wait)
        );
        let after: Vec<_> = (0..50).map(|_| jitter_after(wait)).collect();
        assert!(
            after
                .iter()
                .all(|d| *d >= wait && *d <= Duration::from_secs(75))
        );
    }

    #[tokio::test]
    async fn jobs_claimed_ahead_are_handed_back_at_shutdown_and_begun_ones_keep_their_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(
            crate::store::sqlite::SqliteStore::open(&dir.path().join("m.db"))
                .await
                .unwrap(),
        );
        let clock = Clock::system();
        let now = clock.now();
        for _ in 0..3 {
            store
                .create_execution(crate::store::NewExecution {
                    id: Uuid::now_v7(),
                    idempotency_key: None,
                    environment: "sandbox".to_owned(),
                    flow_id: mint_client::FlowId::new("flow-kyc-basic").unwrap(),
                    input: serde_json::json!({}),
                    now,
                    traceparent: None,
                })
                .await
                .unwrap();
        }
        let lease_until = now + TimeDelta::minutes(5);
        let claimed = store
            .claim_many(&[JobKind::Start], "replica-a", now, lease_until, 3)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3);
        // One begun by a worker, two waiting in the pool when the workers stop.
        let pool = ClaimPool::new(JobKind::Start, 3);
        pool.hand_out(claimed.into_iter());
        let (begun, _) = pool.take().unwrap();
        hand_back(&store, &clock, &pool).await;
        assert!(!pool.has_ready());
        let later = clock.now();
        let taken = store
            .claim_many(
                &[JobKind::Start],
                "replica-b",
                later,
                later + TimeDelta::minutes(5),
                10,
            )
            .await
            .unwrap();
        let ids: Vec<Uuid> = taken.iter().map(|(job, _)| job.id).collect();
        assert_eq!(
            ids.len(),
            2,
            "the two handed back are taken at once: {ids:?}"
        );
        assert!(!ids.contains(&begun.id), "the begun job keeps its lease");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(240));
        assert_eq!(backoff(50), Duration::from_secs(30 * 60));
    }
}
