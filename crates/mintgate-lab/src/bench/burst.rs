//! A burst of executions against a scaled budget: how fast they are all accepted (durably: each
//! `202` after its commit) with the acceptance latency's percentiles, and how close the
//! executor's start rate comes to what the budget allows, with 429s from the simulator's ground
//! truth. On SQLite, or on PostgreSQL with `--database-url` (one replica, a schema of its own).

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
    /// PostgreSQL server (a schema of its own is made and dropped); without it, SQLite.
    #[arg(long, env = "MINTGATE_BENCH_POSTGRES_URL")]
    pub database_url: Option<String>,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub database: &'static str,
    pub executions: u32,
    pub concurrency: usize,
    pub time_scale: f64,
    pub accepted: usize,
    pub accept_secs: f64,
    pub accepted_per_second: f64,
    pub accept_p50_ms: f64,
    pub accept_p99_ms: f64,
    pub accept_max_ms: f64,
    pub started: usize,
    /// Real seconds from the first start to the last.
    pub start_seconds: f64,
    pub starts_per_second: f64,
    /// The budget's sustained rate (units per real second).
    pub budget_per_second: f64,
    /// `starts_per_second / budget_per_second` (goal >= 0.95).
    pub budget_fraction: f64,
    pub mint_limit_fraction: f64,
    pub throttled_429: u64,
    pub duplicate_starts: u32,
    pub units_used: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: BurstArgs) -> anyhow::Result<()> {
    let Some(server) = args.database_url.clone() else {
        let temp = tempfile::tempdir()?;
        let url = DatabaseUrl::sqlite_file(&temp.path().join("mintgate.db"));
        let report = bench(&args, "sqlite", url, temp.path()).await?;
        return print(&args, &report);
    };
    let schema = format!("burst_{}", uuid::Uuid::new_v4().simple());
    super::replicas::create_schema(&server, &schema).await?;
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}options[search_path]={schema}");
    let temp = tempfile::tempdir()?;
    let report = bench(
        &args,
        "postgres",
        DatabaseUrl::Postgres(SecretString::from(url)),
        temp.path(),
    )
    .await;
    super::replicas::drop_schema(&server, &schema).await;
    print(&args, &report?)
}

fn print(args: &BurstArgs, report: &Report) -> anyhow::Result<()> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "{}: accepted {}/{} executions durably in {:.2} s ({:.0}/s), latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} concurrent requests)",
        report.database,
        report.accepted,
        report.executions,
        report.accept_secs,
        report.accepted_per_second,
        report.accept_p50_ms,
        report.accept_p99_ms,
        report.accept_max_ms,
        report.concurrency,
    );
    println!(
        "started {} in {:.1} s: {:.1}/s = {:.3} of the budget's {:.1}/s (goal >= 0.95), {:.3} of Mint's limit",
        report.started,
        report.start_seconds,
        report.starts_per_second,
        report.budget_fraction,
        report.budget_per_second,
        report.mint_limit_fraction,
    );
    println!(
        "429s served by the simulator: {}; duplicate starts: {}; units used: {}",
        report.throttled_429, report.duplicate_starts, report.units_used
    );
    Ok(())
}

async fn bench(
    args: &BurstArgs,
    database: &'static str,
    database_url: DatabaseUrl,
    dir: &std::path::Path,
) -> anyhow::Result<Report> {
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
            database_url,
            archive_dir: dir.join("archive"),
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
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..args.executions)
        .map(|i| {
            let http = http.clone();
            let url = url.clone();
            async move {
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(API_KEY)
                    .json(&serde_json::json!({"flowId": "flow-kyc-basic", "input": {"n": i}}))
                    .send()
                    .await?;
                anyhow::ensure!(response.status() == 202, "refused: {}", response.status());
                Ok(sent.elapsed())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let accept_secs = accept_start.elapsed().as_secs_f64();
    let mut latencies: Vec<Duration> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .copied()
        .collect();
    latencies.sort();
    let accepted = latencies.len();
    if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
        eprintln!("a request was not accepted: {error:#}");
    }
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    // Wait until every execution is started in Mint (ground truth).
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let billed = admin
            .usage()
            .await?
            .clients
            .get("demo")
            .map_or(0, |c| c.starts_billed);
        if billed >= accepted as u64 || Instant::now() > deadline {
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
    let report = Report {
        database,
        executions: args.executions,
        concurrency: args.concurrency,
        time_scale: args.time_scale,
        accepted,
        accept_secs,
        accepted_per_second: accepted as f64 / accept_secs,
        accept_p50_ms: percentile(0.50),
        accept_p99_ms: percentile(0.99),
        accept_max_ms: percentile(1.0),
        started: times.len(),
        start_seconds: real_span,
        starts_per_second: rate,
        budget_per_second: allowed,
        budget_fraction: rate / allowed,
        mint_limit_fraction: rate / mint_limit,
        throttled_429: demo.throttled,
        duplicate_starts: duplicates,
        units_used: demo.units,
    };
    app.shutdown().await;
    sim.shutdown().await;
    Ok(report)
}
