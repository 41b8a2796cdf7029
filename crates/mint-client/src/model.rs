//! Typed Mint models. They ignore unknown fields and keep unknown enum values (`Other(String)`), so a
//! server that grows a field or a status never breaks a running integration.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{DefinitionId, FlowId, InstanceId};
use crate::timestamp::Timestamp;

macro_rules! open_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this client does not know yet, kept verbatim.
            Other(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)+
                    Self::Other(s) => s,
                }
            }

            /// Parses the wire spelling (case-insensitively); anything else becomes `Other`.
            #[allow(clippy::should_implement_trait)] // infallible, unlike `FromStr`
            pub fn parse(s: &str) -> Self {
                $(if s.eq_ignore_ascii_case($wire) { return Self::$variant; })+
                Self::Other(s.to_owned())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // A value of another JSON type (a number, null) is kept in its JSON spelling.
                Ok(match serde_json::Value::deserialize(deserializer)? {
                    serde_json::Value::String(s) => Self::parse(&s),
                    other => Self::Other(other.to_string()),
                })
            }
        }
    };
}

open_enum!(
    /// The status of an instance. `Running` does not say whether it works or waits for the end user;
    /// see [`crate::MintClient::instance_progress`].
    InstanceStatus {
        /// Executing or waiting for the end user.
        Running = "Running",
        /// Done; the result file can be downloaded.
        Finished = "Finished",
        /// Failed; Mint says little more than "Workflow execution failed".
        Faulted = "Faulted",
        /// Cancelled.
        Cancelled = "Cancelled",
    }
);

open_enum!(
    /// The state of one step (activity) of an instance.
    ActivityStatus {
        /// Not started.
        Pending = "Pending",
        /// Being worked on by Mint.
        Executing = "Executing",
        /// Waiting for the end user.
        Suspended = "Suspended",
        /// Done.
        Completed = "Completed",
        /// Failed.
        Faulted = "Faulted",
    }
);

open_enum!(
    /// The kind of a step.
    ActivityType {
        /// An HTTP call made by Mint.
        Http = "http",
        /// A step the end user performs.
        UserTask = "userTask",
        /// An identity verification.
        Verification = "verification",
        /// Document handling.
        Document = "document",
        /// The "send raw HTTP request" step (the webhook).
        HttpRequest = "httpRequest",
    }
);

/// One version of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Flow {
    /// The flow id (what instance calls take).
    pub id: FlowId,
    /// The definition id shared by all versions.
    #[serde(default)]
    pub definition_id: Option<DefinitionId>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Version number.
    #[serde(default)]
    pub version: Option<i64>,
    /// Whether this is the latest version.
    #[serde(default)]
    pub is_latest: Option<bool>,
    /// Whether this version is published.
    #[serde(default)]
    pub is_published: Option<bool>,
    /// Creation time (kept as sent; see [`Timestamp`]).
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

/// The error detail of a faulted instance (Mint usually says only "Workflow execution failed").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceError {
    /// The message, if any.
    #[serde(default)]
    pub message: Option<String>,
    /// Any other fields, kept for logging.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One execution of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// The instance id.
    pub id: InstanceId,
    /// The flow (version) it runs.
    #[serde(default)]
    pub flow_id: Option<FlowId>,
    /// The definition of that flow.
    #[serde(default)]
    pub definition_id: Option<DefinitionId>,
    /// Its status (unknown values kept; a missing status is `Other("")`).
    #[serde(default = "unknown_status")]
    pub status: InstanceStatus,
    /// Start time, as Mint sent it: validate with [`Timestamp::plausible`] before arithmetic.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// Last change, as Mint sent it.
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// End time (finished, faulted or cancelled), as Mint sent it.
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
    /// The input it was started with.
    #[serde(default)]
    pub input: Option<serde_json::Value>,
    /// Its output, once finished.
    #[serde(default)]
    pub output: Option<serde_json::Value>,
    /// Error detail when faulted.
    #[serde(default)]
    pub error: Option<InstanceError>,
    /// The end user's link, if this answer carries one. The contract gives it only in the start
    /// answer (see [`StartedInstance::workflow_url`], which takes it there) [model]; a Mint whose
    /// instance answers carry it too lets a reconciled start recover it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_url: Option<String>,
}

/// One step of an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Step id.
    pub id: String,
    /// Step name, as the flow author wrote it.
    #[serde(default)]
    pub name: Option<String>,
    /// Step kind.
    #[serde(rename = "type", default = "unknown_type")]
    pub activity_type: ActivityType,
    /// Step state (a missing state is `Other("")`).
    #[serde(default = "unknown_activity_status")]
    pub status: ActivityStatus,
    /// When it started, as Mint sent it.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When it completed, as Mint sent it.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
}

