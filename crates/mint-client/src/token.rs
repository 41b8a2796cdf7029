//! OAuth 2.0 client credentials, by hand: a cached token renewed ahead of expiry, one renewal at a time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::{ClientAuth, DEFAULT_SCOPE, MintConfig};
use crate::error::{AuthErrorKind, BoxError, Error};
use crate::retry::{RetryConfig, backoff_delay, parse_retry_after};

/// What the token endpoint said about the current token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The lifetime the server gave (`expires_in`).
    pub expires_in: Duration,
    /// How long after fetching the client renews it.
    pub renew_after: Duration,
    /// `token_type` (`Bearer`).
    pub token_type: String,
    /// `scope`, if the server echoed it.
    pub scope: Option<String>,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
}

/// When to renew a token of lifetime `expires_in`: `expires_in − max(10 %, margin)`, but never later
/// than half the lifetime for tiny lifetimes (a 1 s token is renewed after 0.5 s).
pub fn renew_after(expires_in: Duration, margin: Duration) -> Duration {
    let margin = margin.max(expires_in / 10).min(expires_in / 2);
    expires_in - margin
}

pub(crate) struct CachedToken {
    pub(crate) value: SecretString,
    pub(crate) generation: u64,
    renew_at: Instant,
    expires_at: Instant,
    info: TokenInfo,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<f64>,
    #[serde(default)]
    scope: Option<String>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Lifetime assumed when the server gives no `expires_in`: short, so the token is renewed often
/// rather than used after it silently expired.
const FALLBACK_LIFETIME: Duration = Duration::from_secs(60);

pub(crate) struct TokenManager {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    secret: SecretString,
    secret_whitespace: bool,
    scope: String,
    environment: String,
    auth: ClientAuth,
    timeout: Duration,
    margin: Duration,
    retry: RetryConfig,
    observer: Option<Arc<dyn crate::observe::Observer>>,
    current: RwLock<Option<Arc<CachedToken>>>,
    refresh: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl TokenManager {
    pub(crate) fn new(http: reqwest::Client, cfg: &MintConfig) -> Self {
        Self {
            http,
            token_url: cfg.token_url.clone(),
            client_id: cfg.client_id.clone(),
            secret: cfg.client_secret.clone(),
            secret_whitespace: cfg.secret_has_stray_whitespace(),
            scope: cfg.scope.clone(),
            environment: cfg.environment.clone(),
            auth: cfg.client_auth,
            timeout: cfg.timeouts.token,
            margin: cfg.token_renewal.margin,
            retry: cfg.retry.clone(),
            observer: cfg.observer.clone(),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    fn cached(&self) -> Option<Arc<CachedToken>> {
        self.current.read().unwrap().clone()
    }

    /// A token to call the API with: the cached one while fresh; renewed by exactly one task when due.
    pub(crate) async fn bearer(&self) -> Result<Arc<CachedToken>, Error> {
        if let Some(t) = self.cached() {
            let now = Instant::now();
            if now < t.renew_at {
                return Ok(t);
            }
            if now < t.expires_at {
                // Due for renewal but still valid: one task renews, the others keep using it.
                let Ok(_guard) = self.refresh.try_lock() else {
                    return Ok(t);
                };
                if let Some(newer) = self.cached().filter(|n| n.generation != t.generation) {
                    return Ok(newer);
                }
                return match self.fetch().await {
                    Ok(fresh) => Ok(fresh),
                    Err(e) => {
                        tracing::warn!(error = %e, "token renewal failed; using the current token until it expires");
                        Ok(t)
                    }
                };
            }
        }
        let _guard = self.refresh.lock().await;
        if let Some(t) = self.cached()
            && Instant::now() < t.expires_at
        {
            return Ok(t);
        }
        self.fetch().await
    }

    /// Forgets the token that got a 401 (unless another task already replaced it).
    pub(crate) fn invalidate(&self, generation: u64) {
        let mut cur = self.current.write().unwrap();
        if cur.as_ref().is_some_and(|t| t.generation == generation) {
            *cur = None;
        }
    }

    /// Information about the cached token, if there is one (never fetches).
    pub(crate) fn current_info(&self) -> Option<TokenInfo> {
        self.cached().map(|t| t.info.clone())
    }

    fn observe(&self, event: crate::observe::ClientEvent) {
        if let Some(observer) = &self.observer {
            observer.observe(&event);
        }
    }

    /// Information about the current token, fetching one if needed.
    pub(crate) async fn info(&self) -> Result<TokenInfo, Error> {
        Ok(self.bearer().await?.info.clone())
    }

    /// Fetches a new token now (for `doctor`), replacing the cached one.
    pub(crate) async fn fetch_now(&self) -> Result<TokenInfo, Error> {
        let _guard = self.refresh.lock().await;
        Ok(self.fetch().await?.info.clone())
    }

    /// Fetches a token, retrying transient failures (a token request is safe to repeat).
    async fn fetch(&self) -> Result<Arc<CachedToken>, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let span = tracing::info_span!(
                "mint.token",
                method = "POST",
                path = "/auth/open/connect/token",
                client_id = %self.client_id,
                attempt,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
            );
            let result = self.fetch_once().instrument(span.clone()).await;
            match result {
                Ok(t) => {
                    self.observe(crate::observe::ClientEvent::TokenIssued {
                        expires_in: t.info.expires_in,
                        renewal: t.generation > 1,
                    });
                    return Ok(t);
                }
                Err((err, retry_after)) => {
                    if !err.is_retryable() || attempt >= self.retry.max_attempts.max(1) {
                        self.observe(crate::observe::ClientEvent::TokenFailed);
                        return Err(err);
                    }
                    let delay = retry_after.unwrap_or_else(|| {
                        backoff_delay(
                            attempt,
                            self.retry.base_delay,
                            self.retry.max_delay,
                            rand::random(),
                        )
                    });
                    span.in_scope(
                        || tracing::warn!(error = %err, ?delay, "token request failed; retrying"),
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn fetch_once(&self) -> Result<Arc<CachedToken>, (Error, Option<Duration>)> {
        let started = Instant::now();
        let started_wall = Utc::now();
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("scope", self.scope.as_str()),
        ];
        let mut req = self.http.post(&self.token_url).timeout(self.timeout);
        match self.auth {
            ClientAuth::Basic => {
                req = req.basic_auth(&self.client_id, Some(self.secret.expose_secret()));
            }
            ClientAuth::Body => {
                form.push(("client_id", self.client_id.as_str()));
                form.push(("client_secret", self.secret.expose_secret()));
            }
        }
        let unavailable = |msg: String, source: Option<BoxError>| Error::Auth {
            kind: AuthErrorKind::Unavailable,
            message: msg,
            source,
        };
        let resp = req.form(&form).send().await.map_err(|e| {
            let msg = format!("the token endpoint {} could not be reached", self.token_url);
            (unavailable(msg, Some(Box::new(e))), None)
        })?;
        let status = resp.status().as_u16();
        let span = tracing::Span::current();
        span.record("status", status);
        span.record("latency_ms", started.elapsed().as_millis() as u64);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                parse_retry_after(v, std::time::SystemTime::now(), self.retry.retry_after_max)
            });
        let body = resp.bytes().await.map_err(|e| {
            let msg = format!("the token endpoint answered {status} but the body was lost");
            (unavailable(msg, Some(Box::new(e))), None)
        })?;
        if (200..300).contains(&status) {
            let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                let msg =
                    format!("the token endpoint answered {status} with a body that is not a token");
                (unavailable(msg, Some(Box::new(e))), None)
            })?;
            let expires_in = match parsed.expires_in {
                Some(s) if s.is_finite() && s > 0.0 => {
                    Duration::from_secs_f64(s.min(86_400.0 * 365.0))
                }
                _ => {
                    tracing::warn!(
                        "the token answer has no usable expires_in; assuming {FALLBACK_LIFETIME:?}"
                    );
                    FALLBACK_LIFETIME
                }
            };
            let renew = renew_after(expires_in, self.margin);
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
            let token = Arc::new(CachedToken {
                value: SecretString::from(parsed.access_token),
                generation,
                // Measured from before the request left: the server's clock started later, so this errs early.
                renew_at: started + renew,
                expires_at: started + expires_in,
                info: TokenInfo {
                    expires_in,
                    renew_after: renew,
                    token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
                    scope: parsed.scope,
                    fetched_at: started_wall,
                },
            });
            tracing::debug!(
                expires_in_s = expires_in.as_secs_f64(),
                renew_after_s = renew.as_secs_f64(),
                "token issued"
            );
            *self.current.write().unwrap() = Some(token.clone());
            return Ok(token);
        }
        let oauth: Option<OAuthError> = serde_json::from_slice(&body).ok();
        let err = self.classify(status, oauth);
        Err((err, retry_after))
    }

    fn classify(&self, status: u16, oauth: Option<OAuthError>) -> Error {
        let code = oauth.as_ref().map(|o| o.error.as_str());
        let description = oauth
            .as_ref()
            .and_then(|o| o.error_description.as_deref())
            .map(|d| format!(" (server: {d})"))
            .unwrap_or_default();
        match (status, code) {
            (_, Some("invalid_client")) | (401, None) => {
                let whitespace = if self.secret_whitespace {
                    " The configured secret starts or ends with whitespace (a newline from a file or \
                     a copy-paste?): remove it."
                } else {
                    " Check for a copy-paste error and for trailing whitespace or a newline in the \
                     secret."
                };
                Error::Auth {
                    kind: AuthErrorKind::InvalidClient,
                    message: format!(
                        "the token endpoint rejected the credentials of API client {:?} \
                         (invalid_client): the client id or the client secret is wrong for the {} \
                         account{description}.{whitespace} Sandbox and production have separate API \
                         clients.",
                        self.client_id, self.environment
                    ),
                    source: None,
                }
            }
            (_, Some("invalid_scope")) => Error::Auth {
                kind: AuthErrorKind::InvalidScope,
                message: format!(
                    "the token endpoint rejected scope {:?} (invalid_scope){description}; Mint needs \
                     scope \"{DEFAULT_SCOPE}\"",
                    self.scope
                ),
                source: None,
            },
            (_, Some(other)) if status < 500 && status != 429 => Error::Auth {
                kind: AuthErrorKind::OAuth(other.to_owned()),
                message: format!(
                    "the token endpoint refused the request: {other}{description} (client credentials \
                     grant with scope {:?})",
                    self.scope
                ),
                source: None,
            },
            _ => Error::Auth {
                kind: AuthErrorKind::Unavailable,
                message: format!("the token endpoint {} answered {status}", self.token_url),
                source: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_ahead_of_expiry_by_ten_percent_or_the_margin() {
        let m = Duration::from_secs(30);
        assert_eq!(
            renew_after(Duration::from_secs(600), m),
            Duration::from_secs(540)
        );
        assert_eq!(
            renew_after(Duration::from_secs(3600), m),
            Duration::from_secs(3240)
        );
        assert_eq!(
            renew_after(Duration::from_secs(120), m),
            Duration::from_secs(90)
        );
        // Tiny lifetimes: never more than half the lifetime ahead.
        assert_eq!(
            renew_after(Duration::from_secs(40), m),
            Duration::from_secs(20)
        );
        assert_eq!(
            renew_after(Duration::from_secs(1), m),
            Duration::from_millis(500)
        );
    }

    fn manager(secret: &str, scope: &str) -> TokenManager {
        let cfg = MintConfig::new(
            "http://x/mint",
            "http://x/token",
            "demo",
            SecretString::from(secret),
        )
        .scope(scope)
        .environment("sandbox");
        TokenManager::new(reqwest::Client::new(), &cfg)
    }

    #[test]
    fn invalid_client_mentions_the_secret_and_whitespace() {
        let m = manager("hunter2-xyz ", DEFAULT_SCOPE);
        let e = m.classify(
            401,
            Some(OAuthError {
                error: "invalid_client".into(),
                error_description: None,
            }),
        );
        let msg = e.to_string();
        assert!(
            msg.contains("client id or the client secret is wrong"),
            "{msg}"
        );
        assert!(msg.contains("ends with whitespace"), "{msg}");
        assert!(
            !msg.contains("hunter2"),
            "the secret itself must not appear: {msg}"
        );
        assert!(matches!(
            e,
            Error::Auth {
                kind: AuthErrorKind::InvalidClient,
                ..
            }
        ));
        let plain = manager("secret", DEFAULT_SCOPE)
            .classify(401, None)
            .to_string();
        assert!(plain.contains("trailing whitespace"), "{plain}");
    }

    #[test]
    fn invalid_scope_names_the_right_scope() {
        let e = manager("s", "openid").classify(
            400,
            Some(OAuthError {
                error: "invalid_scope".into(),
                error_description: None,
            }),
        );
        let msg = e.to_string();
        assert!(msg.contains("\"openid\""), "{msg}");
        assert!(msg.contains("scope \"signicat-api\""), "{msg}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn server_errors_are_retryable_unavailability() {
        let e = manager("s", DEFAULT_SCOPE).classify(503, None);
        assert!(matches!(
            e,
            Error::Auth {
                kind: AuthErrorKind::Unavailable,
                ..
            }
        ));
        assert!(e.is_retryable());
    }
}
