//! The other plausible Mints: named behaviours where the real service may differ from the
//! contract we inferred (`mint-api.md` marks those facts [model] or [field]).
//!
//! mint-sim and mintgate were written from the same guesses, so they agree with each other, not
//! necessarily with Mint. Each behaviour here plays one other plausible answer (lists without
//! `input`, another list order, a spurious `404`, an absurd `finishedAt`, an HTML error page as the
//! result file, a changed field type, ...) so that a test can show the product stays safe when
//! the guess is wrong. All are off by default: the default is the contract. They are set in the
//! `[behaviours]` section of the configuration, for every flow (`allFlows`), per flow (`flows`),
//! per instance (admin API only) and per endpoint (`contract`), and can be changed at run time
//! through the admin API; the random ones draw from their own seeded generator.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validation::{ConfigError, check_rate, invalid};

/// Order of `GET /api/flows/{flowId}/instances`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListOrder {
    /// Newest `createdAt` first (the contract's model).
    #[default]
    NewestFirst,
    /// Oldest `createdAt` first.
    OldestFirst,
    /// Most recently updated first.
    UpdatedAtNewestFirst,
    /// Least recently updated first.
    UpdatedAtOldestFirst,
    /// Unspecified: a fresh seeded shuffle for every request, so pages overlap and miss items.
    Shuffled,
}

/// A field that instance lists may leave out of their items.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListField {
    /// The start body's `input` (so a list cannot prove which instance a start created).
    Input,
    /// The instance's `output`.
    Output,
}

/// What `finishedAt` says once an instance has ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FinishedAt {
    /// When it really ended (the contract).
    #[default]
    Real,
    /// `0001-01-01T00:00:00Z` (a .NET `default(DateTime)`).
    Year1,
    /// `+262142-12-31T00:00:00Z` (about chrono's largest date).
    ChronoMax,
    /// One year after the simulated now.
    Future,
    /// One day before `createdAt`.
    BeforeCreatedAt,
    /// `"not a date"`.
    Unparseable,
    /// `null`, although the status is terminal.
    Null,
}

/// `Content-Type` of a result file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultContentType {
    /// `application/zip` (the contract).
    #[default]
    #[serde(rename = "application/zip")]
    Zip,
    /// `application/octet-stream`.
    #[serde(rename = "application/octet-stream")]
    OctetStream,
    /// No `Content-Type` header at all.
    #[serde(rename = "none")]
    None,
}

/// A change of an answer's shape, for contract probes to detect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ContractChange {
    /// Every `createdAt` is a number (Unix seconds) instead of an RFC 3339 string.
    CreatedAtAsNumber,
    /// Every `status` is a value the contract does not list (`Archived` for instances, `Skipped`
    /// for activities).
    StatusUnknown,
    /// Lists have no `totalCount`.
    TotalCountMissing,
    /// Lists are a bare JSON array of items instead of `{items,totalCount,offset,limit}`.
    BareArray,
}

impl ContractChange {
    fn lists_only(self) -> bool {
        matches!(self, Self::TotalCountMissing | Self::BareArray)
    }
}

/// Endpoint keys whose answers `contract` can change (the keys of the usage counters).
pub const CONTRACT_ENDPOINTS: [&str; 5] = [
    "list_flows",
    "list_instances",
    "start",
    "get_instance",
    "activities",
];
const LIST_ENDPOINTS: [&str; 3] = ["list_flows", "list_instances", "activities"];

/// Declares [`FlowBehaviours`] and its twin [`BehaviourOverrides`] (every field optional) from one
/// list, so the two cannot drift apart.
macro_rules! flow_behaviours {
    ($( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr, )*) => {
        /// The behaviours of one flow's instances and listings. Every default is the contract.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
        pub struct FlowBehaviours {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl Default for FlowBehaviours {
            fn default() -> Self {
                Self { $( $field: $default, )* }
            }
        }

        /// Overrides of [`FlowBehaviours`] for one flow or one instance: each field that is set
        /// replaces the one beneath it (instance over flow over `allFlows`).
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields, default)]
        pub struct BehaviourOverrides {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        impl FlowBehaviours {
            /// These behaviours with `overrides` applied.
            pub fn with(&self, overrides: &BehaviourOverrides) -> Self {
                Self {
                    $( $field: overrides.$field.clone().unwrap_or_else(|| self.$field.clone()), )*
                }
            }
        }

        impl BehaviourOverrides {
            /// Whether no field is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )*
            }

            /// The overrides as full behaviours on top of the defaults, for validation.
            fn on_defaults(&self) -> FlowBehaviours {
                FlowBehaviours::default().with(self)
            }
        }
    };
}

flow_behaviours! {
    /// Order of the flow's instance list (read per flow: instance overrides do not apply).
    list_order: ListOrder = ListOrder::NewestFirst,
    /// Fields the instance list leaves out of its items (`input`, `output`); `GET
    /// /api/instances/{id}` still has them.
    list_omits: Vec<ListField> = Vec::new(),
    /// Rate of `404 Instance not found` answers to `GET /api/instances/{id}` for instances that
    /// exist (drawn per request).
    not_found_rate: f64 = 0.0,
    /// The same for `GET /api/instances/{id}/activities`.
    activities_not_found_rate: f64 = 0.0,
    /// What `finishedAt` says once the instance has ended (instance bodies and list items).
    finished_at: FinishedAt = FinishedAt::Real,
    /// Rate of result-file requests for a finished instance answered `200 text/html` with an
    /// HTML error page (drawn per request; `1.0` on one instance makes that instance's file an
    /// error page).
    result_file_html_rate: f64 = 0.0,
    /// Rate of result-file requests answered `429` whatever the budget (drawn per request; the
    /// request's units are consumed: the gateway admitted it, the file store refused).
    result_file_throttle_rate: f64 = 0.0,
    /// `Retry-After` seconds on those `429`s (0: none).
    result_file_throttle_retry_after_secs: u64 = 0,
    /// `Content-Type` of result files.
    result_file_content_type: ResultContentType = ResultContentType::Zip,
    /// Send `Content-Length` with result files (false: chunked transfer encoding).
    result_file_content_length: bool = true,
}

