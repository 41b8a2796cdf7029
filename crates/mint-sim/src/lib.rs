//! `mint-sim`: a faithful, strict and unpleasant simulator of the Signicat Mint API.
//!
//! One simulator serves, on one port:
//! - the Mint API under `/mint` (`GET /mint/api/flows`, ...), with roles, rate limits, billing,
//!   retention, slow listing, result-file ZIPs generated on the fly and fault injection;
//! - the OAuth token endpoint at `/auth/open/connect/token`;
//! - the admin API under `/_sim` (loopback only): clock, usage counters, faults, user steps,
//!   configuration. [`AdminClient`] is its typed client.
//!
//! Everything runs on a controllable clock, so tests expire tokens and reach the 30-day deletion
//! in milliseconds.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use mint_sim::{Simulator, UserStepAction};
//!
//! let sim = Simulator::builder().seed(42).time_scale(0.0).start().await?;
//! let http = reqwest::Client::new();
//! let token: serde_json::Value = http
//!     .post(sim.token_url())
//!     .basic_auth("demo", Some("demo-secret"))
//!     .form(&[("grant_type", "client_credentials"), ("scope", "signicat-api")])
//!     .send().await?.json().await?;
//! let bearer = token["access_token"].as_str().unwrap_or_default().to_owned();
//! let started: serde_json::Value = http
//!     .post(format!("{}/api/flows/flow-kyc-basic/instances", sim.base_url()))
//!     .bearer_auth(&bearer)
//!     .json(&serde_json::json!({ "input": { "customer": "c-1" } }))
//!     .send().await?.json().await?;
//! let id = started["id"].as_str().unwrap_or_default();
//!
//! let admin = sim.admin();
//! admin.advance_clock(Duration::from_secs(2)).await?;          // "Prepare session" done
//! admin.user_step(id, UserStepAction::Complete).await?;        // the end user did their part
//! admin.advance_clock(Duration::from_secs(5)).await?;          // verified; no webhook URL set
//! let (sha256, len) = mint_sim::result_file_sha256(42, id, 5 * 1024 * 1024);
//! assert_eq!(admin.result_sha256(id).await?, (sha256, len));
//! assert_eq!(admin.instance(id).await?.status, "Finished");
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod admin;
mod api;
mod app;
mod auth;
pub mod behaviours;
pub mod bench;
mod clock;
pub mod config;
mod counters;
pub mod limiter;
pub mod model;
pub mod result_file;
mod server;
mod shared;
mod state;
mod validation;
mod webhook;
mod wire;

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use admin::{AdminClient, AdminInstance, ClientUsage, Usage, UserStepAction, WebhookUsage};
pub use behaviours::{
    BehaviourOverrides, Behaviours, ContractChange, FinishedAt, FlowBehaviours, ListField,
    ListOrder, ResultContentType,
};
pub use config::{
    ClientConfig, ConfigError, Faults, FlowConfig, Limits, ServiceSettings, SimConfig, StepConfig,
    UserBehaviour,
};
pub use result_file::result_file_sha256;
pub use webhook::{hmac_sha256, sign as sign_webhook};

/// Configures and starts a [`Simulator`]. Defaults: the default fixture, seed 0, time scale 1.0,
/// `127.0.0.1:0`.
#[derive(Debug, Default)]
#[must_use]
pub struct SimulatorBuilder {
    config: Option<SimConfig>,
    seed: Option<u64>,
    time_scale: Option<f64>,
    webhook_url: Option<String>,
    listen: Option<SocketAddr>,
}

impl SimulatorBuilder {
    /// Seed of ids, behaviours, faults and result-file contents (overrides the config's).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Simulated seconds per real second (0 freezes the clock; overrides the config's).
    pub fn time_scale(mut self, time_scale: f64) -> Self {
        self.time_scale = Some(time_scale);
        self
    }

    /// URL of every HTTP request step that names none (all of the default fixture's).
    pub fn webhook_url(mut self, url: impl Into<String>) -> Self {
        self.webhook_url = Some(url.into());
        self
    }

    /// A full configuration that replaces the default fixture.
    pub fn config(mut self, config: SimConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Address to bind (default `127.0.0.1:0`, an ephemeral port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = Some(addr);
        self
    }

    /// The configuration the simulator will run with, validated.
    pub fn effective_config(&self) -> Result<SimConfig, ConfigError> {
        let mut config = self.config.clone().unwrap_or_else(SimConfig::fixture);
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        if let Some(scale) = self.time_scale {
            config.time_scale = scale;
        }
        if let Some(url) = &self.webhook_url {
            config.webhook_url = Some(url.clone());
        }
        config.validate()?;
        Ok(config)
    }

    /// Binds the listener and starts serving in the background.
    pub async fn start(self) -> anyhow::Result<Simulator> {
        let config = self.effective_config()?;
        let addr = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Simulator::start_on(listener, config).await
    }
}

/// A running simulator. Stop it with [`Simulator::shutdown`] (dropping it also stops it).
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    seed: u64,
    stop: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Simulator {
    /// A builder with the default fixture.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// Serves `config` on an already bound listener, in the background.
    pub async fn start_on(listener: TcpListener, config: SimConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let addr = listener.local_addr()?;
        let app = app::App::new(&config, mint_base(addr))?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(app.serve(listener, async move { stopped.cancelled().await }));
        Ok(Self {
            addr,
            seed: config.seed,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its seed (what [`result_file_sha256`] needs).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// API base, `http://127.0.0.1:PORT/mint` (list flows is `GET {base}/api/flows`).
    pub fn base_url(&self) -> String {
        mint_base(self.addr)
    }

    /// Token endpoint, `http://127.0.0.1:PORT/auth/open/connect/token`.
    pub fn token_url(&self) -> String {
        format!("http://{}/auth/open/connect/token", self.addr)
    }

    /// Admin API base, `http://127.0.0.1:PORT/_sim`.
    pub fn admin_url(&self) -> String {
        format!("http://{}/_sim", self.addr)
    }

    /// A typed client of the admin API.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(self.admin_url())
    }

    /// Stops serving: the scheduler and webhooks stop, open downloads get a second to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("simulator stopped with an error: {e:#}"),
                Err(e) => tracing::warn!("simulator task failed: {e}"),
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn mint_base(addr: SocketAddr) -> String {
    format!("http://{addr}/mint")
}

/// Serves a simulator with `config` on a bound listener until `shutdown` completes
/// (mini-redis style: tests bind port 0 and stop cleanly).
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let addr = listener.local_addr()?;
    app::App::new(&config, mint_base(addr))?
        .serve(listener, shutdown)
        .await
}
