//! The service's configuration: defaults in code, then a TOML file, then `MINTGATE_…` environment
//! variables (`__` between nested keys), plus Mint's conventional `MINT_API_BASE`, `MINT_TOKEN_URL`,
//! `MINT_CLIENT_ID` and `MINT_CLIENT_SECRET` for the default environment's profile.
//!
//! The layers are figment's own providers: `Toml`, `Env::prefixed("MINTGATE_").split("__")` and,
//! for Mint's variables, `Serialized` values kept as the strings they are (a client secret of digits
//! stays a string; `MINTGATE_…` values are parsed, so lists and numbers work).
//!
//! Values are typed ([`DatabaseUrl`], [`RedisUrl`], [`LogFormat`], durations, URLs) and checked when
//! read; [`Config::validate`] checks what types alone cannot. Every error is a [`ConfigError`] that
//! names the key and never a secret value. The effective configuration is logged as
//! [`Config::redacted`], which is the `Serialize` impl of the same structs: secret fields serialize
//! redacted (see `values.rs`).

mod api_keys;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

pub use api_keys::{ApiKey, Scope, Scopes, key_with};
use values::redacted;
pub use values::{DatabaseUrl, LogFormat, REDACTED, RedisUrl, redact_url_password};

/// A configuration that cannot be used. It is the operator's to fix: the binaries answer it with
/// exit code 1 (chosen by this type, not by the message).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config FILE` (or `MINTGATE_CONFIG`) names a file that does not exist.
    #[error("the configuration file {} does not exist", .0.display())]
    MissingFile(PathBuf),
    /// A key is missing, of the wrong type or out of range; the message names the key and never
    /// the value of a secret.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// `return Err(ConfigError::Invalid(format!(…)))`.
macro_rules! invalid {
    ($($message:tt)*) => {
        return Err(ConfigError::Invalid(format!($($message)*)))
    };
}

/// The whole configuration of `mintgate serve` (and of the operator commands). Its `Serialize` impl
/// is the redacted view.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceConfig,
    /// The public listener (webhooks) and the operator listener (own API, status page, metrics).
    #[serde(default)]
    pub listeners: ListenersConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// Where result files are kept (`[archive]`).
    #[serde(default)]
    pub archive: crate::archive::ArchiveConfig,
    /// The Mint profile used when a request names none.
    #[serde(default = "default_environment")]
    pub default_environment: String,
    /// One Mint profile per environment (`sandbox`, `production`, …), each with its own API client.
    #[serde(default)]
    pub mint: BTreeMap<String, MintProfile>,
    /// OpenTelemetry traces (`[telemetry]`): off unless `otlp_endpoint` is set.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Application events (`[events]`): signed deliveries to `[[events.endpoints]]` and the feed.
    #[serde(default)]
    pub events: EventsConfig,
}

fn default_environment() -> String {
    "sandbox".to_owned()
}

/// The service's HTTP listeners. The public one faces the internet (Mint posts webhooks to it);
/// the operator one serves what only operators and their systems may reach.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    /// `POST /webhooks/mint` and `GET /healthz`.
    pub public: ListenerConfig,
    /// The own API (`/v1/…`), the status page `/`, `/metrics` and `/readyz`.
    pub operator: ListenerConfig,
    /// Serve the operator's routes on the public listener as well (one address, and the operator
    /// listener is not opened). Only for setups where the public listener is not public.
    pub combined: bool,
}

/// The public listener's address when none is configured.
pub const PUBLIC_ADDRESS_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
/// The operator listener's address when none is configured.
pub const OPERATOR_ADDRESS_DEFAULT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

impl ListenersConfig {
    /// Both listeners' routes on one address (tests, the demo and the benchmarks, which bind one
    /// port of their own).
    pub fn combined() -> Self {
        Self {
            combined: true,
            ..Self::default()
        }
    }

    pub fn public_address(&self) -> SocketAddr {
        self.public.address.unwrap_or(PUBLIC_ADDRESS_DEFAULT)
    }

    /// Where the operator's routes are served (the public address when combined).
    pub fn operator_address(&self) -> SocketAddr {
        if self.combined {
            self.public_address()
        } else {
            self.operator.address.unwrap_or(OPERATOR_ADDRESS_DEFAULT)
        }
    }
}

/// One listener: its address, TLS, and its limits (every one named with its unit).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// `host:port`; default 127.0.0.1:8080 (public) and 127.0.0.1:8081 (operator).
    pub address: Option<SocketAddr>,
    /// PEM certificate chain: serve HTTPS with rustls (with `tls_key_file`). Both files are read
    /// again when they change (checked every `tls_reload_interval`) or on `SIGHUP`, without a
    /// restart; a pair that does not load keeps the previous one in service.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub tls_reload_interval: Duration,
    /// A connection must send a request's whole header (and its TLS handshake) within this time,
    /// also when it is idle between requests (slowloris).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A request's whole body must arrive within this time.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// A request must be answered within this time (`503` otherwise).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections, at most; more wait in the kernel's backlog.
    pub connections_max: usize,
    /// Requests being handled at once, at most; more wait (within `request_timeout`).
    pub requests_in_flight_max: usize,
    /// The request line and headers together, at most (`431` beyond).
    pub header_bytes_max: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_reload_interval: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            connections_max: 1024,
            requests_in_flight_max: 256,
            header_bytes_max: 16 * 1024,
        }
    }
}

impl ListenerConfig {
    /// Checks one listener; errors name the key (`listeners.<name>.…`).
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => invalid!(
                "`listeners.{name}.tls_cert_file` is set but `listeners.{name}.tls_key_file` is not"
            ),
            (None, Some(_)) => invalid!(
                "`listeners.{name}.tls_key_file` is set but `listeners.{name}.tls_cert_file` is not"
            ),
            _ => {}
        }
        for (key, value, min, max) in [
            (
                "header_read_timeout",
                self.header_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
            (
                "body_read_timeout",
                self.body_read_timeout,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "request_timeout",
                self.request_timeout,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "tls_reload_interval",
                self.tls_reload_interval,
                Duration::from_millis(10),
                Duration::from_secs(86_400),
            ),
        ] {
            if value < min || value > max {
                invalid!(
                    "`listeners.{name}.{key}` must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                );
            }
        }
        for (key, value, max) in [
            ("connections_max", self.connections_max, 100_000),
            (
                "requests_in_flight_max",
                self.requests_in_flight_max,
                100_000,
            ),
        ] {
            if value == 0 || value > max {
                invalid!("`listeners.{name}.{key}` must be between 1 and {max}");
            }
        }
        if !(8192..=1024 * 1024).contains(&self.header_bytes_max) {
            invalid!("`listeners.{name}.header_bytes_max` must be between 8192 and 1048576");
        }
        Ok(())
    }
}

