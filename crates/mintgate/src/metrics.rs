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
/// Open connections per listener (`listener` = `public` or `operator`).
pub const HTTP_CONNECTIONS_OPEN: &str = "mintgate_http_connections_open";
/// TLS certificate reloads by listener and outcome (`replaced`, `failed`).
pub const TLS_CERTIFICATE_RELOADS_TOTAL: &str = "mintgate_tls_certificate_reloads_total";

/// Snapshots of the database read for the status page and `/metrics` (at most one per
/// `service.status_cache_ttl`, however often they are asked).
pub const STATUS_SNAPSHOTS_TOTAL: &str = "mintgate_status_snapshots_total";
/// Webhook records deleted after their retention.
pub const WEBHOOKS_PRUNED_TOTAL: &str = "mintgate_webhooks_pruned_total";

/// Removals of archived results: `action` = `erase` (an operator) | `purge` (the retention
/// policy), `outcome` = `done` | `refused` (a retention lock holds it) | `failed`.
pub const ARCHIVE_REMOVALS_TOTAL: &str = "mintgate_archive_removals_total";

pub fn archive_removal(action: &'static str, outcome: &'static str) {
    metrics::counter!(ARCHIVE_REMOVALS_TOTAL, "action" => action, "outcome" => outcome)
        .increment(1);
}

/// Reconciliation scans of a flow's instances after lost start answers, and the Mint rate units
/// and time (on the service's clock) they took.
pub const RECONCILE_SCANS_TOTAL: &str = "mintgate_reconcile_scans_total";
pub const RECONCILE_UNITS_TOTAL: &str = "mintgate_reconcile_units_total";
pub const RECONCILE_DURATION_SECONDS: &str = "mintgate_reconcile_duration_seconds";
/// Lost starts reconciled, by outcome: `found`, `absent` (proven; started again) or `undecided`
/// (held for an operator's decision).
pub const RECONCILED_TOTAL: &str = "mintgate_reconciled_total";

pub fn reconcile_scan(units: u64, took_ms: i64) {
    metrics::counter!(RECONCILE_SCANS_TOTAL).increment(1);
    metrics::counter!(RECONCILE_UNITS_TOTAL).increment(units);
    metrics::histogram!(RECONCILE_DURATION_SECONDS).record(took_ms.max(0) as f64 / 1000.0);
}

/// Application events (`events.rs`), by endpoint: delivered (answered `2xx`), attempts that
/// failed, deliveries dead-lettered after the last attempt, and the delivery lag (from the change
/// to the `2xx`).
pub const EVENTS_DELIVERED_TOTAL: &str = "mintgate_events_delivered_total";
pub const EVENTS_FAILED_TOTAL: &str = "mintgate_events_failed_total";
pub const EVENTS_DEAD_TOTAL: &str = "mintgate_events_dead_total";
pub const EVENTS_DELIVERY_LAG_SECONDS: &str = "mintgate_events_delivery_lag_seconds";
/// Deliveries not yet delivered nor dead (all endpoints), and how long the oldest one's event has
/// waited: set at scrape time.
pub const EVENTS_PENDING: &str = "mintgate_events_pending";
pub const EVENTS_OLDEST_PENDING_AGE_SECONDS: &str = "mintgate_events_oldest_pending_age_seconds";

pub fn event_delivered(endpoint: String, lag: Duration) {
    metrics::counter!(EVENTS_DELIVERED_TOTAL, "endpoint" => endpoint.clone()).increment(1);
    metrics::histogram!(EVENTS_DELIVERY_LAG_SECONDS, "endpoint" => endpoint)
        .record(lag.as_secs_f64());
}

pub fn event_attempt_failed(endpoint: String) {
    metrics::counter!(EVENTS_FAILED_TOTAL, "endpoint" => endpoint).increment(1);
}

pub fn event_dead(endpoint: String) {
    metrics::counter!(EVENTS_DEAD_TOTAL, "endpoint" => endpoint).increment(1);
}

