//! Client configuration: from code, or from the conventional `MINT_*` environment variables.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::budget::BudgetConfig;
use crate::error::Error;
use crate::retry::RetryConfig;

/// Signicat's production API base.
pub const DEFAULT_API_BASE: &str = "https://api.signicat.com/mint";
/// Signicat's token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://api.signicat.com/auth/open/connect/token";
/// The only scope Mint accepts.
pub const DEFAULT_SCOPE: &str = "signicat-api";

/// How the client authenticates itself to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// HTTP Basic (`client_id:client_secret`), the default.
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    Body,
}

/// Timeouts. There is deliberately no total timeout for downloads: see `DownloadOptions` for their
/// stall detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection (TCP + TLS).
    pub connect: Duration,
    /// A whole JSON call, answer included. `GET /api/flows/{id}/instances` can take 10 s and more on a
    /// busy flow, hence the generous default (60 s).
    pub request: Duration,
    /// A token request.
    pub token: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
            token: Duration::from_secs(30),
        }
    }
}

/// When to renew a token ahead of its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRenewal {
    /// Renew at least this long before expiry (default 30 s); 10 % of the lifetime if that is more.
    /// For tiny lifetimes the margin is capped at half the lifetime.
    pub margin: Duration,
}

impl Default for TokenRenewal {
    fn default() -> Self {
        Self {
            margin: Duration::from_secs(30),
        }
    }
}

/// Everything the client needs. `Debug` never shows the secret.
#[derive(Debug, Clone)]
pub struct MintConfig {
    /// API base, e.g. `https://api.signicat.com/mint` (paths `/api/...` are appended).
    pub api_base: String,
    /// Token endpoint URL.
    pub token_url: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret (never printed or logged).
    pub client_secret: SecretString,
    /// OAuth scope (`signicat-api`).
    pub scope: String,
    /// Environment name (`sandbox`, `production`, …), used in messages such as a missing role's fix.
    pub environment: String,
    /// How to present the credentials to the token endpoint.
    pub client_auth: ClientAuth,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Token renewal margin.
    pub token_renewal: TokenRenewal,
    /// The request budget (used by [`crate::MintClient::new`]).
    pub budget: BudgetConfig,
    /// Retry policy.
    pub retry: RetryConfig,
    /// `User-Agent` header.
    pub user_agent: String,
    /// Told about requests, retries, tokens and downloads (for metrics); none by default.
    pub observer: Option<std::sync::Arc<dyn crate::observe::Observer>>,
    /// Adds trace-context headers (`traceparent`, `tracestate`) to every request; none by default.
    pub propagator: Option<std::sync::Arc<dyn crate::propagate::Propagator>>,
}

impl MintConfig {
    /// A configuration with defaults for everything but the four essentials.
    pub fn new(
        api_base: impl Into<String>,
        token_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: SecretString,
    ) -> Self {
        Self {
            api_base: api_base.into(),
            token_url: token_url.into(),
            client_id: client_id.into(),
            client_secret,
            scope: DEFAULT_SCOPE.to_owned(),
            environment: "default".to_owned(),
            client_auth: ClientAuth::default(),
            timeouts: Timeouts::default(),
            token_renewal: TokenRenewal::default(),
            budget: BudgetConfig::default(),
            retry: RetryConfig::default(),
            user_agent: concat!("mint-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            observer: None,
            propagator: None,
        }
    }

    /// Sets the [`Observer`](crate::Observer) told about requests, retries, tokens and downloads.
    pub fn observer(mut self, observer: std::sync::Arc<dyn crate::observe::Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sets the [`Propagator`](crate::Propagator) that adds trace-context headers to every request
    /// (token requests included), e.g. an OpenTelemetry bridge.
    pub fn propagator(
        mut self,
        propagator: std::sync::Arc<dyn crate::propagate::Propagator>,
    ) -> Self {
        self.propagator = Some(propagator);
        self
    }

    /// Reads `MINT_API_BASE`, `MINT_TOKEN_URL` (both default to Signicat's production hosts),
    /// `MINT_CLIENT_ID`, `MINT_CLIENT_SECRET` (required) and the optional `MINT_ENVIRONMENT`, `MINT_SCOPE`.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`MintConfig::from_env`], with a custom variable lookup (for tests and config layers).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let required = |key: &str| {
            lookup(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| Error::Config(format!("{key} is not set")))
        };
        let api_base = lookup("MINT_API_BASE").unwrap_or_else(|| DEFAULT_API_BASE.to_owned());
        let token_url = lookup("MINT_TOKEN_URL").unwrap_or_else(|| DEFAULT_TOKEN_URL.to_owned());
        let client_id = required("MINT_CLIENT_ID")?;
        let secret = required("MINT_CLIENT_SECRET")?;
        let mut cfg = Self::new(api_base, token_url, client_id, SecretString::from(secret));
        if let Some(env) = lookup("MINT_ENVIRONMENT").filter(|v| !v.is_empty()) {
            cfg.environment = env;
        }
        if let Some(scope) = lookup("MINT_SCOPE").filter(|v| !v.is_empty()) {
            cfg.scope = scope;
        }
        Ok(cfg)
    }