/// The service's database, archive and own API keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `sqlite://path/to/mintgate.db` (the default) or, for several replicas, `postgres://…`.
    pub database_url: DatabaseUrl,
    /// Deprecated: the local archive folder; use `archive.url = "file:///…"`. Used when
    /// `archive.url` is unset.
    pub archive_dir: PathBuf,
    /// Bearer keys that may call the own API (`/v1/…`): a bare string has every right (`admin`),
    /// a table `{ name, key, scopes }` only its scopes (see [`Scope`]). The operator commands use
    /// the first key that has the scopes they need. Serializes redacted.
    pub api_keys: Vec<ApiKey>,
    /// Where the operator commands reach this service (`mintgate start`); the operator listener's
    /// address if unset.
    #[serde(serialize_with = "redacted::optional_url")]
    pub url: Option<Url>,
    /// How long a graceful shutdown waits for in-flight work.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `json` (production) or `text`.
    pub log_format: LogFormat,
    /// `redis://…`: share the Mint budget, the token and the flow cache with the other replicas
    /// through Redis. Unset (the default), each process keeps its own.
    pub redis_url: Option<RedisUrl>,
    /// The prefix of every Redis key mintgate writes (several fleets may share one Redis).
    pub redis_key_prefix: String,
    /// How many replicas run against the same Mint API client. When Redis is unreachable each
    /// replica falls back to this share of the budget (limit / replicas).
    pub replicas: u32,
    /// Let the service's group read the database (files `0640`, folders `0750`); otherwise only
    /// the service's user may (`0600`, `0700`).
    pub group_access: bool,
    /// The status page and `/metrics` read the database at most once in this time, however
    /// often they are asked.
    #[serde(with = "humantime_serde")]
    pub status_cache_ttl: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            database_url: DatabaseUrl::Sqlite("sqlite://mintgate.db".to_owned()),
            archive_dir: PathBuf::from("archive"),
            api_keys: Vec::new(),
            url: None,
            shutdown_grace: Duration::from_secs(20),
            log_format: LogFormat::Json,
            redis_url: None,
            redis_key_prefix: "mintgate".to_owned(),
            replicas: 1,
            group_access: false,
            status_cache_ttl: Duration::from_secs(2),
        }
    }
}

/// How webhooks are authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookAuth {
    /// `X-Mint-Timestamp` and `X-Mint-Signature: v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`.
    Hmac,
    /// A header carrying the shared secret, compared in constant time.
    SharedSecret,
    /// No authentication; refused unless `allow_unauthenticated = true`.
    None,
}

/// The webhook receiver (`POST /webhooks/mint`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub auth: WebhookAuth,
    /// The secret webhooks carry (`shared_secret`) or are signed with (`hmac`).
    #[serde(serialize_with = "redacted::optional_secret")]
    pub secret: Option<SecretString>,
    /// The secret being replaced, still accepted beside `secret` while a rotation is under way
    /// (set the new one as `secret`, the old one here; remove this once every flow sends the new).
    #[serde(serialize_with = "redacted::optional_secret")]
    pub previous_secret: Option<SecretString>,
    /// The header that carries the shared secret (with `auth = "shared_secret"`).
    pub secret_header: String,
    /// How far a signed timestamp may be from now before the webhook is refused as a replay.
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    pub body_bytes_max: usize,
    /// Accept webhooks without authentication (never in production).
    pub allow_unauthenticated: bool,
    /// A webhook is sent by the flow's last step, before Mint marks the instance finished: the
    /// confirming status call waits this long so that it sees the final state.
    #[serde(with = "humantime_serde")]
    pub settle: Duration,
    /// Webhook records are deleted this long after they arrived (replays of older bodies are
    /// then recorded again; they still cost at most one check per `pipeline.poll_interval_min`).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Records of webhooks that named no execution of ours are deleted sooner.
    #[serde(with = "humantime_serde")]
    pub unmatched_retention: Duration,
    /// How often the pruning runs.
    #[serde(with = "humantime_serde")]
    pub prune_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            // What Mint's "Send raw HTTP request" step can do: a static header. Nothing shows that
            // it can sign a body.
            auth: WebhookAuth::SharedSecret,
            secret: None,
            previous_secret: None,
            secret_header: "X-Mint-Webhook-Secret".to_owned(),
            tolerance: Duration::from_secs(300),
            body_bytes_max: 64 * 1024,
            allow_unauthenticated: false,
            settle: Duration::from_secs(2),
            retention: Duration::from_secs(30 * 24 * 3600),
            unmatched_retention: Duration::from_secs(24 * 3600),
            prune_interval: Duration::from_secs(3600),
        }
    }
}

/// OpenTelemetry traces, exported over OTLP/HTTP (protobuf): the own API's requests, each job step
/// and each Mint call, one trace per execution; `traceparent` is sent to Mint. Off by default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP receiver, e.g. `http://127.0.0.1:4318`: spans are posted to
    /// `<url>/v1/traces` (a URL with a path of its own is used as it is). Unset (the default): no
    /// span is exported and no exporter runs.
    #[serde(serialize_with = "redacted::optional_url")]
    pub otlp_endpoint: Option<Url>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0. A request that arrives with a `traceparent`
    /// follows its caller's decision instead.
    pub sampling_ratio: f64,
    /// How long one export may take before it is given up (spans are then dropped, never the
    /// service's work).
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "mintgate".to_owned(),
            sampling_ratio: 1.0,
            export_timeout: Duration::from_secs(10),
        }
    }
}

impl TelemetryConfig {
    /// Checks the values; every error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            if !matches!(url.scheme(), "http" | "https") {
                invalid!("`telemetry.otlp_endpoint` must be an http:// or https:// URL");
            }
            if url.host_str().is_none_or(str::is_empty) {
                invalid!("`telemetry.otlp_endpoint` has no host");
            }
            if url.query().is_some() || url.fragment().is_some() {
                invalid!("`telemetry.otlp_endpoint` may not have a query or a fragment");
            }
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            invalid!("`telemetry.sampling_ratio` must be between 0.0 and 1.0");
        }
        if self.service_name.trim().is_empty() || self.service_name.len() > 200 {
            invalid!("`telemetry.service_name` must be 1 to 200 characters");
        }
        if self.export_timeout < Duration::from_millis(100)
            || self.export_timeout > Duration::from_secs(120)
        {
            invalid!("`telemetry.export_timeout` must be between 100ms and 2m");
        }
        Ok(())
    }

    /// Where spans are posted: the endpoint with `/v1/traces` when it has no path of its own.
    pub fn traces_url(&self) -> Option<Url> {
        let mut url = self.otlp_endpoint.clone()?;
        if url.path().is_empty() || url.path() == "/" {
            url.set_path("/v1/traces");
        }
        Some(url)
    }
}

/// Application events: deliveries to endpoints per the Standard Webhooks specification, retried
/// over about three days, and the feed (`GET /v1/events`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Where events are delivered (none: only the feed serves them).
    pub endpoints: Vec<EventEndpoint>,
    /// The waits between a failed attempt and the next one (each jittered by up to ±10 %); an
    /// event is a dead letter after the last. The default spans about three days.
    pub retry_schedule: Vec<humantime_serde::Serde<Duration>>,
    /// How long one attempt may take (connect, send, answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts in flight at once, per replica.
    pub concurrency: usize,
    /// How long a replica holds a claimed delivery before another may take it over.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often executions at risk of Mint's deletion are looked for (`execution.at_risk`).
    #[serde(with = "humantime_serde")]
    pub at_risk_scan_interval: Duration,
    /// The longest `wait` a feed request may ask for.
    #[serde(with = "humantime_serde")]
    pub feed_wait_max: Duration,
    /// How long events (and their deliveries, dead letters included) are kept once every
    /// configured endpoint has them delivered or dead-lettered; a feed reader whose cursor is
    /// older is told so (`410 cursor_expired`). Pruned every `webhook.prune_interval`.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Default `events.retention`: Mint's own 30 days.
pub const EVENTS_RETENTION_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);

