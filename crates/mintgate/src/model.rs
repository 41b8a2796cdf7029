//! The service's own records: executions (one onboarding each), jobs (the durable queue) and webhooks.
//!
//! These are the service's vocabulary, not Mint's wire types: Mint's models live in `mint-client`.

use chrono::{DateTime, Utc};
use mint_client::{FlowId, InstanceId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The key the executor adds to every workflow input, to find an instance again after a start
/// whose answer was lost (the own API refuses inputs that already carry it).
pub const CORRELATION_KEY: &str = "mintgateExecutionId";

/// Where an execution is in its life. Stored as text; the names are part of the own API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// Accepted and durable; waiting for the executor (and the budget) to start it in Mint.
    Queued,
    /// The executor is starting it, or reconciling a start whose answer was lost.
    Starting,
    /// Started in Mint; the instance is working or waiting for its end user.
    Running,
    /// Mint reports it finished; the result file is waiting to be archived.
    Finished,
    /// The result file is being streamed into the archive.
    Downloading,
    /// The result file is in the archive, verified.
    Archived,
    /// It will not finish: Mint faulted or cancelled it, or it was refused for good.
    Failed,
    /// Mint deleted the instance (30 days after it ended) before its result was archived.
    Expired,
    /// A start's answer was lost and the instance could neither be found in Mint nor proven
    /// absent: nothing is started again until an operator decides (`mintgate decide`).
    NeedsDecision,
    /// Its archived result and personal data were removed (an operator's erasure, or the retention
    /// policy's purge); the cost ledger and a tombstone remain.
    Erased,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 10] = [
        Self::Queued,
        Self::Starting,
        Self::NeedsDecision,
        Self::Running,
        Self::Finished,
        Self::Downloading,
        Self::Archived,
        Self::Failed,
        Self::Expired,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Starting => "starting",
            Self::NeedsDecision => "needs_decision",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Downloading => "downloading",
            Self::Archived => "archived",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Erased => "erased",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No further work will be done for an execution in a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Archived | Self::Failed | Self::Expired | Self::Erased
        )
    }
}

/// What the service last learnt about a running instance, in words an operator understands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Progress {
    /// Mint is working on a step.
    Processing { step: Option<String> },
    /// Mint waits for the end user at a step.
    WaitingForUser {
        step: Option<String>,
        since: Option<DateTime<Utc>>,
    },
    /// Mint says running, but no activity says what it is doing.
    Unknown,
}

/// One onboarding: a request to run a flow, followed until its result is archived.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    pub id: Uuid,
    pub idempotency_key: Option<String>,
    pub environment: String,
    pub flow_id: FlowId,
    pub input: serde_json::Value,
    pub state: ExecutionState,
    pub instance_id: Option<InstanceId>,
    pub workflow_url: Option<String>,
    pub mint_status: Option<String>,
    pub progress: Option<Progress>,
    pub progress_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When Mint deletes the instance and its result file (30 days after it ended).
    pub deadline_at: Option<DateTime<Utc>>,
    pub archived_at: Option<DateTime<Utc>>,
    pub archive_path: Option<String>,
    pub sha256: Option<String>,
    pub bytes: Option<i64>,
    pub failure_reason: Option<String>,
    /// A start whose answer was lost: the instance may exist in Mint and must be found before any retry.
    pub start_ambiguous: bool,
    /// When the last start was sent: instances created before it (less the clock-skew allowance)
    /// cannot be this execution's.
    pub start_sent_at: Option<DateTime<Utc>>,
    /// The instance was found by reconciliation and Mint's instance answer gave no `workflowUrl`
    /// (Mint gives it only in the start answer): the end user's link is unknown, not merely absent.
    pub workflow_url_unknown: bool,
    /// Why the execution waits for an operator's decision (`needs_decision`).
    pub decision_reason: Option<String>,
    pub start_attempts: i64,
    /// Executions billed by Mint for this request (0 or 1; more would be a duplicate).
    pub billed_count: i64,
    /// When this service saw the instance finished, by its own clock: Mint's deletion deadline
    /// is judged by it (Mint's `finishedAt` may be absurd, or its clock skewed).
    pub finished_seen_at: Option<DateTime<Utc>>,
    /// The first of an unbroken run of `404`s for the instance (none once Mint answers again).
    pub not_found_since: Option<DateTime<Utc>>,
    /// How many `404`s that run holds.
    pub not_found_count: i64,
    /// The W3C `traceparent` of the request that created the execution (with traces exported):
    /// the parent of its jobs' spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// The instance's `updatedAt`, as Mint spelt it, when `progress` was read from its
    /// activities: a check that gets the same answer reads no activities.
    #[serde(skip)]
    pub progress_mint_updated_at: Option<String>,
}

