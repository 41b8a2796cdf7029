//! The simulator's state and the instance lifecycle, as plain data driven by the simulated clock.
//!
//! Nothing here awaits or does I/O: every method takes `now` and returns what must happen outside
//! the lock (webhook jobs). Architecture invariant: the state is only touched under one short-held
//! mutex, never across an await.

mod instances;

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use uuid::Uuid;

pub use instances::{ActivityRecord, ActivityStatus, Instance, Instances};

use crate::behaviours::{BehaviourOverrides, Behaviours, FlowBehaviours};
use crate::clock::micros;
use crate::config::{
    ClientConfig, Faults, FlowConfig, Limits, SECRET_OPEN, ServiceSettings, SimConfig, StepConfig,
};
use crate::counters::{ClientCounters, Counters};
use crate::limiter::RateLimiter;
use crate::model;
use crate::result_file::{SplitMix, mix64};

/// The client id recorded for instances seeded through the admin API.
pub const SEEDED_CLIENT: &str = "(seeded)";

/// The Mint API endpoints, as counted in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /auth/open/connect/token`
    Token,
    /// `GET /api/flows`
    ListFlows,
    /// `GET /api/flows/{flowId}/instances`
    ListInstances,
    /// `POST /api/flows/{flowId}/instances`
    Start,
    /// `GET /api/instances/{instanceId}`
    GetInstance,
    /// `GET /api/instances/{instanceId}/activities`
    Activities,
    /// `GET /api/instances/{instanceId}/result-file`
    ResultFile,
}

impl Endpoint {
    /// The key in [`ClientCounters::requests_by_endpoint`].
    pub fn key(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::ListFlows => "list_flows",
            Self::ListInstances => "list_instances",
            Self::Start => "start",
            Self::GetInstance => "get_instance",
            Self::Activities => "activities",
            Self::ResultFile => "result_file",
        }
    }

    fn role(self) -> &'static str {
        match self {
            Self::Start => model::ROLE_EDITOR,
            Self::ResultFile => model::ROLE_DOWNLOAD,
            _ => model::ROLE_VIEWER,
        }
    }
}

/// Why an API request was refused before its handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No, unknown, expired or revoked token.
    Unauthorized {
        /// The client the token belonged to, if known.
        client: Option<String>,
        /// Whether a token was presented at all.
        token_presented: bool,
    },
    /// Rate limit or storm: 429.
    Throttled {
        /// The client.
        client: String,
        /// `Retry-After` seconds to send, if any.
        retry_after_secs: Option<u64>,
    },
    /// Injected server error.
    ServerError {
        /// The client.
        client: String,
        /// 500, 502 or 503.
        status: u16,
    },
    /// Missing role: 403.
    Forbidden {
        /// The client.
        client: String,
    },
}

#[derive(Debug, Clone)]
struct Token {
    client_id: String,
    expires_at: DateTime<Utc>,
    revoked: bool,
}

/// A webhook the HTTP request step must send (after the lock is released).
#[derive(Debug, Clone)]
pub struct WebhookJob {
    /// Handle of the instance that sends it.
    pub instance: u32,
    /// Its epoch when the step started.
    pub epoch: u32,
    /// Index of the step.
    pub step: u32,
    /// Where to send.
    pub url: String,
    /// Headers (rendered).
    pub headers: BTreeMap<String, String>,
    /// Body (rendered).
    pub body: String,
    /// HMAC signing secret.
    pub hmac_secret: Option<String>,
    /// Sequence number, to tell held webhooks apart.
    pub seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Complete,
    Fault,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: DateTime<Utc>,
    seq: u64,
    instance: u32,
    epoch: u32,
    step: u32,
    outcome: Outcome,
}

/// What the simulated end user does at a waiting user step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStep {
    /// The user finishes the step; the flow goes on.
    Complete,
    /// The user gives up; the instance becomes `Faulted` now.
    Abandon,
}

/// Errors of the admin user-step call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserStepError {
    /// No such instance (or deleted).
    NotFound,
    /// The instance is not waiting at a user step.
    NotWaiting,
}

