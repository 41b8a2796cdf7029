//! The six Mint API endpoints under `/mint/api`, plus the Signicat-shaped error answers.
//!
//! Check order on every request (see interfaces.md): token (401) → storm and budget (429, nothing
//! consumed) → injected server error → role (403, naming no role) → parameters (400 with
//! `invalidParams`) → resource (404 / 409).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};

use crate::behaviours::{ListOrder, ResultContentType};
use crate::model;
use crate::result_file::ResultFile;
use crate::server::Connection;
use crate::shared::Shared;
use crate::state::{Endpoint, Instance, Refusal, State as SimState};
use crate::wire::{
    Activity, Flow, Holds, InstanceBody, InvalidParam, Page, Problem, Shown, reshape,
};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/flows", get(list_flows))
        .route(
            "/api/flows/{flow_id}/instances",
            get(list_instances).post(start_instance),
        )
        .route("/api/instances/{instance_id}", get(get_instance))
        .route("/api/instances/{instance_id}/activities", get(activities))
        .route("/api/instances/{instance_id}/result-file", get(result_file))
        .route("/run/{instance_id}", get(workflow_page))
}

// ----- error answers -----

pub(crate) fn problem(
    app: &Shared,
    status: u16,
    detail: Option<&str>,
    code: Option<&'static str>,
    invalid_params: Vec<InvalidParam>,
) -> Response {
    let body = Problem {
        problem_type: Some(model::problem_type(status)),
        title: model::problem_title(status),
        detail: detail.map(str::to_owned),
        code,
        status,
        trace_id: app.trace_id(),
        invalid_params,
    };
    let mut response = json_response(status, &body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

pub(crate) fn json_response(status: u16, body: &impl Serialize) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A 2xx JSON answer of `endpoint`, with the contract changes in force for it (`[behaviours]
/// contract`).
fn answer(
    st: &SimState,
    endpoint: Endpoint,
    holds: Holds,
    status: u16,
    body: &impl Serialize,
) -> Response {
    let changes = st.behaviours.changes(endpoint.key());
    if changes.is_empty() {
        return json_response(status, body);
    }
    match serde_json::to_value(body) {
        Ok(value) => json_response(status, &reshape(value, changes, holds)),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn refused(app: &Shared, st: &mut SimState, refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unauthorized {
            client,
            token_presented,
        } => {
            let mut response = problem(app, 401, None, None, Vec::new());
            let challenge = if token_presented {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            if let Some(client) = client {
                st.count_status(&client, 401);
            }
            response
        }
        Refusal::Throttled {
            client,
            retry_after_secs,
        } => {
            st.count_status(&client, 429);
            let mut response = problem(
                app,
                429,
                Some("Rate limit exceeded"),
                Some("TOO_MANY_REQUESTS"),
                Vec::new(),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Refusal::ServerError { client, status } => {
            st.count_status(&client, status);
            if status == 500 {
                problem(app, 500, None, None, Vec::new())
            } else {
                let reason = if status == 502 {
                    "502 Bad Gateway"
                } else {
                    "503 Service Temporarily Unavailable"
                };
                let html = format!(
                    "<html>\r\n<head><title>{reason}</title></head>\r\n<body>\r\n<center><h1>{reason}</h1></center>\r\n</body>\r\n</html>\r\n"
                );
                (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    [(header::CONTENT_TYPE, "text/html")],
                    html,
                )
                    .into_response()
            }
        }
        Refusal::Forbidden { client } => {
            st.count_status(&client, 403);
            // Deliberately terse, like the real service: no role named.
            json_response(
                403,
                &json!({ "title": "Forbidden", "status": 403, "traceId": app.trace_id() }),
            )
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Runs the gate; on refusal answers (and counts) right away.
macro_rules! gate {
    ($app:expr, $st:expr, $now:expr, $headers:expr, $endpoint:expr) => {
        match $st.gate($now, bearer(&$headers), $endpoint) {
            Ok(client) => client,
            Err(refusal) => return refused(&$app, &mut $st, refusal),
        }
    };
}

// ----- list parameters -----

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<&str>) -> Self {
        Self(
            url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// First value of `name`, matched case-insensitively (as ASP.NET binds query parameters).
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn page(&self, errors: &mut Vec<InvalidParam>) -> (u64, u64) {
        let offset = match self.get("offset") {
            None => 0,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n as u64,
                _ => {
                    errors.push(invalid_param(
                        "offset",
                        format!("The value '{v}' is not valid. offset must be an integer >= 0."),
                    ));
                    0
                }
            },
        };
        let limit = match self.get("limit") {
            None => model::LIST_LIMIT_DEFAULT,
            Some(v) => match v.trim().parse::<i64>() {
                Ok(n) if (1..=model::LIST_LIMIT_MAX as i64).contains(&n) => n as u64,
                _ => {
                    errors.push(invalid_param(
                        "limit",
                        format!(
                            "The value '{v}' is not valid. limit must be between 1 and {}.",
                            model::LIST_LIMIT_MAX
                        ),
                    ));
                    model::LIST_LIMIT_DEFAULT
                }
            },
        };
        (offset, limit)
    }

    fn boolean(&self, name: &str, errors: &mut Vec<InvalidParam>) -> Option<bool> {
        let v = self.get(name)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                errors.push(invalid_param(
                    name,
                    format!("The value '{v}' is not valid for {name}. Use true or false."),
                ));
                None
            }
        }
    }

    fn choice(
        &self,
        name: &str,
        allowed: &[&'static str],
        errors: &mut Vec<InvalidParam>,
    ) -> Option<&'static str> {
        let v = self.get(name)?;
        let found = allowed
            .iter()
            .find(|a| a.eq_ignore_ascii_case(v.trim()))
            .copied();
        if found.is_none() {
            errors.push(invalid_param(
                name,
                format!(
                    "The value '{v}' is not valid for {name}. Allowed: {}.",
                    allowed.join(", ")
                ),
            ));
        }
        found
    }
}

fn invalid_param(name: &str, reason: String) -> InvalidParam {
    InvalidParam {
        name: name.to_owned(),
        reason,
    }
}

fn bad_request(app: &Shared, errors: Vec<InvalidParam>) -> Response {
    problem(
        app,
        400,
        Some("See invalidParams for details."),
        Some("VALIDATION_ERROR"),
        errors,
    )
}

fn links(path: &str, offset: u64, limit: u64) -> Value {
    json!({ "self": format!("{path}?offset={offset}&limit={limit}") })
}

/// Creation time of the flow at `index`: a fixed date, so listings are deterministic.
fn flow_created_at(index: usize) -> DateTime<Utc> {
    DateTime::from_timestamp(1_736_154_000 + index as i64 * 86_400, 0).unwrap_or_default()
}

// ----- handlers -----

async fn list_flows(
    State(app): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let (mut st, now) = app.current();
    let client = gate!(app, st, now, headers, Endpoint::ListFlows);
    let query = Query::parse(raw.as_deref());
    let mut errors = Vec::new();
    let (offset, limit) = query.page(&mut errors);
    let search = query.get("searchTerm").map(|s| s.trim().to_lowercase());
    let is_latest = query.boolean("IsLatest", &mut errors);
    let is_published = query.boolean("IsPublished", &mut errors);
    let is_draft = query.boolean("IsDraft", &mut errors);
    let all_versions = query.boolean("AllVersions", &mut errors);
    let version = query
        .get("Version")
        .and_then(|v| match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                errors.push(invalid_param(
                    "Version",
                    format!("The value '{v}' is not valid. Version must be an integer >= 1."),
                ));
                None
            }
        });
    let order_by = query.choice(
        "orderBy",
        &["Name", "Description", "CreatedAt"],
        &mut errors,
    );
    let sort_by = query.choice("sortBy", &["Ascending", "Descending"], &mut errors);
    if !errors.is_empty() {
        let response = bad_request(&app, errors);
        st.count_status(&client, 400);
        return response;
    }

    // Without AllVersions (or an explicit version filter) only the latest versions are listed.
    let latest_only = all_versions != Some(true) && version.is_none() && is_latest.is_none();
    let mut flows: Vec<Flow> = st
        .flows
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            search.as_ref().is_none_or(|s| {
                f.name.to_lowercase().contains(s) || f.description.to_lowercase().contains(s)
            }) && is_latest.is_none_or(|v| f.is_latest == v)
                && is_published.is_none_or(|v| f.is_published == v)
                && is_draft.is_none_or(|v| f.is_published != v)
                && version.is_none_or(|v| f.version == v)
                && (!latest_only || f.is_latest)
        })
        .map(|(i, f)| Flow::new(f, flow_created_at(i)))
        .collect();
    match order_by.unwrap_or("Name") {
        "Description" => flows.sort_by(|a, b| a.description.cmp(&b.description)),
        "CreatedAt" => flows.sort_by_key(|f| f.created_at),
        _ => flows.sort_by(|a, b| a.name.cmp(&b.name).then(a.version.cmp(&b.version))),
    }
    if sort_by == Some("Descending") {
        flows.reverse();
    }
    let total_count = flows.len() as u64;
    let items = flows
        .into_iter()
        .skip(offset.min(usize::MAX as u64) as usize)
        .take(limit as usize)
        .collect();
    let response = answer(
        &st,
        Endpoint::ListFlows,
        Holds::Flows,
        200,
        &Page {
            items,
            total_count,
            offset,
            limit,
            links: links("/api/flows", offset, limit),
        },
    );
    st.count_status(&client, 200);
    response
}

async fn list_instances(
    State(app): State<Arc<Shared>>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let (response, due) = {
        let (mut st, now) = app.current();
        let client = gate!(app, st, now, headers, Endpoint::ListInstances);
        let mut errors = Vec::new();
        let (offset, limit) = Query::parse(raw.as_deref()).page(&mut errors);
        if !errors.is_empty() {
            st.count_status(&client, 400);
            return bad_request(&app, errors);
        }
        if st.flow(&flow_id).is_none() {
            st.count_status(&client, 404);
            return problem(
                &app,
                404,
                Some(model::FLOW_NOT_FOUND),
                Some("FLOW_NOT_FOUND"),
                Vec::new(),
            );
        }
        let behaviours = st.behaviours.of_flow(&flow_id);
        // Drawn before the list borrows the state.
        let shuffle_seed = (behaviours.list_order == ListOrder::Shuffled)
            .then(|| st.behaviour_rng().random::<u64>());
        let handles = st.live_of_flow(&flow_id, now);
        let mut live: Vec<&Instance> = handles
            .into_iter()
            .filter_map(|i| st.instances.at(i))
            .collect();
        match behaviours.list_order {
            ListOrder::NewestFirst => live.reverse(),
            ListOrder::OldestFirst => {}
            ListOrder::UpdatedAtNewestFirst => {
                live.sort_by_key(|i| std::cmp::Reverse(i.updated_at))
            }
            ListOrder::UpdatedAtOldestFirst => live.sort_by_key(|i| i.updated_at),
            ListOrder::Shuffled => {
                let seed = shuffle_seed.unwrap_or_default();
                live.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            }
        }
        let total_count = live.len() as u64;
        let items: Vec<InstanceBody> = live
            .iter()
            .skip(offset.min(usize::MAX as u64) as usize)
            .take(limit as usize)
            .map(|i| {
                let behaviours = if st.instance_behaviours.is_empty() {
                    behaviours.clone()
                } else {
                    st.behaviours_of(i)
                };
                InstanceBody::new(i, &behaviours, Shown::ListItem, now)
            })
            .collect();
        let response = answer(
            &st,
            Endpoint::ListInstances,
            Holds::Instances,
            200,
            &Page {
                items,
                total_count,
                offset,
                limit,
                links: links(&format!("/api/flows/{flow_id}/instances"), offset, limit),
            },
        );
        let latency_micros = st
            .service
            .list_delay_micros_per_instance
            .saturating_mul(total_count);
        if shuffle_seed.is_some() {
            st.usage.behaviours.shuffled_lists += 1;
        }
        st.count_list_latency(&client, latency_micros);
        st.count_status(&client, 200);
        (
            response,
            now + chrono::Duration::microseconds(latency_micros.min(i64::MAX as u64) as i64),
        )
    };
    // The real service slows down with the flow's instance count: the answer leaves once the
    // simulated clock has moved that far (at once when it is frozen); the lock is not held here.
    app.wait_until(due).await;
    response
}

async fn start_instance(
    State(app): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    Path(flow_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut st, now) = app.current();
    let client = gate!(app, st, now, headers, Endpoint::Start);
    let start = match parse_start_body(&headers, &body) {
        Ok(start) => start,
        Err((status, errors)) => {
            st.count_status(&client, status);
            return if status == 415 {
                problem(
                    &app,
                    415,
                    Some("Content-Type must be application/json"),
                    None,
                    Vec::new(),
                )
            } else {
                bad_request(&app, errors)
            };
        }
    };
    if st.flow(&flow_id).is_none() {
        st.count_status(&client, 404);
        return problem(
            &app,
            404,
            Some(model::FLOW_NOT_FOUND),
            Some("FLOW_NOT_FOUND"),
            Vec::new(),
        );
    }
    let mut jobs = Vec::new();
    let expires = crate::state::later(now, start.workflow_url_ttl_secs);
    let Some(index) = st.start_instance(
        now,
        &flow_id,
        &client,
        &start.input,
        expires.timestamp(),
        &mut jobs,
    ) else {
        st.count_status(&client, 404);
        return problem(&app, 404, Some(model::FLOW_NOT_FOUND), None, Vec::new());
    };
    st.bill_start(&client, index);
    let lost_rate = st.faults.lost_start_rate;
    let lost = st.draw(lost_rate);
    let Some(instance) = st.instances.at(index) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let behaviours = st.behaviours_of(instance);
    let mut body = InstanceBody::new(instance, &behaviours, Shown::Alone, now);
    body.workflow_url = Some(instance.workflow_url(&app.base_url));
    let response = answer(&st, Endpoint::Start, Holds::Instances, 201, &body);
    if lost {
        // Committed and billed, but the client will never see an answer.
        st.usage.faults.lost_starts += 1;
        connection.sever();
    } else {
        st.count_status(&client, 201);
    }
    drop(st);
    app.send_webhooks(jobs);
    app.wake();
    response
}

struct StartBody {
    input: Value,
    workflow_url_ttl_secs: u64,
}

fn parse_start_body(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<StartBody, (u16, Vec<InvalidParam>)> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let mime = v.split(';').next().unwrap_or("").trim();
            mime.eq_ignore_ascii_case("application/json")
                || mime.to_ascii_lowercase().ends_with("+json")
        });
    if !json_type {
        return Err((415, Vec::new()));
    }
    let one = |name: &str, reason: &str| (400, vec![invalid_param(name, reason.to_owned())]);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(one("body", "A non-empty request body is required."));
    }
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| one("body", &format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(one("body", "The request body must be a JSON object."));
    };
    let mut errors = Vec::new();
    let input = match map.get("input") {
        None | Some(Value::Null) => Value::Null,
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => {
            errors.push(invalid_param(
                "input",
                "input must be a JSON object or null.".to_owned(),
            ));
            Value::Null
        }
    };
    let ttl = match map.get("workflowUrlTtl") {
        None | Some(Value::Null) => model::WORKFLOW_URL_TTL_SECS_DEFAULT,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=model::WORKFLOW_URL_TTL_SECS_MAX).contains(&n) => n,
            _ => {
                errors.push(invalid_param(
                    "workflowUrlTtl",
                    format!(
                        "workflowUrlTtl must be an integer number of seconds between 1 and {}.",
                        model::WORKFLOW_URL_TTL_SECS_MAX
                    ),
                ));
                0
            }
        },
    };
    if errors.is_empty() {
        Ok(StartBody {
            input,
            workflow_url_ttl_secs: ttl,
        })
    } else {
        Err((400, errors))
    }
}