fn unknown_type() -> ActivityType {
    ActivityType::Other(String::new())
}

fn unknown_activity_status() -> ActivityStatus {
    ActivityStatus::Other(String::new())
}

fn unknown_status() -> InstanceStatus {
    InstanceStatus::Other(String::new())
}

/// One page of a list endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items exist in total.
    #[serde(default)]
    pub total_count: u64,
    /// The offset of this page.
    #[serde(default)]
    pub offset: u64,
    /// The page size asked for.
    #[serde(default)]
    pub limit: u64,
}

/// `orderBy` of `GET /api/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderBy {
    /// By name.
    Name,
    /// By description.
    Description,
    /// By creation time.
    CreatedAt,
}

/// `sortBy` of `GET /api/flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    /// Ascending.
    Ascending,
    /// Descending.
    Descending,
}

/// Largest page Mint serves.
pub const PAGE_LIMIT_MAX: u32 = 100;

/// The query of `GET /api/flows`. `Default` lists the first page of 100 with Mint's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFlows {
    /// Start offset (≥ 0).
    pub offset: u64,
    /// Page size (1–100); `None` means 100.
    pub limit: Option<u32>,
    /// `searchTerm`.
    pub search_term: Option<String>,
    /// `IsLatest`.
    pub is_latest: Option<bool>,
    /// `IsPublished`.
    pub is_published: Option<bool>,
    /// `IsDraft`.
    pub is_draft: Option<bool>,
    /// `AllVersions`.
    pub all_versions: Option<bool>,
    /// `Version`.
    pub version: Option<i64>,
    /// `orderBy`.
    pub order_by: Option<OrderBy>,
    /// `sortBy`.
    pub sort_by: Option<SortBy>,
}

impl ListFlows {
    pub(crate) fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![
            ("offset", self.offset.to_string()),
            ("limit", self.limit.unwrap_or(PAGE_LIMIT_MAX).to_string()),
        ];
        if let Some(s) = &self.search_term {
            q.push(("searchTerm", s.clone()));
        }
        let flags = [
            ("IsLatest", self.is_latest),
            ("IsPublished", self.is_published),
            ("IsDraft", self.is_draft),
            ("AllVersions", self.all_versions),
        ];
        for (name, value) in flags {
            if let Some(v) = value {
                q.push((name, v.to_string()));
            }
        }
        if let Some(v) = self.version {
            q.push(("Version", v.to_string()));
        }
        if let Some(o) = self.order_by {
            let o = match o {
                OrderBy::Name => "Name",
                OrderBy::Description => "Description",
                OrderBy::CreatedAt => "CreatedAt",
            };
            q.push(("orderBy", o.to_owned()));
        }
        if let Some(s) = self.sort_by {
            let s = match s {
                SortBy::Ascending => "Ascending",
                SortBy::Descending => "Descending",
            };
            q.push(("sortBy", s.to_owned()));
        }
        q
    }
}

/// The body of a start (`POST /api/flows/{flowId}/instances`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartInstance {
    /// The flow's input, or `None` (sent as `null`).
    pub input: Option<serde_json::Value>,
    /// How long the end user's link stays valid (whole seconds on the wire); `None` for Mint's default.
    #[serde(serialize_with = "ser_ttl")]
    pub workflow_url_ttl: Option<Duration>,
}

fn ser_ttl<S: Serializer>(ttl: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match ttl {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// The answer to a start: the new instance and the link for the end user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedInstance {
    /// The new instance.
    #[serde(flatten)]
    pub instance: Instance,
    /// The link the end user opens.
    #[serde(default)]
    pub workflow_url: Option<String>,
}

/// What an instance is doing, derived from its status and (while running) its activities.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Progress {
    /// Mint is working; `step` is the executing step's name, if one is executing.
    Processing {
        /// The executing (or next pending) step.
        step: Option<String>,
    },
    /// The instance waits for the end user at `step`, since `since`.
    WaitingForUser {
        /// The suspended step.
        step: Option<String>,
        /// When that step started waiting, as Mint sent it (validate before use).
        since: Option<Timestamp>,
    },
    /// Done; the result can be downloaded.
    Finished {
        /// When it finished (`finishedAt`, else `updatedAt`), as Mint sent it: validate with
        /// [`Timestamp::plausible`] before use.
        at: Option<Timestamp>,
    },
    /// Failed, with whatever detail Mint gave.
    Faulted {
        /// The error message, if any.
        message: Option<String>,
    },
    /// Cancelled.
    Cancelled,
    /// Gone: the instance was known to this client and now answers 404 (Mint deletes instances 30 days
    /// after they end).
    Expired,
    /// A status this client does not know.
    Unknown {
        /// The status as Mint spelt it.
        status: String,
    },
}

