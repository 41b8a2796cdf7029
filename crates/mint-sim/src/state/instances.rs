//! The instance store: every instance ever started, compact enough for hundreds of thousands.
//!
//! Instances live in one vector in creation order (their index is their handle inside the
//! simulator), found by id through a hash index and listed per flow in `createdAt` order. What an
//! instance shares with its flow (ids, steps, result-file size) is one `Arc` of the flow as it was
//! when the instance started; what can be derived (output, error, workflow URL, activity names) is
//! derived when shown. A seeded instance costs about half a kilobyte.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::{FlowConfig, StepConfig};
use crate::model;

/// The state of one started step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityStatus {
    /// An automatic or HTTP request step at work.
    Executing,
    /// A user step waiting for the end user.
    Suspended,
    /// Done.
    Completed,
    /// Failed (the instance is `Faulted`).
    Faulted,
}

impl ActivityStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executing => "Executing",
            Self::Suspended => "Suspended",
            Self::Completed => "Completed",
            Self::Faulted => "Faulted",
        }
    }
}

/// One started step of an instance.
#[derive(Debug, Clone)]
pub struct ActivityRecord {
    /// Activity id.
    pub id: Uuid,
    /// Index of the step in the instance's flow.
    pub step: u16,
    /// Its state.
    pub status: ActivityStatus,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub completed_at: Option<DateTime<Utc>>,
}

/// One instance, live or deleted.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Instance id.
    pub id: Uuid,
    /// The flow as it was when the instance started (shared by its instances).
    pub flow: Arc<FlowConfig>,
    /// The API client that started it (or the admin API's marker).
    pub client_id: Arc<str>,
    /// Wire status (any string once forced).
    pub status: Cow<'static, str>,
    /// Start time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// End time (any terminal status).
    pub finished_at: Option<DateTime<Utc>>,
    /// The start body's `input`, as compact JSON (a parsed map would cost ten times more).
    input_json: Box<str>,
    /// Whether it has its output (it finished).
    pub has_output: bool,
    /// Whether it carries the generic execution error (it faulted).
    pub has_error: bool,
    /// Started steps.
    pub activities: Vec<ActivityRecord>,
    /// Index of the current step.
    pub(super) step: u32,
    /// Bumped when the status is forced: scheduled events of older epochs are void.
    pub(super) epoch: u32,
    /// When the end user's link expires (Unix seconds); `None` for admin-created instances.
    pub workflow_url_expires: Option<i64>,
    /// Created by the admin API's seeding (never billed, never started through the API).
    pub seeded: bool,
}

impl Instance {
    /// A fresh `Running` instance of `flow` with no activity yet.
    pub fn new(
        id: Uuid,
        flow: Arc<FlowConfig>,
        client_id: Arc<str>,
        created_at: DateTime<Utc>,
        input: &Value,
    ) -> Self {
        Self {
            id,
            flow,
            client_id,
            status: Cow::Borrowed("Running"),
            created_at,
            updated_at: created_at,
            finished_at: None,
            input_json: input.to_string().into_boxed_str(),
            has_output: false,
            has_error: false,
            activities: Vec::new(),
            step: 0,
            epoch: 0,
            workflow_url_expires: None,
            seeded: false,
        }
    }

    /// The flow id.
    pub fn flow_id(&self) -> &str {
        &self.flow.id
    }

    /// The flow's definition id.
    pub fn definition_id(&self) -> &str {
        &self.flow.definition_id
    }

    /// Size of its result file.
    pub fn result_file_bytes(&self) -> u64 {
        self.flow.result_file_bytes
    }

    /// The start body's `input`.
    pub fn input(&self) -> Value {
        serde_json::from_str(&self.input_json).unwrap_or(Value::Null)
    }

    /// The output, once finished.
    pub fn output(&self) -> Option<Value> {
        self.has_output.then(|| {
            json!({
                "outcome": "Approved",
                "resultFile": {
                    "sizeBytes": self.result_file_bytes(),
                    "contentType": "application/zip",
                },
            })
        })
    }

    /// The error, once faulted.
    pub fn error(&self) -> Option<Value> {
        self.has_error
            .then(|| json!({ "message": model::EXECUTION_ERROR_MESSAGE }))
    }

    /// The step an activity ran.
    pub fn step_of(&self, activity: &ActivityRecord) -> Option<&StepConfig> {
        self.flow.steps.get(usize::from(activity.step))
    }

    /// The end user's link, under the simulator's API base `base`.
    pub fn workflow_url(&self, base: &str) -> String {
        match self.workflow_url_expires {
            Some(expires) => format!("{base}/run/{}?expires={expires}", self.id),
            None => format!("{base}/run/{}", self.id),
        }
    }

    /// Whether its status is the one given.
    pub fn is(&self, status: &str) -> bool {
        self.status == status
    }
}

/// The instances of one flow in `createdAt` order (ties in creation order).
#[derive(Debug, Default)]
struct FlowList {
    members: Vec<u32>,
    sorted: bool,
}

/// Every instance ever started.
#[derive(Debug, Default)]
pub struct Instances {
    all: Vec<Instance>,
    by_id: HashMap<Uuid, u32>,
    by_flow: HashMap<String, FlowList>,
}

impl Instances {
    /// Stores `instance`; returns its handle.
    pub fn insert(&mut self, instance: Instance) -> u32 {
        let index = u32::try_from(self.all.len()).unwrap_or(u32::MAX);
        let created_at = instance.created_at;
        self.by_id.insert(instance.id, index);
        let list = self
            .by_flow
            .entry(instance.flow.id.clone())
            .or_insert_with(|| FlowList {
                members: Vec::new(),
                sorted: true,
            });
        if let Some(&last) = list.members.last()
            && self.all[last as usize].created_at > created_at
        {
            list.sorted = false;
        }
        list.members.push(index);
        self.all.push(instance);
        index
    }

    /// Reserves room for `additional` more instances.
    pub fn reserve(&mut self, additional: usize) {
        self.all.reserve(additional);
        self.by_id.reserve(additional);
    }

    /// The handle of the instance with id `id` (the canonical lowercase form only, as the
    /// simulator writes it).
    pub fn find(&self, id: &str) -> Option<u32> {
        let uuid = Uuid::try_parse(id).ok()?;
        let index = *self.by_id.get(&uuid)?;
        // `{…}`, upper case and the like parse too; the simulator's ids are only the canonical form.
        (uuid.hyphenated().encode_lower(&mut Uuid::encode_buffer()) == id).then_some(index)
    }

    /// The instance with handle `index`.
    pub fn at(&self, index: u32) -> Option<&Instance> {
        self.all.get(index as usize)
    }

    /// The instance with handle `index`, to change it.
    pub fn at_mut(&mut self, index: u32) -> Option<&mut Instance> {
        self.all.get_mut(index as usize)
    }

    /// The instance with id `id`, deleted or not.
    pub fn get(&self, id: &str) -> Option<&Instance> {
        self.find(id).and_then(|i| self.at(i))
    }

    /// Every instance in creation order.
    pub fn iter(&self) -> impl Iterator<Item = &Instance> {
        self.all.iter()
    }

    /// Handles of `flow_id`'s instances in `createdAt` order (ties in creation order).
    pub fn of_flow(&mut self, flow_id: &str) -> &[u32] {
        let Some(list) = self.by_flow.get_mut(flow_id) else {
            return &[];
        };
        if !list.sorted {
            let all = &self.all;
            list.members
                .sort_by_key(|&i| (all[i as usize].created_at, i));
            list.sorted = true;
        }
        &list.members
    }
}
