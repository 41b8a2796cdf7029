//! The simulator's configuration: API clients, flows, limits, service settings and faults.
//!
//! One set of types serves the TOML file (`mint-sim --config sim.toml`), the builder
//! (`Simulator::builder().config(..)`) and the admin API (`PUT /_sim/...`), with camelCase keys
//! everywhere. Every section has a default, so a file states only what it changes; a section it
//! does state (e.g. `[[clients]]`) replaces that part of the default fixture.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::behaviours::Behaviours;
use crate::model;
pub use crate::validation::ConfigError;
use crate::validation::{check_rate, invalid};

/// The whole simulator configuration. `Default` is the default fixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SimConfig {
    /// Seed of every random choice: ids, behaviours, faults and result-file contents.
    pub seed: u64,
    /// Simulated seconds per real second (0 freezes the clock; only advances move it).
    pub time_scale: f64,
    /// URL of every HTTP request step that names no URL of its own (none: such steps send nothing).
    pub webhook_url: Option<String>,
    /// The API clients (credentials, roles, token lifetime).
    pub clients: Vec<ClientConfig>,
    /// The published flows.
    pub flows: Vec<FlowConfig>,
    /// Rate limits and costs.
    pub limits: Limits,
    /// Billing, retention, listing speed, Range support and webhook timeout.
    pub service: ServiceSettings,
    /// Fault injection.
    pub faults: Faults,
    /// Where Mint may differ from the contract: the other plausible behaviours, all off by
    /// default.
    pub behaviours: Behaviours,
    /// Secrets stored in Mint's configuration, by name: HTTP request steps put them in headers
    /// (or bodies) with `{{secret:NAME}}`.
    pub secrets: BTreeMap<String, String>,
}

/// One API client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id (`client_id`).
    pub client_id: String,
    /// The client secret, compared byte for byte (trailing whitespace makes it wrong).
    pub client_secret: String,
    /// Granted roles, e.g. `"Flow Viewer"`, `"Flow Editor"`, `"Flow Instance Download"`.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Lifetime of the tokens issued to this client, 1..=3600 s.
    #[serde(default = "default_token_lifetime")]
    pub token_lifetime_secs: u64,
}

fn default_token_lifetime() -> u64 {
    model::TOKEN_LIFETIME_SECS_DEFAULT
}

/// One flow (a published version of a flow definition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FlowConfig {
    /// The flow id used in API paths.
    pub id: String,
    /// The definition id, shared by all versions; passing it as a flow id gives 404.
    pub definition_id: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Version number (>= 1).
    #[serde(default = "one")]
    pub version: u32,
    /// Whether this is the latest version of its definition.
    #[serde(default = "yes")]
    pub is_latest: bool,
    /// Whether this version is published (otherwise it is a draft).
    #[serde(default = "yes")]
    pub is_published: bool,
    /// Size of each instance's result file in bytes (at least a small minimum; at most 64 GiB).
    #[serde(default = "default_result_bytes")]
    pub result_file_bytes: u64,
    /// The steps, run in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_result_bytes() -> u64 {
    64 * 1024
}

/// One step of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum StepConfig {
    /// An automatic step that takes `durationSecs` of simulated time and may fail.
    Auto {
        /// Activity name.
        name: String,
        /// Activity `type` on the wire (`http`, `verification`, `document`, ...).
        #[serde(default = "default_auto_type")]
        activity_type: String,
        /// Simulated duration.
        #[serde(default)]
        duration_secs: u64,
        /// Probability (0..=1) that the step faults the instance.
        #[serde(default)]
        failure_probability: f64,
    },
    /// A step that waits for the end user: manual (admin API) unless a behaviour is set.
    User {
        /// Activity name.
        name: String,
        /// Activity `type` on the wire.
        #[serde(default = "default_user_type")]
        activity_type: String,
        /// How simulated end users behave; absent means they wait for the admin API.
        #[serde(default)]
        behaviour: Option<UserBehaviour>,
        /// Fault the instance if the step is still waiting after this long (simulated).
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// The "send raw HTTP request" step: POSTs the webhook once, no retry. What Mint's step is
    /// known to do: a URL, static headers (a secret stored in Mint's configuration can go in
    /// one, `{{secret:NAME}}`) and a body template. Signing the body is an option, not assumed.
    HttpRequest {
        /// Activity name.
        name: String,
        /// Target URL; absent means the simulator-wide `webhookUrl`.
        #[serde(default)]
        url: Option<String>,
        /// Static headers, e.g. `X-Mint-Webhook-Secret = "{{secret:webhook}}"`; values may use
        /// the body's placeholders and `{{secret:NAME}}`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
        /// Body template; `{{instanceId}}`, `{{flowId}}`, `{{definitionId}}`, `{{clientId}}` and
        /// `{{secret:NAME}}` are replaced.
        #[serde(default = "default_body_template")]
        body_template: String,
        /// Optional, and not known to exist in Mint: when set, also adds `X-Mint-Timestamp` and
        /// `X-Mint-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
        #[serde(default)]
        hmac_secret: Option<String>,
    },
}

