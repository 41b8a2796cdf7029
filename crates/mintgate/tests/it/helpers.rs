//! `spawn_app()`: an in-process simulator and the service on a temporary SQLite database and
//! archive, with one method per action. Workers are driven step by step (`run_until_idle`) unless
//! a test asks for them to run in the background.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mint_sim::{AdminClient, Faults, SimConfig, Simulator, StepConfig, UserStepAction};
use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{
    Config, DatabaseUrl, LogFormat, MintProfile, PipelineConfig, ServiceConfig, WebhookAuth,
    WebhookConfig,
};
use mintgate::model::JobKind;
use mintgate::view::ExecutionView;
use secrecy::SecretString;
use serde_json::json;
use tempfile::TempDir;

pub use crate::support::*;

pub const API_KEY: &str = "test-api-key-0123456789";
pub const WEBHOOK_SECRET: &str = "test-webhook-secret-0123456789";

/// How to set up a test.
pub struct Setup {
    pub sim: SimConfig,
    pub client_id: &'static str,
    pub background_workers: bool,
    pub pipeline: PipelineConfig,
    /// Changes the service's configuration before it starts (listeners, limits, webhook scheme).
    pub configure: fn(&mut Config),
    /// The archive (default: a local folder in the test's temporary folder).
    pub archive: mintgate::archive::ArchiveConfig,
    /// Put a [`TokenGate`] in front of the simulator's token endpoint (a token-endpoint outage
    /// the test can switch on and off).
    pub gate_token_endpoint: bool,
    /// Simulated seconds per real second, for the simulator and the service's clock alike
    /// (default 1; a test of Mint's slow listing at scale runs them faster together).
    pub time_scale: f64,
    /// mint-client's shipped settings (the adaptive budget on, retries and pauses as by default)
    /// instead of the tests' short ones ([`tune_mint_for_tests`]).
    pub shipped_client: bool,
}

impl Default for Setup {
    fn default() -> Self {
        let mut sim = SimConfig::fixture();
        sim.seed = 11;
        // Lists are slow in Mint; tests do not need to wait for it.
        sim.service.list_delay_micros_per_instance = 0;
        for flow in &mut sim.flows {
            flow.result_file_bytes = 256 * 1024;
            for step in &mut flow.steps {
                if let StepConfig::HttpRequest { hmac_secret, .. } = step {
                    *hmac_secret = Some(WEBHOOK_SECRET.to_owned());
                }
            }
        }
        Self {
            sim,
            client_id: "demo",
            background_workers: false,
            pipeline: PipelineConfig {
                idle_wait: Duration::from_millis(50),
                ..PipelineConfig::default()
            },
            configure: |_| {},
            archive: mintgate::archive::ArchiveConfig::default(),
            gate_token_endpoint: false,
            time_scale: 1.0,
            shipped_client: false,
        }
    }
}

pub struct TestApp {
    /// Held so the simulator lives as long as the test.
    #[allow(dead_code)]
    pub sim: Simulator,
    pub admin: AdminClient,
    pub app: Option<Application>,
    pub address: std::net::SocketAddr,
    pub clock: Clock,
    pub config: Config,
    pub http: reqwest::Client,
    /// The public listener, held for the whole test: each start of the service serves a clone of
    /// it, so a restart never binds the port again (another test could have taken it meanwhile)
    /// and requests sent while the service is down wait in its backlog.
    listener: std::net::TcpListener,
    /// Held so the temporary database and archive live as long as the test.
    #[allow(dead_code)]
    pub dir: TempDir,
    /// In front of the token endpoint, with `Setup::gate_token_endpoint`.
    pub token_gate: Option<TokenGate>,
    /// The trace exporter the service is started with (a test sets it, then restarts the service).
    pub telemetry: Option<mintgate::telemetry::Tracing>,
    /// See [`Setup::shipped_client`].
    shipped_client: bool,
    background_workers: bool,
}

/// A pass-through proxy in front of the simulator's token endpoint that a test can close: closed,
/// it answers `503` (an outage of the token endpoint), open, it forwards every request.
pub struct TokenGate {
    pub url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl TokenGate {
    pub async fn start(upstream: String) -> Self {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse as _;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/auth/open/connect/token",
            listener.local_addr().unwrap()
        );
        let open = std::sync::Arc::new(AtomicBool::new(true));
        let refused = std::sync::Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let (gate_open, gate_refused) = (open.clone(), refused.clone());
        let app =
            axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (open, refused, client, upstream) = (
                    gate_open.clone(),
                    gate_refused.clone(),
                    client.clone(),
                    upstream.clone(),
                );
                async move {
                    if !open.load(Ordering::SeqCst) {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::SERVICE_UNAVAILABLE, "token endpoint down")
                            .into_response();
                    }
                    let mut request = client.post(&upstream).body(body);
                    for name in [header::CONTENT_TYPE, header::AUTHORIZATION] {
                        if let Some(value) = headers.get(&name) {
                            request = request.header(name, value.clone());
                        }
                    }
                    let answer = request.send().await.unwrap();
                    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
                    let mut response = (status, answer.bytes().await.unwrap()).into_response();
                    if let Some(value) = content_type {
                        response.headers_mut().insert(header::CONTENT_TYPE, value);
                    }
                    response
                }
            });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, open, refused }
    }

    /// Opens or closes the gate.
    pub fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }

    /// Token requests answered `503` so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Sets `subscriber` as this thread's default, reliably while other tests run in parallel.
