//! Every metric the service exports: names live here only, with their unit last.
//!
//! Recording goes through the `metrics` facade; `mintgate serve` installs a Prometheus recorder and
//! renders it on `/metrics`. Without a recorder (library use, unit tests) these calls do nothing.

use std::time::Duration;

pub const WEBHOOKS_RECEIVED_TOTAL: &str = "mintgate_webhooks_received_total";
pub const WEBHOOKS_REFUSED_TOTAL: &str = "mintgate_webhooks_refused_total";
pub const JOBS_TOTAL: &str = "mintgate_jobs_total";
pub const JOB_DURATION_SECONDS: &str = "mintgate_job_duration_seconds";
pub const EXECUTIONS_STARTED_TOTAL: &str = "mintgate_executions_started_total";
pub const EXECUTIONS_ENDED_TOTAL: &str = "mintgate_executions_ended_total";
pub const START_AMBIGUOUS_TOTAL: &str = "mintgate_start_ambiguous_total";
pub const DOWNLOAD_BYTES_TOTAL: &str = "mintgate_download_bytes_total";
pub const DOWNLOAD_DURATION_SECONDS: &str = "mintgate_download_duration_seconds";
pub const DEAD_LETTERS_TOTAL: &str = "mintgate_dead_letters_total";
/// 1 while a replica spends its local share because Redis is unreachable, else 0.
pub const BUDGET_FALLBACK_ACTIVE: &str = "mintgate_budget_fallback_active";
pub const BUDGET_FALLBACKS_TOTAL: &str = "mintgate_budget_fallbacks_total";

/// A webhook was recorded: `matched`, `unmatched` or `duplicate`.
pub fn webhook_received(outcome: &'static str) {
    metrics::counter!(WEBHOOKS_RECEIVED_TOTAL, "outcome" => outcome).increment(1);
}

/// A webhook was refused, with the reason.
pub fn webhook_refused(reason: &'static str) {
    metrics::counter!(WEBHOOKS_REFUSED_TOTAL, "reason" => reason).increment(1);
}

/// A job step ended: `kind` and `outcome` (`done`, `retry`, `dead`, `lease_lost`, `error`).
pub fn job_finished(kind: &'static str, outcome: &'static str, took: Duration) {
    metrics::counter!(JOBS_TOTAL, "kind" => kind, "outcome" => outcome).increment(1);
    metrics::histogram!(JOB_DURATION_SECONDS, "kind" => kind).record(took.as_secs_f64());
}

pub fn execution_started(flow_id: &str, how: &'static str) {
    metrics::counter!(EXECUTIONS_STARTED_TOTAL, "flow" => flow_id.to_owned(), "how" => how)
        .increment(1);
}

/// An execution reached a terminal state, with the reason for failures.
pub fn execution_ended(state: &'static str, reason: &'static str) {
    metrics::counter!(EXECUTIONS_ENDED_TOTAL, "state" => state, "reason" => reason).increment(1);
}

pub fn start_ambiguous() {
    metrics::counter!(START_AMBIGUOUS_TOTAL).increment(1);
}

pub fn download_finished(bytes: u64, took: Duration) {
    metrics::counter!(DOWNLOAD_BYTES_TOTAL).increment(bytes);
    metrics::histogram!(DOWNLOAD_DURATION_SECONDS).record(took.as_secs_f64());
}

pub fn dead_lettered(kind: &'static str) {
    metrics::counter!(DEAD_LETTERS_TOTAL, "kind" => kind).increment(1);
}

/// The shared budget `budget` is (or is no longer) on the local share.
pub fn budget_fallback_active(budget: &str, active: bool) {
    metrics::gauge!(BUDGET_FALLBACK_ACTIVE, "budget" => budget.to_owned()).set(if active {
        1.0
    } else {
        0.0
    });
}

/// The shared budget `budget` fell back to the local share (Redis unreachable).
pub fn budget_fallback_started(budget: &str) {
    metrics::counter!(BUDGET_FALLBACKS_TOTAL, "budget" => budget.to_owned()).increment(1);
}
