//! One way to start a simulator and act on it; every test goes through here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use mint_sim::{AdminClient, AdminInstance, ClientUsage, SimConfig, Simulator, UserStepAction};
use serde_json::{Value, json};

/// A simulator with a frozen clock (only `advance` moves it), plus clients for it.
pub struct TestSim {
    pub sim: Simulator,
    pub admin: AdminClient,
    pub http: reqwest::Client,
}

pub const SEED: u64 = 7;

/// The default fixture, seed 7, frozen clock.
pub async fn spawn_sim() -> TestSim {
    spawn_sim_with(SimConfig::fixture()).await
}

/// `config` with seed 7 and a frozen clock.
pub async fn spawn_sim_with(mut config: SimConfig) -> TestSim {
    config.seed = SEED;
    config.time_scale = 0.0;
    let sim = Simulator::builder()
        .config(config)
        .start()
        .await
        .expect("simulator starts");
    let admin = sim.admin();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client");
    TestSim { sim, admin, http }
}

impl TestSim {
    /// A token for a fixture client (secret `<id>-secret`).
    pub async fn token(&self, client_id: &str) -> String {
        let response = self
            .http
            .post(self.sim.token_url())
            .basic_auth(client_id, Some(format!("{client_id}-secret")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "signicat-api"),
            ])
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status(), 200, "token for {client_id}");
        let body: Value = response.json().await.expect("token json");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// `{base}{path}`, e.g. `api("/api/flows")`.
    pub fn api(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.api(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET answered")
    }

    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self.get(token, path).await;
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn start(&self, token: &str, flow_id: &str, input: Value) -> reqwest::Response {
        self.http
            .post(self.api(&format!("/api/flows/{flow_id}/instances")))
            .bearer_auth(token)
            .json(&json!({ "input": input }))
            .send()
            .await
            .expect("start answered")
    }

    /// Starts an instance and returns its id (asserting 201).
    pub async fn start_ok(&self, token: &str, flow_id: &str) -> String {
        let response = self
            .start(token, flow_id, json!({ "customer": "c-1" }))
            .await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("start json");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn advance(&self, secs: u64) {
        self.admin
            .advance_clock(Duration::from_secs(secs))
            .await
            .expect("advance");
    }

    pub async fn usage_of(&self, client_id: &str) -> ClientUsage {
        let usage = self.admin.usage().await.expect("usage");
        usage.clients.get(client_id).cloned().unwrap_or_default()
    }

    pub async fn admin_instance(&self, id: &str) -> AdminInstance {
        self.admin.instance(id).await.expect("admin instance")
    }

    /// Drives a `flow-kyc-basic` instance to `Finished` (prepare 2 s, user step, verify 5 s, the
    /// webhook step).
    pub async fn finish_basic(&self, id: &str) {
        self.advance(2).await;
        self.admin
            .user_step(id, UserStepAction::Complete)
            .await
            .expect("user step");
        self.advance(5).await;
        self.wait_status(id, "Finished").await;
    }

    pub async fn wait_status(&self, id: &str, status: &str) {
        eventually(
            Duration::from_secs(10),
            &format!("{id} {status}"),
            || async { (self.admin_instance(id).await.status == status).then_some(()) },
        )
        .await;
    }
}

/// Polls `check` until it yields `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A webhook as the receiver got it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
}

/// A small axum app that records every POST to `/webhooks/mint`.
pub struct WebhookReceiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let store = received.clone();
        let app = axum::Router::new().route(
            "/webhooks/mint",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let store = store.clone();
                async move {
                    store.lock().unwrap().push(Received { headers, body });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            url: format!("http://{addr}/webhooks/mint"),
            received,
            stop,
        }
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    pub fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
    }
}