/// One instance to seed (admin API): created directly, never billed.
#[derive(Debug, Clone)]
pub struct Seed {
    /// Its `createdAt`.
    pub created_at: DateTime<Utc>,
    /// Its `input`.
    pub input: Value,
    /// `None`: `Running`, its steps run from now; otherwise a forced status (`Finished`, ...).
    pub status: Option<String>,
    /// End time of a terminal status (default: `createdAt`).
    pub finished_at: Option<DateTime<Utc>>,
}

/// Starts billed through the API, by correlation id (the value of the start input's
/// `service.correlationInputKey`, `mintgateExecutionId` by default).
#[derive(Debug, Clone, Default)]
pub struct StartsLedger {
    /// Handles of the instances started with each correlation id, in start order.
    pub by_correlation_id: BTreeMap<String, Vec<u32>>,
    /// Handles of the instances started without one.
    pub without_correlation_id: Vec<u32>,
}

/// Everything the simulator knows.
pub struct State {
    /// Seed of ids, behaviours and result files.
    pub seed: u64,
    /// API clients by id.
    pub clients: BTreeMap<String, ClientConfig>,
    /// Flows in listing order.
    pub flows: Vec<FlowConfig>,
    /// The same flows, shared with the instances they start.
    flow_snapshots: HashMap<String, Arc<FlowConfig>>,
    /// Rate limits.
    pub limits: Limits,
    /// Service settings.
    pub service: ServiceSettings,
    /// Faults in force.
    pub faults: Faults,
    /// Default webhook URL.
    pub webhook_url: Option<String>,
    /// Every request gets 429 until then.
    pub storm_until: Option<DateTime<Utc>>,
    /// Ground truth.
    pub usage: Counters,
    /// Every instance ever started.
    pub instances: Instances,
    /// Starts billed, by correlation id.
    pub starts: StartsLedger,
    /// Draws for faults.
    pub fault_rng: StdRng,
    /// A webhook held back by the reorder fault.
    pub held_webhook: Option<WebhookJob>,
    /// The other plausible Mints in force.
    pub behaviours: Behaviours,
    /// Behaviour overrides per instance id.
    pub instance_behaviours: HashMap<Uuid, BehaviourOverrides>,
    /// Secrets stored in "Mint's configuration", for HTTP request steps.
    pub secrets: BTreeMap<String, String>,
    /// Draws for behaviours (shuffles, rates), apart from the faults' so that turning one on
    /// does not shift the other's sequence.
    behaviour_draws: StdRng,
    tokens: HashMap<String, Token>,
    limiters: HashMap<String, RateLimiter>,
    events: BinaryHeap<Reverse<Event>>,
    event_seq: u64,
    ids: SplitMix,
    user_rng: StdRng,
    seeded_client: Arc<str>,
}

impl State {
    /// State for a validated configuration.
    pub fn new(config: &SimConfig, now: DateTime<Utc>) -> Self {
        let mut state = Self {
            seed: config.seed,
            clients: BTreeMap::new(),
            flows: Vec::new(),
            flow_snapshots: HashMap::new(),
            limits: config.limits.clone(),
            service: config.service.clone(),
            faults: Faults::default(),
            webhook_url: config.webhook_url.clone(),
            storm_until: None,
            usage: Counters::default(),
            instances: Instances::default(),
            starts: StartsLedger::default(),
            fault_rng: StdRng::seed_from_u64(mix64(config.seed ^ 0xFA17)),
            held_webhook: None,
            behaviours: Behaviours::default(),
            instance_behaviours: HashMap::new(),
            secrets: config.secrets.clone(),
            behaviour_draws: StdRng::seed_from_u64(mix64(config.seed ^ 0xD1FF)),
            tokens: HashMap::new(),
            limiters: HashMap::new(),
            events: BinaryHeap::new(),
            event_seq: 0,
            ids: SplitMix::new(mix64(config.seed ^ 0x1D5)),
            user_rng: StdRng::seed_from_u64(mix64(config.seed ^ 0xBE4A)),
            seeded_client: Arc::from(SEEDED_CLIENT),
        };
        for flow in &config.flows {
            state.put_flow(flow.clone());
        }
        for client in &config.clients {
            state.put_client(client.clone());
        }
        state.set_faults(config.faults.clone(), now);
        state.set_behaviours(config.behaviours.clone());
        state
    }

