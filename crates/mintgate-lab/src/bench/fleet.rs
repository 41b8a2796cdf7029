//! A fleet of replicas in one process, for the scale-out tests and `mintgate-lab bench replicas`: one
//! in-process simulator, and `replicas` [`Application`]s on one PostgreSQL database, one Redis key
//! prefix and one archive folder, each with its own HTTP listener, workers and `LISTEN` task.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use mint_sim::{AdminClient, SimConfig, Simulator, StepConfig};
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{
    Config, LogFormat, PipelineConfig, ServiceConfig, WebhookAuth, WebhookConfig,
};
use mintgate::store::SharedStore;
use mintgate::view::ExecutionView;

pub const API_KEY: &str = "fleet-api-key-0123456789";
pub const WEBHOOK_SECRET: &str = "fleet-webhook-secret-0123456789";

/// How to start a fleet.
pub struct FleetOptions {
    pub replicas: usize,
    /// A `postgres://…` URL (its schema is the fleet's).
    pub database_url: String,
    pub redis_url: String,
    pub redis_key_prefix: String,
    /// The simulator's configuration; its webhook URL is set to replica 0 and its HTTP request
    /// steps are signed with [`WEBHOOK_SECRET`].
    pub sim: SimConfig,
    /// How much faster than real time the simulator and the replicas' clock run.
    pub time_scale: f64,
    pub pipeline: PipelineConfig,
    pub archive_dir: PathBuf,
    /// The archive (`archive.url` unset: the local `archive_dir`).
    pub archive: mintgate::archive::ArchiveConfig,
    pub tune_mint: Option<fn(mint_client::MintConfig) -> mint_client::MintConfig>,
}

/// A running fleet.
pub struct Fleet {
    pub sim: Simulator,
    pub admin: AdminClient,
    pub clock: Clock,
    pub config: Config,
    /// `None` once killed.
    pub replicas: Vec<Option<Application>>,
    pub addresses: Vec<SocketAddr>,
    http: reqwest::Client,
}

impl Fleet {
    pub async fn start(options: FleetOptions) -> anyhow::Result<Self> {
        let listeners = (0..options.replicas)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()
            .context("binding the replicas' listeners")?;
        let addresses = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<Result<Vec<_>, _>>()?;
        let mut sim_config = options.sim;
        sim_config.time_scale = options.time_scale;
        sim_config.webhook_url = Some(format!("http://{}/webhooks/mint", addresses[0]));
        for flow in &mut sim_config.flows {
            for step in &mut flow.steps {
                if let StepConfig::HttpRequest { hmac_secret, .. } = step {
                    *hmac_secret = Some(WEBHOOK_SECRET.to_owned());
                }
            }
        }
        let sim = Simulator::builder()
            .config(sim_config)
            .start()
            .await
            .context("starting the simulator")?;
        let admin = sim.admin();
        let clock = Clock::scaled(admin.now().await?, options.time_scale);
        let mint = crate::simulator_profiles(&sim, "demo");
        let config = Config {
            listeners: mintgate::config::ListenersConfig::combined(),
            service: ServiceConfig {
                database_url: options
                    .database_url
                    .parse()
                    .map_err(|e| anyhow::anyhow!("the fleet's database URL {e}"))?,
                archive_dir: options.archive_dir,
                api_keys: vec![mintgate::config::ApiKey::admin(API_KEY)],
                shutdown_grace: Duration::from_secs(2),
                log_format: LogFormat::Text,
                redis_url: Some(
                    options
                        .redis_url
                        .parse()
                        .map_err(|e| anyhow::anyhow!("the fleet's Redis URL {e}"))?,
                ),
                redis_key_prefix: options.redis_key_prefix,
                replicas: u32::try_from(options.replicas).unwrap_or(1),
                ..ServiceConfig::default()
            },
            webhook: WebhookConfig {
                auth: WebhookAuth::Hmac,
                secret: Some(SecretString::from(WEBHOOK_SECRET)),
                settle: Duration::ZERO,
                ..WebhookConfig::default()
            },
            pipeline: options.pipeline,
            archive: options.archive,
            default_environment: "sandbox".to_owned(),
            mint,
            telemetry: Default::default(),
            events: Default::default(),
        };
        config.validate()?;
        let mut replicas = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let app = Application::build(
                config.clone(),
                BuildOptions {
                    clock: clock.clone(),
                    owner: format!("replica-{i}"),
                    run_workers: true,
                    listener: Some(listener),
                    operator_listener: None,
                    tune_mint: options.tune_mint,
                    telemetry: None,
                },
            )
            .await
            .with_context(|| format!("starting replica {i}"))?;
            replicas.push(Some(app));
        }
        Ok(Self {
            sim,
            admin,
            clock,
            config,
            replicas,
            addresses,
            http: reqwest::Client::new(),
        })
    }

    /// Requests an execution of `flow` from replica `replica`; answers its id.
    pub async fn request(
        &self,
        replica: usize,
        flow: &str,
        input: serde_json::Value,
    ) -> anyhow::Result<uuid::Uuid> {
        let response = self
            .http
            .post(format!("http://{}/v1/executions", self.addresses[replica]))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({"flowId": flow, "input": input}))
            .send()
            .await?;
        let status = response.status();
        if status != 202 {
            anyhow::bail!(
                "POST /v1/executions answered {status}: {}",
                response.text().await?
            );
        }
        Ok(response.json::<ExecutionView>().await?.id)
    }

    /// The shared store, through the first replica still running.
    pub fn store(&self) -> SharedStore {
        self.replicas
            .iter()
            .flatten()
            .next()
            .expect("a replica is running")
            .pipeline()
            .store
            .clone()
    }

    /// Crashes replica `i`: its in-flight work is abandoned, its leases lapse.
    pub async fn kill(&mut self, i: usize) {
        if let Some(app) = self.replicas[i].take() {
            app.kill().await;
        }
    }

    pub async fn shutdown(mut self) {
        for app in self.replicas.iter_mut().filter_map(Option::take) {
            app.shutdown().await;
        }
        self.sim.shutdown().await;
    }
}

/// A flow without user steps: a short automatic step, then the webhook; its result file is
/// `result_file_bytes` long.
pub fn automatic_flow(id: &str, result_file_bytes: u64) -> mint_sim::FlowConfig {
    mint_sim::FlowConfig {
        id: id.to_owned(),
        definition_id: format!("def-{id}"),
        name: "Automatic".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes,
        steps: vec![
            StepConfig::Auto {
                name: "Prepare".to_owned(),
                activity_type: "http".to_owned(),
                duration_secs: 2,
                failure_probability: 0.0,
            },
            StepConfig::webhook(),
        ],
    }
}
