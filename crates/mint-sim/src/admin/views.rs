//! The admin API's answers, built from the core's data: the core (`state.rs`, `counters.rs`)
//! knows nothing of these wire types.

use chrono::{DateTime, Utc};

use super::types::*;
use crate::counters::{
    BehaviourCounters, ClientCounters, Counters, FaultCounters, WebhookCounters,
};
use crate::state::{Instance, State, UserStep};

impl From<&Counters> for Usage {
    fn from(counters: &Counters) -> Self {
        Self {
            clients: counters
                .clients
                .iter()
                .map(|(id, c)| (id.clone(), ClientUsage::from(c)))
                .collect(),
            webhooks: WebhookUsage::from(&counters.webhooks),
            behaviours: BehaviourUsage::from(&counters.behaviours),
            faults: FaultUsage::from(&counters.faults),
            seeded: counters.seeded.clone(),
            workflow_page_views: counters.workflow_page_views,
        }
    }
}

impl From<&ClientCounters> for ClientUsage {
    fn from(c: &ClientCounters) -> Self {
        let by_key = |map: &std::collections::BTreeMap<&'static str, u64>| {
            map.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        Self {
            requests: c.requests,
            units: c.units,
            requests_by_endpoint: by_key(&c.requests_by_endpoint),
            units_by_endpoint: by_key(&c.units_by_endpoint),
            throttled: c.throttled,
            starts_billed: c.starts_billed,
            cents_owed: c.cents_owed,
            downloads_billed: c.downloads_billed,
            bytes_served: c.bytes_served,
            result_file_heads: c.result_file_heads,
            list_latency_micros: c.list_latency_micros,
            tokens_issued: c.tokens_issued,
            status_counts: c.status_counts.clone(),
        }
    }
}

impl From<&WebhookCounters> for WebhookUsage {
    fn from(w: &WebhookCounters) -> Self {
        Self {
            attempted: w.attempted,
            delivered: w.delivered,
            dropped: w.dropped,
            duplicated: w.duplicated,
            delayed: w.delayed,
            reordered: w.reordered,
            failed: w.failed,
        }
    }
}

impl From<&BehaviourCounters> for BehaviourUsage {
    fn from(b: &BehaviourCounters) -> Self {
        Self {
            spurious_not_found: b.spurious_not_found,
            html_result_files: b.html_result_files,
            result_file_throttled: b.result_file_throttled,
            shuffled_lists: b.shuffled_lists,
        }
    }
}

impl From<&FaultCounters> for FaultUsage {
    fn from(f: &FaultCounters) -> Self {
        Self {
            server_errors: f.server_errors,
            lost_starts: f.lost_starts,
            cut_bodies: f.cut_bodies,
            slow_bodies: f.slow_bodies,
        }
    }
}

impl From<UserStepAction> for UserStep {
    fn from(action: UserStepAction) -> Self {
        match action {
            UserStepAction::Complete => Self::Complete,
            UserStepAction::Abandon => Self::Abandon,
        }
    }
}

/// The admin view of `instance`, deleted or not.
pub(crate) fn admin_instance(st: &State, instance: &Instance, now: DateTime<Utc>) -> AdminInstance {
    AdminInstance {
        id: instance.id.to_string(),
        flow_id: instance.flow_id().to_owned(),
        definition_id: instance.definition_id().to_owned(),
        client_id: instance.client_id.to_string(),
        status: instance.status.to_string(),
        input: instance.input(),
        output: instance.output(),
        error: instance.error(),
        created_at: instance.created_at,
        updated_at: instance.updated_at,
        finished_at: instance.finished_at,
        deleted_at: st.deleted_at(instance, now),
        result_file_bytes: instance.result_file_bytes(),
        seeded: instance.seeded,
        activities: instance
            .activities
            .iter()
            .map(|a| {
                let step = instance.step_of(a);
                AdminActivity {
                    name: step.map_or_else(String::new, |s| s.name().to_owned()),
                    activity_type: step.map_or_else(String::new, |s| s.activity_type().to_owned()),
                    status: a.status.as_str().to_owned(),
                    started_at: a.started_at,
                    completed_at: a.completed_at,
                }
            })
            .collect(),
    }
}
