//! The admin API under `/_sim/`: no Mint auth, loopback peers only.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use super::types::*;
use super::views::admin_instance;
use crate::behaviours::{BehaviourOverrides, Behaviours};
use crate::config::{
    ClientConfig, Faults, FlowConfig, Limits, ServiceSettings, SimConfig, check_secrets,
};
use crate::result_file::result_file_sha256;
use crate::server::Connection;
use crate::shared::Shared;
use crate::state::{Seed, UserStepError};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/clock", get(clock).put(set_time_scale))
        .route("/clock/advance", post(advance))
        .route("/usage", get(usage))
        .route("/config", get(config))
        .route("/faults", get(faults).put(set_faults))
        .route("/limits", get(limits).put(set_limits))
        .route("/service", get(service).put(set_service))
        .route("/behaviours", get(behaviours).put(set_behaviours))
        .route("/behaviours/flows/{flow_id}", put(set_flow_behaviours))
        .route("/clients", get(clients))
        .route("/clients/{client_id}", put(put_client))
        .route("/clients/{client_id}/revoke-tokens", post(revoke_tokens))
        .route("/flows", get(flows))
        .route("/flows/{flow_id}", put(put_flow))
        .route("/flows/{flow_id}/instances", post(create_instances))
        .route("/instances", get(instances))
        .route("/starts", get(starts))
        .route("/results", get(results))
        .route("/instances/{instance_id}", get(instance))
        .route("/instances/{instance_id}/user-step", post(user_step))
        .route("/instances/{instance_id}/status", put(set_status))
        .route(
            "/instances/{instance_id}/behaviours",
            get(instance_behaviours).put(set_instance_behaviours),
        )
        .route("/instances/{instance_id}/result-sha256", get(result_sha256))
        .layer(middleware::from_fn(loopback_only))
}

async fn loopback_only(request: Request, next: Next) -> Response {
    let loopback = request
        .extensions()
        .get::<ConnectInfo<Connection>>()
        .is_some_and(|ConnectInfo(c)| c.peer.ip().is_loopback());
    if loopback {
        next.run(request).await
    } else {
        error(
            StatusCode::FORBIDDEN,
            "the admin API answers loopback peers only",
        )
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(AdminError {
            error: message.into(),
        }),
    )
        .into_response()
}

/// A 200 JSON answer ending in a newline, so `curl` output stays readable.
fn ok<T: serde::Serialize>(body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

fn clock_state(app: &Shared) -> ClockState {
    ClockState {
        now: app.clock.now(),
        time_scale: app.clock.scale(),
    }
}

async fn clock(State(app): State<Arc<Shared>>) -> Response {
    ok(&clock_state(&app))
}

async fn set_time_scale(
    State(app): State<Arc<Shared>>,
    Json(body): Json<TimeScaleRequest>,
) -> Response {
    if !(body.time_scale.is_finite() && (0.0..=1_000_000.0).contains(&body.time_scale)) {
        return error(
            StatusCode::BAD_REQUEST,
            "timeScale must be between 0 and 1000000",
        );
    }
    drop(app.current());
    app.clock.set_scale(body.time_scale);
    app.wake();
    ok(&clock_state(&app))
}

/// Moves the clock and runs every event that became due before answering, so a test sees the
/// new state at once (webhook POSTs, being real network calls, may still be in flight).
async fn advance(State(app): State<Arc<Shared>>, Json(body): Json<AdvanceRequest>) -> Response {
    if !(body.seconds.is_finite() && (0.0..=100.0 * 365.0 * 86_400.0).contains(&body.seconds)) {
        return error(
            StatusCode::BAD_REQUEST,
            "seconds must be between 0 and 100 years",
        );
    }
    app.clock.advance(Duration::from_secs_f64(body.seconds));
    drop(app.current());
    app.wake();
    ok(&clock_state(&app))
}

async fn usage(State(app): State<Arc<Shared>>) -> Response {
    let (st, _) = app.current();
    ok(&Usage::from(&st.usage))
}

async fn config(State(app): State<Arc<Shared>>) -> Response {
    let (st, _) = app.current();
    let config = SimConfig {
        seed: st.seed,
        time_scale: app.clock.scale(),
        webhook_url: st.webhook_url.clone(),
        clients: st.clients.values().cloned().collect(),
        flows: st.flows.clone(),
        limits: st.limits.clone(),
        service: st.service.clone(),
        faults: st.faults.clone(),
        behaviours: st.behaviours.clone(),
        secrets: st.secrets.clone(),
    };
    ok(&config)
}

async fn behaviours(State(app): State<Arc<Shared>>) -> Response {
    ok(&app.lock().behaviours)
}

async fn set_behaviours(
    State(app): State<Arc<Shared>>,
    Json(behaviours): Json<Behaviours>,
) -> Response {
    let mut st = app.lock();
    let flow_ids: Vec<&str> = st.flows.iter().map(|f| f.id.as_str()).collect();
    if let Err(e) = behaviours.validate("", flow_ids) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    st.set_behaviours(behaviours);
    no_content()
}

async fn set_flow_behaviours(
    State(app): State<Arc<Shared>>,
    Path(flow_id): Path<String>,
    Json(overrides): Json<BehaviourOverrides>,
) -> Response {
    if let Err(e) = overrides.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let mut st = app.lock();
    if st.flow(&flow_id).is_none() {
        return error(StatusCode::NOT_FOUND, format!("no flow {flow_id:?}"));
    }
    if overrides.is_empty() {
        st.behaviours.flows.remove(&flow_id);
    } else {
        st.behaviours.flows.insert(flow_id, overrides);
    }
    no_content()
}

async fn instance_behaviours(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
) -> Response {
    let st = app.lock();
    match st.instances.get(&instance_id) {
        Some(instance) => ok(&InstanceBehaviours {
            overrides: st
                .instance_behaviours
                .get(&instance.id)
                .cloned()
                .unwrap_or_default(),
            effective: st.behaviours_of(instance),
        }),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no instance {instance_id:?}"),
        ),
    }
}

