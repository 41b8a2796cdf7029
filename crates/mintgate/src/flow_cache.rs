//! Flow listings cached with a TTL, one per environment, fetched by one task at a time.
//!
//! The own API uses it to refuse an unknown flow id, or a definition id given as a flow id, at once
//! (with the flow ids that belong to it), instead of queueing an execution that can never start.
//! When the listing cannot be had quickly (an outage, an exhausted budget, a missing role) the request
//! is accepted unverified: a request is never lost because Mint was slow.
//!
//! With Redis (`service.redis_url`) the replicas share the listings: a replica whose own copy is
//! stale looks in Redis before it asks Mint, and publishes what it fetched, so the fleet lists each
//! environment's flows about once per TTL instead of once per replica. Redis errors fall back to the
//! in-process behaviour.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use mint_client::{FlowId, ListFlows, MintClient, Priority};

use crate::clock::{Clock, delta};
use crate::shared::SharedRedis;

/// One flow version, as the cache keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CachedFlow {
    pub id: String,
    pub definition_id: Option<String>,
    pub name: Option<String>,
}

/// What the cache knows about a flow id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowCheck {
    Known,
    /// The id is a definition id; these are its flow ids.
    DefinitionId(Vec<String>),
    Unknown,
    /// The listing could not be had: accept unverified.
    Unavailable,
}

struct Entry {
    fetched_at: DateTime<Utc>,
    flows: Arc<Vec<CachedFlow>>,
}

/// A listing as shared in Redis.
#[derive(serde::Serialize, serde::Deserialize)]
struct SharedEntry {
    fetched_at: DateTime<Utc>,
    flows: Vec<CachedFlow>,
}

/// The cache.
pub struct FlowCache {
    ttl: Duration,
    fetch_timeout: Duration,
    clock: Clock,
    entries: std::sync::Mutex<HashMap<String, Entry>>,
    /// One fetch at a time per cache: concurrent misses wait for it instead of calling Mint too.
    fetching: tokio::sync::Mutex<()>,
    shared: Option<SharedRedis>,
}

impl FlowCache {
    pub fn new(ttl: Duration, fetch_timeout: Duration, clock: Clock) -> Self {
        Self {
            ttl,
            fetch_timeout,
            clock,
            entries: std::sync::Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
            shared: None,
        }
    }

    /// Shares the listings with the other replicas through Redis.
    pub fn shared(mut self, redis: SharedRedis) -> Self {
        self.shared = Some(redis);
        self
    }

    fn remember(&self, environment: &str, fetched_at: DateTime<Utc>, flows: Arc<Vec<CachedFlow>>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(environment.to_owned(), Entry { fetched_at, flows });
    }

    /// A fresh listing another replica published, if any.
    async fn shared_fresh(&self, environment: &str) -> Option<Arc<Vec<CachedFlow>>> {
        let redis = self.shared.as_ref()?;
        let key = redis.key("flows", environment);
        let mut connection = redis.connection();
        let text: String = redis
            .run(async move {
                redis::cmd("GET")
                    .arg(&key)
                    .query_async::<Option<String>>(&mut connection)
                    .await
            })
            .await
            .inspect_err(|e| {
                tracing::debug!(error = format!("{e:#}"), "shared flow cache unavailable")
            })
            .ok()??;
        let entry: SharedEntry = serde_json::from_str(&text).ok()?;
        if self.clock.now() - entry.fetched_at >= delta(self.ttl) {
            return None;
        }
        let flows = Arc::new(entry.flows);
        self.remember(environment, entry.fetched_at, flows.clone());
        Some(flows)
    }

    async fn publish(&self, environment: &str, fetched_at: DateTime<Utc>, flows: &[CachedFlow]) {
        let Some(redis) = &self.shared else { return };
        let Ok(text) = serde_json::to_string(&SharedEntry {
            fetched_at,
            flows: flows.to_vec(),
        }) else {
            return;
        };
        let key = redis.key("flows", environment);
        // Redis's clock is real time; the TTL is the service clock's.
        let ttl_ms = self.clock.real(self.ttl).as_millis().max(1) as u64;
        let mut connection = redis.connection();
        let result = redis
            .run(async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(text)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut connection)
                    .await
            })
            .await;
        if let Err(error) = result {
            tracing::debug!(error = format!("{error:#}"), "cannot share a flow listing");
        }
    }

    fn fresh(&self, environment: &str) -> Option<Arc<Vec<CachedFlow>>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(environment).and_then(|entry| {
            (self.clock.now() - entry.fetched_at < delta(self.ttl)).then(|| entry.flows.clone())
        })
    }

    /// The flows of an environment, from the cache or (once per TTL) from Mint.
    pub async fn flows(
        &self,
        environment: &str,
        client: &MintClient,
    ) -> Result<Arc<Vec<CachedFlow>>, mint_client::Error> {
        if let Some(flows) = self.fresh(environment) {
            return Ok(flows);
        }
        let _guard = self.fetching.lock().await;
        if let Some(flows) = self.fresh(environment) {
            return Ok(flows);
        }
        if let Some(flows) = self.shared_fresh(environment).await {
            return Ok(flows);
        }
        let query = ListFlows {
            all_versions: Some(true),
            ..ListFlows::default()
        };
        let flows: Vec<CachedFlow> = client
            .at(Priority::Interactive)
            .flows(query)
            .map_ok(|flow| CachedFlow {
                id: flow.id.as_str().to_owned(),
                definition_id: flow.definition_id.map(|d| d.as_str().to_owned()),
                name: flow.name,
            })
            .try_collect()
            .await?;
        let fetched_at = self.clock.now();
        self.publish(environment, fetched_at, &flows).await;
        let flows = Arc::new(flows);
        self.remember(environment, fetched_at, flows.clone());
        Ok(flows)
    }

    /// Checks a flow id against the listing, within the fetch timeout.
    pub async fn check(
        &self,
        environment: &str,
        client: &MintClient,
        flow_id: &FlowId,
    ) -> FlowCheck {
        let flow_id = flow_id.as_str();
        let flows = match tokio::time::timeout(self.fetch_timeout, self.flows(environment, client))
            .await
        {
            Ok(Ok(flows)) => flows,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "flow listing unavailable; accepting the flow id unverified");
                return FlowCheck::Unavailable;
            }
            Err(_) => return FlowCheck::Unavailable,
        };
        if flows.iter().any(|f| f.id == flow_id) {
            return FlowCheck::Known;
        }
        let versions: Vec<String> = flows
            .iter()
            .filter(|f| f.definition_id.as_deref() == Some(flow_id))
            .map(|f| f.id.clone())
            .collect();
        if versions.is_empty() {
            FlowCheck::Unknown
        } else {
            FlowCheck::DefinitionId(versions)
        }
    }
}
