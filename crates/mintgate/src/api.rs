//! The service's HTTP surface: the own API (`/v1/…`, bearer API keys with scopes), the webhook
//! receiver (`POST /webhooks/mint`) and the health endpoints; the archived result's route is
//! [`result`].
//!
//! Architecture invariant: `POST /v1/executions` answers `202` only after the execution and its
//! start job are committed; `POST /webhooks/mint` answers `2xx` only after the webhook is recorded.

pub mod result;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use chrono::Utc;
use mint_client::FlowId;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::clock::{Clock, delta};
use crate::config::{ApiKey, Scope};
use crate::http::{ApiError, authorize_keys, scoped};
use crate::model::{CORRELATION_KEY, ExecutionState, Job, WebhookRecord};
use crate::store::{Created, ExecutionFilter, NewExecution, SharedStore, WebhookRecorded};
use crate::view::{ExecutionView, view};
use crate::webhook::{self, Verifier};

/// What the handlers share, behind one `Arc` ([`public_router`], [`operator_router`]): axum
/// clones the state for every request, and a deep clone (the map of Mint clients, the
/// environment's name) was 1-2 % of a webhook's CPU in issue 16's profile.
pub struct ApiState {
    pub store: SharedStore,
    pub clock: Clock,
    pub verifier: Verifier,
    pub api_keys: Arc<Vec<ApiKey>>,
    /// Where results are archived (`GET /v1/executions/{id}/result` reads them).
    pub archive: Arc<crate::archive::Archive>,
    pub environments: Arc<Vec<String>>,
    pub default_environment: String,
    pub webhook_settle: std::time::Duration,
    pub webhook_body_bytes_max: usize,
    /// Wakes the workers when new work is durable.
    pub wake: Arc<crate::store::Wake>,
    pub clients: crate::pipeline::Clients,
    pub flow_cache: Arc<crate::flow_cache::FlowCache>,
    pub ingest: crate::ingest::Ingest,
    pub workers_alive: Arc<std::sync::atomic::AtomicBool>,
    /// The live workers of each pool.
    pub workers: Arc<crate::pipeline::WorkerPools>,
}

/// Longest body of an own API request (`/v1/…`).
pub const API_BODY_BYTES_MAX: usize = 1024 * 1024;

/// The public listener's routes: the webhook receiver and `/healthz`. The webhook body is limited
/// to `webhook_body_bytes_max` before it is read.
pub fn public_router(state: Arc<ApiState>, webhook_body_bytes_max: usize) -> Router {
    let webhooks = Router::new()
        .route("/webhooks/mint", post(receive_webhook))
        .route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                crate::server::limit_body(webhook_body_bytes_max, request, next)
            },
        ))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .merge(webhooks)
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// The operator listener's own API routes (`/v1/…`) and `/readyz`. Bodies are limited
/// to [`API_BODY_BYTES_MAX`]; the API key is checked by [`require_api_key`] before them.
pub fn operator_router(state: Arc<ApiState>) -> Router {
    let keys = state.api_keys.clone();
    let own_api = Router::new()
        .route(
            "/v1/executions",
            scoped(keys.clone(), Scope::ExecutionsWrite, post(create_execution)).merge(scoped(
                keys.clone(),
                Scope::ExecutionsRead,
                get(list_executions),
            )),
        )
        .route(
            "/v1/executions/{id}",
            scoped(keys.clone(), Scope::ExecutionsRead, get(get_execution)),
        )
        .route(
            "/v1/executions/{id}/result",
            scoped(keys.clone(), Scope::ResultsRead, get(result::get_result)),
        )
        .route(
            "/v1/dead-letters",
            scoped(keys.clone(), Scope::Admin, get(list_dead_letters)),
        )
        .route(
            "/v1/dead-letters/{id}/retry",
            scoped(keys, Scope::Admin, post(retry_dead_letter)),
        )
        .route_layer(axum::middleware::from_fn(
            |request: axum::extract::Request, next: axum::middleware::Next| {
                crate::server::limit_body(API_BODY_BYTES_MAX, request, next)
            },
        ))
        .layer(DefaultBodyLimit::max(API_BODY_BYTES_MAX));
    Router::new()
        .merge(own_api)
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Refuses any `/v1/…` request without a valid API key before its body is read, whatever its
/// route (an unknown path is `401`, not `404`, to a caller without a key). Each route then
/// requires its scope ([`scoped`]).
pub async fn require_api_key(
    api_keys: Arc<Vec<ApiKey>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path().starts_with("/v1/")
        && let Err(error) = authorize_keys(&api_keys, request.headers(), None)
    {
        let mut response = error.into_response();
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
        return response;
    }
    next.run(request).await
}

/// Body of `POST /v1/executions`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateExecution {
    pub flow_id: String,
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
}