async fn get_instance(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (mut st, now) = app.current();
    let client = gate!(app, st, now, headers, Endpoint::GetInstance);
    let behaviours = st.instance(&instance_id, now).map(|i| st.behaviours_of(i));
    let response = match behaviours {
        Some(b) if st.draw_behaviour(b.not_found_rate) => {
            st.usage.behaviours.spurious_not_found += 1;
            instance_not_found(&app)
        }
        Some(b) => match st.instance(&instance_id, now) {
            Some(instance) => {
                let body = InstanceBody::new(instance, &b, Shown::Alone, now);
                answer(&st, Endpoint::GetInstance, Holds::Instances, 200, &body)
            }
            None => instance_not_found(&app),
        },
        None => instance_not_found(&app),
    };
    st.count_status(&client, response.status().as_u16());
    response
}

fn instance_not_found(app: &Shared) -> Response {
    problem(
        app,
        404,
        Some(model::INSTANCE_NOT_FOUND),
        Some("INSTANCE_NOT_FOUND"),
        Vec::new(),
    )
}

async fn activities(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (mut st, now) = app.current();
    let client = gate!(app, st, now, headers, Endpoint::Activities);
    let spurious = match st.instance(&instance_id, now).map(|i| st.behaviours_of(i)) {
        Some(b) => st.draw_behaviour(b.activities_not_found_rate),
        None => false,
    };
    if spurious {
        st.usage.behaviours.spurious_not_found += 1;
    }
    let response = match st.instance(&instance_id, now).filter(|_| !spurious) {
        Some(instance) => {
            let items: Vec<Activity> = instance
                .activities
                .iter()
                .map(|a| Activity::new(instance, a))
                .collect();
            let count = items.len() as u64;
            answer(
                &st,
                Endpoint::Activities,
                Holds::Activities,
                200,
                &Page {
                    items,
                    total_count: count,
                    offset: 0,
                    limit: count,
                    links: json!({ "self": format!("/api/instances/{instance_id}/activities") }),
                },
            )
        }
        None => instance_not_found(&app),
    };
    st.count_status(&client, response.status().as_u16());
    response
}