pub fn reconciled(outcome: &'static str) {
    metrics::counter!(RECONCILED_TOTAL, "outcome" => outcome).increment(1);
}

pub fn webhooks_pruned(count: u64) {
    metrics::counter!(WEBHOOKS_PRUNED_TOTAL).increment(count);
}

pub fn tls_reloaded(listener: &'static str, outcome: &'static str) {
    metrics::counter!(TLS_CERTIFICATE_RELOADS_TOTAL, "listener" => listener, "outcome" => outcome)
        .increment(1);
}

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

/// Panics caught in a worker, by job kind (in a step, or in the worker's own loop).
pub const WORKER_PANICS_TOTAL: &str = "mintgate_worker_panics_total";

/// A panic was caught in a worker of `kind`.
pub fn step_panicked(kind: &'static str) {
    metrics::counter!(WORKER_PANICS_TOTAL, "kind" => kind).increment(1);
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

// --- the Mint API client (from its observer) ---------------------------------------------------
pub const MINT_REQUESTS_TOTAL: &str = "mintgate_mint_requests_total";
pub const MINT_BUDGET_UNITS_USED_TOTAL: &str = "mintgate_mint_budget_units_used_total";
pub const MINT_BUDGET_UNITS_REMAINING: &str = "mintgate_mint_budget_units_remaining";
pub const MINT_BUDGET_UNITS_LIMIT: &str = "mintgate_mint_budget_units_limit";
pub const MINT_BUDGET_WAITING_REQUESTS: &str = "mintgate_mint_budget_waiting_requests";
pub const MINT_THROTTLED_TOTAL: &str = "mintgate_mint_throttled_total";
pub const MINT_RETRIES_TOTAL: &str = "mintgate_mint_retries_total";
pub const MINT_RETRY_QUOTA_EXHAUSTED_TOTAL: &str = "mintgate_mint_retry_quota_exhausted_total";
pub const MINT_RETRY_QUOTA_TOKENS: &str = "mintgate_mint_retry_quota_tokens";
pub const MINT_TOKEN_RENEWALS_TOTAL: &str = "mintgate_mint_token_renewals_total";
pub const MINT_TOKEN_FAILURES_TOTAL: &str = "mintgate_mint_token_failures_total";
pub const MINT_TOKEN_EXPIRES_IN_SECONDS: &str = "mintgate_mint_token_expires_in_seconds";

// --- executions, end users, downloads, archive, queue (from the database at scrape time) ---------
pub const EXECUTIONS: &str = "mintgate_executions";
pub const WAITING_FOR_USER_EXECUTIONS: &str = "mintgate_waiting_for_user_executions";
pub const WAITING_FOR_USER_LONGEST_SECONDS: &str = "mintgate_waiting_for_user_longest_seconds";
pub const DOWNLOAD_THROUGHPUT_BYTES_PER_SECOND: &str =
    "mintgate_download_throughput_bytes_per_second";
pub const DOWNLOAD_INTERRUPTIONS_TOTAL: &str = "mintgate_download_interruptions_total";
pub const ARCHIVE_BACKLOG_EXECUTIONS: &str = "mintgate_archive_backlog_executions";
pub const ARCHIVE_OLDEST_UNARCHIVED_AGE_SECONDS: &str =
    "mintgate_archive_oldest_unarchived_age_seconds";
pub const ARCHIVE_AT_RISK_EXECUTIONS: &str = "mintgate_archive_at_risk_executions";
pub const QUEUE_JOBS: &str = "mintgate_queue_jobs";
pub const DEAD_LETTER_JOBS: &str = "mintgate_dead_letter_jobs";
/// 1 while the API client lacks `role` in `environment` (the work that needs it is paused), else 0.
pub const MISSING_ROLE: &str = "mintgate_missing_role";
/// Executions waiting for an operator's decision (`needs_decision`: a lost start neither found nor
/// ruled out; `mintgate decide` resolves them).
pub const EXECUTIONS_NEEDING_DECISION: &str = "mintgate_executions_needing_decision";

// --- money ---------------------------------------------------------------------------------------
pub const SPEND_MONTH_EXECUTIONS: &str = "mintgate_spend_month_executions";
pub const SPEND_MONTH_CENTS: &str = "mintgate_spend_month_cents";
pub const SPEND_MONTH_PROJECTED_CENTS: &str = "mintgate_spend_month_projected_cents";
pub const SPEND_ALERT_THRESHOLD_CENTS: &str = "mintgate_spend_alert_threshold_cents";
pub const SPEND_OVER_THRESHOLD: &str = "mintgate_spend_over_threshold";
pub const SPEND_CAP_CENTS: &str = "mintgate_spend_cap_cents";
pub const SPEND_HELD_EXECUTIONS: &str = "mintgate_spend_held_executions";
pub const SPEND_HOLDS_TOTAL: &str = "mintgate_spend_holds_total";

/// A download's throughput and its interruptions (restarts from zero and resumes).
pub fn download_throughput(bytes: u64, took: Duration) {
    let secs = took.as_secs_f64().max(1e-6);
    metrics::histogram!(DOWNLOAD_THROUGHPUT_BYTES_PER_SECOND).record(bytes as f64 / secs);
}

/// A start was held back by the monthly spend cap.
pub fn start_held() {
    metrics::counter!(SPEND_HOLDS_TOTAL).increment(1);
}

/// One service's metrics: a Prometheus recorder of its own, so that several services in one
/// process (the tests, the benchmarks) never mix their figures.
///
/// The `metrics` facade has one global recorder per process. mintgate installs a router there
/// once ([`Registry::new`]); it hands each metric call to the registry of the task it runs in
/// ([`Registry::scope`]: the HTTP handlers and every job step are scoped), or, outside any scope,
/// to the registry built last (in production there is only one).
pub struct Registry {
    recorder: metrics_exporter_prometheus::PrometheusRecorder,
    handle: metrics_exporter_prometheus::PrometheusHandle,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").finish_non_exhaustive()
    }
}