async fn create_execution(
    State(state): State<Arc<ApiState>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateExecution = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not a valid execution request: {e}"),
        )
    })?;
    // mint-client's id types are the one definition of a valid id.
    let flow_id = FlowId::new(request.flow_id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_flow_id",
            format!("`flowId`: {e}"),
        )
    })?;
    let input = match request.input {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(serde_json::Value::Object(map)) => {
            if map.contains_key(CORRELATION_KEY) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("`input.{CORRELATION_KEY}` is reserved for mintgate"),
                ));
            }
            serde_json::Value::Object(map)
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "`input` must be a JSON object",
            ));
        }
    };
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 200)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "`idempotencyKey` must be 1 to 200 characters",
        ));
    }
    let environment = request
        .environment
        .unwrap_or_else(|| state.default_environment.clone());
    if !state.environments.contains(&environment) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_environment",
            format!(
                "no Mint profile for environment {environment:?} (configured: {})",
                state.environments.join(", ")
            ),
        ));
    }
    if let Ok(client) = state.clients.get(&environment) {
        use crate::flow_cache::FlowCheck;
        match state.flow_cache.check(&environment, client, &flow_id).await {
            FlowCheck::Known | FlowCheck::Unavailable => {}
            FlowCheck::DefinitionId(flow_ids) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "definition_id_as_flow_id",
                    format!(
                        "{:?} is a definition id, not a flow id; use one of its flow ids: {}",
                        flow_id.as_str(),
                        flow_ids.join(", ")
                    ),
                ));
            }
            FlowCheck::Unknown => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "unknown_flow",
                    format!(
                        "Mint has no flow {:?} in the {environment} environment",
                        flow_id.as_str()
                    ),
                ));
            }
        }
    }
    // Through the group-commit writer: answered once the execution and its start job are
    // committed, in a transaction shared with the requests that arrived meanwhile.
    let created = state
        .ingest
        .create_execution(NewExecution {
            id: Uuid::now_v7(),
            idempotency_key: request.idempotency_key,
            environment,
            flow_id: flow_id.clone(),
            input,
            now: state.clock.now(),
            // The request's trace context: the execution's jobs continue its trace.
            traceparent: crate::telemetry::traceparent(&tracing::Span::current()),
        })
        .await
        .map_err(ApiError::internal)?;
    match created {
        Created::New(execution) => {
            state.wake.notify(crate::model::JobKind::Start);
            tracing::info!(execution_id = %execution.id, flow_id = %execution.flow_id, "execution accepted");
            Ok((
                StatusCode::ACCEPTED,
                Json(view(&execution, state.clock.now())),
            )
                .into_response())
        }
        Created::Existing(execution) => Ok((
            StatusCode::ACCEPTED,
            Json(view(&execution, state.clock.now())),
        )
            .into_response()),
        Created::KeyConflict(execution) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_reused",
            format!(
                "this idempotency key was used for execution {} with a different request",
                execution.id
            ),
        )),
    }
}

async fn get_execution(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<Json<ExecutionView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no execution with this id",
        )
    })?;
    let execution = state
        .store
        .execution(id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no execution with this id",
            )
        })?;
    Ok(Json(view(&execution, state.clock.now())))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_executions(
    State(state): State<Arc<ApiState>>,
    Query(query): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let filter_state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(ExecutionState::parse(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_state",
                format!("unknown state {text:?}"),
            )
        })?),
    };
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_limit",
            "`limit` must be between 1 and 1000",
        ));
    }
    let executions = state
        .store
        .executions(ExecutionFilter {
            state: filter_state,
            limit,
        })
        .await
        .map_err(ApiError::internal)?;
    let now = state.clock.now();
    let items: Vec<ExecutionView> = executions.iter().map(|e| view(e, now)).collect();
    Ok(Json(serde_json::json!({"items": items})))
}

async fn list_dead_letters(
    State(state): State<Arc<ApiState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let jobs: Vec<Job> = state
        .store
        .dead_letters()
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({"items": jobs})))
}

async fn retry_dead_letter(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no dead letter with this id",
        )
    })?;
    let retried = state
        .store
        .retry_dead_letter(id, state.clock.now())
        .await
        .map_err(ApiError::internal)?;
    if retried {
        state.wake.notify_waiters();
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no dead letter with this id",
        ))
    }
}

