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
mod start;

use std::collections::BTreeMap;
use std::sync::Arc;
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
use crate::model::{Execution, Job, JobKind, Lease};
use crate::store::{JobDisposition, LeaseLost, SharedStore, StepOutcome};

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
    /// Rung when new work is durable, so idle workers look at once.
    pub wake: Arc<Notify>,
    /// This service's metrics: every job step records into it.
    pub metrics: Arc<crate::metrics::Registry>,
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
        let span = tracing::info_span!(
            "job",
            job_id = %job.id,
            kind = job.kind.as_str(),
            execution_id = %job.execution_id,
            instance_id = tracing::field::Empty,
        );
        self.metrics
            .scope(self.run_job(job, lease).instrument(span))
            .await;
        Ok(true)
    }

    async fn run_job(&self, job: Job, lease: Lease) {
        let started = Instant::now();
        let kind = job.kind.as_str();
        let execution = match self.store.execution(job.execution_id).await {
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
        let step = match job.kind {
            JobKind::Start => start::step(self, &job, &lease, &execution).boxed(),
            JobKind::Check => check::step(self, &job, &execution).boxed(),
            JobKind::Download => download::step(self, &job, &lease, &execution).boxed(),
        };
        let outcome = match step.await {
            Ok(outcome) => outcome,
            Err(error) => self.failure_outcome(&job, error),
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
            Err(other) => (backoff(job.attempts), true, format!("{other:#}")),
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
        let wake = !outcome.enqueue.is_empty();
        match self
            .store
            .finish_step(lease, job.execution_id, outcome, self.clock.now())
            .await
        {
            Ok(()) => {
                crate::metrics::job_finished(kind, label, started.elapsed());
                if wake {
                    self.wake.notify_waiters();
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
        let mut tasks = tokio::task::JoinSet::new();
        let pools = [
            (JobKind::Start, self.config.start_workers),
            (JobKind::Check, self.config.check_workers),
            (JobKind::Download, self.config.download_workers),
        ];
        for (kind, count) in pools {
            for _ in 0..count {
                let pipeline = self.clone();
                let shutdown = shutdown.clone();
                tasks.spawn(async move { pipeline.worker(kind, shutdown).await });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn worker(&self, kind: JobKind, shutdown: CancellationToken) {
        let kinds = [kind];
        while !shutdown.is_cancelled() {
            // Register for wake-ups before looking, so a notification between the look and the
            // wait is not missed.
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let ran = tokio::select! {
                ran = self.run_once(&kinds) => ran,
                () = shutdown.cancelled() => break,
            };
            match ran {
                Ok(true) => continue,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(
                        error = format!("{error:#}"),
                        kind = kind.as_str(),
                        "worker cannot claim jobs"
                    );
                }
            }
            let next = self.store.next_due(&kinds).await.ok().flatten();
            let cap = self.config.idle_wait;
            let sleep = match next {
                Some(at) => self.clock.sleep_until(at, cap).boxed(),
                None => tokio::time::sleep(cap).boxed(),
            };
            tokio::select! {
                () = sleep => {}
                () = &mut notified => {}
                () = shutdown.cancelled() => break,
            }
        }
    }

    /// When to poll an instance next: never sooner than the minimum interval, later the longer it
    /// has been waiting (a quarter of the wait so far), never later than the maximum.
    pub fn next_poll(
        &self,
        now: DateTime<Utc>,
        waiting_since: Option<DateTime<Utc>>,
    ) -> DateTime<Utc> {
        let waited = waiting_since
            .and_then(|since| (now - since).to_std().ok())
            .unwrap_or(Duration::ZERO);
        let interval =
            (waited / 4).clamp(self.config.poll_interval_min, self.config.poll_interval_max);
        now + delta(interval)
    }

    pub(crate) fn client_for(&self, execution: &Execution) -> anyhow::Result<&MintClient> {
        self.clients.get(&execution.environment)
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

/// Exponential backoff for counted retries: 30 s, 1 min, 2 min, … capped at 30 min.
pub fn backoff(attempts: i64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 6)).unwrap_or(6);
    (Duration::from_secs(30) * 2u32.pow(exponent)).min(Duration::from_secs(30 * 60))
}

/// Classifies a Mint client error for the job runner.
pub(crate) fn classify(error: &mint_client::Error, attempts: i64) -> Failure {
    use mint_client::Error as E;
    let text = error.to_string();
    match error {
        E::RateLimited { retry_after, .. } => Failure::Delay {
            after: retry_after
                .unwrap_or(Duration::from_secs(30))
                .max(Duration::from_secs(5)),
            error: text,
        },
        E::NotSent { .. } | E::NoAnswer { .. } => Failure::Delay {
            after: backoff(attempts).min(Duration::from_secs(120)),
            error: text,
        },
        E::Api { status, .. } if *status >= 500 => Failure::Delay {
            after: backoff(attempts).min(Duration::from_secs(120)),
            error: text,
        },
        _ => Failure::Retry {
            after: backoff(attempts),
            error: text,
        },
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Delay { error, .. } | Failure::Retry { error, .. } => f.write_str(error),
        }
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(0), Duration::from_secs(30));
        assert_eq!(backoff(1), Duration::from_secs(60));
        assert_eq!(backoff(3), Duration::from_secs(240));
        assert_eq!(backoff(50), Duration::from_secs(30 * 60));
    }
}