    /// Sets the environment name.
    pub fn environment(mut self, name: impl Into<String>) -> Self {
        self.environment = name.into();
        self
    }

    /// Sets the scope (Mint only accepts `signicat-api`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }

    /// Sets how credentials are presented to the token endpoint.
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Sets the timeouts.
    pub fn timeouts(mut self, timeouts: Timeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// Sets the token renewal margin.
    pub fn token_renewal(mut self, renewal: TokenRenewal) -> Self {
        self.token_renewal = renewal;
        self
    }

    /// Sets the budget configuration.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the retry policy.
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Whether the secret has leading or trailing whitespace (a classic copy-paste error).
    pub(crate) fn secret_has_stray_whitespace(&self) -> bool {
        let s = self.client_secret.expose_secret();
        s.trim() != s
    }

    /// The effective configuration as one log line, secret redacted.
    pub fn redacted_summary(&self) -> String {
        format!(
            "api_base={} token_url={} client_id={} client_secret=[REDACTED] scope={} environment={} \
             budget={}u/{}s burst={}u/{}ms",
            self.api_base,
            self.token_url,
            self.client_id,
            self.scope,
            self.environment,
            self.budget.limit_units,
            self.budget.window.as_secs(),
            self.budget.burst_units,
            self.budget.burst_window.as_millis()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn from_env_reads_the_conventional_variables() {
        let cfg = MintConfig::from_lookup(lookup(&[
            ("MINT_API_BASE", "http://127.0.0.1:1/mint"),
            ("MINT_TOKEN_URL", "http://127.0.0.1:1/token"),
            ("MINT_CLIENT_ID", "demo"),
            ("MINT_CLIENT_SECRET", "s3cret"),
            ("MINT_ENVIRONMENT", "sandbox"),
        ]))
        .unwrap();
        assert_eq!(cfg.api_base, "http://127.0.0.1:1/mint");
        assert_eq!(cfg.client_id, "demo");
        assert_eq!(cfg.client_secret.expose_secret(), "s3cret");
        assert_eq!(cfg.environment, "sandbox");
        assert_eq!(cfg.scope, "signicat-api");
    }

    #[test]
    fn from_env_defaults_hosts_and_names_a_missing_key() {
        let cfg = MintConfig::from_lookup(lookup(&[
            ("MINT_CLIENT_ID", "a"),
            ("MINT_CLIENT_SECRET", "b"),
        ]))
        .unwrap();
        assert_eq!(cfg.api_base, DEFAULT_API_BASE);
        assert_eq!(cfg.token_url, DEFAULT_TOKEN_URL);
        let err = MintConfig::from_lookup(lookup(&[("MINT_CLIENT_ID", "a")])).unwrap_err();
        assert!(
            err.to_string().contains("MINT_CLIENT_SECRET is not set"),
            "{err}"
        );
    }

    #[test]
    fn the_secret_never_appears_in_debug_or_summary() {
        let cfg = MintConfig::new(
            "http://x/mint",
            "http://x/t",
            "id",
            SecretString::from("hunter2-secret"),
        );
        assert!(!format!("{cfg:?}").contains("hunter2-secret"));
        assert!(!cfg.redacted_summary().contains("hunter2-secret"));
        assert!(cfg.redacted_summary().contains("[REDACTED]"));
    }

    #[test]
    fn stray_whitespace_in_the_secret_is_detected() {
        let cfg = MintConfig::new("a", "b", "id", SecretString::from("secret\n"));
        assert!(cfg.secret_has_stray_whitespace());
        let cfg = MintConfig::new("a", "b", "id", SecretString::from("secret"));
        assert!(!cfg.secret_has_stray_whitespace());
    }
}