impl Progress {
    /// Classifies an instance and (for `Running`) its activities. Pure, so it is unit-tested.
    pub fn classify(instance: &Instance, activities: &[Activity]) -> Progress {
        match &instance.status {
            InstanceStatus::Finished => Progress::Finished {
                at: instance
                    .finished_at
                    .clone()
                    .or_else(|| instance.updated_at.clone()),
            },
            InstanceStatus::Faulted => Progress::Faulted {
                message: instance.error.as_ref().and_then(|e| e.message.clone()),
            },
            InstanceStatus::Cancelled => Progress::Cancelled,
            InstanceStatus::Other(s) => Progress::Unknown { status: s.clone() },
            InstanceStatus::Running => {
                if let Some(a) = activities
                    .iter()
                    .find(|a| a.status == ActivityStatus::Suspended)
                {
                    return Progress::WaitingForUser {
                        step: a.name.clone().or_else(|| Some(a.id.clone())),
                        since: a.started_at.clone(),
                    };
                }
                let step = activities
                    .iter()
                    .find(|a| a.status == ActivityStatus::Executing)
                    .or_else(|| {
                        activities
                            .iter()
                            .find(|a| matches!(a.status, ActivityStatus::Other(_)))
                    })
                    .or_else(|| {
                        activities
                            .iter()
                            .find(|a| a.status == ActivityStatus::Pending)
                    })
                    .map(|a| a.name.clone().unwrap_or_else(|| a.id.clone()));
                Progress::Processing { step }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn instance(status: &str) -> Instance {
        serde_json::from_value(json!({
            "id": "i-1", "flowId": "f-1", "definitionId": "d-1", "status": status,
            "createdAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T01:00:00Z",
            "error": {"message": "Workflow execution failed", "code": 7},
            "somethingNew": {"nested": true}
        }))
        .unwrap()
    }

    fn activity(name: &str, status: &str) -> Activity {
        serde_json::from_value(json!({
            "id": format!("a-{name}"), "name": name, "type": "userTask", "status": status,
            "startedAt": "2026-01-01T00:10:00Z", "colour": "blue"
        }))
        .unwrap()
    }

    #[test]
    fn the_workflow_url_is_the_start_answers_and_kept_when_an_instance_answer_has_one() {
        let started: StartedInstance = serde_json::from_value(json!({
            "id": "i-1", "status": "Running", "workflowUrl": "https://mint/run/i-1"
        }))
        .unwrap();
        assert_eq!(
            started.workflow_url.as_deref(),
            Some("https://mint/run/i-1")
        );
        assert_eq!(started.instance.id.as_str(), "i-1");
        // The contract's instance answer has none; one that does keeps it.
        assert_eq!(instance("Running").workflow_url, None);
        let with: Instance = serde_json::from_value(json!({
            "id": "i-2", "status": "Running", "workflowUrl": "https://mint/run/i-2"
        }))
        .unwrap();
        assert_eq!(with.workflow_url.as_deref(), Some("https://mint/run/i-2"));
        // Serialized back, an instance without one writes no field (no duplicate in a start answer).
        let text = serde_json::to_string(&started).unwrap();
        assert_eq!(text.matches("workflowUrl").count(), 1, "{text}");
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_enum_values_kept() {
        let i = instance("Paused");
        assert_eq!(i.status, InstanceStatus::Other("Paused".into()));
        assert_eq!(i.status.to_string(), "Paused");
        assert_eq!(i.error.unwrap().extra["code"], json!(7));
        let a: Activity = serde_json::from_value(json!({
            "id": "x", "type": "hologram", "status": "Dreaming", "extra": 1
        }))
        .unwrap();
        assert_eq!(a.activity_type, ActivityType::Other("hologram".into()));
        assert_eq!(a.status, ActivityStatus::Other("Dreaming".into()));
        assert_eq!(a.name, None);
    }

    #[test]
    fn an_instance_with_absurd_timestamps_and_odd_types_still_decodes() {
        let i: Instance = serde_json::from_value(json!({
            "id": "i-1", "status": 3,
            "createdAt": "+262142-12-31T00:00:00Z", "updatedAt": 1767225600,
            "finishedAt": "0001-01-01T00:00:00Z",
            "input": {"mintgateExecutionId": "e-1"}
        }))
        .unwrap();
        assert_eq!(i.status, InstanceStatus::Other("3".into()));
        assert_eq!(
            i.created_at.as_ref().unwrap().raw(),
            "+262142-12-31T00:00:00Z"
        );
        assert_eq!(i.updated_at.as_ref().unwrap().parsed(), None);
        assert_eq!(i.input.unwrap()["mintgateExecutionId"], "e-1");
        let now = "2026-03-01T10:00:00Z".parse().unwrap();
        let finished = i.finished_at.unwrap();
        assert_eq!(finished.plausible(now, now), None);
        let no_status: Instance = serde_json::from_value(json!({"id": "i-2"})).unwrap();
        assert_eq!(no_status.status, InstanceStatus::Other(String::new()));
    }

    #[test]
    fn known_enum_values_parse_case_insensitively_and_round_trip() {
        assert_eq!(InstanceStatus::parse("finished"), InstanceStatus::Finished);
        assert_eq!(
            ActivityType::parse("httpRequest"),
            ActivityType::HttpRequest
        );
        let s = serde_json::to_string(&ActivityStatus::Suspended).unwrap();
        assert_eq!(s, "\"Suspended\"");
    }

    #[test]
    fn a_page_decodes_with_missing_counts() {
        let p: Page<Flow> = serde_json::from_value(json!({
            "items": [{"id": "f-1", "definitionId": "d-1", "name": "KYC", "version": 3, "isLatest": true,
                       "createdAt": "2026-01-01T00:00:00Z", "owner": "x"}]
        }))
        .unwrap();
        assert_eq!(p.items[0].definition_id.as_ref().unwrap().as_str(), "d-1");
        assert_eq!(p.total_count, 0);
    }

    #[test]
    fn start_body_uses_camel_case_and_whole_seconds() {
        let body = StartInstance {
            input: Some(json!({"a": 1})),
            workflow_url_ttl: Some(Duration::from_millis(3_600_900)),
        };
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"input": {"a": 1}, "workflowUrlTtl": 3600})
        );
        assert_eq!(
            serde_json::to_value(StartInstance::default()).unwrap(),
            json!({"input": null, "workflowUrlTtl": null})
        );
    }

    #[test]
    fn list_flows_query_uses_mint_parameter_names() {
        let q = ListFlows {
            search_term: Some("kyc".into()),
            all_versions: Some(true),
            order_by: Some(OrderBy::CreatedAt),
            sort_by: Some(SortBy::Descending),
            ..Default::default()
        }
        .query();
        let names: Vec<_> = q.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            names,
            [
                "offset",
                "limit",
                "searchTerm",
                "AllVersions",
                "orderBy",
                "sortBy"
            ]
        );
        assert_eq!(q[1].1, "100");
    }

