//! Wire types of the admin API (`/_sim/...`), shared by its routes and [`super::AdminClient`].
//! They belong to the simulator alone: mint-client has its own types for the Mint API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Ground truth counters, `GET /_sim/usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Usage {
    /// Per API client id.
    pub clients: BTreeMap<String, ClientUsage>,
    /// Webhook deliveries (HTTP request steps).
    pub webhooks: WebhookUsage,
    /// Answers changed by the `[behaviours]` section.
    pub behaviours: BehaviourUsage,
    /// Faults injected.
    pub faults: FaultUsage,
    /// Instances seeded through the admin API (never billed), per flow id.
    pub seeded: BTreeMap<String, u64>,
    /// Pages served at `workflowUrl`s (`GET /mint/run/{id}`, the end user's link).
    pub workflow_page_views: u64,
}

/// Faults injected, for all clients together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FaultUsage {
    /// 5xx answers injected (`serverErrorRate`); any other 5xx would be a simulator bug.
    pub server_errors: u64,
    /// Starts committed and billed whose answer was never sent (`lostStartRate`).
    pub lost_starts: u64,
    /// Result-file bodies cut part way (`cutBodyRate`).
    pub cut_bodies: u64,
    /// Result-file bodies sent slowly (`slowBodyRate`).
    pub slow_bodies: u64,
}

/// What one API client did and owes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClientUsage {
    /// Requests attributed to the client (token endpoint included), whatever their answer.
    pub requests: u64,
    /// Rate units consumed (admitted API requests only).
    pub units: u64,
    /// Requests per endpoint key (`token`, `list_flows`, `list_instances`, `start`,
    /// `get_instance`, `activities`, `result_file`).
    pub requests_by_endpoint: BTreeMap<String, u64>,
    /// Units per endpoint key.
    pub units_by_endpoint: BTreeMap<String, u64>,
    /// 429s served (budget, burst and storm).
    pub throttled: u64,
    /// Starts committed and billed (including those whose response was lost).
    pub starts_billed: u64,
    /// Money owed for starts, in cents.
    pub cents_owed: u64,
    /// Result-file downloads counted against the billing quota (each 200/206 served).
    pub downloads_billed: u64,
    /// Result-file body bytes handed to the connection (see the README for precisely when a
    /// byte counts).
    pub bytes_served: u64,
    /// `HEAD` requests on result files: units consumed, no download billed, no bytes served.
    pub result_file_heads: u64,
    /// Simulated time the client's instance listings took, microseconds
    /// (`listDelayMicrosPerInstance` times the flow's instance count, per listing).
    pub list_latency_micros: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Answers per HTTP status code.
    pub status_counts: BTreeMap<u16, u64>,
}

/// What happened to webhooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WebhookUsage {
    /// POSTs attempted (a duplicate counts twice).
    pub attempted: u64,
    /// POSTs answered with 2xx.
    pub delivered: u64,
    /// Webhooks never sent (fault).
    pub dropped: u64,
    /// Webhooks sent a second time (fault).
    pub duplicated: u64,
    /// Webhooks sent late (fault).
    pub delayed: u64,
    /// Webhooks held back so that they arrive after a later one (fault).
    pub reordered: u64,
    /// POSTs that failed: no connection, timeout or a non-2xx answer.
    pub failed: u64,
}

/// Answers changed by the `[behaviours]` section, for all clients together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BehaviourUsage {
    /// `404`s answered for instances that exist (`notFoundRate`, `activitiesNotFoundRate`).
    pub spurious_not_found: u64,
    /// Result files answered `200 text/html` with an error page (`resultFileHtmlRate`).
    pub html_result_files: u64,
    /// Result-file `429`s whatever the budget (`resultFileThrottleRate`).
    pub result_file_throttled: u64,
    /// Instance lists answered in a fresh shuffled order (`listOrder = "shuffled"`).
    pub shuffled_lists: u64,
}

/// `GET /_sim/instances/{id}/behaviours`: the instance's overrides and what is in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBehaviours {
    /// Overrides set on this instance (`PUT /_sim/instances/{id}/behaviours`).
    pub overrides: crate::behaviours::BehaviourOverrides,
    /// The behaviours in force: instance over flow over every flow.
    pub effective: crate::behaviours::FlowBehaviours,
}

/// What the simulated end user does at a waiting user step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserStepAction {
    /// The user finishes the step; the flow goes on.
    Complete,
    /// The user gives up; the instance becomes `Faulted` now.
    Abandon,
}

/// Body of `POST /_sim/instances/{id}/user-step`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserStepRequest {
    /// `complete` or `abandon`.
    pub action: UserStepAction,
}

