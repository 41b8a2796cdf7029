//! Monitoring: `GET /metrics` (Prometheus), the status page `GET /`, and the budget guard's API
//! (`GET /v1/budget`, `PUT /v1/budget/cap`).
//!
//! Counters are recorded where things happen (see [`crate::metrics`]); gauges that describe the
//! database (executions by state, backlog, at risk, dead letters, the month's spend) and the Mint
//! clients (budget, retry quota, token) are computed at scrape time from one [`Snapshot`], which the
//! status page ([`page`]: askama templates, one per panel) renders too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use mint_client::BudgetSnapshot;
use serde::Deserialize;

use crate::clock::{Clock, delta};
use crate::config::PipelineConfig;
use crate::config::{ApiKey, Scope};
use crate::http::{ApiError, scoped};
use crate::metrics::{self as m, Registry};
use crate::model::{Execution, ExecutionState, Progress, WorkPause};
use crate::pipeline::Clients;
use crate::spend::{self, SpendSummary};
use crate::store::{ExecutionFilter, Overview, SharedStore};

mod page;

/// Every execution state, for gauges that must show zeros too.
pub const STATES: [ExecutionState; 10] = [
    ExecutionState::Queued,
    ExecutionState::Starting,
    ExecutionState::NeedsDecision,
    ExecutionState::Running,
    ExecutionState::Finished,
    ExecutionState::Downloading,
    ExecutionState::Archived,
    ExecutionState::Failed,
    ExecutionState::Expired,
    ExecutionState::Erased,
];

/// Longest lists the snapshot reads (the status page shows fewer).
const LIST_MAX: i64 = 1000;

/// What the monitoring handlers share.
#[derive(Clone)]
pub struct MonitorState {
    pub store: SharedStore,
    pub clock: Clock,
    pub clients: Clients,
    pub registry: Arc<Registry>,
    /// The pipeline's configuration (at-risk window, spend threshold and cap, prices).
    pub pipeline: PipelineConfig,
    pub api_keys: Arc<Vec<ApiKey>>,
    /// Rung when the cap is raised, so held starts are looked at again.
    pub wake: Arc<crate::store::Wake>,
    /// The last snapshot and when it was read: `/` and `/metrics` share it for
    /// `cache_ttl`, so their database cost does not grow with how often they are asked.
    pub cache: Arc<tokio::sync::Mutex<Option<CachedSnapshot>>>,
    pub cache_ttl: Duration,
}

/// A snapshot and when it was read.
pub type CachedSnapshot = (std::time::Instant, Arc<Snapshot>);

/// The snapshot of the last `service.status_cache_ttl`, or a new one. One caller at a time reads the
/// database; the others wait for its snapshot instead of reading it again.
pub async fn cached_snapshot(state: &MonitorState) -> anyhow::Result<Arc<Snapshot>> {
    let mut cache = state.cache.lock().await;
    if let Some((at, snapshot)) = cache.as_ref()
        && at.elapsed() < state.cache_ttl
    {
        return Ok(snapshot.clone());
    }
    let fresh = Arc::new(snapshot(state).await?);
    metrics::counter!(m::STATUS_SNAPSHOTS_TOTAL).increment(1);
    publish(&fresh, &state.registry);
    *cache = Some((std::time::Instant::now(), fresh.clone()));
    Ok(fresh)
}

pub fn router(state: MonitorState) -> Router {
    let keys = state.api_keys.clone();
    Router::new()
        .route("/", get(status_page))
        .route("/metrics", get(metrics))
        .route(
            "/v1/budget",
            scoped(keys.clone(), Scope::Admin, get(budget)),
        )
        .route("/v1/budget/cap", scoped(keys, Scope::Admin, put(set_cap)))
        .with_state(state)
}

/// One Mint client's state.
#[derive(Debug, Clone)]
pub struct ClientView {
    pub environment: String,
    pub budget: BudgetSnapshot,
    pub retry_quota_tokens: u32,
    /// Seconds (wall clock) until the cached token expires; none before the first call.
    pub token_expires_in_secs: Option<f64>,
}

/// An execution whose instance waits for its end user.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub execution: Execution,
    pub step: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// Everything the status page and the gauges show, read at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub now: DateTime<Utc>,
    pub clients: Vec<ClientView>,
    pub overview: Overview,
    /// The end users Mint waits for, the earliest started first (at most `LIST_MAX`; the
    /// count of all of them is `overview.waiting_for_user`).
    pub waiting: Vec<Waiting>,
    /// Finished in Mint, not archived yet; soonest deletion first.
    pub unarchived: Vec<Execution>,
    /// The part of `unarchived` that Mint deletes within `at_risk_window` (listed, at most
    /// `LIST_MAX`).
    pub at_risk: Vec<Execution>,
    /// How many executions Mint deletes within `at_risk_window` (all of them).
    pub at_risk_count: i64,
    pub at_risk_window: Duration,
    pub spend: SpendSummary,
    /// Queued executions whose start the spend cap holds.
    pub held: i64,
    pub failures: Vec<Execution>,
    /// Work paused because the API client lacks a role.
    pub pauses: Vec<WorkPause>,
    /// Event deliveries pending (all endpoints), and when the oldest one's event was written.
    pub events_pending: (i64, Option<DateTime<Utc>>),
}

