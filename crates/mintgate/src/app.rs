//! Assembles the service from its configuration: store, archive, Mint clients, HTTP server and
//! workers; and takes it down again gracefully.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use mint_client::{Budget, BudgetConfig, MintClient, MintConfig, TokenStore};
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::archive::Archive;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, MintProfile};
use crate::pipeline::{Clients, Pipeline};
use crate::shared::{RedisBudget, RedisTokenStore, SharedRedis};
use crate::store::{OpenMode, SharedStore};
use crate::webhook::Verifier;

/// Options that are not configuration: what tests and the demo inject.
pub struct BuildOptions {
    pub clock: Clock,
    /// This replica's name (lease owner).
    pub owner: String,
    /// Start the workers (tests that drive them step by step say no).
    pub run_workers: bool,
    /// The public listener, already bound (tests bind port 0); otherwise
    /// `listeners.public.address` is bound. With `listeners.combined`, it serves every route.
    pub listener: Option<std::net::TcpListener>,
    /// The operator listener, already bound; otherwise `listeners.operator.address` is bound
    /// (unless `listeners.combined`).
    pub operator_listener: Option<std::net::TcpListener>,
    /// Adjusts each Mint client's configuration before it is built (tests shorten retries).
    pub tune_mint: Option<fn(MintConfig) -> MintConfig>,
    /// The trace exporter of `[telemetry]`, started with the subscriber whose layer feeds it
    /// (`mintgate serve` starts both); the service flushes and stops it on a graceful shutdown.
    pub telemetry: Option<crate::telemetry::Tracing>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            clock: Clock::system(),
            owner: default_owner(),
            run_workers: true,
            listener: None,
            operator_listener: None,
            tune_mint: None,
            telemetry: None,
        }
    }
}

fn default_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "mintgate".to_owned());
    format!("{host}-{}", std::process::id())
}

/// A running service.
pub struct Application {
    address: SocketAddr,
    operator_address: SocketAddr,
    pipeline: Arc<Pipeline>,
    shutdown: CancellationToken,
    /// One task per listener.
    servers: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Deletes webhook records past their retention (with the workers).
    pruner: Option<tokio::task::JoinHandle<()>>,
    /// Probes the roles at start and the missing ones until they are granted (with the workers).
    prober: Option<tokio::task::JoinHandle<()>>,
    workers: Option<tokio::task::JoinHandle<()>>,
    /// Rings the workers when another replica makes work durable (PostgreSQL `LISTEN`).
    listener: Option<tokio::task::JoinHandle<()>>,
    workers_alive: Arc<AtomicBool>,
    /// The archive's purge job and orphaned-upload clean-up.
    maintenance: Option<tokio::task::JoinHandle<()>>,
    /// Delivers application events to the configured endpoints.
    dispatcher: Arc<crate::events::Dispatcher>,
    /// Runs the dispatcher (with the workers).
    events: Option<tokio::task::JoinHandle<()>>,
    /// Rings the feed's long polls and the deliveries when another replica commits events.
    events_listener: Option<tokio::task::JoinHandle<()>>,
    grace: Duration,
    metrics: Arc<crate::metrics::Registry>,
    /// Flushed and stopped after the workers and servers on a graceful shutdown.
    telemetry: Option<crate::telemetry::Tracing>,
}

/// Builds the Mint client of one profile, its budget windows scaled to the clock's speed. With
/// `shared` (Redis), the budget is the fleet's and the token is shared; `replicas` sizes the local
/// share a replica falls back to while Redis is unreachable.
pub fn mint_client(
    name: &str,
    profile: &MintProfile,
    clock: &Clock,
    tune: Option<fn(MintConfig) -> MintConfig>,
    shared: Option<(&SharedRedis, u32)>,
) -> anyhow::Result<MintClient> {
    mint_client_observed(name, profile, clock, tune, None, None, shared)
}

/// The budget of one profile's Mint client: 10 % under the API client's limits, its windows
/// (Mint's minute and second) and pauses scaled to the clock's speed, in real time.
pub fn budget_config(profile: &MintProfile, clock: &Clock) -> BudgetConfig {
    // Mint's limits are per minute and per second of Mint's time; a faster clock (the demo) runs
    // every such duration faster too.
    let defaults = BudgetConfig::default();
    let adaptive = mint_client::AdaptiveConfig {
        default_pause: clock.real(defaults.adaptive.default_pause),
        max_pause: clock.real(defaults.adaptive.max_pause),
        recovery_interval: clock.real(defaults.adaptive.recovery_interval),
        ceiling_memory: clock.real(defaults.adaptive.ceiling_memory),
        ..defaults.adaptive.clone()
    };
    BudgetConfig {
        // 10 % under the API client's limit: see BudgetConfig's documentation.
        limit_units: profile.budget_units_per_minute * 9 / 10,
        window: clock.real(Duration::from_secs(60)),
        burst_units: (profile.budget_burst_units * 9 / 10).max(5),
        burst_window: clock.real(Duration::from_secs(1)),
        adaptive,
        ..defaults
    }
}