    #[test]
    fn progress_distinguishes_waiting_from_processing() {
        let running = instance("Running");
        let waiting = [
            activity("intro", "Completed"),
            activity("selfie", "Suspended"),
        ];
        assert_eq!(
            Progress::classify(&running, &waiting),
            Progress::WaitingForUser {
                step: Some("selfie".into()),
                since: Some(Timestamp::parse("2026-01-01T00:10:00Z"))
            }
        );
        let busy = [
            activity("intro", "Completed"),
            activity("verify", "Executing"),
            activity("x", "Pending"),
        ];
        assert_eq!(
            Progress::classify(&running, &busy),
            Progress::Processing {
                step: Some("verify".into())
            }
        );
        assert_eq!(
            Progress::classify(&running, &[]),
            Progress::Processing { step: None }
        );
    }

    #[test]
    fn progress_of_ended_instances() {
        assert_eq!(
            Progress::classify(&instance("Finished"), &[]),
            Progress::Finished {
                at: Some(Timestamp::parse("2026-01-01T01:00:00Z"))
            }
        );
        assert_eq!(
            Progress::classify(&instance("Faulted"), &[]),
            Progress::Faulted {
                message: Some("Workflow execution failed".into())
            }
        );
        assert_eq!(
            Progress::classify(&instance("Cancelled"), &[]),
            Progress::Cancelled
        );
        assert_eq!(
            Progress::classify(&instance("Hibernating"), &[]),
            Progress::Unknown {
                status: "Hibernating".into()
            }
        );
    }
}
