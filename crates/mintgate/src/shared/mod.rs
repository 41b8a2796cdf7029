//! What replicas share through Redis (`service.redis_url`): the Mint budget ([`RedisBudget`]), the
//! token ([`RedisTokenStore`]) and the flow listings (see [`crate::flow_cache`]).
//!
//! Redis is a helper, never a dependency of correctness: every user of it has a local fallback
//! (a conservative share of the budget, a token of its own, an in-process cache), so a Redis outage
//! slows the fleet down but loses nothing. The durable state lives in the database only.

mod budget;
mod token;

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use budget::{GcraParams, RedisBudget};
pub use token::RedisTokenStore;

/// How long one Redis command may take before the caller falls back. Redis answers in well under
/// a millisecond on a healthy network; a stuck call must not hold a request for long.
pub const REDIS_COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// A connection to Redis (reconnecting on its own) and the prefix of every key mintgate writes.
#[derive(Clone)]
pub struct SharedRedis {
    connection: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl SharedRedis {
    /// Prepares a connection without connecting: the service starts even while Redis is down, and
    /// the connection is (re)established at first use.
    pub fn connect_lazy(url: &str, prefix: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing `service.redis_url`")?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_COMMAND_TIMEOUT))
            .set_response_timeout(Some(REDIS_COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .context("preparing the Redis connection (`service.redis_url`)")?;
        Ok(Self {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// A key under mintgate's prefix. The `{…}` hash tag keeps one feature's keys on one cluster
    /// node, so a script may touch them together.
    pub fn key(&self, feature: &str, name: &str) -> String {
        format!("{{{}:{feature}:{name}}}", self.prefix)
    }

    /// A connection handle (cheap: multiplexed).
    pub fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    /// Runs one Redis call with [`REDIS_COMMAND_TIMEOUT`].
    pub async fn run<T, F>(&self, call: F) -> anyhow::Result<T>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(REDIS_COMMAND_TIMEOUT, call).await {
            Ok(result) => result.context("calling Redis"),
            Err(_) => anyhow::bail!("Redis did not answer within {REDIS_COMMAND_TIMEOUT:?}"),
        }
    }

    /// Is Redis reachable?
    pub async fn ping(&self) -> anyhow::Result<()> {
        let mut connection = self.connection();
        self.run(async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
        })
        .await
        .map(|_| ())
    }
}