/// Like [`mint_client`], with an observer told about every request (for metrics).
pub fn mint_client_observed(
    name: &str,
    profile: &MintProfile,
    clock: &Clock,
    tune: Option<fn(MintConfig) -> MintConfig>,
    observer: Option<Arc<dyn mint_client::Observer>>,
    registry: Option<&Arc<crate::metrics::Registry>>,
    shared: Option<(&SharedRedis, u32)>,
) -> anyhow::Result<MintClient> {
    let budget = budget_config(profile, clock);
    let retry_defaults = mint_client::RetryConfig::default();
    let retry = mint_client::RetryConfig {
        base_delay: clock.real(retry_defaults.base_delay),
        max_delay: clock.real(retry_defaults.max_delay),
        retry_after_max: clock.real(retry_defaults.retry_after_max),
        ..retry_defaults
    };
    let config = MintConfig::new(
        profile.api_base.as_str(),
        profile.token_url.as_str(),
        &profile.client_id,
        profile.client_secret.clone(),
    )
    .environment(name)
    .budget(budget)
    .retry(retry)
    // `traceparent` on every request while a trace is exported; nothing otherwise.
    .propagator(Arc::new(crate::telemetry::TraceContext));
    let config = match observer {
        Some(observer) => config.observer(observer),
        None => config,
    };
    let config = match tune {
        Some(tune) => tune(config),
        None => config,
    };
    let client = match shared {
        None => MintClient::new(config),
        Some((redis, replicas)) => {
            // One budget and one token per API client, whichever environment names it.
            let api_client = format!("{}:{}", profile.api_base, profile.client_id);
            let budget = Arc::new(RedisBudget::new(
                redis.clone(),
                &api_client,
                config.budget.clone(),
                replicas,
            ));
            // Idle or not, the replica stays a live member of the fleet's budget (ends with it),
            // its gauges in this replica's registry.
            let heartbeat = budget.heartbeats();
            match registry {
                Some(registry) => tokio::spawn(registry.scope(heartbeat)),
                None => tokio::spawn(heartbeat),
            };
            let budget: Arc<dyn Budget> = budget;
            let tokens: Arc<dyn TokenStore> =
                Arc::new(RedisTokenStore::new(redis.clone(), &api_client));
            MintClient::with_shared(config, budget, Some(tokens))
        }
    };
    client.with_context(|| format!("building the Mint client of environment {name:?}"))
}

/// Opens the configured archive (`archive.url`, else the deprecated `service.archive_dir`).
pub fn open_archive(config: &Config) -> anyhow::Result<Archive> {
    if config.service.archive_dir != crate::config::ServiceConfig::default().archive_dir {
        if config.archive.url.is_none() {
            tracing::warn!(
                archive_dir = %config.service.archive_dir.display(),
                "`service.archive_dir` is deprecated: set `archive.url = \"file:///<absolute path>\"` instead"
            );
        } else {
            tracing::warn!(
                "both `archive.url` and the deprecated `service.archive_dir` are set: `archive.url` is used"
            );
        }
    }
    let archive = Archive::open(&config.archive, &config.service.archive_dir)?;
    tracing::info!(archive = archive.describe(), "archive");
    Ok(archive)
}

/// Opens the configured store, creating and migrating it if needed (the service's own opening).
pub async fn open_store(config: &Config) -> anyhow::Result<SharedStore> {
    if let Some(path) = config.service.database_url.sqlite_path() {
        let group_access = config.service.group_access;
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::files::private_folder(folder, group_access)
                .context("securing the database folder (`service.database_url`)")?;
        }
        crate::files::private_file(&path, group_access)
            .context("securing the database file (`service.database_url`)")?;
    }
    crate::store::open(config.service.database_url.expose_url(), OpenMode::Migrate).await
}