async fn receive_webhook(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let now = state.clock.now();
    // Signatures are about real-world replay: they are checked against the wall clock, whatever
    // clock the pipeline runs on. The headers are checked before the body is read, so a forged
    // request costs no body read and no hashing.
    let refused = |refusal: webhook::Refusal| {
        crate::metrics::webhook_refused(refusal.reason());
        // Counted by reason (`mintgate_webhooks_refused_total`); a line each would let a flood of
        // forgeries flood the log too.
        tracing::debug!(reason = refusal.reason(), "webhook refused");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("webhook refused: {}", refusal.reason()),
        )
    };
    let check = state
        .verifier
        .check_headers(&headers, Utc::now())
        .map_err(refused)?;
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => return Ok(body_error(&error, state.webhook_body_bytes_max)),
    };
    let authentic = state.verifier.check_body(check, &body).map_err(refused)?;
    let hint = webhook::parse(&body).map_err(|reason| {
        crate::metrics::webhook_refused("malformed");
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_webhook", reason)
    })?;
    let record = WebhookRecord {
        id: Uuid::now_v7(),
        received_at: now,
        instance_id: hint.instance_id.clone(),
        claimed_status: hint.status,
        authentic,
        body_sha256: hex::encode(Sha256::digest(&body)),
        execution_id: None,
    };
    let recorded = state
        .ingest
        .record_webhook(record, now + delta(state.webhook_settle))
        .await
        .map_err(ApiError::internal)?;
    crate::metrics::webhook_received(match recorded {
        WebhookRecorded::Matched => "matched",
        WebhookRecorded::Unmatched => "unmatched",
        WebhookRecorded::Duplicate => "duplicate",
    });
    if recorded == WebhookRecorded::Matched {
        // The webhook brought its execution's check forward: the check workers look.
        state.wake.notify(crate::model::JobKind::Check);
        // One line per webhook that moves an execution on. The others (for an instance that is
        // not ours or no longer running, or a body seen before) change nothing: they are counted
        // by outcome (`mintgate_webhooks_received_total`) and logged at debug, so that a flood of
        // them (authentic, but replayed or misdirected) floods neither the log nor its I/O.
        tracing::info!(instance_id = %hint.instance_id, outcome = ?recorded, "webhook recorded");
    } else {
        tracing::debug!(instance_id = %hint.instance_id, outcome = ?recorded, "webhook recorded");
    }
    Ok(webhook_received())
}

/// The answer to a recorded webhook, built without serialising or allocating.
fn webhook_received() -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        )],
        r#"{"received":true}"#,
    )
        .into_response()
}

/// The answer to a body that could not be read: too large (`413`), too slow (`408`), or cut.
fn body_error(error: &axum::Error, limit_bytes: usize) -> Response {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            crate::metrics::webhook_refused("body_too_large");
            return crate::server::too_large(limit_bytes);
        }
        if current.is::<tower_http::timeout::TimeoutError>() {
            crate::metrics::webhook_refused("body_timeout");
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            )
            .into_response();
        }
        cause = current.source();
    }
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "body_unreadable",
        "the body could not be read",
    )
    .into_response()
}

/// Ready (200 `ready`), degraded (200 `degraded: …`: work paused for a missing role; the
/// replica still takes requests and webhooks) or not ready (503: no database, no workers, a pool
/// without a live worker).
async fn readyz(State(state): State<Arc<ApiState>>) -> Result<String, ApiError> {
    state.store.ping().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unreachable",
            format!("{e:#}"),
        )
    })?;
    if !state
        .workers_alive
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "workers_stopped",
            "the workers are not running",
        ));
    }
    let dead = state.workers.without_live_worker();
    if !dead.is_empty() {
        let pools: Vec<&str> = dead.iter().map(|kind| kind.as_str()).collect();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "worker_pool_down",
            format!(
                "no live worker in the {} pool(s); the service must be restarted",
                pools.join(", ")
            ),
        ));
    }
    let pauses = state.store.work_pauses().await.map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unreachable",
            format!("{e:#}"),
        )
    })?;
    if pauses.is_empty() {
        return Ok("ready".to_owned());
    }
    let paused: Vec<String> = pauses
        .iter()
        .map(|p| {
            format!(
                "{} work in {} is paused: the API client lacks the role {}",
                p.kind.as_str(),
                p.environment,
                p.role
            )
        })
        .collect();
    Ok(format!("degraded: {}", paused.join("; ")))
}
