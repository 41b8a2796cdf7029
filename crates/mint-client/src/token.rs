//! OAuth 2.0 client credentials, by hand: a cached token renewed ahead of expiry, one renewal at a time.
//!
//! Several processes that use one API client (replicas of a service) can share the token through a
//! [`TokenStore`]: the client looks there before it fetches, publishes what it fetched, and takes the
//! store's renewal lock first, so one process in the fleet renews while the others wait for it or
//! keep using the current token.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::budget::BoxFuture;
use crate::config::{ClientAuth, DEFAULT_SCOPE, MintConfig};
use crate::error::{AuthErrorKind, BoxError, Error};
use crate::http_log;
use crate::http_log::trace_id_of;
use crate::retry::{RetryConfig, parse_retry_after, retry_delay};

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

/// A token as processes share it: the value and its wall-clock times. `Debug` never shows the value.
#[derive(Clone)]
pub struct SharedToken {
    /// The bearer token.
    pub value: SecretString,
    /// When the server stops accepting it.
    pub expires_at: DateTime<Utc>,
    /// When it should be renewed (ahead of `expires_at`).
    pub renew_at: DateTime<Utc>,
    /// `token_type` (`Bearer`).
    pub token_type: String,
    /// `scope`, if the server echoed it.
    pub scope: Option<String>,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
}

impl fmt::Debug for SharedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedToken")
            .field("value", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .field("renew_at", &self.renew_at)
            .finish_non_exhaustive()
    }
}

/// Where the processes of one API client share its token (Redis, for replicas of a service).
///
/// Object-safe (boxed futures), so `Arc<dyn TokenStore>` works. Its methods cannot fail from the
/// client's point of view: a store that cannot answer behaves as empty and unlocked, so the client
/// fetches its own token, exactly as without a store.
pub trait TokenStore: Send + Sync + fmt::Debug + 'static {
    /// The shared token, if there is one (the client checks its times).
    fn load(&self) -> BoxFuture<'_, Option<SharedToken>>;
    /// Publishes a token this process just fetched.
    fn save(&self, token: SharedToken) -> BoxFuture<'_, ()>;
    /// Asks to be the one process that renews, for at most `hold`; `false` if another one is.
    fn try_lock_renewal(&self, hold: Duration) -> BoxFuture<'_, bool>;
    /// Gives up the renewal lock this process holds (never another's).
    fn unlock_renewal(&self) -> BoxFuture<'_, ()>;
    /// Forgets the shared token if it is still `value` (the server rejected it with a 401).
    fn discard(&self, value: &SecretString) -> BoxFuture<'_, ()>;
}

/// A [`TokenStore`] in memory: clients of one process share one token (and the tests of the hook).
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    token: Option<SharedToken>,
    locked_until: Option<Instant>,
}

impl MemoryTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl TokenStore for MemoryTokenStore {
    fn load(&self) -> BoxFuture<'_, Option<SharedToken>> {
        let token = self.state.lock().unwrap().token.clone();
        Box::pin(std::future::ready(token))
    }

    fn save(&self, token: SharedToken) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap().token = Some(token);
        Box::pin(std::future::ready(()))
    }

    fn try_lock_renewal(&self, hold: Duration) -> BoxFuture<'_, bool> {
        let mut state = self.state.lock().unwrap();
        let now = Instant::now();
        let free = state.locked_until.is_none_or(|until| until <= now);
        if free {
            state.locked_until = Some(now + hold);
        }
        Box::pin(std::future::ready(free))
    }

    fn unlock_renewal(&self) -> BoxFuture<'_, ()> {
        self.state.lock().unwrap().locked_until = None;
        Box::pin(std::future::ready(()))
    }

    fn discard(&self, value: &SecretString) -> BoxFuture<'_, ()> {
        let mut state = self.state.lock().unwrap();
        if state
            .token
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == value.expose_secret())
        {
            state.token = None;
        }
        Box::pin(std::future::ready(()))
    }
}

/// While another process renews the shared token, check for its result this often.
const SHARED_POLL: Duration = Duration::from_millis(25);

pub(crate) struct CachedToken {
    pub(crate) value: SecretString,
    pub(crate) generation: u64,
    renew_at: Instant,
    expires_at: Instant,
    info: TokenInfo,
    /// The same times on the wall clock, to share with other processes.
    renew_at_wall: DateTime<Utc>,
    expires_at_wall: DateTime<Utc>,
}