    /// Replaces the behaviours; `seed` reseeds their generator.
    pub fn set_behaviours(&mut self, behaviours: Behaviours) {
        if let Some(seed) = behaviours.seed {
            self.behaviour_draws = StdRng::seed_from_u64(seed);
        }
        self.behaviours = behaviours;
    }

    /// The behaviours in force for `instance` (instance over flow over every flow).
    pub fn behaviours_of(&self, instance: &Instance) -> FlowBehaviours {
        let flow = self.behaviours.of_flow(instance.flow_id());
        match self.instance_behaviours.get(&instance.id) {
            Some(overrides) => flow.with(overrides),
            None => flow,
        }
    }

    /// Draws a behaviour with probability `rate` (no draw when it is 0).
    pub fn draw_behaviour(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.behaviour_draws.random_bool(rate.min(1.0))
    }

    /// The behaviours' generator, for shuffles.
    pub fn behaviour_rng(&mut self) -> &mut StdRng {
        &mut self.behaviour_draws
    }

    /// Adds or replaces a client (its tokens stay valid; its usage is kept).
    pub fn put_client(&mut self, client: ClientConfig) {
        self.usage
            .clients
            .entry(client.client_id.clone())
            .or_default();
        self.clients.insert(client.client_id.clone(), client);
    }

    /// Adds or replaces a flow (running instances keep the flow they started with).
    pub fn put_flow(&mut self, flow: FlowConfig) {
        self.flow_snapshots
            .insert(flow.id.clone(), Arc::new(flow.clone()));
        match self.flows.iter_mut().find(|f| f.id == flow.id) {
            Some(existing) => *existing = flow,
            None => self.flows.push(flow),
        }
    }