impl FlowBehaviours {
    /// Checks rates and values; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let rates = [
            ("notFoundRate", self.not_found_rate),
            ("activitiesNotFoundRate", self.activities_not_found_rate),
            ("resultFileHtmlRate", self.result_file_html_rate),
            ("resultFileThrottleRate", self.result_file_throttle_rate),
        ];
        for (name, value) in rates {
            check_rate(format!("{prefix}{name}"), value)?;
        }
        if self.result_file_throttle_retry_after_secs > 24 * 3600 {
            return Err(invalid(
                format!("{prefix}resultFileThrottleRetryAfterSecs"),
                "at most one day",
            ));
        }
        Ok(())
    }
}

impl BehaviourOverrides {
    /// Checks the values that are set; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        self.on_defaults().validate(prefix)
    }
}

/// The `[behaviours]` section: every behaviour where Mint may differ from the contract.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Behaviours {
    /// Reseed the behaviours' generator (shuffles and the rates above) when the section is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Behaviours of every flow.
    pub all_flows: FlowBehaviours,
    /// Overrides per flow id.
    pub flows: BTreeMap<String, BehaviourOverrides>,
    /// Changed answer shapes per endpoint key (`list_flows`, `list_instances`, `start`,
    /// `get_instance`, `activities`).
    pub contract: BTreeMap<String, Vec<ContractChange>>,
}

impl Behaviours {
    /// Checks every value; flow overrides must name flows in `flow_ids`. Errors name the key
    /// under `prefix`.
    pub fn validate<'a>(
        &self,
        prefix: &str,
        flow_ids: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Result<(), ConfigError> {
        self.all_flows.validate(&format!("{prefix}allFlows."))?;
        for (flow_id, overrides) in &self.flows {
            let key = format!("{prefix}flows.{flow_id}");
            if !flow_ids.clone().into_iter().any(|id| id == flow_id) {
                return Err(invalid(key, "no flow has this id"));
            }
            overrides.validate(&format!("{key}."))?;
        }
        for (endpoint, changes) in &self.contract {
            let key = format!("{prefix}contract.{endpoint}");
            if !CONTRACT_ENDPOINTS.contains(&endpoint.as_str()) {
                return Err(invalid(
                    key,
                    format!(
                        "not an endpoint key; use one of {}",
                        CONTRACT_ENDPOINTS.join(", ")
                    ),
                ));
            }
            for (i, change) in changes.iter().enumerate() {
                if change.lists_only() && !LIST_ENDPOINTS.contains(&endpoint.as_str()) {
                    return Err(invalid(
                        format!("{key}[{i}]"),
                        format!(
                            "{change:?} changes lists only ({})",
                            LIST_ENDPOINTS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The behaviours of `flow_id`'s instances, before any instance override.
    pub fn of_flow(&self, flow_id: &str) -> FlowBehaviours {
        match self.flows.get(flow_id) {
            Some(overrides) => self.all_flows.with(overrides),
            None => self.all_flows.clone(),
        }
    }

    /// The contract changes in force for `endpoint` (a usage key).
    pub fn changes(&self, endpoint: &str) -> &[ContractChange] {
        self.contract.get(endpoint).map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_replace_only_what_they_set() {
        let base = FlowBehaviours {
            list_order: ListOrder::OldestFirst,
            not_found_rate: 0.5,
            ..FlowBehaviours::default()
        };
        let overrides = BehaviourOverrides {
            not_found_rate: Some(0.0),
            finished_at: Some(FinishedAt::ChronoMax),
            ..BehaviourOverrides::default()
        };
        let merged = base.with(&overrides);
        assert_eq!(merged.list_order, ListOrder::OldestFirst);
        assert_eq!(merged.not_found_rate, 0.0);
        assert_eq!(merged.finished_at, FinishedAt::ChronoMax);
        assert!(!overrides.is_empty());
        assert!(BehaviourOverrides::default().is_empty());
    }

    #[test]
    fn validation_names_the_key() {
        let mut behaviours = Behaviours::default();
        behaviours.flows.insert(
            "f".to_owned(),
            BehaviourOverrides {
                not_found_rate: Some(1.5),
                ..BehaviourOverrides::default()
            },
        );
        let err = behaviours.validate("behaviours.", ["f"]).unwrap_err();
        assert_eq!(err.key, "behaviours.flows.f.notFoundRate");
        let err = behaviours.validate("behaviours.", ["g"]).unwrap_err();
        assert_eq!(err.key, "behaviours.flows.f");

        let mut behaviours = Behaviours::default();
        behaviours
            .contract
            .insert("get_instance".to_owned(), vec![ContractChange::BareArray]);
        let err = behaviours.validate("", ["f"]).unwrap_err();
        assert_eq!(err.key, "contract.get_instance[0]");
        behaviours.contract.clear();
        behaviours
            .contract
            .insert("token".to_owned(), vec![ContractChange::StatusUnknown]);
        assert_eq!(
            behaviours.validate("", ["f"]).unwrap_err().key,
            "contract.token"
        );
    }
}