impl Snapshot {
    pub fn count(&self, state: ExecutionState) -> i64 {
        self.overview
            .executions_by_state
            .iter()
            .find(|(s, _)| s == state.as_str())
            .map_or(0, |(_, n)| *n)
    }

    pub fn backlog(&self) -> i64 {
        self.count(ExecutionState::Finished) + self.count(ExecutionState::Downloading)
    }

    pub fn oldest_unarchived_age(&self) -> Option<chrono::TimeDelta> {
        self.overview
            .oldest_unarchived_finished_at
            .map(|at| self.now - at)
    }

    /// The longest wait of an end user: among the `LIST_MAX` earliest started of them, since a
    /// wait begins after its start.
    pub fn longest_wait(&self) -> Option<chrono::TimeDelta> {
        self.waiting
            .iter()
            .filter_map(|w| w.since)
            .min()
            .map(|since| self.now - since)
    }
}

/// Reads the snapshot.
pub async fn snapshot(state: &MonitorState) -> anyhow::Result<Snapshot> {
    let now = state.clock.now();
    let store = state.store.as_ref();
    let mut clients = Vec::new();
    for (environment, client) in state.clients.iter() {
        let token_expires_in_secs = client.token_info().map(|info| {
            let expires = info.fetched_at + delta(info.expires_in);
            (expires - Utc::now()).num_milliseconds() as f64 / 1000.0
        });
        clients.push(ClientView {
            environment: environment.clone(),
            budget: client.budget().snapshot().await,
            retry_quota_tokens: client.retry_quota_available(),
            token_expires_in_secs,
        });
    }
    let overview = store.overview().await?;
    let waiting = store
        .waiting_for_user(LIST_MAX)
        .await?
        .into_iter()
        .filter_map(|execution| match &execution.progress {
            Some(Progress::WaitingForUser { step, since }) => Some(Waiting {
                step: step.clone(),
                since: since.or(execution.started_at),
                execution: execution.clone(),
            }),
            _ => None,
        })
        .collect();
    let unarchived = store.unarchived_without_input(LIST_MAX).await?;
    let horizon = now + delta(state.pipeline.at_risk_window);
    let at_risk_count = store.unarchived_due_by(horizon).await?;
    let at_risk = unarchived
        .iter()
        .filter(|e| e.deadline_at.is_some_and(|deadline| deadline <= horizon))
        .cloned()
        .collect();
    let spend = spend::summary(store, &state.pipeline, now).await?;
    let cheapest = state
        .clients
        .iter()
        .map(|(environment, _)| spend::price_cents(&state.pipeline, environment))
        .min()
        .unwrap_or(spend::DEFAULT_PRICE_CENTS);
    let mut failures = Vec::new();
    for failed in [
        ExecutionState::NeedsDecision,
        ExecutionState::Failed,
        ExecutionState::Expired,
    ] {
        failures.extend(
            store
                .executions_without_input(ExecutionFilter {
                    state: Some(failed),
                    limit: 10,
                })
                .await?,
        );
    }
    // Those waiting for an operator's decision first: they need someone to act.
    failures.sort_by_key(|e| {
        (
            e.state != ExecutionState::NeedsDecision,
            std::cmp::Reverse(e.updated_at),
        )
    });
    failures.truncate(10);
    let mut snapshot = Snapshot {
        now,
        clients,
        overview,
        waiting,
        unarchived,
        at_risk,
        at_risk_count,
        at_risk_window: state.pipeline.at_risk_window,
        held: 0,
        failures,
        spend,
        pauses: store.work_pauses().await?,
        events_pending: store.delivery_backlog().await?,
    };
    if !snapshot.spend.cap_allows(cheapest) {
        snapshot.held = snapshot.count(ExecutionState::Queued);
    }
    Ok(snapshot)
}