async fn set_instance_behaviours(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    Json(overrides): Json<BehaviourOverrides>,
) -> Response {
    if let Err(e) = overrides.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let mut st = app.lock();
    let Some(id) = st.instances.get(&instance_id).map(|i| i.id) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no instance {instance_id:?}"),
        );
    };
    if overrides.is_empty() {
        st.instance_behaviours.remove(&id);
    } else {
        st.instance_behaviours.insert(id, overrides);
    }
    no_content()
}

async fn faults(State(app): State<Arc<Shared>>) -> Response {
    ok(&app.lock().faults)
}

async fn set_faults(State(app): State<Arc<Shared>>, Json(faults): Json<Faults>) -> Response {
    if let Err(e) = faults.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let (mut st, now) = app.current();
    st.set_faults(faults, now);
    no_content()
}

async fn limits(State(app): State<Arc<Shared>>) -> Response {
    ok(&app.lock().limits)
}

async fn set_limits(State(app): State<Arc<Shared>>, Json(limits): Json<Limits>) -> Response {
    if let Err(e) = limits.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    app.lock().set_limits(limits);
    no_content()
}

async fn service(State(app): State<Arc<Shared>>) -> Response {
    ok(&app.lock().service)
}

async fn set_service(
    State(app): State<Arc<Shared>>,
    Json(service): Json<ServiceSettings>,
) -> Response {
    if let Err(e) = service.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    app.lock().service = service;
    no_content()
}

async fn clients(State(app): State<Arc<Shared>>) -> Response {
    let st = app.lock();
    ok(&st.clients.values().collect::<Vec<_>>())
}

async fn put_client(
    State(app): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    Json(client): Json<ClientConfig>,
) -> Response {
    if client.client_id != client_id {
        return error(
            StatusCode::BAD_REQUEST,
            "clientId in the body differs from the path",
        );
    }
    if let Err(e) = client.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    app.lock().put_client(client);
    no_content()
}

async fn revoke_tokens(State(app): State<Arc<Shared>>, Path(client_id): Path<String>) -> Response {
    let (mut st, now) = app.current();
    if !st.clients.contains_key(&client_id) {
        return error(StatusCode::NOT_FOUND, format!("no client {client_id:?}"));
    }
    let revoked = st.revoke_tokens(&client_id, now);
    ok(&serde_json::json!({ "revoked": revoked }))
}

async fn flows(State(app): State<Arc<Shared>>) -> Response {
    ok(&app.lock().flows)
}