/// One endpoint (`[[events.endpoints]]`). `Debug` shows what `Serialize` shows: no secret, no
/// query value.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventEndpoint {
    /// A stable name (`[a-z0-9_-]`, up to 64): deliveries are kept under it, so renaming an
    /// endpoint starts it afresh.
    pub name: String,
    /// `https://…` (or `http://…` on a private network). Its query is shown without values:
    /// receivers often take their credential there (`?code=…`).
    #[serde(serialize_with = "redacted::url_query")]
    pub url: Url,
    /// `whsec_<base64>`: the signing key (Standard Webhooks), at least 24 bytes once decoded.
    #[serde(serialize_with = "redacted::secret")]
    pub secret: SecretString,
    /// The key being replaced: events are signed with both while a rotation is under way.
    #[serde(default, serialize_with = "redacted::optional_secret")]
    pub previous_secret: Option<SecretString>,
    /// The event types this endpoint takes (`execution.archived`, …); all when empty.
    #[serde(default)]
    pub types: Vec<String>,
}

impl std::fmt::Debug for EventEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEndpoint")
            .field("name", &self.name)
            .field("url", &values::redact_url_query(self.url.as_str()))
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

/// Waits of the default retry schedule, in seconds: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h,
/// 20 h, 20 h (Svix's, stretched to about three days).
pub const EVENTS_RETRY_SCHEDULE_SECS: [u64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    20 * 3600,
];

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            retry_schedule: EVENTS_RETRY_SCHEDULE_SECS
                .iter()
                .map(|s| Duration::from_secs(*s).into())
                .collect(),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            lease: Duration::from_secs(60),
            at_risk_scan_interval: Duration::from_secs(60),
            feed_wait_max: Duration::from_secs(25),
            retention: EVENTS_RETENTION_DEFAULT,
        }
    }
}

impl EventsConfig {
    /// The retry schedule as plain durations.
    pub fn retry_waits(&self) -> Vec<Duration> {
        self.retry_schedule.iter().map(|d| **d).collect()
    }

    /// Checks the values; every error names the key, never a secret.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.retention < Duration::from_secs(24 * 3600) {
            // A feed reader must have time to come back (a weekend's outage, say); deliveries
            // still pending are kept whatever the retention.
            invalid!("`events.retention` must be at least 1d");
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            let key = format!("events.endpoints[{i}]");
            let name = &endpoint.name;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                invalid!("`{key}.name` must be 1 to 64 of a-z, 0-9, '_' and '-'");
            }
            if !names.insert(name.clone()) {
                invalid!("`{key}.name` {name:?} is the name of another endpoint");
            }
            if !matches!(endpoint.url.scheme(), "http" | "https")
                || endpoint.url.host_str().is_none_or(str::is_empty)
            {
                invalid!("`{key}.url` must be an http:// or https:// URL with a host");
            }
            if !endpoint.url.username().is_empty() || endpoint.url.password().is_some() {
                invalid!("`{key}.url` may not carry a user or password (events are signed)");
            }
            for (field, secret) in [
                ("secret", Some(&endpoint.secret)),
                ("previous_secret", endpoint.previous_secret.as_ref()),
            ] {
                if let Some(secret) = secret
                    && let Err(why) = crate::signing::SigningKey::parse(secret)
                {
                    invalid!("`{key}.{field}` {why}");
                }
            }
            for event_type in &endpoint.types {
                if crate::store::EventType::parse(event_type).is_none() {
                    invalid!(
                        "`{key}.types` names {event_type:?}, which is none of {}",
                        crate::store::EventType::ALL
                            .iter()
                            .map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        if self.retry_schedule.is_empty() || self.retry_schedule.len() > 30 {
            invalid!("`events.retry_schedule` must have 1 to 30 waits");
        }
        if self
            .retry_waits()
            .iter()
            .any(|w| *w > Duration::from_secs(7 * 24 * 3600))
        {
            invalid!("`events.retry_schedule` waits must be at most 7days each");
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(60) {
            invalid!("`events.timeout` must be between 100ms and 1m");
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            invalid!("`events.concurrency` must be between 1 and 256");
        }
        if self.lease < self.timeout * 2 {
            invalid!("`events.lease` must be at least twice `events.timeout`");
        }
        if self.at_risk_scan_interval < Duration::from_secs(1) {
            invalid!("`events.at_risk_scan_interval` must be at least 1s");
        }
        if self.feed_wait_max > Duration::from_secs(300) {
            invalid!("`events.feed_wait_max` must be at most 5m");
        }
        Ok(())
    }
}

/// The workers: polling policy, leases, concurrency.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// An execution with no webhook is first polled this long after it started (webhooks come
    /// first: this first look is the fallback's, and it costs two units while the instance runs).
    #[serde(with = "humantime_serde")]
    pub poll_grace: Duration,
    /// Never poll one instance more often than this (Mint's guidance: 30 s).
    #[serde(with = "humantime_serde")]
    pub poll_interval_min: Duration,
    /// Polls back off up to this interval for instances that wait long for their end user: no
    /// running instance goes unpolled longer (a lost webhook is caught within it).
    #[serde(with = "humantime_serde")]
    pub poll_interval_max: Duration,
    /// An instance Mint says waits for its end user is polled no more often than this (a webhook
    /// brings the check forward when the person is done; the poll only catches a lost one). Its
    /// polls then back off to as long again as it has waited. Within `poll_interval_min` and
    /// `poll_interval_max` whatever it is set to.
    #[serde(with = "humantime_serde")]
    pub user_poll_interval_min: Duration,
    /// Read the activities on every check of a running instance. Off (the default), they are read
    /// only when Mint's `updatedAt` differs from the one the known progress was read at; turn it on
    /// if Mint's `updatedAt` turns out not to move when an instance changes step (it is a [model]
    /// assumption).
    pub activities_every_check: bool,
    /// A worker's hold on a job; renewed while the work goes on. A dead worker's job is taken over
    /// after it lapses.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// After a start whose answer was lost, wait this long before looking for the instance.
    #[serde(with = "humantime_serde")]
    pub reconcile_delay: Duration,
    /// Clock-skew allowance between Mint and this service: a lost start's instance is looked for
    /// among instances created no earlier than this before the start was sent.
    #[serde(with = "humantime_serde")]
    pub reconcile_skew: Duration,
    /// Most Mint rate units one reconciliation scan may spend (list pages + instance reads); past
    /// it, what is neither found nor proven absent waits for an operator's decision.
    pub reconcile_max_units: u32,
    /// Longest one reconciliation scan may take (waits for budget units included); past it, the
    /// same as `reconcile_max_units`.
    #[serde(with = "humantime_serde")]
    pub reconcile_max_duration: Duration,
    /// List pages (and instance reads) a scan has in flight at once.
    pub reconcile_concurrency: usize,
    /// Downloads still missing this close to Mint's deletion are reported at risk.
    #[serde(with = "humantime_serde")]
    pub at_risk_window: Duration,
    /// An instance that Mint answers `404` for before its deletion deadline (by our own record of
    /// when it finished) is `expired` only once the `404`s have gone on, unbroken, this long (and
    /// at least three times): one spurious `404` abandons nothing.
    #[serde(with = "humantime_serde")]
    pub expiry_404_span: Duration,
    /// How often a role found missing (`403`) is probed again, without billing, while the work that
    /// needs it is paused.
    #[serde(with = "humantime_serde")]
    pub role_probe_interval: Duration,
    /// Probe every role of every environment when `serve` starts (7 rate units per environment,
    /// nothing billed): a missing one pauses its work before any job meets the `403`.
    pub role_probe_at_start: bool,
    pub start_workers: usize,
    pub check_workers: usize,
    pub download_workers: usize,
    /// How long an idle worker sleeps (real time) before it looks at the queue again, at most.
    #[serde(with = "humantime_serde")]
    pub idle_wait: Duration,
    /// How long a flow listing is cached (flow ids are checked against it when requests arrive).
    #[serde(with = "humantime_serde")]
    pub flow_cache_ttl: Duration,
    /// Month-to-date spend (all environments, cents) above which the spend alert fires; none: never.
    pub monthly_spend_alert_cents: Option<u64>,
    /// Month-to-date spend (cents) that new executions may not exceed: their starts are held in the
    /// queue (never dropped) until the next month or until an operator raises the cap with
    /// `PUT /v1/budget/cap`, whose value (kept in the database) overrides this one. None: no cap.
    pub monthly_spend_cap_cents: Option<u64>,
    /// How often a start held by the cap looks again.
    #[serde(with = "humantime_serde")]
    pub spend_cap_recheck: Duration,
    /// Price of one execution per environment, in cents: filled from `mint.<env>.price_cents` when
    /// the service is built (not a key of its own).
    #[serde(skip)]
    pub price_cents: BTreeMap<String, u32>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            poll_grace: Duration::from_secs(10 * 60),
            poll_interval_min: Duration::from_secs(30),
            poll_interval_max: Duration::from_secs(30 * 60),
            user_poll_interval_min: Duration::from_secs(15 * 60),
            activities_every_check: false,
            lease: Duration::from_secs(5 * 60),
            reconcile_delay: Duration::from_secs(30),
            reconcile_skew: Duration::from_secs(10 * 60),
            reconcile_max_units: 2_000,
            reconcile_max_duration: Duration::from_secs(3600),
            reconcile_concurrency: 4,
            at_risk_window: Duration::from_secs(3 * 24 * 3600),
            expiry_404_span: Duration::from_secs(24 * 3600),
            role_probe_interval: Duration::from_secs(5 * 60),
            role_probe_at_start: true,
            start_workers: 2,
            check_workers: 4,
            download_workers: 2,
            idle_wait: Duration::from_secs(1),
            flow_cache_ttl: Duration::from_secs(5 * 60),
            monthly_spend_alert_cents: None,
            monthly_spend_cap_cents: None,
            spend_cap_recheck: Duration::from_secs(5 * 60),
            price_cents: BTreeMap::new(),
        }
    }
}

