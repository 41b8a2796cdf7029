//! [`RedisTokenStore`]: the replicas' one Mint token, with its expiry, and the fleet's renewal lock.
//!
//! The token is kept in Redis as JSON (value and wall-clock times) with a TTL equal to its remaining
//! lifetime, so an expired token disappears on its own. Renewal is single-flight across the fleet
//! with `SET lock <this process's id> NX PX <hold>`; only the holder deletes it (compare-and-delete
//! script). Redis must be as trusted as the database: it holds a live bearer token. The token never
//! reaches a log line: [`SharedToken`]'s `Debug` redacts it and errors here never include values.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mint_client::{BoxFuture, SecretString, SharedToken, TokenStore};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use super::SharedRedis;

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

const DISCARD: &str = r"
local stored = redis.call('GET', KEYS[1])
if stored and cjson.decode(stored)['value'] == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

#[derive(Serialize, Deserialize)]
struct Stored {
    value: String,
    expires_at: DateTime<Utc>,
    renew_at: DateTime<Utc>,
    token_type: String,
    scope: Option<String>,
    fetched_at: DateTime<Utc>,
}

/// One API client's token, shared through Redis.
pub struct RedisTokenStore {
    redis: SharedRedis,
    token_key: String,
    lock_key: String,
    /// This process's lock value: only the holder may release the lock.
    holder: String,
}

impl std::fmt::Debug for RedisTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTokenStore")
            .field("token_key", &self.token_key)
            .finish_non_exhaustive()
    }
}

impl RedisTokenStore {
    /// The store of API client `name` (e.g. `sandbox:demo`).
    pub fn new(redis: SharedRedis, name: &str) -> Self {
        Self {
            token_key: redis.key("token", name),
            lock_key: redis.key("token", &format!("{name}:renewing")),
            redis,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    async fn load_inner(&self) -> anyhow::Result<Option<SharedToken>> {
        let mut connection = self.redis.connection();
        let key = self.token_key.clone();
        let stored: Option<String> = self
            .redis
            .run(async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let Some(stored) = stored else {
            return Ok(None);
        };
        // Never put the stored text in an error: it holds the token.
        let stored: Stored = serde_json::from_str(&stored)
            .map_err(|_| anyhow::anyhow!("the shared token in Redis is not readable"))?;
        Ok(Some(SharedToken {
            value: SecretString::from(stored.value),
            expires_at: stored.expires_at,
            renew_at: stored.renew_at,
            token_type: stored.token_type,
            scope: stored.scope,
            fetched_at: stored.fetched_at,
        }))
    }

    async fn save_inner(&self, token: SharedToken) -> anyhow::Result<()> {
        let lifetime_ms = (token.expires_at - Utc::now()).num_milliseconds();
        if lifetime_ms <= 0 {
            return Ok(());
        }
        let stored = serde_json::to_string(&Stored {
            value: token.value.expose_secret().to_owned(),
            expires_at: token.expires_at,
            renew_at: token.renew_at,
            token_type: token.token_type,
            scope: token.scope,
            fetched_at: token.fetched_at,
        })?;
        let mut connection = self.redis.connection();
        let key = self.token_key.clone();
        self.redis
            .run(async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(stored)
                    .arg("PX")
                    .arg(lifetime_ms)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await
    }

    async fn lock_inner(&self, hold: Duration) -> anyhow::Result<bool> {
        let mut connection = self.redis.connection();
        let (key, holder) = (self.lock_key.clone(), self.holder.clone());
        let answer: Option<String> = self
            .redis
            .run(async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(holder)
                    .arg("NX")
                    .arg("PX")
                    .arg(hold.as_millis().max(1) as u64)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(answer.is_some())
    }

    async fn script(&self, source: &str, key: &str, arg: &str) -> anyhow::Result<()> {
        let script = redis::Script::new(source);
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(arg);
        let mut connection = self.redis.connection();
        self.redis
            .run(invocation.invoke_async::<i64>(&mut connection))
            .await
            .map(|_| ())
    }
}

impl TokenStore for RedisTokenStore {
    fn load(&self) -> BoxFuture<'_, Option<SharedToken>> {
        Box::pin(async move {
            self.load_inner().await.unwrap_or_else(|error| {
                tracing::debug!(error = format!("{error:#}"), "shared token unavailable");
                None
            })
        })
    }

    fn save(&self, token: SharedToken) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.save_inner(token).await {
                tracing::debug!(error = format!("{error:#}"), "cannot share the token");
            }
        })
    }

    fn try_lock_renewal(&self, hold: Duration) -> BoxFuture<'_, bool> {
        // Redis unreachable: renew on our own, as without a store.
        Box::pin(async move { self.lock_inner(hold).await.unwrap_or(true) })
    }

    fn unlock_renewal(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.script(UNLOCK, &self.lock_key, &self.holder).await;
        })
    }

    fn discard(&self, value: &SecretString) -> BoxFuture<'_, ()> {
        let value = value.expose_secret().to_owned();
        Box::pin(async move {
            let _ = self.script(DISCARD, &self.token_key, &value).await;
        })
    }
}