impl Execution {
    /// A new execution as the store records it: `queued`, created and updated `at`, every
    /// other column at its default (the one place those defaults are written in Rust; the
    /// migrations hold the same).
    pub fn queued(
        id: Uuid,
        idempotency_key: Option<String>,
        environment: String,
        flow_id: FlowId,
        input: serde_json::Value,
        at: DateTime<Utc>,
        traceparent: Option<String>,
    ) -> Self {
        Self {
            id,
            idempotency_key,
            environment,
            flow_id,
            input,
            state: ExecutionState::Queued,
            instance_id: None,
            workflow_url: None,
            mint_status: None,
            progress: None,
            progress_at: None,
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            deadline_at: None,
            archived_at: None,
            archive_path: None,
            sha256: None,
            bytes: None,
            failure_reason: None,
            start_ambiguous: false,
            start_sent_at: None,
            workflow_url_unknown: false,
            decision_reason: None,
            start_attempts: 0,
            billed_count: 0,
            finished_seen_at: None,
            not_found_since: None,
            not_found_count: 0,
            traceparent,
            progress_mint_updated_at: None,
        }
    }

    /// When Mint deletes the instance at the latest, by our own record of when it finished (the
    /// later of our observation and Mint's plausible `finishedAt`): a `404` after it is the truth,
    /// before it possibly a spurious one. None while we have not seen it finish.
    pub fn deleted_by_mint_after(&self) -> Option<DateTime<Utc>> {
        let ended = match (self.finished_seen_at, self.finished_at) {
            (Some(seen), Some(mint)) => Some(seen.max(mint)),
            (seen, mint) => seen.or(mint),
        }?;
        ended.checked_add_signed(chrono::TimeDelta::days(MINT_RETENTION_DAYS))
    }
}

/// A kind of work paused in an environment because the API client lacks a role there (kept in the
/// database, so every replica pauses it).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkPause {
    pub environment: String,
    pub kind: JobKind,
    /// The role missing, as Signicat's dashboard names it (`Flow Instance Download`).
    pub role: String,
    /// The call that was refused (`result_file`).
    pub operation: String,
    /// The refusal as the client reported it (Mint's trace id included).
    pub detail: String,
    pub since: DateTime<Utc>,
    pub probed_at: Option<DateTime<Utc>>,
    pub next_probe_at: DateTime<Utc>,
}

/// Mint deletes an instance and its result file this many days after the instance ended.
pub const MINT_RETENTION_DAYS: i64 = 30;

/// What a job does; one active job per kind and execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Start the instance in Mint, or reconcile a start whose answer was lost.
    Start,
    /// Ask Mint how the instance is doing (the poller's and the webhook's work).
    Check,
    /// Stream the result file into the archive.
    Download,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [Self::Start, Self::Check, Self::Download];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Check => "check",
            Self::Download => "download",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Budget priority of a job, stored as an integer (higher goes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPriority {
    Background = 0,
    Webhook = 1,
    Interactive = 2,
}

impl JobPriority {
    pub fn from_i64(value: i64) -> Self {
        match value {
            i64::MIN..=0 => Self::Background,
            1 => Self::Webhook,
            _ => Self::Interactive,
        }
    }

    pub fn to_client(self) -> mint_client::Priority {
        match self {
            Self::Background => mint_client::Priority::Background,
            Self::Webhook => mint_client::Priority::Webhook,
            Self::Interactive => mint_client::Priority::Interactive,
        }
    }
}

/// State of a job row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Ready,
    Running,
    Done,
    Dead,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Ready, Self::Running, Self::Done, Self::Dead]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A durable unit of work.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub kind: JobKind,
    pub state: JobState,
    pub priority: JobPriority,
    pub run_at: DateTime<Utc>,
    /// Attempts that ended in an error that counts towards `max_attempts` (outages and 429s do not).
    pub attempts: i64,
    pub max_attempts: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    /// Fencing token: bumped at every claim; only the holder of the current token may finish the job.
    pub lease_token: i64,
    /// The errors of the failed attempts, oldest first, each with its whole chain.
    pub errors: Vec<JobError>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One failed attempt of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobError {
    pub at: DateTime<Utc>,
    pub error: String,
}

/// The proof a worker holds while it owns a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub job_id: Uuid,
    pub token: i64,
    pub owner: String,
}

/// One entry of an execution's history, for `inspect` and the status page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub execution_id: Uuid,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub detail: serde_json::Value,
}

/// A received webhook, as recorded before it is answered.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRecord {
    pub id: Uuid,
    pub received_at: DateTime<Utc>,
    pub instance_id: InstanceId,
    pub claimed_status: Option<String>,
    pub authentic: bool,
    /// SHA-256 of the raw body: the same body twice is a duplicate.
    pub body_sha256: String,
    pub execution_id: Option<Uuid>,
}
