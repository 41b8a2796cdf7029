//! The service's configuration: defaults in code, then a TOML file, then `MINTGATE_…` environment
//! variables (`__` between nested keys), plus Mint's conventional `MINT_API_BASE`, `MINT_TOKEN_URL`,
//! `MINT_CLIENT_ID` and `MINT_CLIENT_SECRET` for the default environment's profile.
//!
//! Everything is validated at start, with errors that name the key; the effective configuration is
//! logged with every secret redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

/// The whole configuration of `mintgate serve` (and of the operator commands).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub service: ServiceConfig,
    #[serde(default)]
    pub webhook: WebhookConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The Mint profile used when a request names none.
    #[serde(default = "default_environment")]
    pub default_environment: String,
    /// One Mint profile per environment (`sandbox`, `production`, …), each with its own API client.
    #[serde(default)]
    pub mint: BTreeMap<String, MintProfile>,
}

fn default_environment() -> String {
    "sandbox".to_owned()
}

/// The service's own HTTP server, database and archive.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    /// `sqlite://path/to/mintgate.db` (the default) or, for several replicas, `postgres://…`.
    pub database_url: String,
    pub archive_dir: PathBuf,
    /// Bearer keys that may call the own API (`/v1/…`). The operator commands use the first.
    pub api_keys: Vec<SecretString>,
    /// Where the operator commands reach this service (`mintgate start`); `http://<listen>` if unset.
    pub url: Option<Url>,
    /// How long a graceful shutdown waits for in-flight work.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// `json` (production) or `text`.
    pub log_format: String,
    /// `redis://…`: share the Mint budget, the token and the flow cache with the other replicas
    /// through Redis. Unset (the default), each process keeps its own.
    pub redis_url: Option<String>,
    /// The prefix of every Redis key mintgate writes (several fleets may share one Redis).
    pub redis_key_prefix: String,
    /// How many replicas run against the same Mint API client. When Redis is unreachable each
    /// replica falls back to this share of the budget (limit / replicas).
    pub replicas: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: "sqlite://mintgate.db".to_owned(),
            archive_dir: PathBuf::from("archive"),
            api_keys: Vec::new(),
            url: None,
            shutdown_grace: Duration::from_secs(20),
            log_format: "json".to_owned(),
            redis_url: None,
            redis_key_prefix: "mintgate".to_owned(),
            replicas: 1,
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    pub auth: WebhookAuth,
    pub secret: Option<SecretString>,
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
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            auth: WebhookAuth::Hmac,
            secret: None,
            secret_header: "X-Mint-Webhook-Secret".to_owned(),
            tolerance: Duration::from_secs(300),
            body_bytes_max: 64 * 1024,
            allow_unauthenticated: false,
            settle: Duration::from_secs(2),
        }
    }
}

/// The workers: polling policy, leases, concurrency.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// An execution with no webhook is first polled this long after it started.
    #[serde(with = "humantime_serde")]
    pub poll_grace: Duration,
    /// Never poll one instance more often than this (Mint's guidance: 30 s).
    #[serde(with = "humantime_serde")]
    pub poll_interval_min: Duration,
    /// Polls back off up to this interval for instances that wait long for their end user.
    #[serde(with = "humantime_serde")]
    pub poll_interval_max: Duration,
    /// A worker's hold on a job; renewed while the work goes on. A dead worker's job is taken over
    /// after it lapses.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// After a start whose answer was lost, wait this long before looking for the instance.
    #[serde(with = "humantime_serde")]
    pub reconcile_delay: Duration,
    /// Downloads still missing this close to Mint's deletion are reported at risk.
    #[serde(with = "humantime_serde")]
    pub at_risk_window: Duration,
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
            poll_grace: Duration::from_secs(5 * 60),
            poll_interval_min: Duration::from_secs(30),
            poll_interval_max: Duration::from_secs(30 * 60),
            lease: Duration::from_secs(5 * 60),
            reconcile_delay: Duration::from_secs(30),
            at_risk_window: Duration::from_secs(3 * 24 * 3600),
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
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintProfile {
    #[serde(default = "default_api_base")]
    pub api_base: Url,
    #[serde(default = "default_token_url")]
    pub token_url: Url,
    pub client_id: String,
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
    pub fn validate(&self, name: &str) -> anyhow::Result<()> {
        if self.client_id.trim().is_empty() {
            bail!("invalid configuration: `mint.{name}.client_id` is empty");
        }
        let secret = self.client_secret.expose_secret();
        if secret.is_empty() {
            bail!("invalid configuration: `mint.{name}.client_secret` is empty");
        }
        if secret.trim() != secret {
            bail!(
                "invalid configuration: `mint.{name}.client_secret` has leading or trailing whitespace; Mint would refuse it as a wrong secret"
            );
        }
        for (key, url) in [("api_base", &self.api_base), ("token_url", &self.token_url)] {
            if !matches!(url.scheme(), "http" | "https") {
                bail!("invalid configuration: `mint.{name}.{key}` must be an http(s) URL");
            }
        }
        if self.budget_units_per_minute < 5 {
            bail!(
                "invalid configuration: `mint.{name}.budget_units_per_minute` must be at least 5 (one download costs 5 units)"
            );
        }
        if self.budget_burst_units < 5 {
            bail!(
                "invalid configuration: `mint.{name}.budget_burst_units` must be at least 5 (one download costs 5 units)"
            );
        }
        Ok(())
    }
}