/// `GET` (and `HEAD`) `/api/instances/{id}/result-file`.
///
/// A `HEAD` passes the same gate and consumes the same units as a `GET` (the gateway counts
/// requests, not bytes), answers the same status and headers, and is neither a billed download
/// nor bytes served: it is counted as `resultFileHeads`. [model]
async fn result_file(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let head = method == Method::HEAD;
    let (client, seed, size, accept_ranges, behaviours) = {
        let (mut st, now) = app.current();
        let client = gate!(app, st, now, headers, Endpoint::ResultFile);
        let Some(instance) = st.instance(&instance_id, now) else {
            st.count_status(&client, 404);
            return instance_not_found(&app);
        };
        let behaviours = st.behaviours_of(instance);
        let finished = instance.status == "Finished";
        let size = instance.result_file_bytes();
        if st.draw_behaviour(behaviours.result_file_throttle_rate) {
            st.usage.behaviours.result_file_throttled += 1;
            st.count_throttled(&client);
            st.count_status(&client, 429);
            let mut response = problem(
                &app,
                429,
                Some("Rate limit exceeded"),
                Some("TOO_MANY_REQUESTS"),
                Vec::new(),
            );
            let retry_after = behaviours.result_file_throttle_retry_after_secs;
            if retry_after > 0 {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            return response;
        }
        if !finished {
            st.count_status(&client, 409);
            return problem(
                &app,
                409,
                Some(model::RESULT_NOT_READY),
                Some("RESULT_NOT_READY"),
                Vec::new(),
            );
        }
        if st.draw_behaviour(behaviours.result_file_html_rate) {
            st.usage.behaviours.html_result_files += 1;
            st.count_status(&client, 200);
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                model::RESULT_FILE_HTML_PAGE,
            )
                .into_response();
        }
        (client, st.seed, size, st.service.accept_ranges, behaviours)
    };
    // Laying out the file takes a millisecond or two: not under the lock.
    let file = ResultFile::new(seed, &instance_id, size);
    let len = file.len();
    let start = if accept_ranges {
        match range_start(&headers) {
            Some(start) if start >= len => {
                app.lock().count_status(&client, 416);
                let mut response = problem(&app, 416, None, None, Vec::new());
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                return response;
            }
            Some(start) => start,
            None => 0,
        }
    } else {
        0
    };
    let status = if start > 0 { 206 } else { 200 };
    let body = if head {
        let mut st = app.lock();
        st.count_status(&client, status);
        st.count_result_file_head(&client);
        Body::empty()
    } else {
        let (cut_at, slow_rate) = {
            let mut st = app.lock();
            st.count_status(&client, status);
            st.count_download(&client);
            let faults = st.faults.clone();
            let cut = st
                .draw(faults.cut_body_rate)
                .then_some((len as f64 * faults.cut_body_at_fraction) as u64);
            let slow = st
                .draw(faults.slow_body_rate)
                .then_some(faults.slow_body_bytes_per_sec);
            st.usage.faults.cut_bodies += u64::from(cut.is_some());
            st.usage.faults.slow_bodies += u64::from(slow.is_some());
            (cut, slow)
        };
        body_stream(app.clone(), client, file, start, cut_at, slow_rate)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = response.headers_mut();
    let content_type = match behaviours.result_file_content_type {
        ResultContentType::Zip => Some("application/zip"),
        ResultContentType::OctetStream => Some("application/octet-stream"),
        ResultContentType::None => None,
    };
    if let Some(content_type) = content_type {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    if behaviours.result_file_content_length {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len - start));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{instance_id}.zip\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if accept_ranges {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if start > 0
            && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", len - 1))
        {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    response
}

/// `N` of a `Range: bytes=N-` header; any other form is ignored (the full file is sent).
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::RANGE)?.to_str().ok()?.trim();
    let spec = value.strip_prefix("bytes=")?.trim();
    let start = spec.strip_suffix('-')?;
    start.trim().parse().ok()
}

struct Streaming {
    app: Arc<Shared>,
    client: Arc<str>,
    pieces: crate::result_file::Pieces,
    pending: Option<Bytes>,
    sent: u64,
    cut_at: Option<u64>,
    slow_rate: Option<u64>,
    started: Instant,
    done: bool,
    written: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// A piece of a body that counts itself as served when hyper releases it, and can tell someone.
///
/// hyper keeps a piece it was given until the piece is written to the socket (it queues pieces
/// and writes them vectored, then drops them), or until the connection fails. So `bytesServed`
/// counts bytes written to the socket, except that a failed connection drops the piece in
/// flight (at most one piece, 1 MiB) unwritten and it still counts.
struct Released {
    data: Bytes,
    app: Arc<Shared>,
    client: Arc<str>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl AsRef<[u8]> for Released {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        // Never dropped under the state lock: pieces only exist between the stream and hyper.
        self.app
            .lock()
            .count_bytes(&self.client, self.data.len() as u64);
        if let Some(done) = self.done.take() {
            let _ = done.send(());
        }
    }
}

/// Largest piece of a slow body, so the pace is smooth.
const SLOW_PIECE_BYTES: usize = 16 * 1024;

fn body_stream(
    app: Arc<Shared>,
    client: String,
    file: ResultFile,
    start: u64,
    cut_at: Option<u64>,
    slow_rate: Option<u64>,
) -> Body {
    let state = Streaming {
        app,
        client: Arc::from(client),
        pieces: file.pieces_from(start),
        pending: None,
        sent: 0,
        cut_at: cut_at.map(|c| c.saturating_sub(start)),
        slow_rate,
        started: Instant::now(),
        done: false,
        written: None,
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        let mut piece = match s.pending.take() {
            Some(p) => p,
            None => s.pieces.next()?,
        };
        let mut signal = None;
        if s.slow_rate.is_some() && piece.len() > SLOW_PIECE_BYTES {
            s.pending = Some(piece.split_off(SLOW_PIECE_BYTES));
        }
        if let Some(cut) = s.cut_at {
            if s.sent >= cut {
                // Fail only once hyper has written (and dropped) the last piece before the cut, so
                // the client gets exactly `cut` bytes and then a connection abort.
                if let Some(written) = s.written.take() {
                    let _ = written.await;
                }
                s.done = true;
                let error = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "body cut by fault injection",
                );
                return Some((Err(error), s));
            }
            let room = cut - s.sent;
            if piece.len() as u64 >= room {
                piece.truncate(room as usize);
                s.pending = None;
                let (done, written) = tokio::sync::oneshot::channel();
                s.written = Some(written);
                signal = Some(done);
            }
        }
        if let Some(rate) = s.slow_rate {
            let due = Duration::from_secs_f64((s.sent + piece.len() as u64) as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(s.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        s.sent += piece.len() as u64;
        let piece = Bytes::from_owner(Released {
            data: piece,
            app: s.app.clone(),
            client: s.client.clone(),
            done: signal,
        });
        Some((Ok::<Bytes, std::io::Error>(piece), s))
    })
    .boxed();
    Body::from_stream(stream)
}

/// `GET /mint/run/{id}`: the page a start's `workflowUrl` opens, a stand-in for Mint's end-user
/// UI. No token, no units, not an API request: it says which step the instance waits at (the end
/// user's actions are driven through the admin API), `410` once the link's `workflowUrlTtl` has
/// passed, `404` for an unknown or deleted instance. Views are counted as `workflowPageViews`.
async fn workflow_page(
    State(app): State<Arc<Shared>>,
    Path(instance_id): Path<String>,
) -> Response {
    let (mut st, now) = app.current();
    let page = |status: StatusCode, title: &str, text: &str| {
        let (title, text) = (escape_html(title), escape_html(text));
        let html = format!(
            "<!DOCTYPE html>\n<html>\n<head><title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n<p>{text}</p>\n</body>\n</html>\n"
        );
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response()
    };
    let Some(instance) = st.instance(&instance_id, now) else {
        return page(
            StatusCode::NOT_FOUND,
            "Link not valid",
            "This link does not lead to an identification in progress.",
        );
    };
    if instance
        .workflow_url_expires
        .is_some_and(|expires| now.timestamp() >= expires)
    {
        return page(StatusCode::GONE, "Link expired", "This link has expired.");
    }
    let waiting = instance
        .activities
        .last()
        .filter(|a| a.completed_at.is_none())
        .and_then(|a| {
            instance
                .step_of(a)
                .map(|step| (step.name().to_owned(), a.status))
        });
    let text = match (instance.status.as_ref(), waiting) {
        ("Running", Some((step, crate::state::ActivityStatus::Suspended))) => {
            format!("Step \u{201c}{step}\u{201d} is waiting for you.")
        }
        ("Running", Some((step, _))) => format!("Step \u{201c}{step}\u{201d} is in progress."),
        ("Running", None) => "In progress.".to_owned(),
        (status, _) => format!("This identification is over ({status})."),
    };
    let title = format!("{} ({})", instance.flow.name, instance.id);
    st.usage.workflow_page_views += 1;
    page(StatusCode::OK, &title, &text)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(crate) async fn not_found(State(app): State<Arc<Shared>>) -> Response {
    problem(&app, 404, Some("No such resource"), None, Vec::new())
}