/// Opens a secret placeholder, `{{secret:NAME}}`.
pub(crate) const SECRET_OPEN: &str = "{{secret:";

fn default_auto_type() -> String {
    "verification".to_owned()
}
fn default_user_type() -> String {
    "userTask".to_owned()
}
fn default_body_template() -> String {
    model::WEBHOOK_BODY_TEMPLATE_DEFAULT.to_owned()
}

impl StepConfig {
    /// The activity name of the step.
    pub fn name(&self) -> &str {
        match self {
            Self::Auto { name, .. } | Self::User { name, .. } | Self::HttpRequest { name, .. } => {
                name
            }
        }
    }

    /// The activity `type` of the step on the wire.
    pub fn activity_type(&self) -> &str {
        match self {
            Self::Auto { activity_type, .. } | Self::User { activity_type, .. } => activity_type,
            Self::HttpRequest { .. } => "httpRequest",
        }
    }

    /// The default HTTP request step (URL from the simulator-wide `webhookUrl`, no headers).
    pub fn webhook() -> Self {
        Self::HttpRequest {
            name: "Notify".to_owned(),
            url: None,
            headers: BTreeMap::new(),
            body_template: default_body_template(),
            hmac_secret: None,
        }
    }

    /// The HTTP request step as Mint can certainly configure it: the default body and one static
    /// header carrying a shared secret (e.g. `X-Mint-Webhook-Secret: <secret>`), no signature.
    pub fn webhook_with_secret_header(header: &str, secret: &str) -> Self {
        Self::HttpRequest {
            name: "Notify".to_owned(),
            url: None,
            headers: BTreeMap::from([(header.to_owned(), secret.to_owned())]),
            body_template: default_body_template(),
            hmac_secret: None,
        }
    }

    /// The secret names the step's headers and body refer to with `{{secret:NAME}}`.
    pub fn secret_names(&self) -> Vec<(String, String)> {
        let Self::HttpRequest {
            headers,
            body_template,
            ..
        } = self
        else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for (place, text) in headers
            .iter()
            .map(|(k, v)| (format!("headers.{k}"), v.as_str()))
            .chain(std::iter::once((
                "bodyTemplate".to_owned(),
                body_template.as_str(),
            )))
        {
            let mut rest = text;
            while let Some(start) = rest.find(SECRET_OPEN) {
                rest = &rest[start + SECRET_OPEN.len()..];
                let Some(end) = rest.find("}}") else { break };
                names.push((place.clone(), rest[..end].to_owned()));
                rest = &rest[end + 2..];
            }
        }
        names
    }
}

/// How simulated end users behave at a user step. Probabilities that sum to less than 1 leave the
/// rest waiting forever (or until `timeoutSecs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct UserBehaviour {
    /// Probability of completing after a delay drawn from `completeAfterSecs`.
    pub complete_probability: f64,
    /// Uniform delay range `[min, max]` of a prompt completion.
    pub complete_after_secs: [u64; 2],
    /// Probability of dawdling (completing after a delay drawn from `dawdleAfterSecs`).
    pub dawdle_probability: f64,
    /// Uniform delay range `[min, max]` of a dawdler's completion.
    pub dawdle_after_secs: [u64; 2],
    /// Probability of abandoning: the step times out after `abandonTimeoutSecs` and the instance
    /// becomes `Faulted`.
    pub abandon_probability: f64,
    /// When an abandoned step times out.
    pub abandon_timeout_secs: u64,
}