/// One instance as the simulator knows it (`GET /_sim/instances`), deleted ones included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminInstance {
    /// Instance id.
    pub id: String,
    /// Flow id.
    pub flow_id: String,
    /// Definition id of the flow.
    pub definition_id: String,
    /// The API client that started it (`(seeded)` for instances seeded through the admin API).
    pub client_id: String,
    /// Status as the API reports it.
    pub status: String,
    /// The start body's `input`.
    pub input: serde_json::Value,
    /// Output, once finished.
    pub output: Option<serde_json::Value>,
    /// Error, once faulted.
    pub error: Option<serde_json::Value>,
    /// When it was started.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it ended (any terminal status).
    pub finished_at: Option<DateTime<Utc>>,
    /// When retention deleted it (it is 404 from then on).
    pub deleted_at: Option<DateTime<Utc>>,
    /// Size of its result file in bytes.
    pub result_file_bytes: u64,
    /// Created by the admin API's seeding (never billed, never started through the API).
    #[serde(default)]
    pub seeded: bool,
    /// The steps started so far.
    pub activities: Vec<AdminActivity>,
}

/// One started step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminActivity {
    /// Step name.
    pub name: String,
    /// Activity type (`userTask`, `httpRequest`, ...).
    pub activity_type: String,
    /// `Executing`, `Suspended`, `Completed` or `Faulted`.
    pub status: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub completed_at: Option<DateTime<Utc>>,
}

/// `GET /_sim/clock` and the answer of `POST /_sim/clock/advance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockState {
    /// Simulated now.
    pub now: DateTime<Utc>,
    /// Simulated seconds per real second.
    pub time_scale: f64,
}

/// Body of `POST /_sim/clock/advance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvanceRequest {
    /// Simulated seconds to move forward (fractions allowed).
    pub seconds: f64,
}

/// Body of `PUT /_sim/clock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimeScaleRequest {
    /// Simulated seconds per real second (0 freezes the clock).
    pub time_scale: f64,
}

/// Body of `PUT /_sim/instances/{id}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusRequest {
    /// Any status string, known or not.
    pub status: String,
}

/// Answer of `GET /_sim/instances/{id}/result-sha256`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultDigest {
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// Its length in bytes.
    pub size: u64,
}

/// Body of `POST /_sim/flows/{flowId}/instances`: seed instances directly, e.g. to fill a flow
/// for listing and reconciliation benchmarks. Seeded instances are never billed, are attributed
/// to the client `(seeded)`, are counted under `seeded` in the usage and carry `seeded: true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SeedInstances {
    /// How many (ignored when `instances` is given).
    pub count: u64,
    /// Status of every instance: absent or `Running`: its steps run from now; otherwise forced
    /// (`Finished`, `Faulted`, `Cancelled`, or any string, which stops its lifecycle).
    pub status: Option<String>,
    /// `createdAt` of the first instance (default: the simulated now).
    pub created_at: Option<DateTime<Utc>>,
    /// Milliseconds between successive `createdAt`s.
    pub interval_millis: u64,
    /// For terminal statuses: `finishedAt` is `createdAt` plus this.
    pub duration_secs: u64,
    /// `input` of every instance; in its strings `{{n}}` becomes the instance's number in the
    /// batch (from 0).
    pub input: Option<serde_json::Value>,
    /// Instances spelled out one by one (then `count`, `createdAt`, `intervalMillis` and `input`
    /// are not used; `status` and `durationSecs` are the defaults).
    pub instances: Vec<SeedInstance>,
    /// Leave the ids out of the answer (for very large batches).
    pub omit_ids: bool,
}

/// One instance of [`SeedInstances::instances`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SeedInstance {
    /// Its `createdAt` (default: the simulated now).
    pub created_at: Option<DateTime<Utc>>,
    /// Its `input`.
    pub input: Option<serde_json::Value>,
    /// Its status (default: the batch's).
    pub status: Option<String>,
    /// Its `finishedAt` for a terminal status (default: `createdAt` plus the batch's
    /// `durationSecs`).
    pub finished_at: Option<DateTime<Utc>>,
}

/// Answer of `POST /_sim/flows/{flowId}/instances`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedInstances {
    /// How many were created.
    #[serde(default)]
    pub count: u64,
    /// Their ids in creation order (empty with `omitIds`).
    pub ids: Vec<String>,
}

/// `GET /_sim/starts`: the starts billed through the API, by correlation id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Starts {
    /// The start input's key read as the correlation id (`service.correlationInputKey`).
    pub correlation_input_key: String,
    /// Starts billed in all.
    pub billed: u64,
    /// Ids of the instances started with each correlation id, in start order (more than one:
    /// billed more than once).
    pub by_correlation_id: BTreeMap<String, Vec<String>>,
    /// Ids of the instances started without one.
    pub without_correlation_id: Vec<String>,
}

/// `GET /_sim/results`: the result file every retained `Finished` instance would serve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Results {
    /// By instance id.
    pub instances: BTreeMap<String, ResultDigest>,
}

/// Error body of the admin API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminError {
    /// What went wrong.
    pub error: String,
}
