//! The simulator's own wire types of the Mint API (never shared with mint-client, so a misspelt
//! field on either side fails a test instead of passing silently).
//!
//! Every object carries a couple of fields the contract does not list (`accountId`, `etag`,
//! `_links`, ...): clients must ignore unknown fields.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

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
    pub finished_at: Option<DateTime<Utc>>,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow_url: Option<String>,
    // Extra fields clients must ignore.
    pub account_id: &'static str,
    pub etag: String,
}

impl InstanceBody {
    pub fn new(instance: &Instance) -> Self {
        Self {
            id: instance.id.clone(),
            flow_id: instance.flow_id.clone(),
            definition_id: instance.definition_id.clone(),
            status: instance.status.clone(),
            created_at: instance.created_at,
            updated_at: instance.updated_at,
            finished_at: instance.finished_at,
            input: instance.input.clone(),
            output: instance.output.clone(),
            error: instance.error.clone(),
            workflow_url: None,
            account_id: model::ACCOUNT_ID,
            etag: format!("W/\"{}\"", instance.updated_at.timestamp_micros()),
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
    pub fn new(activity: &ActivityRecord) -> Self {
        Self {
            id: activity.id.clone(),
            name: activity.name.clone(),
            activity_type: activity.activity_type.clone(),
            status: activity.status,
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