///
/// Why not `tracing::subscriber::set_default` alone: while a single dispatcher is registered,
/// tracing computes a new callsite's interest from the *registering thread's* subscriber only, so a
/// test without one that reaches a callsite first (a job span, say) disables it for every thread
/// ("never", cached). A second, permanent dispatcher (one that wants nothing) makes tracing ask all
/// of them. (The same as mint-client's test helper.)
pub fn capture_tracing(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> tracing::subscriber::DefaultGuard {
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}

pub async fn spawn_app() -> TestApp {
    spawn_with(Setup::default()).await
}

pub async fn spawn_with(mut setup: Setup) -> TestApp {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    setup.sim.webhook_url = Some(format!("http://{address}/webhooks/mint"));
    setup.sim.time_scale = setup.time_scale;
    let sim = Simulator::builder()
        .config(setup.sim)
        .start()
        .await
        .unwrap();
    let admin = sim.admin();
    // Spending is counted per calendar month and tests move the clock by up to a few hours: a test
    // run near midnight at a month's end would see its month's spend reset. Start such runs in the
    // next month instead.
    let now = admin.now().await.unwrap();
    let month_left = mintgate::spend::next_month_start(now) - now;
    if month_left < chrono::TimeDelta::hours(6) {
        let by = month_left.to_std().unwrap() + Duration::from_secs(60);
        admin.advance_clock(by).await.unwrap();
    }
    let clock = Clock::scaled(admin.now().await.unwrap(), setup.time_scale);
    let token_gate = if setup.gate_token_endpoint {
        Some(TokenGate::start(sim.token_url()).await)
    } else {
        None
    };
    let token_url = token_gate
        .as_ref()
        .map_or_else(|| sim.token_url(), |gate| gate.url.clone());
    let mint = BTreeMap::from([(
        "sandbox".to_owned(),
        MintProfile::new(
            sim.base_url().parse().unwrap(),
            token_url.parse().unwrap(),
            setup.client_id,
            SecretString::from(format!("{}-secret", setup.client_id)),
        ),
    )]);
    let mut config = Config {
        listeners: mintgate::config::ListenersConfig::combined(),
        service: ServiceConfig {
            database_url: DatabaseUrl::sqlite_file(&dir.path().join("mintgate.db")),
            archive_dir: dir.path().join("archive"),
            api_keys: vec![mintgate::config::ApiKey::admin(API_KEY)],
            shutdown_grace: Duration::from_secs(2),
            // Tests look at gauges right after they change.
            status_cache_ttl: Duration::ZERO,
            log_format: LogFormat::Text,
            ..ServiceConfig::default()
        },
        webhook: WebhookConfig {
            auth: WebhookAuth::Hmac,
            secret: Some(SecretString::from(WEBHOOK_SECRET)),
            settle: Duration::ZERO,
            ..WebhookConfig::default()
        },
        pipeline: setup.pipeline,
        archive: setup.archive,
        default_environment: "sandbox".to_owned(),
        mint,
        telemetry: Default::default(),
        events: Default::default(),
    };
    (setup.configure)(&mut config);
    let mut app = TestApp {
        sim,
        admin,
        app: None,
        address,
        clock,
        config,
        http: reqwest::Client::new(),
        listener,
        dir,
        token_gate,
        telemetry: None,
        background_workers: setup.background_workers,
        shipped_client: setup.shipped_client,
    };
    app.start().await;
    app
}

impl TestApp {
    async fn start(&mut self) {
        let listener = self.listener.try_clone().unwrap();
        let app = Application::build(
            self.config.clone(),
            BuildOptions {
                clock: self.clock.clone(),
                owner: format!("test-{}", uuid::Uuid::new_v4()),
                run_workers: self.background_workers,
                listener: Some(listener),
                operator_listener: None,
                tune_mint: (!self.shipped_client).then_some(
                    tune_mint_for_tests as fn(mint_client::MintConfig) -> mint_client::MintConfig,
                ),
                telemetry: self.telemetry.clone(),
            },
        )
        .await
        .unwrap();
        self.app = Some(app);
    }

    /// Crashes the service (in-flight work abandoned) and starts it again on the same database.
    pub async fn crash_and_restart(&mut self) {
        if let Some(app) = self.app.take() {
            app.kill().await;
        }
        self.start().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// A URL on the operator listener (the same as [`TestApp::url`] when combined).
    pub fn operator_url(&self, path: &str) -> String {
        format!(
            "http://{}{path}",
            self.app.as_ref().unwrap().operator_address()
        )
    }

    pub fn pipeline(&self) -> &std::sync::Arc<mintgate::pipeline::Pipeline> {
        self.app.as_ref().unwrap().pipeline()
    }

    pub async fn post_execution(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/v1/executions"))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Requests an execution of `flow` and answers its id.
    pub async fn request(&self, flow: &str) -> uuid::Uuid {
        let response = self
            .post_execution(json!({"flowId": flow, "input": {"customer": "c"}}))
            .await;
        assert_eq!(response.status(), 202, "{}", response.text().await.unwrap());
        response.json::<ExecutionView>().await.unwrap().id
    }

    pub async fn execution(&self, id: uuid::Uuid) -> ExecutionView {
        let response = self
            .http
            .get(self.url(&format!("/v1/executions/{id}")))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// Runs due jobs of every kind until none is due. Answers how many ran.
    pub async fn run_until_idle(&self) -> usize {
        let mut ran = 0;
        loop {
            let mut any = false;
            for kind in [JobKind::Start, JobKind::Check, JobKind::Download] {
                while self.pipeline().run_once(&[kind]).await.unwrap() {
                    any = true;
                    ran += 1;
                    assert!(ran < 10_000, "the pipeline does not settle");
                }
            }
            if !any {
                return ran;
            }
        }
    }

    /// Moves the simulator's clock and the service's clock forward together.
    pub async fn advance(&self, by: Duration) {
        self.admin.advance_clock(by).await.unwrap();
        self.clock.advance(by);
    }

    pub async fn instance_of(&self, id: uuid::Uuid) -> String {
        self.execution(id)
            .await
            .instance_id
            .expect("the execution has an instance")
            .to_string()
    }

    /// Plays the end user of an instance until the simulator says it is no longer running:
    /// completes each waiting user step, lets simulated time pass while an automatic step runs,
    /// and waits (real time) while the flow's webhook POST is in flight (the simulator finishes
    /// that step only once the POST was answered). Fails the test if the instance does not end.
    pub async fn complete_user_steps(&self, instance: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut advances = 0;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "instance {instance} still running after 30 s: {:?}",
                self.admin.instance(instance).await
            );
            let state = self.admin.instance(instance).await.unwrap();
            if state.status != "Running" {
                return;
            }
            if state.activities.iter().any(|a| a.status == "Suspended") {
                self.admin
                    .user_step(instance, UserStepAction::Complete)
                    .await
                    .unwrap();
                continue;
            }
            let posting = state
                .activities
                .iter()
                .any(|a| a.status == "Executing" && a.activity_type == "httpRequest");
            if posting {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            advances += 1;
            assert!(
                advances <= 60,
                "instance {instance} still running after an hour of simulated time: {state:?}"
            );
            self.advance(Duration::from_secs(60)).await;
        }
    }

    pub async fn set_faults(&self, faults: Faults) {
        self.admin.set_faults(faults).await.unwrap();
    }

    /// Waits (up to `deadline`) for `check` to hold, re-evaluating it every 20 ms.
    pub async fn eventually<F, Fut>(&self, deadline: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = std::time::Instant::now();
        while start.elapsed() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("timed out after {deadline:?} waiting for: {what}");
    }

    /// Drives one execution to a terminal state: runs due jobs, completes its user steps and lets
    /// simulated time pass, for at most `rounds` rounds.
    pub async fn drive_to_the_end(&self, id: uuid::Uuid, rounds: usize) -> ExecutionView {
        for _ in 0..rounds {
            self.run_until_idle().await;
            let view = self.execution(id).await;
            if view.state.is_terminal() {
                return view;
            }
            if let Some(instance) = &view.instance_id {
                self.complete_user_steps(instance.as_str()).await;
            }
            self.advance(Duration::from_secs(60)).await;
        }
        let view = self.execution(id).await;
        panic!("execution {id} did not end: {view:?}");
    }

    /// The service's archive (the one its pipeline writes to).
    pub fn archive(&self) -> &std::sync::Arc<mintgate::archive::Archive> {
        &self.pipeline().archive
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.config.service.archive_dir.clone()
    }
}

/// Every file under `dir`, at any depth (none if `dir` does not exist).
pub fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_under(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}