impl CachedToken {
    fn to_shared(&self) -> SharedToken {
        SharedToken {
            value: self.value.clone(),
            expires_at: self.expires_at_wall,
            renew_at: self.renew_at_wall,
            token_type: self.info.token_type.clone(),
            scope: self.info.scope.clone(),
            fetched_at: self.info.fetched_at,
        }
    }
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
    propagator: Option<Arc<dyn crate::propagate::Propagator>>,
    current: RwLock<Option<Arc<CachedToken>>>,
    refresh: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    shared: Option<Arc<dyn TokenStore>>,
}

impl TokenManager {
    pub(crate) fn new(
        http: reqwest::Client,
        cfg: &MintConfig,
        shared: Option<Arc<dyn TokenStore>>,
    ) -> Self {
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
            propagator: cfg.propagator.clone(),
            current: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            shared,
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
                return match self.renew(Some(&t)).await {
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
        self.renew(None).await
    }

    /// Gets a fresh token, with the refresh mutex held: from the shared store if another process
    /// renewed it, else fetched by the one process holding the store's renewal lock. With a still
    /// valid `current` token, a process that does not get the lock keeps using it; without one, it
    /// waits for the renewing process (at most a token request's timeout, then fetches itself).
    async fn renew(&self, current: Option<&Arc<CachedToken>>) -> Result<Arc<CachedToken>, Error> {
        let Some(shared) = &self.shared else {
            return self.fetch().await;
        };
        // Long enough for one token request with its retries; a holder that dies frees it then.
        let hold = self.timeout * 2 + Duration::from_secs(1);
        let give_up = Instant::now() + hold;
        loop {
            if let Some(fresh) = self.adopt(shared.load().await) {
                return Ok(fresh);
            }
            if shared.try_lock_renewal(hold).await {
                // Another process may have published between the look and the lock.
                if let Some(fresh) = self.adopt(shared.load().await) {
                    shared.unlock_renewal().await;
                    return Ok(fresh);
                }
                let fetched = self.fetch().await;
                if let Ok(token) = &fetched {
                    shared.save(token.to_shared()).await;
                }
                shared.unlock_renewal().await;
                return fetched;
            }
            if let Some(current) = current {
                return Ok(current.clone());
            }
            if Instant::now() >= give_up {
                tracing::warn!(
                    "the shared token's renewal is taking too long; fetching a token of our own"
                );
                return self.fetch().await;
            }
            tokio::time::sleep(SHARED_POLL).await;
        }
    }

    /// Makes a shared token this process's current one, if it is not yet due for renewal.
    fn adopt(&self, shared: Option<SharedToken>) -> Option<Arc<CachedToken>> {
        let shared = shared?;
        let now_wall = Utc::now();
        let until_renew = (shared.renew_at - now_wall).to_std().ok()?;
        let until_expiry = (shared.expires_at - now_wall).to_std().ok()?;
        let now = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_in = (shared.expires_at - shared.fetched_at)
            .to_std()
            .unwrap_or(until_expiry);
        let renew = (shared.renew_at - shared.fetched_at)
            .to_std()
            .unwrap_or(until_renew);
        let token = Arc::new(CachedToken {
            value: shared.value,
            generation,
            renew_at: now + until_renew,
            expires_at: now + until_expiry,
            info: TokenInfo {
                expires_in,
                renew_after: renew,
                token_type: shared.token_type,
                scope: shared.scope,
                fetched_at: shared.fetched_at,
            },
            renew_at_wall: shared.renew_at,
            expires_at_wall: shared.expires_at,
        });
        tracing::debug!("using the token another process fetched");
        *self.current.write().unwrap() = Some(token.clone());
        Some(token)
    }

    /// Forgets the token that got a 401 (unless another task already replaced it), here and in the
    /// shared store.
    pub(crate) async fn invalidate(&self, token: &CachedToken) {
        {
            let mut cur = self.current.write().unwrap();
            if cur
                .as_ref()
                .is_some_and(|t| t.generation == token.generation)
            {
                *cur = None;
            }
        }
        if let Some(shared) = &self.shared {
            shared.discard(&token.value).await;
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
        let token = self.fetch().await?;
        if let Some(shared) = &self.shared {
            shared.save(token.to_shared()).await;
        }
        Ok(token.info.clone())
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
                    let delay = retry_delay(attempt, retry_after, &self.retry, rand::random());
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
        let mut request = req.form(&form).build().map_err(|e| {
            let msg = "the token request could not be built".to_owned();
            (unavailable(msg, Some(Box::new(e))), None)
        })?;
        if let Some(propagator) = &self.propagator {
            crate::propagate::apply(propagator.as_ref(), request.headers_mut());
        }
        let url = request.url().clone();
        // Never the body: it may hold `client_secret` (client_secret_post).
        http_log::request("POST", &url, request.headers());
        let span = tracing::Span::current();
        let resp = match self.http.execute(request).await {
            Ok(resp) => resp,
            Err(e) => {
                let elapsed = started.elapsed();
                span.record("latency_ms", elapsed.as_millis() as u64);
                http_log::no_answer("POST", &url, elapsed, &e);
                let msg = format!("the token endpoint {} could not be reached", self.token_url);
                return Err((unavailable(msg, Some(Box::new(e))), None));
            }
        };
        let status = resp.status().as_u16();
        span.record("status", status);
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                parse_retry_after(v, std::time::SystemTime::now(), self.retry.retry_after_max)
            });
        let headers = resp.headers().clone();
        let body = resp.bytes().await;
        let elapsed = started.elapsed();
        span.record("latency_ms", elapsed.as_millis() as u64);
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                http_log::no_answer("POST", &url, elapsed, &e);
                let msg = format!("the token endpoint answered {status} but the body was lost");
                return Err((unavailable(msg, Some(Box::new(e))), None));
            }
        };
        // A successful answer holds the token: only an error's body is logged (redacted).
        http_log::response(
            "POST",
            &url,
            status,
            elapsed,
            trace_id_of(&headers).as_deref(),
            &headers,
            (!(200..300).contains(&status)).then_some(&body[..]),
        );
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
                renew_at_wall: started_wall
                    + chrono::TimeDelta::from_std(renew).unwrap_or_default(),
                expires_at_wall: started_wall
                    + chrono::TimeDelta::from_std(expires_in).unwrap_or_default(),
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
        TokenManager::new(reqwest::Client::new(), &cfg, None)
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

    fn sim_config(sim: &mint_sim::Simulator) -> MintConfig {
        MintConfig::new(
            sim.base_url(),
            sim.token_url(),
            "demo",
            SecretString::from("demo-secret"),
        )
    }

    async fn list_once(client: &crate::MintClient) {
        client
            .list_flows(&crate::ListFlows::default())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn clients_sharing_a_token_store_fetch_one_token_between_them() {
        let sim = mint_sim::Simulator::builder().start().await.unwrap();
        let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new());
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let cfg = sim_config(&sim);
                let budget = Arc::new(crate::LocalBudget::new(cfg.budget.clone()));
                crate::MintClient::with_shared(cfg, budget, Some(store.clone())).unwrap()
            })
            .collect();
        futures::future::join_all(clients.iter().map(list_once)).await;
        futures::future::join_all(clients.iter().map(list_once)).await;
        let usage = sim.admin().usage().await.unwrap();
        assert_eq!(usage.clients["demo"].tokens_issued, 1, "{usage:?}");

        // A token the server rejects is discarded from the store too: one renewal for everyone.
        sim.admin().revoke_tokens("demo").await.unwrap();
        list_once(&clients[0]).await;
        futures::future::join_all(clients.iter().map(list_once)).await;
        let usage = sim.admin().usage().await.unwrap();
        assert_eq!(usage.clients["demo"].tokens_issued, 2, "{usage:?}");
        sim.shutdown().await;
    }

    #[test]
    fn a_shared_token_never_shows_its_value() {
        let token = SharedToken {
            value: SecretString::from("very-secret-bearer"),
            expires_at: Utc::now(),
            renew_at: Utc::now(),
            token_type: "Bearer".into(),
            scope: None,
            fetched_at: Utc::now(),
        };
        let text = format!("{token:?}");
        assert!(!text.contains("very-secret-bearer"), "{text}");
    }
}