/// Sets every scrape-time gauge from a snapshot.
pub fn publish(snapshot: &Snapshot, registry: &Registry) {
    registry.record(|| {
        for client in &snapshot.clients {
            let env = client.environment.clone();
            let b = &client.budget;
            metrics::gauge!(m::MINT_BUDGET_UNITS_REMAINING, "environment" => env.clone())
                .set(f64::from(b.remaining_units));
            metrics::gauge!(m::MINT_BUDGET_UNITS_LIMIT, "environment" => env.clone())
                .set(f64::from(b.effective_limit_units));
            metrics::gauge!(m::MINT_BUDGET_WAITING_REQUESTS, "environment" => env.clone())
                .set(b.waiting as f64);
            metrics::gauge!(m::MINT_RETRY_QUOTA_TOKENS, "environment" => env.clone())
                .set(f64::from(client.retry_quota_tokens));
            if let Some(secs) = client.token_expires_in_secs {
                metrics::gauge!(m::MINT_TOKEN_EXPIRES_IN_SECONDS, "environment" => env).set(secs);
            }
        }
        for state in STATES {
            metrics::gauge!(m::EXECUTIONS, "state" => state.as_str())
                .set(snapshot.count(state) as f64);
        }
        metrics::gauge!(m::WAITING_FOR_USER_EXECUTIONS)
            .set(snapshot.overview.waiting_for_user as f64);
        metrics::gauge!(m::WAITING_FOR_USER_LONGEST_SECONDS).set(
            snapshot
                .longest_wait()
                .map_or(0.0, |d| d.num_seconds().max(0) as f64),
        );
        metrics::gauge!(m::ARCHIVE_BACKLOG_EXECUTIONS).set(snapshot.backlog() as f64);
        metrics::gauge!(m::ARCHIVE_OLDEST_UNARCHIVED_AGE_SECONDS).set(
            snapshot
                .oldest_unarchived_age()
                .map_or(0.0, |d| d.num_seconds().max(0) as f64),
        );
        metrics::gauge!(m::ARCHIVE_AT_RISK_EXECUTIONS).set(snapshot.at_risk_count as f64);
        for kind in ["start", "check", "download"] {
            let ready = snapshot
                .overview
                .jobs_ready
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n);
            metrics::gauge!(m::QUEUE_JOBS, "kind" => kind, "state" => "ready").set(ready as f64);
        }
        metrics::gauge!(m::QUEUE_JOBS, "kind" => "all", "state" => "running")
            .set(snapshot.overview.jobs_running as f64);
        metrics::gauge!(m::DEAD_LETTER_JOBS).set(snapshot.overview.dead_letters as f64);
        let (pending, oldest) = snapshot.events_pending;
        metrics::gauge!(m::EVENTS_PENDING).set(pending as f64);
        metrics::gauge!(m::EVENTS_OLDEST_PENDING_AGE_SECONDS).set(
            oldest.map_or(0.0, |at| (snapshot.now - at).num_seconds().max(0) as f64),
        );
        metrics::gauge!(m::EXECUTIONS_NEEDING_DECISION)
            .set(snapshot.count(ExecutionState::NeedsDecision) as f64);
        let spend = &snapshot.spend;
        metrics::gauge!(m::SPEND_MONTH_EXECUTIONS).set(spend.executions as f64);
        metrics::gauge!(m::SPEND_MONTH_CENTS).set(spend.cents as f64);
        metrics::gauge!(m::SPEND_MONTH_PROJECTED_CENTS).set(spend.projected_cents as f64);
        metrics::gauge!(m::SPEND_ALERT_THRESHOLD_CENTS)
            .set(spend.alert_cents.map_or(0.0, |c| c as f64));
        metrics::gauge!(m::SPEND_OVER_THRESHOLD).set(if spend.over_alert() { 1.0 } else { 0.0 });
        metrics::gauge!(m::SPEND_CAP_CENTS).set(spend.cap_cents.map_or(-1.0, |c| c as f64));
        metrics::gauge!(m::SPEND_HELD_EXECUTIONS).set(snapshot.held as f64);
        // Every environment and role: 0 shows a role that is present again.
        for client in &snapshot.clients {
            for role in crate::roles::ROLES {
                let role = role.to_string();
                let missing = snapshot
                    .pauses
                    .iter()
                    .any(|p| p.environment == client.environment && p.role == role);
                metrics::gauge!(m::MISSING_ROLE, "environment" => client.environment.clone(), "role" => role)
                    .set(if missing { 1.0 } else { 0.0 });
            }
        }
    });
}

async fn metrics(State(state): State<MonitorState>) -> Result<Response, ApiError> {
    cached_snapshot(&state).await.map_err(ApiError::internal)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.registry.render(),
    )
        .into_response())
}

async fn status_page(State(state): State<MonitorState>) -> Result<Html<String>, ApiError> {
    let snapshot = cached_snapshot(&state).await.map_err(ApiError::internal)?;
    let html = page::render(&snapshot).map_err(|e| {
        ApiError::internal(anyhow::Error::new(e).context("rendering the status page"))
    })?;
    Ok(Html(html))
}

async fn budget(State(state): State<MonitorState>) -> Result<Json<SpendSummary>, ApiError> {
    let summary = spend::summary(state.store.as_ref(), &state.pipeline, state.clock.now())
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(summary))
}

/// Body of `PUT /v1/budget/cap`: a cap in cents, or `null` to fall back to the configured cap.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetCap {
    cents: Option<u64>,
}

async fn set_cap(
    State(state): State<MonitorState>,
    body: axum::body::Bytes,
) -> Result<Json<SpendSummary>, ApiError> {
    let request: SetCap = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("expected {{\"cents\": <number or null>}}: {e}"),
        )
    })?;
    let now = state.clock.now();
    let value = request.cents.map(|c| c.to_string());
    state
        .store
        .set_setting(spend::CAP_SETTING, value.as_deref(), now)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(cap_cents = ?request.cents, "the monthly spend cap was set by an operator");
    state.wake.notify_waiters();
    let summary = spend::summary(state.store.as_ref(), &state.pipeline, now)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(summary))
}