tokio::task_local! {
    static CURRENT: std::sync::Arc<Registry>;
}

static LATEST: std::sync::RwLock<Option<std::sync::Arc<Registry>>> = std::sync::RwLock::new(None);
static ROUTER: std::sync::Once = std::sync::Once::new();

/// Buckets of the `_seconds` histograms: 10 ms to 1 h.
const SECONDS_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Buckets of the throughput histogram: 64 KiB/s to 1 GiB/s.
const THROUGHPUT_BUCKETS: &[f64] = &[
    65_536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
    268_435_456.0,
    1_073_741_824.0,
];

impl Registry {
    /// A new, empty registry; installs the process-wide router the first time.
    pub fn new() -> std::sync::Arc<Self> {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full(DOWNLOAD_THROUGHPUT_BYTES_PER_SECOND.to_owned()),
                    THROUGHPUT_BUCKETS,
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let registry = std::sync::Arc::new(Self { recorder, handle });
        *LATEST.write().unwrap_or_else(|e| e.into_inner()) = Some(registry.clone());
        ROUTER.call_once(|| {
            if metrics::set_global_recorder(Router).is_err() {
                tracing::warn!(
                    "another metrics recorder is installed; mintgate's /metrics may be incomplete"
                );
            }
        });
        registry
    }

    /// The Prometheus text exposition of everything recorded so far.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Runs `f` with this registry as the recorder (synchronous code, e.g. gauges at scrape time).
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        metrics::with_local_recorder(&self.recorder, f)
    }

    /// Runs `future` with this registry as the recorder of every metric call it makes.
    pub fn scope<F: std::future::Future>(
        self: &std::sync::Arc<Self>,
        future: F,
    ) -> impl std::future::Future<Output = F::Output> + use<F> {
        CURRENT.scope(self.clone(), future)
    }
}