impl Default for UserBehaviour {
    fn default() -> Self {
        Self {
            complete_probability: 0.8,
            complete_after_secs: [30, 600],
            dawdle_probability: 0.1,
            dawdle_after_secs: [3600, 6 * 3600],
            abandon_probability: 0.1,
            abandon_timeout_secs: 3600,
        }
    }
}

/// Rate limits and costs, per API client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Limits {
    /// Length of the main window.
    pub window_secs: u64,
    /// Units admitted in any main window.
    pub window_units: u64,
    /// Length of the burst window.
    pub burst_window_millis: u64,
    /// Units admitted in any burst window.
    pub burst_units: u64,
    /// Cost of an ordinary request.
    pub request_cost_units: u64,
    /// Cost of a result-file download.
    pub result_file_cost_units: u64,
    /// Send `Retry-After` (whole seconds until the request would fit) with rate-limit 429s.
    pub retry_after: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            window_secs: model::RATE_WINDOW_SECS_DEFAULT,
            window_units: model::RATE_WINDOW_UNITS_DEFAULT,
            burst_window_millis: model::BURST_WINDOW_MILLIS_DEFAULT,
            burst_units: model::BURST_UNITS_DEFAULT,
            request_cost_units: model::REQUEST_COST_UNITS_DEFAULT,
            result_file_cost_units: model::RESULT_FILE_COST_UNITS_DEFAULT,
            retry_after: false,
        }
    }
}

impl Limits {
    /// Limits so high that no test or benchmark reaches them.
    pub fn unlimited() -> Self {
        Self {
            window_units: u64::MAX / 4,
            burst_units: u64::MAX / 4,
            ..Self::default()
        }
    }
}

/// Billing, retention, listing speed, Range support and webhook timeout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// Price of each started instance, in cents.
    pub start_cents: u64,
    /// Instances and result files disappear this long after the instance ended.
    pub retention_secs: u64,
    /// Simulated time the instance list spends per instance of the flow (0: instant); the answer
    /// waits until the simulated clock has moved that far (at once while it is frozen).
    pub list_delay_micros_per_instance: u64,
    /// Advertise `Accept-Ranges: bytes` and honour `Range: bytes=N-` on result files.
    pub accept_ranges: bool,
    /// How long the HTTP request step waits for the webhook receiver (real time).
    pub webhook_timeout_millis: u64,
    /// The start input's key whose value counts as the start's correlation id in the ground truth
    /// (`GET /_sim/starts`).
    pub correlation_input_key: String,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            start_cents: model::START_CENTS_DEFAULT,
            retention_secs: model::RETENTION_SECS_DEFAULT,
            list_delay_micros_per_instance: model::LIST_DELAY_MICROS_PER_INSTANCE_DEFAULT,
            accept_ranges: false,
            webhook_timeout_millis: model::WEBHOOK_TIMEOUT_MILLIS_DEFAULT,
            correlation_input_key: model::CORRELATION_INPUT_KEY_DEFAULT.to_owned(),
        }
    }
}

/// Fault injection. Rates are probabilities (0..=1) drawn per request (or per webhook) from the
/// fault generator, which is seeded, so a run is reproducible for the same sequence of requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Faults {
    /// Reseed the fault generator with this value when the faults are set.
    pub seed: Option<u64>,
    /// Rate of 5xx answers (500 JSON, or 502/503 with an HTML body) to admitted API requests.
    pub server_error_rate: f64,
    /// Rate of 429s to API requests regardless of budget (a 429 storm); they consume nothing.
    pub storm_rate: f64,
    /// Every API request gets 429 for this many simulated seconds after the faults are set.
    pub storm_for_secs: u64,
    /// `Retry-After` (seconds) sent with storm 429s; absent: none.
    pub storm_retry_after_secs: Option<u64>,
    /// Rate of result-file bodies cut (connection aborted) part way.
    pub cut_body_rate: f64,
    /// Where a cut body stops, as a fraction of the file (0..1).
    pub cut_body_at_fraction: f64,
    /// Rate of result-file bodies sent slowly.
    pub slow_body_rate: f64,
    /// Speed of a slow body, bytes per real second.
    pub slow_body_bytes_per_sec: u64,
    /// Rate of starts that are committed (and billed) but whose connection is closed before any
    /// response byte.
    pub lost_start_rate: f64,
    /// Rate of webhooks never sent (the step still completes).
    pub webhook_drop_rate: f64,
    /// Rate of webhooks sent twice.
    pub webhook_duplicate_rate: f64,
    /// Rate of webhooks sent `webhookDelayMillis` late (the instance finishes without waiting).
    pub webhook_delay_rate: f64,
    /// Delay of a delayed webhook, real milliseconds.
    pub webhook_delay_millis: u64,
    /// Rate of webhooks held back until after the next webhook (or the delay), so they arrive
    /// out of order.
    pub webhook_reorder_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: None,
            server_error_rate: 0.0,
            storm_rate: 0.0,
            storm_for_secs: 0,
            storm_retry_after_secs: None,
            cut_body_rate: 0.0,
            cut_body_at_fraction: 0.5,
            slow_body_rate: 0.0,
            slow_body_bytes_per_sec: 1024 * 1024,
            lost_start_rate: 0.0,
            webhook_drop_rate: 0.0,
            webhook_duplicate_rate: 0.0,
            webhook_delay_rate: 0.0,
            webhook_delay_millis: model::WEBHOOK_DELAY_MILLIS_DEFAULT,
            webhook_reorder_rate: 0.0,
        }
    }
}