impl Application {
    pub async fn build(config: Config, options: BuildOptions) -> anyhow::Result<Self> {
        if config.service.api_keys.is_empty() {
            return Err(ConfigError::Invalid(
                "`service.api_keys` is empty; the own API needs at least one key (MINTGATE_SERVICE__API_KEYS='[\"…\"]')".to_owned(),
            )
            .into());
        }
        tracing::info!(config = %config.redacted(), "effective configuration");
        match (&options.telemetry, config.telemetry.traces_url()) {
            (Some(_), Some(url)) => tracing::info!(
                endpoint = %crate::config::redact_url_password(url.as_str()),
                sampling_ratio = config.telemetry.sampling_ratio,
                "exporting traces over OTLP/HTTP"
            ),
            (None, Some(_)) => tracing::warn!(
                "`telemetry.otlp_endpoint` is set but this process started no trace exporter; no trace is exported"
            ),
            _ => {}
        }
        let store = open_store(&config).await?;
        let archive = Arc::new(open_archive(&config)?);
        let redis = match &config.service.redis_url {
            Some(url) => Some(SharedRedis::connect_lazy(
                url.expose_url(),
                &config.service.redis_key_prefix,
            )?),
            None => None,
        };
        let metrics = crate::metrics::Registry::new();
        let mut clients = BTreeMap::new();
        for (name, profile) in &config.mint {
            let observer = Arc::new(crate::metrics::ClientMetrics {
                environment: name.clone(),
                registry: metrics.clone(),
            });
            let shared = redis.as_ref().map(|r| (r, config.service.replicas));
            clients.insert(
                name.clone(),
                mint_client_observed(
                    name,
                    profile,
                    &options.clock,
                    options.tune_mint,
                    Some(observer),
                    Some(&metrics),
                    shared,
                )?,
            );
        }
        let mut pipeline_config = config.pipeline.clone();
        pipeline_config.price_cents = config
            .mint
            .iter()
            .map(|(name, profile)| (name.clone(), profile.price_cents))
            .collect();
        let wake = Arc::new(crate::store::Wake::default());
        let clients = Clients::new(clients);
        let workers = Arc::new(crate::pipeline::WorkerPools::default());
        let pipeline = Arc::new(Pipeline {
            store: store.clone(),
            clients: clients.clone(),
            archive: archive.clone(),
            clock: options.clock.clone(),
            config: pipeline_config.clone(),
            owner: options.owner.clone(),
            wake: wake.clone(),
            metrics: metrics.clone(),
            workers: workers.clone(),
            injected: Default::default(),
        });
        let monitor = crate::monitor::MonitorState {
            store: store.clone(),
            clock: options.clock.clone(),
            clients: clients.clone(),
            registry: metrics.clone(),
            pipeline: pipeline_config,
            api_keys: Arc::new(config.service.api_keys.clone()),
            wake: wake.clone(),
            cache: Default::default(),
            cache_ttl: config.service.status_cache_ttl,
        };
        let workers_alive = Arc::new(AtomicBool::new(false));
        let feed = crate::events::feed::FeedState {
            store: store.clone(),
            api_keys: Arc::new(config.service.api_keys.clone()),
            wait_max: config.events.feed_wait_max,
        };
        let dispatcher = Arc::new(crate::events::Dispatcher::new(
            &config.events,
            config.pipeline.at_risk_window,
            store.clone(),
            options.clock.clone(),
            options.owner.clone(),
        )?);
        // Before any worker runs: a new endpoint's deliveries start after the newest event.
        dispatcher.register().await?;
        let state = Arc::new(ApiState {
            ingest: crate::ingest::Ingest::start(store.clone()),
            store,
            clock: options.clock.clone(),
            verifier: Verifier::new(&config.webhook),
            api_keys: Arc::new(config.service.api_keys.clone()),
            archive,
            environments: Arc::new(config.mint.keys().cloned().collect()),
            default_environment: config.default_environment.clone(),
            webhook_settle: config.webhook.settle,
            webhook_body_bytes_max: config.webhook.body_bytes_max,
            wake,
            clients,
            flow_cache: Arc::new({
                let cache = crate::flow_cache::FlowCache::new(
                    config.pipeline.flow_cache_ttl,
                    Duration::from_secs(2),
                    options.clock.clone(),
                );
                match &redis {
                    Some(redis) => cache.shared(redis.clone()),
                    None => cache,
                }
            }),
            workers_alive: workers_alive.clone(),
            workers,
        });
        let public = crate::server::Listener::bind(
            "public",
            config.listeners.public_address(),
            options.listener,
            &config.listeners.public,
        )
        .await?;
        let address = public.local_addr()?;
        let shutdown = CancellationToken::new();
        // Headers whose values are never shown (`Debug`, traces): keys, secrets, signatures.
        let mut sensitive = vec![
            axum::http::header::AUTHORIZATION,
            axum::http::header::PROXY_AUTHORIZATION,
            axum::http::header::COOKIE,
            axum::http::HeaderName::from_static(crate::webhook::SIGNATURE_HEADER),
        ];
        if let Ok(name) =
            axum::http::HeaderName::from_bytes(state.verifier.secret_header().as_bytes())
        {
            sensitive.push(name);
        }
        let api_keys = state.api_keys.clone();
        let scoped = metrics.clone();
        let scope = move |router: axum::Router| {
            let scoped = scoped.clone();
            // Every request records into this service's metrics.
            router.layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    scoped.scope(next.run(request))
                },
            ))
        };
        let public_routes = api::public_router(state.clone(), config.webhook.body_bytes_max);
        let operator_routes = api::operator_router(state)
            .merge(crate::events::feed::router(feed))
            .merge(crate::monitor::router(monitor))
            .layer(axum::middleware::from_fn(
                move |request: axum::extract::Request, next: axum::middleware::Next| {
                    api::require_api_key(api_keys.clone(), request, next)
                },
            ));
        let grace = config.service.shutdown_grace;
        let mut servers = Vec::new();
        let operator_address = if config.listeners.combined {
            let router = crate::server::with_limits(
                scope(public_routes.merge(operator_routes)),
                &config.listeners.public,
                sensitive,
            );
            servers.push(crate::server::spawn(
                public,
                router,
                grace,
                shutdown.clone(),
                metrics.clone(),
            ));
            address
        } else {
            let operator = crate::server::Listener::bind(
                "operator",
                config.listeners.operator_address(),
                options.operator_listener,
                &config.listeners.operator,
            )
            .await?;
            let operator_address = operator.local_addr()?;
            let public_router = crate::server::with_limits(
                scope(public_routes),
                &config.listeners.public,
                sensitive.clone(),
            );
            servers.push(crate::server::spawn(
                public,
                public_router,
                grace,
                shutdown.clone(),
                metrics.clone(),
            ));
            let operator_router = crate::server::with_limits(
                scope(operator_routes.route("/healthz", axum::routing::get(|| async { "ok" }))),
                &config.listeners.operator,
                sensitive,
            );
            servers.push(crate::server::spawn(
                operator,
                operator_router,
                grace,
                shutdown.clone(),
                metrics.clone(),
            ));
            operator_address
        };
        let listener = if options.run_workers {
            pipeline
                .store
                .spawn_wake_listener(pipeline.wake.clone(), shutdown.clone())
        } else {
            None
        };
        let workers = if options.run_workers {
            workers_alive.store(true, Ordering::Relaxed);
            let pipeline = pipeline.clone();
            let token = shutdown.clone();
            let alive = workers_alive.clone();
            Some(tokio::spawn(async move {
                pipeline.run(token).await;
                alive.store(false, Ordering::Relaxed);
            }))
        } else {
            None
        };
        let events_listener = pipeline.store.spawn_outbox_listener(shutdown.clone());
        let events = options
            .run_workers
            .then(|| tokio::spawn(metrics.scope(dispatcher.clone().run(shutdown.clone()))));
        let maintenance = options.run_workers.then(|| {
            tokio::spawn(archive_maintenance(
                pipeline.store.clone(),
                pipeline.archive.clone(),
                options.clock.clone(),
                shutdown.clone(),
            ))
        });
        let prober = options.run_workers.then(|| {
            tokio::spawn(
                pipeline
                    .clone()
                    .run_role_prober(config.pipeline.role_probe_at_start, shutdown.clone()),
            )
        });
        let pruner = options.run_workers.then(|| {
            crate::retention::spawn(
                pipeline.store.clone(),
                config.webhook.clone(),
                &config.events,
                options.clock.clone(),
                shutdown.clone(),
            )
        });
        tracing::info!(public = %address, operator = %operator_address, "mintgate is serving");
        Ok(Self {
            address,
            operator_address,
            pipeline,
            shutdown,
            servers,
            pruner,
            prober,
            workers,
            listener,
            workers_alive,
            maintenance,
            dispatcher,
            events,
            events_listener,
            grace: config.service.shutdown_grace,
            metrics,
            telemetry: options.telemetry,
        })
    }

    /// This service's metrics (what `/metrics` renders).
    pub fn metrics(&self) -> &Arc<crate::metrics::Registry> {
        &self.metrics
    }

    /// The public listener's address (webhooks; every route when the listeners are combined).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The operator listener's address (the public one when the listeners are combined).
    pub fn operator_address(&self) -> SocketAddr {
        self.operator_address
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// The event deliveries (tests and the bench drive them step by step without workers).
    pub fn events(&self) -> &Arc<crate::events::Dispatcher> {
        &self.dispatcher
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking work, lets in-flight work finish for up to the grace period, then stops.
    /// Unfinished jobs keep their leases and are taken over after a restart.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let grace = self.grace;
        if let Some(workers) = self.workers.take()
            && tokio::time::timeout(grace, workers).await.is_err()
        {
            tracing::warn!(
                "workers did not stop within the grace period; their jobs resume after their leases"
            );
        }
        self.workers_alive.store(false, Ordering::Relaxed);
        if let Some(listener) = self.listener.take() {
            let _ = listener.await;
        }
        if let Some(prober) = self.prober.take() {
            prober.abort();
            let _ = prober.await;
        }
        if let Some(maintenance) = self.maintenance.take() {
            maintenance.abort();
            let _ = maintenance.await;
        }
        if let Some(events) = self.events.take()
            && tokio::time::timeout(grace, events).await.is_err()
        {
            tracing::warn!("event deliveries did not stop within the grace period");
        }
        if let Some(listener) = self.events_listener.take() {
            let _ = listener.await;
        }
        for server in &mut self.servers {
            match tokio::time::timeout(grace, &mut *server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(error))) => {
                    tracing::error!(error = format!("{error:#}"), "HTTP server failed")
                }
                Ok(Err(error)) => tracing::error!(%error, "HTTP server task failed"),
                Err(_) => {
                    tracing::warn!("HTTP server did not stop within the grace period");
                    server.abort();
                }
            }
        }
        // Nothing more will be spent: a shared budget gives this replica's share to the others
        // at once (a crash leaves it held back until the member timeout).
        for (_, client) in self.pipeline.clients.iter() {
            client.budget().leave().await;
        }
        // Last: the spans of the work that just finished are exported too.
        if let Some(telemetry) = self.telemetry.take() {
            telemetry.shutdown().await;
        }
    }

    /// Stops at once, as a crash would: in-flight work is abandoned mid-way (tests, the demo).
    pub async fn kill(mut self) {
        self.shutdown.cancel();
        if let Some(pruner) = self.pruner.take() {
            pruner.abort();
        }
        if let Some(prober) = self.prober.take() {
            prober.abort();
            let _ = prober.await;
        }
        if let Some(workers) = self.workers.take() {
            workers.abort();
            let _ = workers.await;
        }
        if let Some(listener) = self.listener.take() {
            listener.abort();
            let _ = listener.await;
        }
        if let Some(maintenance) = self.maintenance.take() {
            maintenance.abort();
            let _ = maintenance.await;
        }
        for task in [self.events.take(), self.events_listener.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
            let _ = task.await;
        }
        for server in &mut self.servers {
            server.abort();
            let _ = (&mut *server).await;
        }
    }

    /// Runs until Ctrl-C or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
        Ok(())
    }
}