/// The process-wide recorder: forwards to the current task's registry.
struct Router;

impl Router {
    fn with<T>(&self, f: impl Fn(&dyn metrics::Recorder) -> T, none: impl Fn() -> T) -> T {
        if let Ok(value) = CURRENT.try_with(|r| f(&r.recorder)) {
            return value;
        }
        let latest = LATEST.read().unwrap_or_else(|e| e.into_inner()).clone();
        match latest {
            Some(r) => f(&r.recorder),
            None => none(),
        }
    }
}

impl metrics::Recorder for Router {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.with(
            |r| r.describe_counter(key.clone(), unit, description.clone()),
            || (),
        )
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.with(
            |r| r.describe_gauge(key.clone(), unit, description.clone()),
            || (),
        )
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.with(
            |r| r.describe_histogram(key.clone(), unit, description.clone()),
            || (),
        )
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        self.with(
            |r| r.register_counter(key, metadata),
            metrics::Counter::noop,
        )
    }

    fn register_gauge(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Gauge {
        self.with(|r| r.register_gauge(key, metadata), metrics::Gauge::noop)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        metadata: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.with(
            |r| r.register_histogram(key, metadata),
            metrics::Histogram::noop,
        )
    }
}

/// Turns mint-client's events into metrics of one environment, in one registry.
#[derive(Debug)]
pub struct ClientMetrics {
    pub environment: String,
    pub registry: std::sync::Arc<Registry>,
}

fn priority_label(priority: mint_client::Priority) -> &'static str {
    match priority {
        mint_client::Priority::Background => "background",
        mint_client::Priority::Webhook => "webhook",
        mint_client::Priority::Interactive => "interactive",
    }
}

fn status_label(status: Option<u16>) -> &'static str {
    match status {
        None => "none",
        Some(200..=299) => "2xx",
        Some(401) => "401",
        Some(403) => "403",
        Some(404) => "404",
        Some(429) => "429",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
    }
}

impl mint_client::Observer for ClientMetrics {
    fn observe(&self, event: &mint_client::ClientEvent) {
        use mint_client::ClientEvent as E;
        let environment = self.environment.clone();
        self.registry.record(|| match event {
            E::Request {
                operation,
                priority,
                units,
                status,
            } => {
                let (operation, priority) = (operation.name(), priority_label(*priority));
                metrics::counter!(MINT_REQUESTS_TOTAL, "environment" => environment.clone(), "operation" => operation, "priority" => priority, "status" => status_label(*status)).increment(1);
                metrics::counter!(MINT_BUDGET_UNITS_USED_TOTAL, "environment" => environment, "operation" => operation, "priority" => priority).increment(u64::from(*units));
            }
            E::Throttled { operation, .. } => {
                metrics::counter!(MINT_THROTTLED_TOTAL, "environment" => environment, "operation" => operation.name()).increment(1);
            }
            E::Retry { operation } => {
                metrics::counter!(MINT_RETRIES_TOTAL, "environment" => environment, "operation" => operation.name()).increment(1);
            }
            E::RetryQuotaExhausted { operation } => {
                metrics::counter!(MINT_RETRY_QUOTA_EXHAUSTED_TOTAL, "environment" => environment, "operation" => operation.name()).increment(1);
            }
            E::TokenIssued { .. } => {
                metrics::counter!(MINT_TOKEN_RENEWALS_TOTAL, "environment" => environment).increment(1);
            }
            E::TokenFailed => {
                metrics::counter!(MINT_TOKEN_FAILURES_TOTAL, "environment" => environment).increment(1);
            }
            E::DownloadInterrupted { stalled, resumed } => {
                metrics::counter!(
                    DOWNLOAD_INTERRUPTIONS_TOTAL,
                    "environment" => environment,
                    "cause" => if *stalled { "stall" } else { "cut" },
                    "then" => if *resumed { "resume" } else { "restart" }
                )
                .increment(1);
            }
            _ => {}
        });
    }
}