impl Config {
    /// Loads the configuration from an optional TOML file and the environment, and validates it.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_from(file, &env)
    }

    /// Loads from a file and an explicit set of environment variables (tests).
    pub fn load_from(file: Option<&Path>, env: &BTreeMap<String, String>) -> anyhow::Result<Self> {
        let config = Self::load_unchecked_from(file, env)?;
        config.validate()?;
        Ok(config)
    }

    /// Loads without [`Config::validate`]: for the operator commands, which check only what they
    /// use (and `doctor`, which reports every problem instead of stopping at the first).
    pub fn load_unchecked(file: Option<&Path>) -> anyhow::Result<Self> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        Self::load_unchecked_from(file, &env)
    }

    fn load_unchecked_from(
        file: Option<&Path>,
        env: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                bail!("the configuration file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        // MINTGATE_SERVICE__LISTEN → service.listen, and so on.
        let prefixed: Vec<(String, String)> = env
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("MINTGATE_")
                    // MINTGATE_CONFIG names the file itself (the `--config` flag).
                    .filter(|rest| !rest.starts_with("TEST_") && *rest != "CONFIG")
                    .map(|rest| (rest.to_owned(), v.clone()))
            })
            .collect();
        figment = figment.merge(env_provider(&prefixed));
        let default_env: String = figment
            .extract_inner("default_environment")
            .unwrap_or_else(|_| default_environment());
        // Mint's conventional variables fill the default environment's profile.
        for (var, key) in [
            ("MINT_API_BASE", "api_base"),
            ("MINT_TOKEN_URL", "token_url"),
            ("MINT_CLIENT_ID", "client_id"),
            ("MINT_CLIENT_SECRET", "client_secret"),
        ] {
            if let Some(value) = env.get(var) {
                figment = figment.merge(Serialized::default(
                    &format!("mint.{default_env}.{key}"),
                    value,
                ));
            }
        }
        figment
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {}", describe_figment(&e)))
    }

    /// Checks what types alone cannot; every error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.mint.is_empty() {
            bail!(
                "invalid configuration: no Mint profile; set [mint.{0}] in the file or MINT_CLIENT_ID and MINT_CLIENT_SECRET",
                self.default_environment
            );
        }
        if !self.mint.contains_key(&self.default_environment) {
            bail!(
                "invalid configuration: `default_environment` is {:?} but there is no [mint.{}] profile (profiles: {})",
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
                    bail!(
                        "invalid configuration: `webhook.secret` must be set (at least 16 characters) for webhook.auth = {:?}, or set `webhook.allow_unauthenticated = true` (never in production)",
                        self.webhook.auth
                    );
                }
            }
            WebhookAuth::None => {
                if !self.webhook.allow_unauthenticated {
                    bail!(
                        "invalid configuration: `webhook.auth = \"none\"` needs `webhook.allow_unauthenticated = true`; unauthenticated webhooks can be forged by anyone who learns the URL"
                    );
                }
            }
        }
        if self.webhook.body_bytes_max < 64 || self.webhook.body_bytes_max > 1024 * 1024 {
            bail!("invalid configuration: `webhook.body_bytes_max` must be between 64 and 1048576");
        }
        let p = &self.pipeline;
        if p.poll_interval_min < Duration::from_secs(1) {
            bail!("invalid configuration: `pipeline.poll_interval_min` must be at least 1s");
        }
        if p.poll_interval_max < p.poll_interval_min {
            bail!(
                "invalid configuration: `pipeline.poll_interval_max` must not be below `pipeline.poll_interval_min`"
            );
        }
        if p.lease < Duration::from_secs(1) {
            bail!("invalid configuration: `pipeline.lease` must be at least 1s");
        }
        for (key, n) in [
            ("start_workers", p.start_workers),
            ("check_workers", p.check_workers),
            ("download_workers", p.download_workers),
        ] {
            if n == 0 || n > 64 {
                bail!("invalid configuration: `pipeline.{key}` must be between 1 and 64");
            }
        }
        let database_url = &self.service.database_url;
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            bail!(
                "invalid configuration: `service.database_url` must be a sqlite:// URL (one replica) or a postgres:// URL (several replicas); got a {:?} URL",
                database_url.split(':').next().unwrap_or("")
            );
        }
        if let Some(redis_url) = &self.service.redis_url {
            let ok = Url::parse(redis_url)
                .is_ok_and(|url| matches!(url.scheme(), "redis" | "rediss") && url.has_host());
            if !ok {
                bail!(
                    "invalid configuration: `service.redis_url` must be a redis://host:port URL (or rediss://)"
                );
            }
        }
        if self.service.redis_key_prefix.is_empty()
            || !self
                .service
                .redis_key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
        {
            bail!(
                "invalid configuration: `service.redis_key_prefix` must be letters, digits, '-', '_', '.' or ':'"
            );
        }
        if self.service.replicas == 0 || self.service.replicas > 1000 {
            bail!("invalid configuration: `service.replicas` must be between 1 and 1000");
        }
        if self.service.replicas > 1 && database_url.starts_with("sqlite:") {
            bail!(
                "invalid configuration: `service.replicas` is {} but `service.database_url` is SQLite, which one process owns; use a postgres:// URL for several replicas",
                self.service.replicas
            );
        }
        if !matches!(self.service.log_format.as_str(), "json" | "text") {
            bail!("invalid configuration: `service.log_format` must be \"json\" or \"text\"");
        }
        Ok(())
    }

    /// The effective configuration as JSON, with every secret replaced by `[redacted]`.
    pub fn redacted(&self) -> serde_json::Value {
        let redact = |s: &SecretString| {
            if s.expose_secret().is_empty() {
                "".to_owned()
            } else {
                "[redacted]".to_owned()
            }
        };
        let mint: BTreeMap<&String, serde_json::Value> = self
            .mint
            .iter()
            .map(|(name, p)| {
                (
                    name,
                    serde_json::json!({
                        "api_base": p.api_base.as_str(),
                        "token_url": p.token_url.as_str(),
                        "client_id": p.client_id,
                        "client_secret": redact(&p.client_secret),
                        "budget_units_per_minute": p.budget_units_per_minute,
                        "budget_burst_units": p.budget_burst_units,
                        "price_cents": p.price_cents,
                    }),
                )
            })
            .collect();
        serde_json::json!({
            "service": {
                "listen": self.service.listen.to_string(),
                "database_url": redact_url_password(&self.service.database_url),
                "archive_dir": self.service.archive_dir,
                "api_keys": self.service.api_keys.iter().map(redact).collect::<Vec<_>>(),
                "url": self.service.url.as_ref().map(Url::as_str),
                "shutdown_grace": humantime::format_duration(self.service.shutdown_grace).to_string(),
                "log_format": self.service.log_format,
                "redis_url": self.service.redis_url.as_deref().map(redact_url_password),
                "redis_key_prefix": self.service.redis_key_prefix,
                "replicas": self.service.replicas,
            },
            "webhook": {
                "auth": self.webhook.auth,
                "secret": self.webhook.secret.as_ref().map(redact),
                "secret_header": self.webhook.secret_header,
                "tolerance": humantime::format_duration(self.webhook.tolerance).to_string(),
                "body_bytes_max": self.webhook.body_bytes_max,
                "allow_unauthenticated": self.webhook.allow_unauthenticated,
                "settle": humantime::format_duration(self.webhook.settle).to_string(),
            },
            "pipeline": serde_json::to_value(&self.pipeline).unwrap_or_default(),
            "default_environment": self.default_environment,
            "mint": mint,
        })
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

fn env_provider(vars: &[(String, String)]) -> Serialized<serde_json::Value> {
    // Build a nested JSON object from `A__B__C=value` pairs, parsing values as TOML scalars/arrays
    // where possible (so numbers, booleans and lists work) and as strings otherwise.
    let mut root = serde_json::Map::new();
    for (key, value) in vars {
        let path: Vec<String> = key.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let parsed = parse_env_value(value);
        insert_path(&mut root, &path, parsed);
    }
    Serialized::defaults(serde_json::Value::Object(root))
}

fn parse_env_value(value: &str) -> serde_json::Value {
    #[derive(Deserialize)]
    struct Wrapper {
        v: toml::Value,
    }
    let looks_structured = value.starts_with('[')
        || value == "true"
        || value == "false"
        || value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok();
    if looks_structured
        && let Ok(w) = toml::from_str::<Wrapper>(&format!("v = {value}"))
        && let Ok(json) = serde_json::to_value(w.v)
    {
        return json;
    }
    serde_json::Value::String(value.to_owned())
}

fn insert_path(
    map: &mut serde_json::Map<String, serde_json::Value>,
    path: &[String],
    value: serde_json::Value,
) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry(first.clone())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(serde_json::Map::new());
            }
            if let serde_json::Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