/// How often the archive's orphaned uploads are looked for (and the purge runs, without a
/// retention policy of its own interval).
const ARCHIVE_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Runs the retention policy's purge and aborts orphaned multipart uploads, now and then, until
/// `shutdown`. Every replica may run it: erasing is idempotent and each step re-checks its subject.
async fn archive_maintenance(
    store: SharedStore,
    archive: Arc<Archive>,
    clock: Clock,
    shutdown: CancellationToken,
) {
    let interval = archive
        .settings()
        .retention
        .as_ref()
        .map_or(ARCHIVE_MAINTENANCE_INTERVAL, |r| {
            r.purge_interval.min(ARCHIVE_MAINTENANCE_INTERVAL)
        });
    loop {
        // Upload ages are the store's wall-clock times, not the (possibly faster) service clock.
        match archive
            .abort_orphan_uploads(chrono::Utc::now(), false)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(aborted = n, "aborted orphaned archive uploads"),
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "orphaned upload clean-up failed"
            ),
        }
        match crate::archive::retention::purge_due(&store, &archive, clock.now(), 1000).await {
            Ok(report) if report.purged + report.locked + report.failed > 0 => {
                tracing::info!(?report, "retention purge");
            }
            Ok(_) => {}
            Err(error) => tracing::error!(error = format!("{error:#}"), "retention purge failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(clock.real(interval)) => {}
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