fn check_url(key: String, value: &str) -> Result<(), ConfigError> {
    match url::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(_) => Err(invalid(key, "must be an http or https URL")),
        Err(e) => Err(invalid(key, format!("not a URL ({e}): {value:?}"))),
    }
}

impl Faults {
    /// Checks every rate and fraction; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let rates = [
            ("serverErrorRate", self.server_error_rate),
            ("stormRate", self.storm_rate),
            ("cutBodyRate", self.cut_body_rate),
            ("slowBodyRate", self.slow_body_rate),
            ("lostStartRate", self.lost_start_rate),
            ("webhookDropRate", self.webhook_drop_rate),
            ("webhookDuplicateRate", self.webhook_duplicate_rate),
            ("webhookDelayRate", self.webhook_delay_rate),
            ("webhookReorderRate", self.webhook_reorder_rate),
        ];
        for (name, value) in rates {
            check_rate(format!("{prefix}{name}"), value)?;
        }
        if !(self.cut_body_at_fraction.is_finite()
            && (0.0..1.0).contains(&self.cut_body_at_fraction))
        {
            return Err(invalid(
                format!("{prefix}cutBodyAtFraction"),
                format!(
                    "must be at least 0 and below 1 (got {})",
                    self.cut_body_at_fraction
                ),
            ));
        }
        if self.slow_body_bytes_per_sec == 0 {
            return Err(invalid(
                format!("{prefix}slowBodyBytesPerSec"),
                "must be at least 1",
            ));
        }
        if self.storm_for_secs > 365 * 24 * 3600 {
            return Err(invalid(format!("{prefix}stormForSecs"), "at most one year"));
        }
        Ok(())
    }
}

impl Limits {
    /// Checks the windows and costs; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let positive = [
            ("windowSecs", self.window_secs),
            ("windowUnits", self.window_units),
            ("burstWindowMillis", self.burst_window_millis),
            ("burstUnits", self.burst_units),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(format!("{prefix}{name}"), "must be at least 1"));
            }
        }
        if self.window_secs > 366 * 24 * 3600 {
            return Err(invalid(format!("{prefix}windowSecs"), "at most one year"));
        }
        if self.burst_window_millis > 366 * 24 * 3600 * 1000 {
            return Err(invalid(
                format!("{prefix}burstWindowMillis"),
                "at most one year",
            ));
        }
        Ok(())
    }
}

impl ServiceSettings {
    /// Checks the settings; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.retention_secs > 100 * 365 * 24 * 3600 {
            return Err(invalid(
                format!("{prefix}retentionSecs"),
                "at most 100 years",
            ));
        }
        if self.list_delay_micros_per_instance > 1_000_000 {
            return Err(invalid(
                format!("{prefix}listDelayMicrosPerInstance"),
                "at most 1000000 (one second per instance)",
            ));
        }
        if self.correlation_input_key.is_empty() {
            return Err(invalid(
                format!("{prefix}correlationInputKey"),
                "must not be empty",
            ));
        }
        if self.webhook_timeout_millis == 0 || self.webhook_timeout_millis > 600_000 {
            return Err(invalid(
                format!("{prefix}webhookTimeoutMillis"),
                "must be between 1 and 600000",
            ));
        }
        Ok(())
    }
}

