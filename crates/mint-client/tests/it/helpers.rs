//! Test helpers: start a simulator, build clients for its fixture, read its ground truth.

use std::future::Future;
use std::time::Duration;

use mint_client::{FlowId, InstanceId, MintClient, MintConfig, RetryConfig, StartInstance};
use mint_sim::{ClientUsage, SimConfig, Simulator};
use secrecy::SecretString;

pub const BASIC_FLOW: &str = "flow-kyc-basic";
pub const BASIC_DEFINITION: &str = "def-kyc-basic";

/// Sets `subscriber` as this thread's default, reliably while other tests run in parallel.
///
/// Why not `tracing::subscriber::set_default` alone: while a single dispatcher is registered,
/// tracing computes a new callsite's interest from the *registering thread's* subscriber only, so a
/// test without one that reaches a client callsite first disables it for every thread ("never",
/// cached). A second, permanent dispatcher (one that wants nothing) makes tracing ask all of them.
pub fn capture_tracing(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> tracing::subscriber::DefaultGuard {
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}

/// A simulator with the default fixture (seed 0, real time).
pub async fn sim() -> Simulator {
    Simulator::builder()
        .start()
        .await
        .expect("simulator starts")
}

/// A simulator with a custom configuration.
pub async fn sim_with(config: SimConfig) -> Simulator {
    Simulator::builder()
        .config(config)
        .start()
        .await
        .expect("simulator starts")
}

/// The default fixture with the rate limits lifted.
pub fn unlimited() -> SimConfig {
    SimConfig {
        limits: mint_sim::Limits::unlimited(),
        ..SimConfig::default()
    }
}

/// Retry settings for tests: short delays so retries take milliseconds.
pub fn fast_retry() -> RetryConfig {
    RetryConfig {
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        ..RetryConfig::default()
    }
}

/// A configuration for one of the simulator's API clients (secret `<id>-secret`), environment `sandbox`.
pub fn config(sim: &Simulator, client_id: &str) -> MintConfig {
    MintConfig::new(
        sim.base_url(),
        sim.token_url(),
        client_id,
        SecretString::from(format!("{client_id}-secret")),
    )
    .environment("sandbox")
    .retry(fast_retry())
}

/// A client for one of the fixture's API clients, with the default budget (which fits the
/// simulator's default limits).
pub fn client(sim: &Simulator, client_id: &str) -> MintClient {
    MintClient::new(config(sim, client_id)).expect("client builds")
}

/// The simulator's ground truth for one API client.
pub async fn usage(sim: &Simulator, client_id: &str) -> ClientUsage {
    let usage = sim.admin().usage().await.expect("usage");
    usage.clients.get(client_id).cloned().unwrap_or_default()
}

pub fn flow(id: &str) -> FlowId {
    FlowId::new(id).unwrap()
}

/// Polls `check` until it returns `Some`, or panics at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The status of an instance according to the simulator (costs no units).
pub async fn sim_status(sim: &Simulator, id: &InstanceId) -> String {
    let all = sim.admin().instances().await.expect("instances");
    all.into_iter()
        .find(|i| i.id == id.as_str())
        .map(|i| i.status)
        .unwrap_or_default()
}

/// Starts an instance of `flow_id` and drives it (simulated time, user steps) until the simulator
/// says `Finished`.
pub async fn finished_instance(sim: &Simulator, client: &MintClient, flow_id: &str) -> InstanceId {
    let id = started_instance(client, flow_id).await;
    eventually("the instance to finish", || async {
        match sim_status(sim, &id).await.as_str() {
            "Finished" => Some(()),
            "Running" => {
                // Completes the waiting user step, if one waits (an error means none waits yet),
                // and moves simulated time past the automatic steps.
                let _ = sim
                    .admin()
                    .user_step(id.as_str(), mint_sim::UserStepAction::Complete)
                    .await;
                sim.admin()
                    .advance_clock(Duration::from_secs(10))
                    .await
                    .unwrap();
                None
            }
            other => panic!("instance ended {other}"),
        }
    })
    .await;
    id
}

/// Starts an instance and returns its id.
pub async fn started_instance(client: &MintClient, flow_id: &str) -> InstanceId {
    client
        .start_instance(&flow(flow_id), &StartInstance::default())
        .await
        .expect("start")
        .instance
        .id
}

/// Starts an instance of a fixture flow and moves simulated time until it waits at its user step.
pub async fn waiting_instance(sim: &Simulator, client: &MintClient, flow_id: &str) -> InstanceId {
    let id = started_instance(client, flow_id).await;
    eventually("the instance to wait for its user", || async {
        let instance = sim.admin().instance(id.as_str()).await.unwrap();
        if instance.activities.iter().any(|a| a.status == "Suspended") {
            return Some(());
        }
        sim.admin()
            .advance_clock(Duration::from_secs(1))
            .await
            .unwrap();
        None
    })
    .await;
    id
}

/// A simulator with one flow `flow-big` whose result file is `size` bytes (rate limits lifted,
/// no user step).
pub fn config_with_result_size(size: u64) -> SimConfig {
    let mut cfg = unlimited();
    cfg.flows.push(mint_sim::FlowConfig {
        id: "flow-big".into(),
        definition_id: "def-big".into(),
        name: "Big result".into(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: size,
        steps: vec![],
    });
    cfg
}