/// One Mint environment: its API client and its limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MintProfile {
    #[serde(default = "default_api_base", serialize_with = "redacted::url")]
    pub api_base: Url,
    #[serde(default = "default_token_url", serialize_with = "redacted::url")]
    pub token_url: Url,
    pub client_id: String,
    #[serde(serialize_with = "redacted::secret")]
    pub client_secret: SecretString,
    /// The API client's budget: rate units per minute (Mint: about 100; a download costs 5).
    #[serde(default = "default_units_per_minute")]
    pub budget_units_per_minute: u32,
    /// Mint's undocumented burst rule: units in any one second.
    #[serde(default = "default_burst_units")]
    pub budget_burst_units: u32,
    /// Price of one execution, in cents.
    #[serde(default = "default_price_cents")]
    pub price_cents: u32,
}

impl MintProfile {
    /// A profile for the API client `client_id` at explicit endpoints, with Mint's default limits
    /// and price (the lab's simulator profiles and the tests build theirs with it).
    pub fn new(
        api_base: Url,
        token_url: Url,
        client_id: &str,
        client_secret: SecretString,
    ) -> Self {
        Self {
            api_base,
            token_url,
            client_id: client_id.to_owned(),
            client_secret,
            budget_units_per_minute: default_units_per_minute(),
            budget_burst_units: default_burst_units(),
            price_cents: default_price_cents(),
        }
    }
}

fn default_api_base() -> Url {
    Url::parse("https://api.signicat.com/mint").expect("a valid default URL")
}

fn default_token_url() -> Url {
    Url::parse("https://api.signicat.com/auth/open/connect/token").expect("a valid default URL")
}

fn default_units_per_minute() -> u32 {
    100
}

fn default_burst_units() -> u32 {
    20
}

fn default_price_cents() -> u32 {
    50
}

impl MintProfile {
    /// Checks one profile; every error names the key (`mint.<name>.…`).
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        if self.client_id.trim().is_empty() {
            invalid!("`mint.{name}.client_id` is empty");
        }
        let secret = self.client_secret.expose_secret();
        if secret.is_empty() {
            invalid!("`mint.{name}.client_secret` is empty");
        }
        if secret.trim() != secret {
            invalid!(
                "`mint.{name}.client_secret` has leading or trailing whitespace; Mint would refuse it as a wrong secret"
            );
        }
        for (key, url) in [("api_base", &self.api_base), ("token_url", &self.token_url)] {
            if !matches!(url.scheme(), "http" | "https") {
                invalid!("`mint.{name}.{key}` must be an http(s) URL");
            }
        }
        if self.budget_units_per_minute < 5 {
            invalid!(
                "`mint.{name}.budget_units_per_minute` must be at least 5 (one download costs 5 units)"
            );
        }
        if self.budget_burst_units < 5 {
            invalid!(
                "`mint.{name}.budget_burst_units` must be at least 5 (one download costs 5 units)"
            );
        }
        Ok(())
    }
}

/// The type of the values taken from Mint's conventional variables (errors name their source
/// through it).
#[derive(Serialize)]
#[serde(transparent)]
struct MintVariable(String);

/// Mint's conventional variables and the key of the default environment's profile each fills.
const MINT_VARIABLES: [(&str, &str); 4] = [
    ("MINT_API_BASE", "api_base"),
    ("MINT_TOKEN_URL", "token_url"),
    ("MINT_CLIENT_ID", "client_id"),
    ("MINT_CLIENT_SECRET", "client_secret"),
];

impl Config {
    /// Loads the configuration from an optional TOML file and the environment, and validates it.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config = Self::load_unchecked(file)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads without [`Config::validate`]: for the operator commands, which check only what they
    /// use (and `doctor`, which reports every problem instead of stopping at the first).
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, ConfigError> {
        let figment = Self::figment(file)?;
        if figment.find_value("service.listen").is_ok() {
            return Err(ConfigError::Invalid(
                "`service.listen` was replaced by two listeners: `listeners.public.address` (webhooks) and `listeners.operator.address` (own API, status page, metrics); see mintgate.example.toml".to_owned(),
            ));
        }
        figment
            .extract()
            .map_err(|e| ConfigError::Invalid(describe_figment(&e)))
    }

    /// The layers: defaults in code (serde defaults), the file, `MINTGATE_…`, then `MINT_…`.
    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::MissingFile(file.to_owned()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // MINTGATE_SERVICE__REPLICAS → service.replicas, and so on. MINTGATE_CONFIG names the file
        // itself (the `--config` flag); MINTGATE_TEST_… and MINTGATE_BENCH_… belong to the tests
        // and the benchmarks.
        figment = figment.merge(
            Env::prefixed("MINTGATE_")
                .filter(|key| {
                    let key = key.as_str().to_ascii_lowercase();
                    key != "config" && !key.starts_with("test_") && !key.starts_with("bench_")
                })
                .split("__"),
        );
        // Mint's conventional variables fill the default environment's profile.
        let default_env: String = figment
            .extract_inner("default_environment")
            .unwrap_or_else(|_| default_environment());
        for (variable, key) in MINT_VARIABLES {
            if let Some(value) = std::env::var_os(variable) {
                let value = MintVariable(value.to_string_lossy().into_owned());
                figment = figment.merge(Serialized::default(
                    &format!("mint.{default_env}.{key}"),
                    value,
                ));
            }
        }
        Ok(figment)
    }