impl ClientConfig {
    /// A client with the default token lifetime.
    pub fn new(client_id: &str, client_secret: &str, roles: &[&str]) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            token_lifetime_secs: model::TOKEN_LIFETIME_SECS_DEFAULT,
        }
    }

    /// Checks the client; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.client_id.is_empty() {
            return Err(invalid(format!("{prefix}clientId"), "must not be empty"));
        }
        if self.client_id.contains(':') {
            return Err(invalid(
                format!("{prefix}clientId"),
                "must not contain ':' (HTTP Basic separates id and secret with it)",
            ));
        }
        if self.client_secret.is_empty() {
            return Err(invalid(
                format!("{prefix}clientSecret"),
                "must not be empty",
            ));
        }
        let lifetime = model::TOKEN_LIFETIME_SECS_MIN..=model::TOKEN_LIFETIME_SECS_MAX;
        if !lifetime.contains(&self.token_lifetime_secs) {
            return Err(invalid(
                format!("{prefix}tokenLifetimeSecs"),
                format!(
                    "must be between {} and {} (got {})",
                    lifetime.start(),
                    lifetime.end(),
                    self.token_lifetime_secs
                ),
            ));
        }
        Ok(())
    }
}

impl FlowConfig {
    /// Checks the flow; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.id.is_empty() || self.id.contains('/') {
            return Err(invalid(
                format!("{prefix}id"),
                "must be non-empty and contain no '/'",
            ));
        }
        if self.definition_id.is_empty() {
            return Err(invalid(
                format!("{prefix}definitionId"),
                "must not be empty",
            ));
        }
        if self.definition_id == self.id {
            return Err(invalid(
                format!("{prefix}definitionId"),
                "must differ from the flow id",
            ));
        }
        if self.version == 0 {
            return Err(invalid(format!("{prefix}version"), "must be at least 1"));
        }
        if self.result_file_bytes > model::RESULT_FILE_BYTES_MAX {
            return Err(invalid(
                format!("{prefix}resultFileBytes"),
                format!("at most {} (64 GiB)", model::RESULT_FILE_BYTES_MAX),
            ));
        }
        for (i, step) in self.steps.iter().enumerate() {
            let key = format!("{prefix}steps[{i}].");
            match step {
                StepConfig::Auto {
                    duration_secs,
                    failure_probability,
                    ..
                } => {
                    check_rate(format!("{key}failureProbability"), *failure_probability)?;
                    if *duration_secs > 365 * 24 * 3600 {
                        return Err(invalid(format!("{key}durationSecs"), "at most one year"));
                    }
                }
                StepConfig::User { behaviour, .. } => {
                    if let Some(b) = behaviour {
                        b.validate(&format!("{key}behaviour."))?;
                    }
                }
                StepConfig::HttpRequest { url, .. } => {
                    if let Some(url) = url {
                        check_url(format!("{key}url"), url)?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl UserBehaviour {
    /// Checks probabilities and delay ranges; errors name the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        check_rate(
            format!("{prefix}completeProbability"),
            self.complete_probability,
        )?;
        check_rate(
            format!("{prefix}dawdleProbability"),
            self.dawdle_probability,
        )?;
        check_rate(
            format!("{prefix}abandonProbability"),
            self.abandon_probability,
        )?;
        let sum = self.complete_probability + self.dawdle_probability + self.abandon_probability;
        if sum > 1.0 + 1e-9 {
            return Err(invalid(
                format!("{prefix}completeProbability"),
                format!("complete + dawdle + abandon probabilities add up to {sum}, more than 1"),
            ));
        }
        for (name, [min, max]) in [
            ("completeAfterSecs", self.complete_after_secs),
            ("dawdleAfterSecs", self.dawdle_after_secs),
        ] {
            if min > max {
                return Err(invalid(
                    format!("{prefix}{name}"),
                    format!("[min, max] with min <= max (got [{min}, {max}])"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::fixture()
    }
}

impl SimConfig {
    /// The default fixture: clients `demo`, `viewer`, `no-download` and flows `flow-kyc-basic`,
    /// `flow-kyc-video` (user steps manual), default limits, no faults.
    pub fn fixture() -> Self {
        use model::{ROLE_DOWNLOAD, ROLE_EDITOR, ROLE_VIEWER};
        let prepare = StepConfig::Auto {
            name: "Prepare session".to_owned(),
            activity_type: "http".to_owned(),
            duration_secs: 2,
            failure_probability: 0.0,
        };
        let user = |name: &str| StepConfig::User {
            name: name.to_owned(),
            activity_type: "userTask".to_owned(),
            behaviour: None,
            timeout_secs: None,
        };
        Self {
            seed: 0,
            time_scale: 1.0,
            webhook_url: None,
            clients: vec![
                ClientConfig::new(
                    "demo",
                    "demo-secret",
                    &[ROLE_VIEWER, ROLE_EDITOR, ROLE_DOWNLOAD],
                ),
                ClientConfig::new("viewer", "viewer-secret", &[ROLE_VIEWER]),
                ClientConfig::new(
                    "no-download",
                    "no-download-secret",
                    &[ROLE_VIEWER, ROLE_EDITOR],
                ),
            ],
            flows: vec![
                FlowConfig {
                    id: "flow-kyc-basic".to_owned(),
                    definition_id: "def-kyc-basic".to_owned(),
                    name: "KYC basic".to_owned(),
                    description: "Identity document check".to_owned(),
                    version: 1,
                    is_latest: true,
                    is_published: true,
                    result_file_bytes: 5 * 1024 * 1024,
                    steps: vec![
                        prepare.clone(),
                        user("Identity document"),
                        StepConfig::Auto {
                            name: "Verify document".to_owned(),
                            activity_type: "verification".to_owned(),
                            duration_secs: 5,
                            failure_probability: 0.0,
                        },
                        StepConfig::webhook(),
                    ],
                },
                FlowConfig {
                    id: "flow-kyc-video".to_owned(),
                    definition_id: "def-kyc-video".to_owned(),
                    name: "KYC video".to_owned(),
                    description: "Identity document and video selfie".to_owned(),
                    version: 1,
                    is_latest: true,
                    is_published: true,
                    result_file_bytes: 200 * 1024 * 1024,
                    steps: vec![
                        prepare,
                        user("Identity document"),
                        user("Video selfie"),
                        StepConfig::Auto {
                            name: "Verify identity".to_owned(),
                            activity_type: "verification".to_owned(),
                            duration_secs: 30,
                            failure_probability: 0.0,
                        },
                        StepConfig::Auto {
                            name: "Compose result".to_owned(),
                            activity_type: "document".to_owned(),
                            duration_secs: 10,
                            failure_probability: 0.0,
                        },
                        StepConfig::webhook(),
                    ],
                },
            ],
            limits: Limits::default(),
            service: ServiceSettings::default(),
            faults: Faults::default(),
            behaviours: Behaviours::default(),
            secrets: BTreeMap::new(),
        }
    }

    /// Parses a TOML document; errors name the offending key.
    pub fn from_toml_str(text: &str) -> anyhow::Result<Self> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file; errors name the file and the offending key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Self::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.time_scale.is_finite() && (0.0..=1_000_000.0).contains(&self.time_scale)) {
            return Err(invalid(
                "timeScale",
                format!("must be between 0 and 1000000 (got {})", self.time_scale),
            ));
        }
        if let Some(url) = &self.webhook_url {
            check_url("webhookUrl".to_owned(), url)?;
        }
        let mut ids = HashSet::new();
        for (i, client) in self.clients.iter().enumerate() {
            client.validate(&format!("clients[{i}]."))?;
            if !ids.insert(client.client_id.as_str()) {
                return Err(invalid(
                    format!("clients[{i}].clientId"),
                    format!("duplicate client id {:?}", client.client_id),
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, flow) in self.flows.iter().enumerate() {
            flow.validate(&format!("flows[{i}]."))?;
            if !ids.insert(flow.id.as_str()) {
                return Err(invalid(
                    format!("flows[{i}].id"),
                    format!("duplicate flow id {:?}", flow.id),
                ));
            }
        }
        self.limits.validate("limits.")?;
        self.service.validate("service.")?;
        self.faults.validate("faults.")?;
        self.behaviours
            .validate("behaviours.", self.flows.iter().map(|f| f.id.as_str()))?;
        for (name, value) in &self.secrets {
            if name.is_empty() || name.contains('}') || value.is_empty() {
                return Err(invalid(
                    format!("secrets.{name}"),
                    "names and values must be non-empty, names without '}'",
                ));
            }
        }
        for (i, flow) in self.flows.iter().enumerate() {
            check_secrets(&format!("flows[{i}]."), flow, &self.secrets)?;
        }
        Ok(())
    }
}

/// Checks that every `{{secret:NAME}}` of `flow`'s steps names a stored secret.
pub(crate) fn check_secrets(
    prefix: &str,
    flow: &FlowConfig,
    secrets: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (i, step) in flow.steps.iter().enumerate() {
        for (place, name) in step.secret_names() {
            if !secrets.contains_key(&name) {
                return Err(invalid(
                    format!("{prefix}steps[{i}].{place}"),
                    format!("refers to secret {name:?}, which `secrets` does not hold"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_is_valid_and_an_empty_file_is_the_fixture() {
        SimConfig::fixture().validate().unwrap();
        assert_eq!(SimConfig::from_toml_str("").unwrap(), SimConfig::fixture());
    }

    #[test]
    fn errors_name_the_key() {
        let err = SimConfig::from_toml_str("[limits]\nwindowUnits = 0\n").unwrap_err();
        assert!(err.to_string().contains("limits.windowUnits"), "{err}");
        let err = SimConfig::from_toml_str("[faults]\nstormRate = 2.0\n").unwrap_err();
        assert!(err.to_string().contains("faults.stormRate"), "{err}");
        let err = SimConfig::from_toml_str("[limits]\nwindowUnitz = 3\n").unwrap_err();
        assert!(err.to_string().contains("windowUnitz"), "{err}");
        let err = SimConfig::from_toml_str(
            "[[clients]]\nclientId = \"a\"\nclientSecret = \"b\"\ntokenLifetimeSecs = 4000\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("clients[0].tokenLifetimeSecs"),
            "{err}"
        );
        let err = SimConfig::from_toml_str(
            "[[flows]]\nid = \"f\"\ndefinitionId = \"d\"\n[[flows.steps]]\ntype = \"teleport\"\nname = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("teleport"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let config = SimConfig::from_toml_str(include_str!("../sim.example.toml")).unwrap();
        assert_eq!(config.seed, 42);
        assert_eq!(config.clients, SimConfig::fixture().clients);
        assert_eq!(config.flows.len(), 2);
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.service, ServiceSettings::default());
        assert_eq!(config.faults, Faults::default());
        assert!(matches!(
            &config.flows[1].steps[1],
            StepConfig::User { behaviour: Some(b), .. } if *b == UserBehaviour::default()
        ));
        assert!(matches!(
            &config.flows[0].steps[3],
            StepConfig::HttpRequest { headers, hmac_secret: None, .. }
                if headers["X-Mint-Webhook-Secret"] == "{{secret:webhook}}"
        ));
        assert_eq!(config.secrets["webhook"], "change-me");
        assert_eq!(config.behaviours, Behaviours::default());
    }

    #[test]
    fn the_soak_example_parses_with_its_faults_on() {
        let config = SimConfig::from_toml_str(include_str!("../soak.example.toml")).unwrap();
        assert_eq!(config.faults.seed, Some(17));
        assert!(config.faults.lost_start_rate > 0.0 && config.faults.cut_body_rate > 0.0);
        assert!(config.faults.webhook_drop_rate > 0.0 && config.faults.server_error_rate > 0.0);
        assert!(matches!(
            config.flows[0].steps.last(),
            Some(StepConfig::HttpRequest { headers, hmac_secret: None, .. })
                if headers["X-Mint-Webhook-Secret"] == "{{secret:webhook}}"
        ));
    }

    #[test]
    fn steps_parse_from_toml() {
        let config = SimConfig::from_toml_str(
            r#"
            [[flows]]
            id = "f"
            definitionId = "d"
            [[flows.steps]]
            type = "user"
            name = "Selfie"
            behaviour = { completeProbability = 0.5 }
            [[flows.steps]]
            type = "httpRequest"
            name = "Notify"
            url = "http://127.0.0.1:9/hook"
            hmacSecret = "s"
            "#,
        )
        .unwrap();
        let steps = &config.flows[0].steps;
        assert!(
            matches!(&steps[0], StepConfig::User { behaviour: Some(b), .. } if b.complete_probability == 0.5 && b.abandon_probability == 0.1)
        );
        assert!(
            matches!(&steps[1], StepConfig::HttpRequest { hmac_secret: Some(s), .. } if s == "s")
        );
    }
}
