//! A burst of executions against a scaled budget: how fast they are all accepted (durably), and how
//! close the executor's start rate comes to what the budget allows, with 429s from the simulator's
//! ground truth.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{Config, DatabaseUrl, PipelineConfig, ServiceConfig, WebhookConfig};

const API_KEY: &str = "bench-api-key-0123456789";

/// Options of `mintgate-lab bench burst`.
#[derive(Debug, Clone, clap::Args)]
pub struct BurstArgs {
    /// Executions in the burst.
    #[arg(long, default_value_t = 10_000)]
    pub executions: u32,
    /// Simulated seconds per real second: Mint's 100 units a minute become 100 units per
    /// 60/scale real seconds.
    #[arg(long, default_value_t = 120.0)]
    pub time_scale: f64,
    /// Concurrent requests of the client that submits the burst.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BurstArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut sim_config = mint_sim::SimConfig::fixture();
    sim_config.time_scale = args.time_scale;
    sim_config.service.list_delay_micros_per_instance = 0;
    let sim = mint_sim::Simulator::builder()
        .config(sim_config)
        .start()
        .await?;
    let admin = sim.admin();
    let clock = Clock::scaled(admin.now().await?, args.time_scale);
    let mint = crate::simulator_profiles(&sim, "demo");
    let config = Config {
        listeners: mintgate::config::ListenersConfig::combined(),
        service: ServiceConfig {
            database_url: DatabaseUrl::sqlite_file(&temp.path().join("mintgate.db")),
            archive_dir: temp.path().join("archive"),
            api_keys: vec![mintgate::config::ApiKey::admin(API_KEY)],
            ..ServiceConfig::default()
        },
        webhook: WebhookConfig {
            secret: Some(SecretString::from("bench-webhook-secret-0123456789")),
            ..WebhookConfig::default()
        },
        pipeline: PipelineConfig {
            // Only starts are measured: no polls during the run.
            poll_grace: Duration::from_secs(30 * 24 * 3600),
            start_workers: 4,
            idle_wait: Duration::from_millis(20),
            ..PipelineConfig::default()
        },
        archive: mintgate::archive::ArchiveConfig::default(),
        default_environment: "sandbox".to_owned(),
        mint,
        telemetry: Default::default(),
        events: Default::default(),
    };
    let budget =
        mintgate::app::mint_client("sandbox", &config.mint["sandbox"], &clock, None, None)?
            .budget()
            .snapshot()
            .await;
    let app = Application::build(
        config,
        BuildOptions {
            clock: clock.clone(),
            listener: Some(listener),
            ..BuildOptions::default()
        },
    )
    .await?;
    let url = format!("http://{}/v1/executions", app.address());
    let http = reqwest::Client::new();
    let accept_start = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.executions)
        .map(|i| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let response = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&serde_json::json!({"flowId": "flow-kyc-basic", "input": {"n": i}}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 202, "refused: {}", response.status());
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let accept_secs = accept_start.elapsed().as_secs_f64();
    println!(
        "accepted {accepted}/{} executions durably in {accept_secs:.2} s ({:.0}/s)",
        args.executions,
        accepted as f64 / accept_secs
    );
    // Wait until every execution is started in Mint (ground truth).
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let billed = admin
            .usage()
            .await?
            .clients
            .get("demo")
            .map_or(0, |c| c.starts_billed);
        if billed >= u64::from(args.executions) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let usage = admin.usage().await?;
    let demo = usage.clients.get("demo").cloned().unwrap_or_default();
    let instances = admin.instances().await.context("reading the instances")?;
    let mut times: Vec<_> = instances.iter().map(|i| i.created_at).collect();
    times.sort();
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        anyhow::bail!("nothing was started");
    };
    let sim_span = (*last - *first).num_milliseconds() as f64 / 1000.0;
    let real_span = sim_span / args.time_scale;
    let rate = (times.len().saturating_sub(1)) as f64 / real_span.max(1e-9);
    let window = budget.window.as_secs_f64();
    let allowed = f64::from(budget.limit_units) / window;
    let mint_limit = 100.0 / (60.0 / args.time_scale);
    let mut per_execution: BTreeMap<String, u32> = BTreeMap::new();
    for instance in &instances {
        if let Some(id) = instance
            .input
            .get(mintgate::model::CORRELATION_KEY)
            .and_then(|v| v.as_str())
        {
            *per_execution.entry(id.to_owned()).or_default() += 1;
        }
    }
    let duplicates: u32 = per_execution.values().map(|n| n.saturating_sub(1)).sum();
    println!(
        "started {} in {real_span:.1} s: {rate:.1}/s = {:.3} of the budget's {allowed:.1}/s ({} units per {:.2} s), {:.3} of Mint's limit {mint_limit:.1}/s",
        times.len(),
        rate / allowed,
        budget.limit_units,
        window,
        rate / mint_limit
    );
    println!(
        "429s served by the simulator: {}; duplicate starts: {duplicates}; units used: {}",
        demo.throttled, demo.units
    );
    app.shutdown().await;
    sim.shutdown().await;
    Ok(())
}