    /// Replaces the rate limits; windows already used are forgotten.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.limiters.clear();
    }

    /// Replaces the faults; `stormForSecs` counts from `now`, `seed` reseeds the generator.
    pub fn set_faults(&mut self, faults: Faults, now: DateTime<Utc>) {
        if let Some(seed) = faults.seed {
            self.fault_rng = StdRng::seed_from_u64(seed);
        }
        self.storm_until = (faults.storm_for_secs > 0).then(|| later(now, faults.storm_for_secs));
        self.faults = faults;
    }

    /// The next id, a version-4-shaped UUID drawn from the seeded id sequence.
    fn next_id(&mut self) -> Uuid {
        let a = self.ids.next_u64();
        let b = self.ids.next_u64();
        let bits = u128::from(a >> 32) << 96
            | u128::from((a >> 16) & 0xffff) << 80
            | u128::from(0x4000 | (a & 0xfff)) << 64
            | u128::from(0x8000 | ((b >> 48) & 0x3fff)) << 48
            | u128::from(b & 0xffff_ffff_ffff);
        Uuid::from_u128(bits)
    }

    fn client_usage(&mut self, client: &str) -> &mut ClientCounters {
        self.usage.clients.entry(client.to_owned()).or_default()
    }

    /// Counts a request to `endpoint` by `client`.
    pub fn count_request(&mut self, client: &str, endpoint: Endpoint) {
        let usage = self.client_usage(client);
        usage.requests += 1;
        *usage
            .requests_by_endpoint
            .entry(endpoint.key())
            .or_default() += 1;
    }

    /// Counts an answer's status for `client`.
    pub fn count_status(&mut self, client: &str, status: u16) {
        *self
            .client_usage(client)
            .status_counts
            .entry(status)
            .or_default() += 1;
    }

    /// Counts result-file bytes written for `client`.
    pub fn count_bytes(&mut self, client: &str, bytes: u64) {
        self.client_usage(client).bytes_served += bytes;
    }

    /// Counts a 429 served to `client`.
    pub fn count_throttled(&mut self, client: &str) {
        self.client_usage(client).throttled += 1;
    }

    /// Counts a `HEAD` on a result file.
    pub fn count_result_file_head(&mut self, client: &str) {
        self.client_usage(client).result_file_heads += 1;
    }

    /// Counts the simulated time an instance listing took.
    pub fn count_list_latency(&mut self, client: &str, micros: u64) {
        let usage = self.client_usage(client);
        usage.list_latency_micros = usage.list_latency_micros.saturating_add(micros);
    }

    /// Counts a download against the billing quota.
    pub fn count_download(&mut self, client: &str) {
        self.client_usage(client).downloads_billed += 1;
    }

    // ----- tokens -----

    /// Checks client credentials; `Ok(lifetime)` issues nothing yet.
    pub fn authenticate(&self, client_id: &str, secret: &str) -> Option<u64> {
        let client = self.clients.get(client_id)?;
        (client.client_secret.as_bytes() == secret.as_bytes()).then_some(client.token_lifetime_secs)
    }

    /// Issues a token for `client_id` valid for `lifetime_secs` from `now`.
    pub fn issue_token(
        &mut self,
        client_id: &str,
        lifetime_secs: u64,
        now: DateTime<Utc>,
    ) -> String {
        if self.tokens.len() > 100_000 {
            let horizon = now - Duration::days(1);
            self.tokens.retain(|_, t| t.expires_at > horizon);
        }
        let token = format!(
            "sim.{:016x}{:016x}{:016x}",
            self.ids.next_u64(),
            self.ids.next_u64(),
            self.ids.next_u64()
        );
        self.tokens.insert(
            token.clone(),
            Token {
                client_id: client_id.to_owned(),
                expires_at: later(now, lifetime_secs),
                revoked: false,
            },
        );
        self.client_usage(client_id).tokens_issued += 1;
        token
    }

    /// Revokes every token of `client_id`; returns how many were live.
    pub fn revoke_tokens(&mut self, client_id: &str, now: DateTime<Utc>) -> usize {
        let mut live = 0;
        for token in self.tokens.values_mut() {
            if token.client_id == client_id && !token.revoked {
                token.revoked = true;
                if token.expires_at > now {
                    live += 1;
                }
            }
        }
        live
    }

    /// The checks every API request passes, in the agreed order: token, storm and budget, injected
    /// server error, role. An admitted request has consumed its units whatever happens next.
    pub fn gate(
        &mut self,
        now: DateTime<Utc>,
        bearer: Option<&str>,
        endpoint: Endpoint,
    ) -> Result<String, Refusal> {
        let Some(bearer) = bearer else {
            return Err(Refusal::Unauthorized {
                client: None,
                token_presented: false,
            });
        };
        let Some(token) = self.tokens.get(bearer) else {
            return Err(Refusal::Unauthorized {
                client: None,
                token_presented: true,
            });
        };
        let client = token.client_id.clone();
        let valid = !token.revoked && now < token.expires_at && self.clients.contains_key(&client);
        self.count_request(&client, endpoint);
        if !valid {
            return Err(Refusal::Unauthorized {
                client: Some(client),
                token_presented: true,
            });
        }

        let storming = self.storm_until.is_some_and(|until| now < until)
            || (self.faults.storm_rate > 0.0 && self.fault_rng.random_bool(self.faults.storm_rate));
        if storming {
            self.client_usage(&client).throttled += 1;
            return Err(Refusal::Throttled {
                client,
                retry_after_secs: self.faults.storm_retry_after_secs,
            });
        }

        let cost = match endpoint {
            Endpoint::ResultFile => self.limits.result_file_cost_units,
            _ => self.limits.request_cost_units,
        };
        let limits = &self.limits;
        let limiter = self.limiters.entry(client.clone()).or_insert_with(|| {
            RateLimiter::new(
                limits.window_secs as i64 * 1_000_000,
                limits.window_units,
                limits.burst_window_millis as i64 * 1000,
                limits.burst_units,
            )
        });
        if let Err(wait_micros) = limiter.try_admit(micros(now), cost) {
            let retry_after_secs = if self.limits.retry_after {
                wait_micros.map(|w| (w.max(1) as u64).div_ceil(1_000_000))
            } else {
                None
            };
            self.client_usage(&client).throttled += 1;
            return Err(Refusal::Throttled {
                client,
                retry_after_secs,
            });
        }
        let usage = self.client_usage(&client);
        usage.units += cost;
        *usage.units_by_endpoint.entry(endpoint.key()).or_default() += cost;

        if self.faults.server_error_rate > 0.0
            && self.fault_rng.random_bool(self.faults.server_error_rate)
        {
            let status = model::SERVER_ERROR_STATUSES[self
                .fault_rng
                .random_range(0..model::SERVER_ERROR_STATUSES.len())];
            self.usage.faults.server_errors += 1;
            return Err(Refusal::ServerError { client, status });
        }

        let has_role = self
            .clients
            .get(&client)
            .is_some_and(|c| c.roles.iter().any(|r| r == endpoint.role()));
        if !has_role {
            return Err(Refusal::Forbidden { client });
        }
        Ok(client)
    }

    /// Draws a fault with probability `rate` (no draw at all when the rate is 0, so enabling one
    /// fault does not shift the others' sequence).
    pub fn draw(&mut self, rate: f64) -> bool {
        rate > 0.0 && self.fault_rng.random_bool(rate.min(1.0))
    }

    // ----- instances -----

    /// Whether `instance` is still retained at `now`.
    pub fn retained(&self, instance: &Instance, now: DateTime<Utc>) -> bool {
        instance
            .finished_at
            .is_none_or(|end| now < later(end, self.service.retention_secs))
    }

    /// A retained instance by id.
    pub fn instance(&self, id: &str, now: DateTime<Utc>) -> Option<&Instance> {
        self.instances.get(id).filter(|i| self.retained(i, now))
    }

    /// Handles of `flow_id`'s retained instances at `now`, oldest `createdAt` first.
    pub fn live_of_flow(&mut self, flow_id: &str, now: DateTime<Utc>) -> Vec<u32> {
        let retention_secs = self.service.retention_secs;
        let members = self.instances.of_flow(flow_id).to_vec();
        members
            .into_iter()
            .filter(|&i| {
                self.instances.at(i).is_some_and(|instance| {
                    instance
                        .finished_at
                        .is_none_or(|end| now < later(end, retention_secs))
                })
            })
            .collect()
    }

    /// A flow by id.
    pub fn flow(&self, id: &str) -> Option<&FlowConfig> {
        self.flows.iter().find(|f| f.id == id)
    }

    /// Starts an instance of `flow_id` for `client_id` (the flow must exist) with a workflow URL
    /// valid until `workflow_url_expires`. Returns its handle; webhook jobs go to `jobs`.
    pub fn start_instance(
        &mut self,
        now: DateTime<Utc>,
        flow_id: &str,
        client_id: &str,
        input: &Value,
        workflow_url_expires: i64,
        jobs: &mut Vec<WebhookJob>,
    ) -> Option<u32> {
        let flow = self.flow_snapshots.get(flow_id)?.clone();
        let id = self.next_id();
        let mut instance = Instance::new(id, flow, Arc::from(client_id), now, input);
        instance.workflow_url_expires = Some(workflow_url_expires);
        let index = self.instances.insert(instance);
        self.enter_step(index, now, jobs);
        Some(index)
    }

    /// Creates an instance of `flow_id` directly (admin API): never billed, marked seeded.
    /// Returns its handle; webhook jobs of a `Running` one go to `jobs`.
    pub fn seed_instance(
        &mut self,
        now: DateTime<Utc>,
        flow_id: &str,
        seed: &Seed,
        jobs: &mut Vec<WebhookJob>,
    ) -> Option<u32> {
        let flow = self.flow_snapshots.get(flow_id)?.clone();
        let id = self.next_id();
        let mut instance = Instance::new(
            id,
            flow,
            self.seeded_client.clone(),
            seed.created_at,
            &seed.input,
        );
        instance.seeded = true;
        *self.usage.seeded.entry(flow_id.to_owned()).or_default() += 1;
        let Some(status) = seed.status.as_deref().filter(|s| *s != "Running") else {
            let index = self.instances.insert(instance);
            self.enter_step(index, now, jobs);
            return Some(index);
        };
        let end = seed.finished_at.unwrap_or(seed.created_at);
        instance.epoch = 1;
        instance.status = status_text(status);
        match status {
            "Finished" => {
                let steps = instance.flow.steps.len().min(usize::from(u16::MAX));
                let span = end - seed.created_at;
                for step in 0..steps {
                    let at = |k: usize| seed.created_at + span * (k as i32) / (steps as i32);
                    instance.activities.push(ActivityRecord {
                        id: self.next_id(),
                        step: step as u16,
                        status: ActivityStatus::Completed,
                        started_at: at(step),
                        completed_at: Some(at(step + 1)),
                    });
                }
                instance.step = steps as u32;
                instance.has_output = true;
            }
            "Faulted" => {
                if !instance.flow.steps.is_empty() {
                    instance.activities.push(ActivityRecord {
                        id: self.next_id(),
                        step: 0,
                        status: ActivityStatus::Faulted,
                        started_at: seed.created_at,
                        completed_at: Some(end),
                    });
                }
                instance.has_error = true;
            }
            _ => {}
        }
        if is_terminal(status) {
            instance.finished_at = Some(end);
            instance.updated_at = end;
        }
        Some(self.instances.insert(instance))
    }

    /// Bills a start of instance `index` to `client` and records it under its correlation id.
    pub fn bill_start(&mut self, client: &str, index: u32) {
        let cents = self.service.start_cents;
        let usage = self.client_usage(client);
        usage.starts_billed += 1;
        usage.cents_owed += cents;
        let correlation_id = self.instances.at(index).and_then(|instance| {
            match instance.input().get(&self.service.correlation_input_key)? {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        });
        match correlation_id {
            Some(id) => self
                .starts
                .by_correlation_id
                .entry(id)
                .or_default()
                .push(index),
            None => self.starts.without_correlation_id.push(index),
        }
    }

    fn schedule(&mut self, at: DateTime<Utc>, index: u32, epoch: u32, step: u32, outcome: Outcome) {
        self.event_seq += 1;
        self.events.push(Reverse(Event {
            at,
            seq: self.event_seq,
            instance: index,
            epoch,
            step,
            outcome,
        }));
    }

    fn enter_step(&mut self, index: u32, at: DateTime<Utc>, jobs: &mut Vec<WebhookJob>) {
        let activity_id = self.next_id();
        let Some(instance) = self.instances.at_mut(index) else {
            return;
        };
        instance.updated_at = at;
        let step_index = instance.step;
        let Some(step) = instance.flow.steps.get(step_index as usize).cloned() else {
            instance.status = Cow::Borrowed("Finished");
            instance.finished_at = Some(at);
            instance.has_output = true;
            return;
        };
        let epoch = instance.epoch;
        let status = if matches!(step, StepConfig::User { .. }) {
            ActivityStatus::Suspended
        } else {
            ActivityStatus::Executing
        };
        instance.activities.push(ActivityRecord {
            id: activity_id,
            step: u16::try_from(step_index).unwrap_or(u16::MAX),
            status,
            started_at: at,
            completed_at: None,
        });
        match step {
            StepConfig::Auto {
                duration_secs,
                failure_probability,
                ..
            } => {
                let outcome = if failure_probability > 0.0
                    && self.user_rng.random_bool(failure_probability)
                {
                    Outcome::Fault
                } else {
                    Outcome::Complete
                };
                self.schedule(later(at, duration_secs), index, epoch, step_index, outcome);
            }
            StepConfig::User {
                behaviour,
                timeout_secs,
                ..
            } => {
                if let Some(b) = behaviour {
                    let roll: f64 = self.user_rng.random();
                    let uniform =
                        |rng: &mut StdRng, [min, max]: [u64; 2]| rng.random_range(min..=max);
                    let this = (index, epoch, step_index);
                    if roll < b.complete_probability {
                        let delay = uniform(&mut self.user_rng, b.complete_after_secs);
                        self.schedule(later(at, delay), this.0, this.1, this.2, Outcome::Complete);
                    } else if roll < b.complete_probability + b.dawdle_probability {
                        let delay = uniform(&mut self.user_rng, b.dawdle_after_secs);
                        self.schedule(later(at, delay), this.0, this.1, this.2, Outcome::Complete);
                    } else if roll
                        < b.complete_probability + b.dawdle_probability + b.abandon_probability
                    {
                        let at = later(at, b.abandon_timeout_secs);
                        self.schedule(at, this.0, this.1, this.2, Outcome::Fault);
                    }
                }
                if let Some(timeout) = timeout_secs {
                    self.schedule(later(at, timeout), index, epoch, step_index, Outcome::Fault);
                }
            }
            StepConfig::HttpRequest {
                url,
                headers,
                body_template,
                hmac_secret,
                ..
            } => {
                let Some(url) = url.or_else(|| self.webhook_url.clone()) else {
                    // Nowhere to send: the step has nothing to wait for.
                    self.complete_step(index, at, jobs);
                    return;
                };
                let Some(instance) = self.instances.at(index) else {
                    return;
                };
                let id = instance.id.to_string();
                let secrets = &self.secrets;
                let render = |text: &str| {
                    let mut text = text
                        .replace("{{instanceId}}", &id)
                        .replace("{{flowId}}", instance.flow_id())
                        .replace("{{definitionId}}", instance.definition_id())
                        .replace("{{clientId}}", &instance.client_id);
                    if text.contains(SECRET_OPEN) {
                        for (name, value) in secrets {
                            text = text.replace(&format!("{SECRET_OPEN}{name}}}}}"), value);
                        }
                    }
                    text
                };
                let job = WebhookJob {
                    instance: index,
                    epoch,
                    step: step_index,
                    url,
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.clone(), render(v)))
                        .collect(),
                    body: render(&body_template),
                    hmac_secret,
                    seq: self.event_seq,
                };
                self.event_seq += 1;
                jobs.push(job);
            }
        }
    }

    /// Whether `step` of instance `index` at `epoch` is still the one running.
    fn is_current(&self, index: u32, epoch: u32, step: u32) -> bool {
        self.instances.at(index).is_some_and(|i| {
            i.epoch == epoch
                && i.step == step
                && i.is("Running")
                && i.activities
                    .get(step as usize)
                    .is_some_and(|a| a.completed_at.is_none())
        })
    }

    fn complete_step(&mut self, index: u32, at: DateTime<Utc>, jobs: &mut Vec<WebhookJob>) {
        let Some(instance) = self.instances.at_mut(index) else {
            return;
        };
        if let Some(activity) = instance.activities.get_mut(instance.step as usize) {
            activity.status = ActivityStatus::Completed;
            activity.completed_at = Some(at);
        }
        instance.step += 1;
        self.enter_step(index, at, jobs);
    }

    fn fault(&mut self, index: u32, at: DateTime<Utc>) {
        let Some(instance) = self.instances.at_mut(index) else {
            return;
        };
        if let Some(activity) = instance.activities.get_mut(instance.step as usize) {
            activity.status = ActivityStatus::Faulted;
            activity.completed_at = Some(at);
        }
        instance.status = Cow::Borrowed("Faulted");
        instance.has_error = true;
        instance.finished_at = Some(at);
        instance.updated_at = at;
    }

    /// Runs every event due at or before `now`, each at its own time; returns webhook jobs.
    pub fn process_due(&mut self, now: DateTime<Utc>) -> Vec<WebhookJob> {
        let mut jobs = Vec::new();
        while let Some(Reverse(event)) = self.events.peek() {
            if event.at > now {
                break;
            }
            let Some(Reverse(event)) = self.events.pop() else {
                break;
            };
            if !self.is_current(event.instance, event.epoch, event.step) {
                continue;
            }
            match event.outcome {
                Outcome::Complete => self.complete_step(event.instance, event.at, &mut jobs),
                Outcome::Fault => self.fault(event.instance, event.at),
            }
        }
        jobs
    }

    /// When the next scheduled event is due.
    pub fn next_due(&self) -> Option<DateTime<Utc>> {
        self.events.peek().map(|Reverse(e)| e.at)
    }

    /// Completes the HTTP request step after its webhook was sent (or dropped).
    pub fn webhook_step_done(&mut self, job: &WebhookJob, now: DateTime<Utc>) -> Vec<WebhookJob> {
        let mut jobs = Vec::new();
        if self.is_current(job.instance, job.epoch, job.step) {
            self.complete_step(job.instance, now, &mut jobs);
        }
        jobs
    }

    /// Completes or abandons the user step instance `id` is waiting at.
    pub fn user_step(
        &mut self,
        id: &str,
        action: UserStep,
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookJob>, UserStepError> {
        let index = self
            .instances
            .find(id)
            .filter(|&i| self.instances.at(i).is_some_and(|i| self.retained(i, now)))
            .ok_or(UserStepError::NotFound)?;
        let waiting = self.instances.at(index).is_some_and(|instance| {
            instance.is("Running")
                && matches!(
                    instance.flow.steps.get(instance.step as usize),
                    Some(StepConfig::User { .. })
                )
                && instance
                    .activities
                    .get(instance.step as usize)
                    .is_some_and(|a| a.status == ActivityStatus::Suspended)
        });
        if !waiting {
            return Err(UserStepError::NotWaiting);
        }
        let mut jobs = Vec::new();
        match action {
            UserStep::Complete => self.complete_step(index, now, &mut jobs),
            UserStep::Abandon => self.fault(index, now),
        }
        Ok(jobs)
    }

    /// Forces the status of instance `id` (any string). The instance's lifecycle stops there; a
    /// terminal status (`Finished`, `Faulted`, `Cancelled`) sets its end time, and `Finished` makes
    /// its result file available.
    pub fn set_status(&mut self, id: &str, status: &str, now: DateTime<Utc>) -> bool {
        let Some(instance) = self
            .instances
            .find(id)
            .and_then(|i| self.instances.at_mut(i))
        else {
            return false;
        };
        instance.epoch += 1;
        instance.status = status_text(status);
        instance.updated_at = now;
        if is_terminal(status) {
            instance.finished_at.get_or_insert(now);
        } else {
            instance.finished_at = None;
        }
        match status {
            "Finished" => {
                instance.has_error = false;
                instance.has_output = true;
            }
            "Faulted" => instance.has_error = true,
            _ => {}
        }
        true
    }

    /// When retention deleted `instance` (`None` while it is retained).
    pub fn deleted_at(&self, instance: &Instance, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (!self.retained(instance, now)).then(|| {
            later(
                instance.finished_at.unwrap_or(now),
                self.service.retention_secs,
            )
        })
    }
}

/// Whether `status` ends an instance.
fn is_terminal(status: &str) -> bool {
    matches!(status, "Finished" | "Faulted" | "Cancelled")
}

/// A status as stored: the known ones without allocating.
fn status_text(status: &str) -> Cow<'static, str> {
    match status {
        "Running" => Cow::Borrowed("Running"),
        "Finished" => Cow::Borrowed("Finished"),
        "Faulted" => Cow::Borrowed("Faulted"),
        "Cancelled" => Cow::Borrowed("Cancelled"),
        other => Cow::Owned(other.to_owned()),
    }
}

/// `at` plus `secs` seconds, saturating at the end of representable time (config values are
/// outside input: they must not be able to overflow the clock into a panic).
pub fn later(at: DateTime<Utc>, secs: u64) -> DateTime<Utc> {
    let secs = secs.min(i64::MAX as u64 / 1_000_000) as i64;
    Duration::try_seconds(secs)
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