fn describe_figment(error: &figment::Error) -> String {
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
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn redact_url_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("redacted"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const SECRET: &str = "0123456789abcdef-webhook";

    #[test]
    fn conventional_mint_variables_fill_the_default_profile() {
        let config = Config::load_from(
            None,
            &env(&[
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret"),
                ("MINTGATE_WEBHOOK__SECRET", SECRET),
                ("MINTGATE_PIPELINE__CHECK_WORKERS", "7"),
            ]),
        )
        .unwrap();
        let profile = config.profile("sandbox").unwrap();
        assert_eq!(profile.client_id, "demo");
        assert_eq!(profile.client_secret.expose_secret(), "demo-secret");
        assert_eq!(config.pipeline.check_workers, 7);
    }

    #[test]
    fn a_secret_with_trailing_whitespace_is_refused_with_its_key() {
        let error = Config::load_from(
            None,
            &env(&[
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret "),
                ("MINTGATE_WEBHOOK__SECRET", SECRET),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("mint.sandbox.client_secret"), "{error}");
        assert!(error.contains("whitespace"), "{error}");
    }

    #[test]
    fn a_wrongly_typed_value_names_its_key() {
        let error = Config::load_from(
            None,
            &env(&[
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret"),
                ("MINTGATE_WEBHOOK__SECRET", SECRET),
                ("MINTGATE_PIPELINE__POLL_GRACE", "soon"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("pipeline.poll_grace"), "{error}");
    }

    #[test]
    fn the_redacted_configuration_holds_no_secret() {
        let config = Config::load_from(
            None,
            &env(&[
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret"),
                ("MINTGATE_WEBHOOK__SECRET", SECRET),
                ("MINTGATE_SERVICE__API_KEYS", "[\"key-number-one\"]"),
            ]),
        )
        .unwrap();
        let text = config.redacted().to_string();
        assert!(!text.contains("demo-secret"), "{text}");
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("key-number-one"), "{text}");
        assert!(text.contains("[redacted]"));
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("MINT_CLIENT_ID", "demo"),
            ("MINT_CLIENT_SECRET", "demo-secret"),
            ("MINTGATE_WEBHOOK__SECRET", SECRET),
        ]
    }

    #[test]
    fn a_postgres_url_and_a_redis_url_switch_the_engines() {
        let mut vars = base();
        vars.push((
            "MINTGATE_SERVICE__DATABASE_URL",
            "postgres://mintgate:pw@db:5432/mintgate",
        ));
        vars.push(("MINTGATE_SERVICE__REDIS_URL", "redis://:pw@cache:6379"));
        vars.push(("MINTGATE_SERVICE__REPLICAS", "3"));
        let config = Config::load_from(None, &env(&vars)).unwrap();
        assert_eq!(config.service.replicas, 3);
        assert_eq!(
            config.service.redis_url.as_deref(),
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
            let mut vars = base();
            vars.push((key, value));
            let error = Config::load_from(None, &env(&vars))
                .unwrap_err()
                .to_string();
            assert!(error.contains(named), "{key}={value}: {error}");
        }
    }

    #[test]
    fn the_config_file_variable_is_not_read_as_a_key() {
        let config = Config::load_from(
            None,
            &env(&[
                ("MINTGATE_CONFIG", "/etc/mintgate.toml"),
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret"),
                ("MINTGATE_WEBHOOK__SECRET", SECRET),
                ("MINTGATE_SERVICE__URL", "https://mintgate.internal:8443"),
            ]),
        )
        .unwrap();
        assert_eq!(
            config.service.url.as_ref().map(Url::as_str),
            Some("https://mintgate.internal:8443/")
        );
    }

    #[test]
    fn operator_commands_can_load_what_the_service_would_refuse() {
        let vars = env(&[("MINT_CLIENT_ID", "demo"), ("MINT_CLIENT_SECRET", "s")]);
        assert!(Config::load_from(None, &vars).is_err(), "no webhook secret");
        let config = Config::load_unchecked_from(None, &vars).unwrap();
        config
            .profile("sandbox")
            .unwrap()
            .validate("sandbox")
            .unwrap();
    }

    #[test]
    fn unauthenticated_webhooks_need_an_explicit_opt_in() {
        let error = Config::load_from(
            None,
            &env(&[
                ("MINT_CLIENT_ID", "demo"),
                ("MINT_CLIENT_SECRET", "demo-secret"),
                ("MINTGATE_WEBHOOK__AUTH", "none"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("webhook.allow_unauthenticated"), "{error}");
    }
}
