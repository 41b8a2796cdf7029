//! The simulator's ground truth: what each API client did and owes, and what happened to
//! webhooks. Plain data kept by the core under the state lock; the admin API's `Usage` answer is
//! built from it in the admin module, so the wire shape can change without touching the core.

use std::collections::BTreeMap;

/// Every counter the simulator keeps.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Per API client id.
    pub clients: BTreeMap<String, ClientCounters>,
    /// Webhook deliveries (HTTP request steps).
    pub webhooks: WebhookCounters,
    /// Answers changed by the `[behaviours]` section.
    pub behaviours: BehaviourCounters,
    /// Faults injected.
    pub faults: FaultCounters,
    /// Instances seeded through the admin API (never billed), per flow id.
    pub seeded: BTreeMap<String, u64>,
    /// Pages served at `workflowUrl`s (the end user's link).
    pub workflow_page_views: u64,
}

/// What one API client did and owes.
#[derive(Debug, Clone, Default)]
pub struct ClientCounters {
    /// Requests attributed to the client (token endpoint included), whatever their answer.
    pub requests: u64,
    /// Rate units consumed (admitted API requests only).
    pub units: u64,
    /// Requests per endpoint key.
    pub requests_by_endpoint: BTreeMap<&'static str, u64>,
    /// Units per endpoint key.
    pub units_by_endpoint: BTreeMap<&'static str, u64>,
    /// 429s served.
    pub throttled: u64,
    /// Starts committed and billed.
    pub starts_billed: u64,
    /// Money owed for starts, in cents.
    pub cents_owed: u64,
    /// Result-file downloads counted against the billing quota.
    pub downloads_billed: u64,
    /// Result-file body bytes handed to the connection.
    pub bytes_served: u64,
    /// `HEAD` requests on result files (units consumed, no download billed, no bytes).
    pub result_file_heads: u64,
    /// Simulated time the client's instance listings took, microseconds.
    pub list_latency_micros: u64,
    /// Access tokens issued.
    pub tokens_issued: u64,
    /// Answers per HTTP status code.
    pub status_counts: BTreeMap<u16, u64>,
}

/// What happened to webhooks.
#[derive(Debug, Clone, Default)]
pub struct WebhookCounters {
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

/// Answers changed by the `[behaviours]` section (ground truth for tests of the other Mints).
#[derive(Debug, Clone, Default)]
pub struct BehaviourCounters {
    /// `404`s answered for instances that exist (`notFoundRate`, `activitiesNotFoundRate`).
    pub spurious_not_found: u64,
    /// Result files answered as an HTML error page (`resultFileHtmlRate`).
    pub html_result_files: u64,
    /// Result-file `429`s whatever the budget (`resultFileThrottleRate`).
    pub result_file_throttled: u64,
    /// Instance lists answered in a shuffled order (`listOrder = "shuffled"`).
    pub shuffled_lists: u64,
}

/// Faults injected (ground truth for seeded fault runs such as the soak).
#[derive(Debug, Clone, Default)]
pub struct FaultCounters {
    /// 5xx answers injected (`serverErrorRate`).
    pub server_errors: u64,
    /// Starts committed and billed whose answer was never sent (`lostStartRate`).
    pub lost_starts: u64,
    /// Result-file bodies cut part way (`cutBodyRate`).
    pub cut_bodies: u64,
    /// Result-file bodies sent slowly (`slowBodyRate`).
    pub slow_bodies: u64,
}