async fn put_flow(
    State(app): State<Arc<Shared>>,
    Path(flow_id): Path<String>,
    Json(flow): Json<FlowConfig>,
) -> Response {
    if flow.id != flow_id {
        return error(
            StatusCode::BAD_REQUEST,
            "id in the body differs from the path",
        );
    }
    if let Err(e) = flow.validate("") {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    let mut st = app.lock();
    if let Err(e) = check_secrets("", &flow, &st.secrets) {
        return error(StatusCode::BAD_REQUEST, e.to_string());
    }
    st.put_flow(flow);
    no_content()
}

/// Largest batch of `POST /_sim/flows/{id}/instances`.
const CREATE_INSTANCES_MAX: u64 = 1_000_000;

/// `input` with `{{n}}` replaced by `n` in every string.
fn numbered(input: &serde_json::Value, n: u64) -> serde_json::Value {
    use serde_json::Value;
    match input {
        Value::String(s) if s.contains("{{n}}") => {
            Value::String(s.replace("{{n}}", &n.to_string()))
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| numbered(v, n)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbered(v, n)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The seeds of a batch, made one at a time (a batch of a million must not hold a million
/// parsed inputs at once).
enum SeedPlan<'a> {
    /// Each instance spelled out.
    Listed(&'a SeedInstances),
    /// `count` instances from one template.
    Template {
        body: &'a SeedInstances,
        input: serde_json::Value,
        templated: bool,
        first: DateTime<Utc>,
        interval: chrono::Duration,
    },
}

impl<'a> SeedPlan<'a> {
    /// Checks the batch; the error says what is wrong.
    fn new(body: &'a SeedInstances, now: DateTime<Utc>) -> Result<Self, String> {
        if body.duration_secs > 100 * 365 * 86_400 {
            return Err("durationSecs must be at most 100 years".to_owned());
        }
        let input_ok = |input: Option<&serde_json::Value>| {
            matches!(
                input,
                None | Some(serde_json::Value::Object(_) | serde_json::Value::Null)
            )
        };
        if !body.instances.is_empty() {
            if body.instances.len() as u64 > CREATE_INSTANCES_MAX {
                return Err(format!(
                    "instances: at most {CREATE_INSTANCES_MAX} per batch"
                ));
            }
            if let Some(i) = body
                .instances
                .iter()
                .position(|one| !input_ok(one.input.as_ref()))
            {
                return Err(format!("instances[{i}].input must be an object or null"));
            }
            return Ok(Self::Listed(body));
        }
        if body.count > CREATE_INSTANCES_MAX {
            return Err(format!("count must be at most {CREATE_INSTANCES_MAX}"));
        }
        if !input_ok(body.input.as_ref()) {
            return Err("input must be an object or null".to_owned());
        }
        let input = body.input.clone().unwrap_or(serde_json::Value::Null);
        let first = body.created_at.unwrap_or(now);
        let interval = chrono::Duration::milliseconds(body.interval_millis.min(1 << 40) as i64);
        let last = i32::try_from(body.count)
            .ok()
            .and_then(|count| interval.checked_mul(count))
            .and_then(|span| first.checked_add_signed(span));
        if last.is_none() {
            return Err("createdAt + count x intervalMillis is out of range".to_owned());
        }
        Ok(Self::Template {
            body,
            templated: input.to_string().contains("{{n}}"),
            input,
            first,
            interval,
        })
    }

    fn len(&self) -> usize {
        match self {
            Self::Listed(body) => body.instances.len(),
            Self::Template { body, .. } => body.count as usize,
        }
    }

    /// The seed of instance `n` of the batch.
    fn seed(&self, n: usize, now: DateTime<Utc>) -> Seed {
        let (body, created_at, input, status, finished_at) = match self {
            Self::Listed(body) => {
                let one = &body.instances[n];
                (
                    *body,
                    one.created_at.unwrap_or(now),
                    one.input.clone().unwrap_or(serde_json::Value::Null),
                    one.status.clone().or_else(|| body.status.clone()),
                    one.finished_at,
                )
            }
            Self::Template {
                body,
                input,
                templated,
                first,
                interval,
            } => (
                *body,
                *first + *interval * (n as i32),
                if *templated {
                    numbered(input, n as u64)
                } else {
                    input.clone()
                },
                body.status.clone(),
                None,
            ),
        };
        let duration = chrono::Duration::seconds(body.duration_secs as i64);
        Seed {
            created_at,
            input,
            status,
            finished_at: finished_at.or_else(|| created_at.checked_add_signed(duration)),
        }
    }
}

async fn create_instances(
    State(app): State<Arc<Shared>>,
    Path(flow_id): Path<String>,
    Json(body): Json<SeedInstances>,
) -> Response {
    let (created, jobs) = {
        let (mut st, now) = app.current();
        if st.flow(&flow_id).is_none() {
            return error(StatusCode::NOT_FOUND, format!("no flow {flow_id:?}"));
        }
        let plan = match SeedPlan::new(&body, now) {
            Ok(plan) => plan,
            Err(e) => return error(StatusCode::BAD_REQUEST, e),
        };
        st.instances.reserve(plan.len());
        let mut jobs = Vec::new();
        let mut created = CreatedInstances {
            count: 0,
            ids: Vec::with_capacity(if body.omit_ids { 0 } else { plan.len() }),
        };
        for n in 0..plan.len() {
            let seed = plan.seed(n, now);
            let Some(index) = st.seed_instance(now, &flow_id, &seed, &mut jobs) else {
                break;
            };
            created.count += 1;
            if !body.omit_ids
                && let Some(instance) = st.instances.at(index)
            {
                created.ids.push(instance.id.to_string());
            }
        }
        (created, jobs)
    };
    app.send_webhooks(jobs);
    app.wake();
    ok(&created)
}

/// Filters of `GET /_sim/instances`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct InstanceFilter {
    flow_id: Option<String>,
    status: Option<String>,
    seeded: Option<bool>,
}

async fn instances(
    State(app): State<Arc<Shared>>,
    Query(filter): Query<InstanceFilter>,
) -> Response {
    let (st, now) = app.current();
    let all: Vec<AdminInstance> = st
        .instances
        .iter()
        .filter(|i| {
            filter.flow_id.as_deref().is_none_or(|f| i.flow_id() == f)
                && filter.status.as_deref().is_none_or(|s| i.is(s))
                && filter.seeded.is_none_or(|s| i.seeded == s)
        })
        .map(|i| admin_instance(&st, i, now))
        .collect();
    ok(&all)
}

async fn instance(State(app): State<Arc<Shared>>, Path(instance_id): Path<String>) -> Response {
    let (st, now) = app.current();
    match st.instances.get(&instance_id) {
        Some(i) => ok(&admin_instance(&st, i, now)),
        None => error(
            StatusCode::NOT_FOUND,
            format!("no instance {instance_id:?}"),
        ),
    }
}

async fn starts(State(app): State<Arc<Shared>>) -> Response {
    let st = app.lock();
    let id_of = |&index: &u32| st.instances.at(index).map(|i| i.id.to_string());
    let starts = Starts {
        correlation_input_key: st.service.correlation_input_key.clone(),
        billed: st.usage.clients.values().map(|c| c.starts_billed).sum(),
        by_correlation_id: st
            .starts
            .by_correlation_id
            .iter()
            .map(|(id, handles)| (id.clone(), handles.iter().filter_map(id_of).collect()))
            .collect(),
        without_correlation_id: st
            .starts
            .without_correlation_id
            .iter()
            .filter_map(id_of)
            .collect(),
    };
    ok(&starts)
}

/// Filters of `GET /_sim/results`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ResultsFilter {
    flow_id: Option<String>,
    seeded: bool,
}

/// The SHA-256 of every retained `Finished` instance's result file (seeded ones only with
/// `?seeded=true`): what an archive must hold.
async fn results(State(app): State<Arc<Shared>>, Query(filter): Query<ResultsFilter>) -> Response {
    let (seed, wanted) = {
        let (st, now) = app.current();
        let wanted: Vec<(String, u64)> = st
            .instances
            .iter()
            .filter(|i| {
                i.is("Finished")
                    && st.retained(i, now)
                    && (filter.seeded || !i.seeded)
                    && filter.flow_id.as_deref().is_none_or(|f| i.flow_id() == f)
            })
            .map(|i| (i.id.to_string(), i.result_file_bytes()))
            .collect();
        (st.seed, wanted)
    };
    // Hashing large files takes a while: off the async workers.
    let hashed = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|(id, size)| {
                let (sha256, size) = result_file_sha256(seed, &id, size);
                (id, ResultDigest { sha256, size })
            })
            .collect()
    })
    .await;
    match hashed {
        Ok(instances) => ok(&Results { instances }),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn user_step(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    Json(body): Json<UserStepRequest>,
) -> Response {
    let (result, view) = {
        let (mut st, now) = app.current();
        let result = st.user_step(&instance_id, body.action.into(), now);
        let view = st
            .instances
            .get(&instance_id)
            .map(|i| admin_instance(&st, i, now));
        (result, view)
    };
    match (result, view) {
        (Ok(jobs), Some(view)) => {
            app.send_webhooks(jobs);
            app.wake();
            ok(&view)
        }
        (Err(UserStepError::NotWaiting), _) => error(
            StatusCode::CONFLICT,
            "the instance is not waiting at a user step",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            format!("no instance {instance_id:?}"),
        ),
    }
}

async fn set_status(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    Json(body): Json<StatusRequest>,
) -> Response {
    let (mut st, now) = app.current();
    if st.set_status(&instance_id, &body.status, now) {
        no_content()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!("no instance {instance_id:?}"),
        )
    }
}

async fn result_sha256(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
) -> Response {
    let (seed, size) = {
        let st = app.lock();
        match st.instances.get(&instance_id) {
            Some(i) => (st.seed, i.result_file_bytes()),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no instance {instance_id:?}"),
                );
            }
        }
    };
    // Hashing a large file takes a while: off the async workers.
    match tokio::task::spawn_blocking(move || result_file_sha256(seed, &instance_id, size)).await {
        Ok((sha256, size)) => ok(&ResultDigest { sha256, size }),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