    /// Checks what types alone cannot; every error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mint.is_empty() {
            invalid!(
                "no Mint profile; set [mint.{0}] in the file or MINT_CLIENT_ID and MINT_CLIENT_SECRET",
                self.default_environment
            );
        }
        if !self.mint.contains_key(&self.default_environment) {
            invalid!(
                "`default_environment` is {:?} but there is no [mint.{}] profile (profiles: {})",
                self.default_environment,
                self.default_environment,
                self.mint.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        for (name, profile) in &self.mint {
            profile.validate(name)?;
        }
        match self.webhook.auth {
            WebhookAuth::Hmac | WebhookAuth::SharedSecret => {
                let ok = self
                    .webhook
                    .secret
                    .as_ref()
                    .is_some_and(|s| s.expose_secret().len() >= 16);
                if !ok && !self.webhook.allow_unauthenticated {
                    invalid!(
                        "`webhook.secret` must be set (at least 16 characters) for webhook.auth = {:?}, or set `webhook.allow_unauthenticated = true` (never in production)",
                        match self.webhook.auth {
                            WebhookAuth::Hmac => "hmac",
                            _ => "shared_secret",
                        }
                    );
                }
                if let Some(previous) = &self.webhook.previous_secret
                    && previous.expose_secret().len() < 16
                {
                    invalid!(
                        "`webhook.previous_secret` must be at least 16 characters (or unset once the rotation is over)"
                    );
                }
                // A header value is visible ASCII: any other secret could never match.
                for (key, secret) in [
                    ("secret", &self.webhook.secret),
                    ("previous_secret", &self.webhook.previous_secret),
                ] {
                    if self.webhook.auth == WebhookAuth::SharedSecret
                        && let Some(secret) = secret
                        && !secret.expose_secret().bytes().all(|b| b.is_ascii_graphic())
                    {
                        invalid!(
                            "`webhook.{key}` must be printable ASCII without spaces: it is sent in an HTTP header"
                        );
                    }
                }
            }
            WebhookAuth::None => {
                if !self.webhook.allow_unauthenticated {
                    invalid!(
                        "`webhook.auth = \"none\"` needs `webhook.allow_unauthenticated = true`; unauthenticated webhooks can be forged by anyone who learns the URL"
                    );
                }
            }
        }
        if self.webhook.unmatched_retention > self.webhook.retention {
            invalid!("`webhook.unmatched_retention` must not be above `webhook.retention`");
        }
        if self.webhook.retention < Duration::from_secs(60) {
            invalid!("`webhook.retention` must be at least 1m");
        }
        if self.webhook.prune_interval < Duration::from_secs(1) {
            invalid!("`webhook.prune_interval` must be at least 1s");
        }
        if self.webhook.body_bytes_max < 64 || self.webhook.body_bytes_max > 1024 * 1024 {
            invalid!("`webhook.body_bytes_max` must be between 64 and 1048576");
        }
        let p = &self.pipeline;
        if p.poll_interval_min < Duration::from_secs(1) {
            invalid!("`pipeline.poll_interval_min` must be at least 1s");
        }
        if p.poll_interval_max < p.poll_interval_min {
            invalid!("`pipeline.poll_interval_max` must not be below `pipeline.poll_interval_min`");
        }
        if p.user_poll_interval_min < Duration::from_secs(1) {
            invalid!("`pipeline.user_poll_interval_min` must be at least 1s");
        }
        if p.poll_interval_max > Duration::from_secs(24 * 3600) {
            invalid!(
                "`pipeline.poll_interval_max` must be at most 1day: it bounds how late a lost webhook is caught (Mint deletes 30 days after the end)"
            );
        }
        if p.lease < Duration::from_secs(1) {
            invalid!("`pipeline.lease` must be at least 1s");
        }
        if p.expiry_404_span > Duration::from_secs(29 * 24 * 3600) {
            invalid!(
                "`pipeline.expiry_404_span` must be at most 29days (Mint keeps an instance 30 days after it ended)"
            );
        }
        if p.role_probe_interval < Duration::from_secs(10) {
            invalid!(
                "`pipeline.role_probe_interval` must be at least 10s (each probe costs rate units)"
            );
        }
        for (key, n) in [
            ("start_workers", p.start_workers),
            ("check_workers", p.check_workers),
            ("download_workers", p.download_workers),
            ("reconcile_concurrency", p.reconcile_concurrency),
        ] {
            if n == 0 || n > 64 {
                invalid!("`pipeline.{key}` must be between 1 and 64");
            }
        }
        if p.reconcile_max_units < 2 {
            // One list page and one instance read at least, or nothing can ever be proven.
            invalid!("`pipeline.reconcile_max_units` must be at least 2");
        }
        if p.reconcile_max_duration < Duration::from_secs(1) {
            invalid!("`pipeline.reconcile_max_duration` must be at least 1s");
        }
        self.listeners.public.validate("public")?;
        if !self.listeners.combined {
            self.listeners.operator.validate("operator")?;
            if self.listeners.public_address() == self.listeners.operator_address() {
                invalid!(
                    "`listeners.public.address` and `listeners.operator.address` are both {}; give the operator listener its own address, or set `listeners.combined = true` to serve the operator's routes on the public listener on purpose",
                    self.listeners.public_address()
                );
            }
        }
        if self.service.status_cache_ttl > Duration::from_secs(60) {
            invalid!("`service.status_cache_ttl` must be at most 1m");
        }
        if self.service.redis_key_prefix.is_empty()
            || !self
                .service
                .redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            invalid!("`service.redis_key_prefix` must be letters, digits, '-', '_', '.' or ':'");
        }
        if self.service.replicas == 0 || self.service.replicas > 1000 {
            invalid!("`service.replicas` must be between 1 and 1000");
        }
        if self.service.replicas > 1 && !self.service.database_url.is_postgres() {
            invalid!(
                "`service.replicas` is {} but `service.database_url` is SQLite, which one process owns; use a postgres:// URL for several replicas",
                self.service.replicas
            );
        }
        api_keys::validate(&self.service.api_keys)?;
        self.telemetry.validate()?;
        self.events.validate()?;
        let feed_listener = if self.listeners.combined {
            ("public", &self.listeners.public)
        } else {
            ("operator", &self.listeners.operator)
        };
        if self.events.feed_wait_max >= feed_listener.1.request_timeout {
            invalid!(
                "`events.feed_wait_max` must be below `listeners.{}.request_timeout`: a long poll would be cut",
                feed_listener.0
            );
        }
        if let Err(error) = self.archive.validate() {
            let message = error.to_string();
            return Err(ConfigError::Invalid(
                message
                    .strip_prefix("invalid configuration: ")
                    .unwrap_or(&message)
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The effective configuration as JSON, with every secret replaced by `[redacted]` and every
    /// URL password by `redacted`: the structs' own `Serialize` impl.
    pub fn redacted(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    /// The profile of an environment.
    pub fn profile(&self, environment: &str) -> anyhow::Result<&MintProfile> {
        self.mint.get(environment).with_context(|| {
            format!(
                "no Mint profile for environment {environment:?} (configured: {})",
                self.mint.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// Figment's errors, one per problem, each naming its key and where the value came from, and
/// never the value itself (figment's own messages quote it, and it may be a secret).
/// `message` with every double-quoted part replaced by `"…"`.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        if inside {
            out.push_str("\"…\"");
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

fn describe_figment(error: &figment::Error) -> String {
    use figment::error::{Actual, Kind};
    fn what(actual: &Actual) -> &'static str {
        match actual {
            Actual::Bool(_) => "a boolean",
            Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "a number",
            Actual::Char(_) | Actual::Str(_) => "a string",
            Actual::Bytes(_) => "bytes",
            Actual::Unit | Actual::Option => "nothing",
            Actual::Seq => "a list",
            Actual::Map => "a table",
            _ => "another kind of value",
        }
    }
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("`{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| {
                    if m.name == std::any::type_name::<MintVariable>() {
                        " (from the MINT_… environment variables)".to_owned()
                    } else {
                        format!(" (from {})", m.name)
                    }
                })
                .unwrap_or_default();
            let problem = match &e.kind {
                Kind::InvalidType(actual, expected) => {
                    format!("expected {expected}, found {}", what(actual))
                }
                Kind::InvalidValue(actual, expected) => {
                    format!("invalid {}: expected {expected}", what(actual))
                }
                // The `url` crate's message quotes the value it refused (a URL may carry a
                // password): anything in double quotes is left out. The other value types'
                // messages (durations, `values.rs`) never quote it; unknown variants and fields
                // are names, not secrets.
                Kind::Message(message) => without_quoted(message),
                kind => kind.to_string(),
            };
            format!("{key}{problem}{source}")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment's `Jail` closures return figment's own (large) error"
)]
mod tests {
    use super::*;

    /// Loads with exactly these environment variables and, if given, a `mintgate.toml` with this
    /// text, in figment's `Jail` (the process's own variables are set aside meanwhile).
    fn load_in_jail(
        vars: &[(&str, &str)],
        file: Option<&str>,
        checked: bool,
    ) -> Result<Config, ConfigError> {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            for (key, value) in vars {
                jail.set_env(key, value);
            }
            let path = file.map(|text| {
                jail.create_file("mintgate.toml", text).unwrap();
                PathBuf::from("mintgate.toml")
            });
            result = Some(if checked {
                Config::load(path.as_deref())
            } else {
                Config::load_unchecked(path.as_deref())
            });
            Ok(())
        });
        result.unwrap()
    }

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_in_jail(vars, None, true)
    }

    const SECRET: &str = "0123456789abcdef-webhook";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MINT_CLIENT_ID", "demo"),
            ("MINT_CLIENT_SECRET", "demo-secret"),
            ("MINTGATE_WEBHOOK__SECRET", SECRET),
        ]
    }

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut vars = base();
        vars.extend_from_slice(extra);
        vars
    }

    #[test]
    fn conventional_mint_variables_fill_the_default_profile() {
        let config = load(&with(&[("MINTGATE_PIPELINE__CHECK_WORKERS", "7")])).unwrap();
        let profile = config.profile("sandbox").unwrap();
        assert_eq!(profile.client_id, "demo");
        assert_eq!(profile.client_secret.expose_secret(), "demo-secret");
        assert_eq!(config.pipeline.check_workers, 7);
    }

    #[test]
    fn the_environment_overrides_the_file_and_mints_variables_fill_the_chosen_default() {
        let file = "default_environment = \"production\"\n\n[pipeline]\ncheck_workers = 3\nstart_workers = 5\n\n[mint.production]\nclient_id = \"from-file\"\nclient_secret = \"file-secret\"\n";
        let config = load_in_jail(
            &with(&[("MINTGATE_PIPELINE__CHECK_WORKERS", "7")]),
            Some(file),
            true,
        )
        .unwrap();
        assert_eq!(config.pipeline.check_workers, 7);
        assert_eq!(config.pipeline.start_workers, 5);
        let profile = config.profile("production").unwrap();
        assert_eq!(profile.client_id, "demo");
        assert_eq!(profile.client_secret.expose_secret(), "demo-secret");
        assert!(!config.mint.contains_key("sandbox"));
    }

    #[test]
    fn a_client_secret_of_digits_stays_the_string_it_is() {
        let config = load(&[
            ("MINT_CLIENT_ID", "0042"),
            ("MINT_CLIENT_SECRET", "000123"),
            ("MINTGATE_WEBHOOK__SECRET", SECRET),
        ])
        .unwrap();
        let profile = config.profile("sandbox").unwrap();
        assert_eq!(profile.client_id, "0042");
        assert_eq!(profile.client_secret.expose_secret(), "000123");
    }

    #[test]
    fn a_secret_with_trailing_whitespace_is_refused_with_its_key() {
        let error = load(&[
            ("MINT_CLIENT_ID", "demo"),
            ("MINT_CLIENT_SECRET", "demo-secret "),
            ("MINTGATE_WEBHOOK__SECRET", SECRET),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("mint.sandbox.client_secret"), "{error}");
        assert!(error.contains("whitespace"), "{error}");
    }

    #[test]
    fn the_expiry_and_role_probe_settings_are_read_and_bounded() {
        let config = load(&with(&[
            ("MINTGATE_PIPELINE__EXPIRY_404_SPAN", "6h"),
            ("MINTGATE_PIPELINE__ROLE_PROBE_INTERVAL", "2m"),
            ("MINTGATE_PIPELINE__ROLE_PROBE_AT_START", "false"),
        ]))
        .unwrap();
        assert_eq!(
            config.pipeline.expiry_404_span,
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(
            config.pipeline.role_probe_interval,
            Duration::from_secs(120)
        );
        assert!(!config.pipeline.role_probe_at_start);
        let error = load(&with(&[("MINTGATE_PIPELINE__EXPIRY_404_SPAN", "30days")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("pipeline.expiry_404_span"), "{error}");
        let error = load(&with(&[("MINTGATE_PIPELINE__ROLE_PROBE_INTERVAL", "1s")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("pipeline.role_probe_interval"), "{error}");
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let error = load(&with(&[("MINTGATE_PIPELINE__POLL_GRACE", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("pipeline.poll_grace"), "{error}");
        let error = load(&with(&[("MINTGATE_SERVICE__LOG_FORMAT", "xml")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("service.log_format"), "{error}");
        assert!(error.contains("json"), "{error}");
    }

    #[test]
    fn a_wrongly_typed_secret_is_named_but_never_shown() {
        // A key where a list of keys belongs, a number where a string does.
        for (variable, value, key) in [
            (
                "MINTGATE_SERVICE__API_KEYS",
                "key-number-one",
                "service.api_keys",
            ),
            (
                "MINTGATE_WEBHOOK__SECRET",
                "12345678901234567890",
                "webhook.secret",
            ),
            (
                "MINTGATE_SERVICE__DATABASE_URL",
                "mysql://root:hunter2@db/x",
                "service.database_url",
            ),
        ] {
            let error = load(&with(&[(variable, value)])).unwrap_err();
            assert!(matches!(error, ConfigError::Invalid(_)), "{error:?}");
            let text = error.to_string();
            assert!(text.contains(key), "{text}");
            assert!(text.contains("MINTGATE_"), "names the source: {text}");
            assert!(!text.contains(value), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn the_redacted_configuration_holds_no_secret() {
        let config = load(&with(&[
            ("MINTGATE_SERVICE__API_KEYS", "[\"key-number-one\"]"),
            (
                "MINTGATE_SERVICE__DATABASE_URL",
                "postgres://mintgate:db-password@db:5432/mintgate",
            ),
            (
                "MINTGATE_SERVICE__REDIS_URL",
                "redis://:redis-password@cache:6379",
            ),
            ("MINTGATE_SERVICE__REPLICAS", "2"),
            (
                "MINTGATE_SERVICE__URL",
                "https://ops:url-password@mintgate.internal",
            ),
            (
                "MINT_API_BASE",
                "https://user:base-password@api.example/mint",
            ),
        ]))
        .unwrap();
        let redacted = config.redacted();
        let text = redacted.to_string();
        for secret in [
            "demo-secret",
            SECRET,
            "key-number-one",
            "db-password",
            "redis-password",
            "url-password",
            "base-password",
        ] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
        assert_eq!(redacted["mint"]["sandbox"]["client_secret"], REDACTED);
        assert_eq!(redacted["webhook"]["secret"], REDACTED);
        assert_eq!(redacted["service"]["api_keys"][0]["key"], REDACTED);
        assert_eq!(
            redacted["service"]["api_keys"][0]["scopes"],
            serde_json::json!(["admin"])
        );
        assert_eq!(
            redacted["service"]["database_url"],
            "postgres://mintgate:redacted@db:5432/mintgate"
        );
        // Everything else is shown as configured.
        assert_eq!(redacted["mint"]["sandbox"]["client_id"], "demo");
        assert_eq!(redacted["service"]["log_format"], "json");
        assert_eq!(redacted["pipeline"]["poll_grace"], "10m");
    }

    #[test]
    fn api_keys_are_bare_strings_with_every_right_or_tables_with_scopes() {
        let file = "[service]\napi_keys = [\n  \"old-full-rights-key\",\n  { name = \"onboarding\", key = \"app-key-123\", scopes = [\"executions:write\", \"executions:read\"] },\n  { key = \"records-key\", scopes = [\"results:read\"] },\n]\n";
        let config = load_in_jail(&base(), Some(file), true).unwrap();
        let keys = &config.service.api_keys;
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].key.expose_secret(), "old-full-rights-key");
        assert_eq!(keys[0].scopes, Scopes::ADMIN);
        assert_eq!(keys[1].name.as_deref(), Some("onboarding"));
        assert_eq!(
            keys[1].scopes.list(),
            [Scope::ExecutionsWrite, Scope::ExecutionsRead]
        );
        assert_eq!(keys[2].scopes.list(), [Scope::ResultsRead]);
        // The array-of-tables form works too, and so does the environment.
        let file = "[[service.api_keys]]\nkey = \"reader-key\"\nscopes = [\"executions:read\"]\n";
        let config = load_in_jail(&base(), Some(file), true).unwrap();
        assert_eq!(
            config.service.api_keys[0].scopes.list(),
            [Scope::ExecutionsRead]
        );
        let config = load(&with(&[(
            "MINTGATE_SERVICE__API_KEYS",
            "[\"env-admin-key\", {key=\"env-reader-key\", scopes=[\"executions:read\"]}]",
        )]))
        .unwrap();
        assert_eq!(config.service.api_keys[0].scopes, Scopes::ADMIN);
        assert_eq!(
            config.service.api_keys[1].scopes.list(),
            [Scope::ExecutionsRead]
        );
        let text = config.redacted().to_string();
        assert!(!text.contains("env-admin-key"), "{text}");
        assert!(!text.contains("env-reader-key"), "{text}");
        assert!(text.contains("executions:read"), "{text}");
    }

    #[test]
    fn api_key_scopes_are_validated_with_errors_naming_the_entry_and_never_the_key() {
        for (file, expected) in [
            (
                "[service]\napi_keys = [{ key = \"secret-key-one\", scopes = [\"results:write\"] }]\n",
                "results:read",
            ),
            (
                "[service]\napi_keys = [\"x\", { name = \"app\", key = \"secret-key-one\", scopes = [] }]\n",
                "`service.api_keys[1]` (\"app\"): `scopes` is empty",
            ),
            (
                "[service]\napi_keys = [\"secret-key-one\", { key = \"secret-key-one\", scopes = [\"admin\"] }]\n",
                "`service.api_keys[1]` is the same key as `service.api_keys[0]`",
            ),
            (
                "[service]\napi_keys = [{ key = \"secret key one\", scopes = [\"admin\"] }]\n",
                "`service.api_keys[0]`: the key must be printable ASCII",
            ),
            (
                "[service]\napi_keys = [{ key = \"secret-key-one\", scope = [\"admin\"] }]\n",
                "scope",
            ),
            (
                "[service]\napi_keys = [{ name = \"no-key\", scopes = [\"admin\"] }]\n",
                "key",
            ),
        ] {
            let error = load_in_jail(&base(), Some(file), true)
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{file}: {error}");
            assert!(error.contains("service.api_keys"), "{file}: {error}");
            assert!(!error.contains("secret-key-one"), "{file}: {error}");
            assert!(!error.contains("secret key one"), "{file}: {error}");
        }
    }

    #[test]
    fn a_postgres_url_and_a_redis_url_switch_the_engines() {
        let config = load(&with(&[
            (
                "MINTGATE_SERVICE__DATABASE_URL",
                "postgres://mintgate:pw@db:5432/mintgate",
            ),
            ("MINTGATE_SERVICE__REDIS_URL", "redis://:pw@cache:6379"),
            ("MINTGATE_SERVICE__REPLICAS", "3"),
        ]))
        .unwrap();
        assert_eq!(config.service.replicas, 3);
        assert!(config.service.database_url.is_postgres());
        assert_eq!(
            config.service.redis_url.as_ref().map(RedisUrl::expose_url),
            Some("redis://:pw@cache:6379")
        );
        let text = config.redacted().to_string();
        assert!(!text.contains(":pw@"), "{text}");
    }

    #[test]
    fn bad_scale_out_settings_name_their_key() {
        for (key, value, named) in [
            (
                "MINTGATE_SERVICE__DATABASE_URL",
                "mysql://db/x",
                "service.database_url",
            ),
            (
                "MINTGATE_SERVICE__REDIS_URL",
                "http://cache",
                "service.redis_url",
            ),
            ("MINTGATE_SERVICE__REPLICAS", "0", "service.replicas"),
            // SQLite belongs to one process: several replicas need PostgreSQL.
            ("MINTGATE_SERVICE__REPLICAS", "3", "service.database_url"),
        ] {
            let error = load(&with(&[(key, value)])).unwrap_err().to_string();
            assert!(error.contains(named), "{key}={value}: {error}");
        }
    }

    #[test]
    fn the_variables_of_the_config_file_the_tests_and_the_benchmarks_are_not_keys() {
        let config = load(&with(&[
            ("MINTGATE_CONFIG", "/etc/mintgate.toml"),
            (
                "MINTGATE_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1/test",
            ),
            ("MINTGATE_BENCH_REDIS_URL", "redis://127.0.0.1:6379"),
            ("MINTGATE_SERVICE__URL", "https://mintgate.internal:8443"),
        ]))
        .unwrap();
        assert_eq!(
            config.service.url.as_ref().map(Url::as_str),
            Some("https://mintgate.internal:8443/")
        );
    }

    #[test]
    fn a_missing_file_is_its_own_kind_of_error() {
        let mut result = None;
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            result = Some(Config::load(Some(Path::new("nowhere.toml"))));
            Ok(())
        });
        let error = result.unwrap().unwrap_err();
        assert!(matches!(error, ConfigError::MissingFile(_)), "{error:?}");
        assert!(error.to_string().contains("nowhere.toml"), "{error}");
    }

    #[test]
    fn operator_commands_can_load_what_the_service_would_refuse() {
        let vars = [("MINT_CLIENT_ID", "demo"), ("MINT_CLIENT_SECRET", "s")];
        assert!(load(&vars).is_err(), "no webhook secret");
        let config = load_in_jail(&vars, None, false).unwrap();
        config
            .profile("sandbox")
            .unwrap()
            .validate("sandbox")
            .unwrap();
    }

    #[test]
    fn unauthenticated_webhooks_need_an_explicit_opt_in() {
        let error = load(&[
            ("MINT_CLIENT_ID", "demo"),
            ("MINT_CLIENT_SECRET", "demo-secret"),
            ("MINTGATE_WEBHOOK__AUTH", "none"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("webhook.allow_unauthenticated"), "{error}");
    }

    #[test]
    fn two_listeners_on_one_address_need_an_explicit_choice() {
        let same = [
            ("MINTGATE_LISTENERS__PUBLIC__ADDRESS", "127.0.0.1:9000"),
            ("MINTGATE_LISTENERS__OPERATOR__ADDRESS", "127.0.0.1:9000"),
        ];
        let error = load(&with(&same)).unwrap_err().to_string();
        assert!(error.contains("listeners.combined"), "{error}");
        let mut combined = same.to_vec();
        combined.push(("MINTGATE_LISTENERS__COMBINED", "true"));
        let config = load(&with(&combined)).unwrap();
        assert_eq!(
            config.listeners.operator_address(),
            config.listeners.public_address()
        );
        // By default they are apart.
        let config = load(&base()).unwrap();
        assert_eq!(config.listeners.public_address(), PUBLIC_ADDRESS_DEFAULT);
        assert_eq!(
            config.listeners.operator_address(),
            OPERATOR_ADDRESS_DEFAULT
        );
    }

    #[test]
    fn listener_limits_and_tls_files_are_checked_by_key() {
        for (key, value, named) in [
            (
                "MINTGATE_LISTENERS__PUBLIC__TLS_CERT_FILE",
                "/etc/cert.pem",
                "listeners.public.tls_key_file",
            ),
            (
                "MINTGATE_LISTENERS__OPERATOR__CONNECTIONS_MAX",
                "0",
                "listeners.operator.connections_max",
            ),
            (
                "MINTGATE_LISTENERS__PUBLIC__HEADER_READ_TIMEOUT",
                "0s",
                "listeners.public.header_read_timeout",
            ),
            (
                "MINTGATE_LISTENERS__PUBLIC__HEADER_BYTES_MAX",
                "100",
                "listeners.public.header_bytes_max",
            ),
        ] {
            let error = load(&with(&[(key, value)])).unwrap_err().to_string();
            assert!(error.contains(named), "{key}={value}: {error}");
        }
    }

    #[test]
    fn the_old_single_listen_key_points_to_the_two_listeners() {
        let error = load(&with(&[("MINTGATE_SERVICE__LISTEN", "0.0.0.0:8080")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("listeners.public.address"), "{error}");
    }

    #[test]
    fn a_previous_webhook_secret_is_accepted_and_redacted() {
        let config = load(&with(&[(
            "MINTGATE_WEBHOOK__PREVIOUS_SECRET",
            "the-previous-webhook-secret",
        )]))
        .unwrap();
        let text = config.redacted().to_string();
        assert!(!text.contains("the-previous-webhook-secret"), "{text}");
        let error = load(&with(&[("MINTGATE_WEBHOOK__PREVIOUS_SECRET", "short")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("webhook.previous_secret"), "{error}");
        assert!(!error.contains("short\""), "{error}");
    }

    #[test]
    fn the_example_configuration_loads_and_shows_the_defaults() {
        let example = include_str!("../../../mintgate.example.toml");
        let config = load_in_jail(&[], Some(example), true).unwrap();
        assert_eq!(config.webhook.auth, WebhookAuth::SharedSecret);
        assert!(!config.listeners.combined);
        assert_eq!(config.listeners.public_address(), PUBLIC_ADDRESS_DEFAULT);
        assert_eq!(
            config.listeners.operator_address(),
            OPERATOR_ADDRESS_DEFAULT
        );
        let defaults = ListenerConfig::default();
        assert_eq!(
            config.listeners.public.header_read_timeout,
            defaults.header_read_timeout
        );
        assert_eq!(
            config.listeners.public.connections_max,
            defaults.connections_max
        );
    }

    #[test]
    fn archive_settings_come_from_the_environment_and_their_secrets_are_redacted() {
        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let mut vars = base();
        vars.push(("MINTGATE_ARCHIVE__URL", "s3://evidence/mintgate"));
        vars.push(("MINTGATE_ARCHIVE__SERVER_SIDE_ENCRYPTION", "kms"));
        vars.push(("MINTGATE_ARCHIVE__SECRET_ACCESS_KEY", "s3-secret-value"));
        vars.push(("MINTGATE_ARCHIVE__ACCESS_KEY_ID", "AKIAEXAMPLE"));
        vars.push(("MINTGATE_ARCHIVE__ENCRYPTION__KEY_ID", "2026-11"));
        vars.push(("MINTGATE_ARCHIVE__ENCRYPTION__KEY", key));
        let config = load(&vars).unwrap();
        assert_eq!(
            config.archive.url.as_ref().map(Url::as_str),
            Some("s3://evidence/mintgate")
        );
        assert_eq!(
            config.archive.encryption.as_ref().unwrap().key_id,
            "2026-11"
        );
        let text = config.redacted().to_string();
        assert!(!text.contains(key), "{text}");
        assert!(!text.contains("s3-secret-value"), "{text}");
        assert!(text.contains("s3://evidence/mintgate"), "{text}");
    }

    #[test]
    fn a_bad_archive_setting_names_its_key() {
        let mut vars = base();
        vars.push(("MINTGATE_ARCHIVE__PART_BYTES", "1000"));
        let error = load(&vars).unwrap_err().to_string();
        assert!(error.contains("archive.part_bytes"), "{error}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_set_by_its_section_or_the_environment() {
        let config = load(&base()).unwrap();
        assert!(config.telemetry.otlp_endpoint.is_none());
        assert!(config.telemetry.traces_url().is_none());

        let file =
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nservice_name = \"kyc-gate\"\n";
        let config = load_in_jail(
            &with(&[("MINTGATE_TELEMETRY__SAMPLING_RATIO", "0.25")]),
            Some(file),
            true,
        )
        .unwrap();
        assert_eq!(config.telemetry.service_name, "kyc-gate");
        assert!((config.telemetry.sampling_ratio - 0.25).abs() < f64::EPSILON);
        assert_eq!(
            config.telemetry.traces_url().unwrap().as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        // A URL with a path of its own is used as it is; a password in it is never shown.
        let config = load(&with(&[(
            "MINTGATE_TELEMETRY__OTLP_ENDPOINT",
            "https://user:collector-password@otel.example/custom/traces",
        )]))
        .unwrap();
        assert_eq!(
            config.telemetry.traces_url().unwrap().path(),
            "/custom/traces"
        );
        let text = config.redacted().to_string();
        assert!(!text.contains("collector-password"), "{text}");

        for (key, value, named) in [
            (
                "MINTGATE_TELEMETRY__SAMPLING_RATIO",
                "1.5",
                "telemetry.sampling_ratio",
            ),
            (
                "MINTGATE_TELEMETRY__OTLP_ENDPOINT",
                "ftp://collector",
                "telemetry.otlp_endpoint",
            ),
            (
                "MINTGATE_TELEMETRY__SERVICE_NAME",
                " ",
                "telemetry.service_name",
            ),
            (
                "MINTGATE_TELEMETRY__EXPORT_TIMEOUT",
                "0s",
                "telemetry.export_timeout",
            ),
        ] {
            let error = load(&with(&[(key, value)])).unwrap_err().to_string();
            assert!(error.contains(named), "{key}={value}: {error}");
        }
    }
}
