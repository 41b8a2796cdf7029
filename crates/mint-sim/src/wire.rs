//! The simulator's own wire types of the Mint API (never shared with mint-client, so a misspelt
//! field on either side fails a test instead of passing silently).
//!
//! Every object carries a couple of fields the contract does not list (`accountId`, `etag`,
//! `_links`, ...): clients must ignore unknown fields.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use crate::behaviours::{ContractChange, FinishedAt, FlowBehaviours, ListField};
use crate::config::FlowConfig;
use crate::model;
use crate::state::{ActivityRecord, Instance};

/// A flow.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    pub id: String,
    pub definition_id: String,
    pub name: String,
    pub description: String,
    pub version: u32,
    pub is_latest: bool,
    pub is_published: bool,
    pub created_at: DateTime<Utc>,
    // Extra fields clients must ignore.
    pub account_id: &'static str,
    pub tags: Vec<String>,
}

impl Flow {
    pub fn new(flow: &FlowConfig, created_at: DateTime<Utc>) -> Self {
        Self {
            id: flow.id.clone(),
            definition_id: flow.definition_id.clone(),
            name: flow.name.clone(),
            description: flow.description.clone(),
            version: flow.version,
            is_latest: flow.is_latest,
            is_published: flow.is_published,
            created_at,
            account_id: model::ACCOUNT_ID,
            tags: vec!["kyc".to_owned()],
        }
    }
}

/// An instance (and, with `workflowUrl`, the answer of a start).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceBody {
    pub id: String,
    pub flow_id: String,
    pub definition_id: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// A JSON value, not a date: the `finishedAt` behaviour can make it anything.
    pub finished_at: Value,
    /// `None` only when a list leaves it out (`listOmits`); otherwise a value or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// As `input`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    pub error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_url: Option<String>,
    // Extra fields clients must ignore.
    pub account_id: &'static str,
    pub etag: String,
}

/// Where an instance body is shown: list items may leave fields out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// `GET /api/instances/{id}` and the start's answer.
    Alone,
    /// An item of `GET /api/flows/{flowId}/instances`.
    ListItem,
}

impl InstanceBody {
    /// The body of `instance` under `behaviours`, at simulated `now`.
    pub fn new(
        instance: &Instance,
        behaviours: &FlowBehaviours,
        shown: Shown,
        now: DateTime<Utc>,
    ) -> Self {
        let omitted = |field| shown == Shown::ListItem && behaviours.list_omits.contains(&field);
        Self {
            id: instance.id.to_string(),
            flow_id: instance.flow_id().to_owned(),
            definition_id: instance.definition_id().to_owned(),
            status: instance.status.to_string(),
            created_at: instance.created_at,
            updated_at: instance.updated_at,
            finished_at: finished_at(instance, behaviours.finished_at, now),
            input: (!omitted(ListField::Input)).then(|| instance.input()),
            output: (!omitted(ListField::Output)).then(|| instance.output().unwrap_or(Value::Null)),
            error: instance.error(),
            workflow_url: None,
            account_id: model::ACCOUNT_ID,
            etag: format!("W/\"{}\"", instance.updated_at.timestamp_micros()),
        }
    }
}

/// `finishedAt` as the behaviour wants it; `null` while the instance has not ended.
fn finished_at(instance: &Instance, mode: FinishedAt, now: DateTime<Utc>) -> Value {
    let Some(real) = instance.finished_at else {
        return Value::Null;
    };
    let at = |t: DateTime<Utc>| serde_json::to_value(t).unwrap_or(Value::Null);
    match mode {
        FinishedAt::Real => at(real),
        FinishedAt::Year1 => Value::from(model::FINISHED_AT_YEAR_1),
        FinishedAt::ChronoMax => Value::from(model::FINISHED_AT_CHRONO_MAX),
        FinishedAt::Future => at(now + chrono::Duration::days(365)),
        FinishedAt::BeforeCreatedAt => at(instance.created_at - chrono::Duration::days(1)),
        FinishedAt::Unparseable => Value::from(model::FINISHED_AT_UNPARSEABLE),
        FinishedAt::Null => Value::Null,
    }
}

/// Which object an answer holds, for [`reshape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holds {
    /// Flows (no `status`).
    Flows,
    /// Instances.
    Instances,
    /// Activities.
    Activities,
}

/// `body` (an object or a page) with the contract `changes` applied.
pub fn reshape(mut body: Value, changes: &[ContractChange], holds: Holds) -> Value {
    for change in changes {
        match change {
            ContractChange::CreatedAtAsNumber => for_each_object(&mut body, |object| {
                let seconds = object
                    .get("createdAt")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp());
                if let Some(seconds) = seconds {
                    object.insert("createdAt".to_owned(), Value::from(seconds));
                }
            }),
            ContractChange::StatusUnknown => {
                let unknown = match holds {
                    Holds::Flows => continue,
                    Holds::Instances => model::UNKNOWN_INSTANCE_STATUS,
                    Holds::Activities => model::UNKNOWN_ACTIVITY_STATUS,
                };
                for_each_object(&mut body, |object| {
                    if object.contains_key("status") {
                        object.insert("status".to_owned(), Value::from(unknown));
                    }
                });
            }
            ContractChange::TotalCountMissing => {
                if let Some(page) = body.as_object_mut() {
                    page.remove("totalCount");
                }
            }
            ContractChange::BareArray => {
                if let Some(items) = body.get_mut("items").map(Value::take) {
                    body = items;
                }
            }
        }
    }
    body
}

/// Runs `f` on the answer's object, or on each item of a page (or bare array).
fn for_each_object(body: &mut Value, mut f: impl FnMut(&mut serde_json::Map<String, Value>)) {
    let items = match body {
        Value::Array(items) => Some(items),
        Value::Object(object) => match object.get_mut("items") {
            Some(Value::Array(items)) => Some(items),
            _ => {
                f(object);
                None
            }
        },
        _ => None,
    };
    for item in items.into_iter().flatten() {
        if let Value::Object(object) = item {
            f(object);
        }
    }
}

/// One started step.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub activity_type: String,
    pub status: &'static str,
    pub started_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    // Extra fields clients must ignore.
    pub attempt: u32,
    pub metadata: Value,
}

impl Activity {
    pub fn new(instance: &Instance, activity: &ActivityRecord) -> Self {
        let step = instance.step_of(activity);
        Self {
            id: activity.id.to_string(),
            name: step.map_or_else(String::new, |s| s.name().to_owned()),
            activity_type: step.map_or_else(String::new, |s| s.activity_type().to_owned()),
            status: activity.status.as_str(),
            started_at: activity.started_at,
            completed_at: activity.completed_at,
            attempt: 1,
            metadata: Value::Object(Default::default()),
        }
    }
}

/// A page of a list.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total_count: u64,
    pub offset: u64,
    pub limit: u64,
    // Extra field clients must ignore.
    #[serde(rename = "_links")]
    pub links: Value,
}

/// A Signicat error body; every field optional.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub problem_type: Option<&'static str>,
    pub title: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub status: u16,
    pub trace_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub invalid_params: Vec<InvalidParam>,
}

/// One rejected parameter.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidParam {
    pub name: String,
    pub reason: String,
}

/// The token endpoint's success answer.
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: &'static str,
}

/// The token endpoint's error answer.
#[derive(Debug, Serialize)]
pub struct OAuthError {
    pub error: &'static str,
}
