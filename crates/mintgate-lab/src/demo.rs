//! `mintgate-lab demo`: the main job on embedded defaults, against an in-process, time-scaled simulator.
//!
//! It drives a realistic day (a burst of onboardings larger than the budget, end users who finish,
//! dawdle or abandon, lost webhooks, a 429 storm, cut downloads, lost start answers, one crash of the
//! service) and reports against the simulator's ground truth.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mint_sim::{Faults, SimConfig, StepConfig, UserBehaviour};
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{
    Config, DatabaseUrl, LogFormat, PipelineConfig, ServiceConfig, WebhookAuth, WebhookConfig,
};
use mintgate::model::ExecutionState;
use mintgate::store::ExecutionFilter;

/// Options of `mintgate-lab demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Onboardings requested in the morning burst.
    #[arg(long, default_value_t = 150)]
    pub onboardings: u32,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 600.0)]
    pub time_scale: f64,
    /// Seed of the simulator's randomness (end users, faults).
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up after this much real time.
    #[arg(long, default_value = "150s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Keep the archive folder here instead of a temporary one.
    #[arg(long)]
    pub archive: Option<PathBuf>,
    /// Log the service's lines (RUST_LOG filters) instead of only the progress lines: set by the
    /// global `-v` (`mintgate-lab demo -v`).
    #[arg(skip)]
    pub verbose: bool,
}

impl Default for DemoArgs {
    fn default() -> Self {
        Self {
            onboardings: 150,
            time_scale: 600.0,
            seed: 7,
            timeout: Duration::from_secs(150),
            archive: None,
            verbose: false,
        }
    }
}

const WEBHOOK_SECRET: &str = "demo-webhook-secret-0123456789";
const API_KEY: &str = "demo-api-key-0123456789";
const VIDEO_RESULT_BYTES: u64 = 24 * 1024 * 1024;

/// What the demo found, for the report and for tests.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DemoReport {
    pub requested: u64,
    pub by_state: BTreeMap<String, u64>,
    pub started_in_mint: u64,
    pub duplicates_billed: u64,
    pub units_used: u64,
    pub budget_units_per_minute: u64,
    pub throttled: u64,
    /// 429s served while the injected storm lasted (the rest came from the normal budget).
    pub throttled_in_storm: u64,
    pub cents_owed: u64,
    pub bytes_archived: u64,
    pub archives_verified: u64,
    pub archives_bad: u64,
    pub webhooks_attempted: u64,
    pub webhooks_dropped: u64,
    pub simulated_hours: f64,
    pub real_seconds: f64,
    pub in_flight: u64,
}

impl DemoReport {
    /// Nothing lost, nothing billed twice, every archive verified.
    pub fn ok(&self) -> bool {
        self.duplicates_billed == 0 && self.archives_bad == 0 && self.in_flight == 0
    }
}

fn sim_config(args: &DemoArgs, webhook_url: String) -> SimConfig {
    let mut config = SimConfig::fixture();
    config.seed = args.seed;
    config.time_scale = args.time_scale;
    config.webhook_url = Some(webhook_url);
    let people = UserBehaviour {
        complete_probability: 0.75,
        complete_after_secs: [60, 1800],
        dawdle_probability: 0.15,
        dawdle_after_secs: [2 * 3600, 8 * 3600],
        abandon_probability: 0.10,
        abandon_timeout_secs: 2 * 3600,
    };
    for flow in &mut config.flows {
        if flow.id == "flow-kyc-video" {
            // Smaller than a real video flow's result, so the demo fits on any disk.
            flow.result_file_bytes = VIDEO_RESULT_BYTES;
        }
        for step in &mut flow.steps {
            match step {
                StepConfig::User { behaviour, .. } => *behaviour = Some(people.clone()),
                StepConfig::HttpRequest { hmac_secret, .. } => {
                    *hmac_secret = Some(WEBHOOK_SECRET.to_owned());
                }
                StepConfig::Auto { .. } => {}
            }
        }
    }
    config.faults = Faults {
        webhook_drop_rate: 0.2,
        lost_start_rate: 0.03,
        cut_body_rate: 0.05,
        cut_body_at_fraction: 0.5,
        ..Faults::default()
    };
    config
}

fn service_config(sim: &mint_sim::Simulator, dir: &std::path::Path, archive: PathBuf) -> Config {
    let mint = crate::simulator_profiles(sim, "demo");
    Config {
        listeners: mintgate::config::ListenersConfig::combined(),
        service: ServiceConfig {
            database_url: DatabaseUrl::sqlite_file(&dir.join("mintgate.db")),
            archive_dir: archive,
            api_keys: vec![mintgate::config::ApiKey::admin(API_KEY)],
            shutdown_grace: Duration::from_secs(5),
            log_format: LogFormat::Text,
            ..ServiceConfig::default()
        },
        webhook: WebhookConfig {
            auth: WebhookAuth::Hmac,
            secret: Some(SecretString::from(WEBHOOK_SECRET)),
            ..WebhookConfig::default()
        },
        // Pipeline durations are in the service clock's (simulated) time, which runs `scale` times
        // faster than real time; only `idle_wait` is real time.
        pipeline: PipelineConfig {
            poll_grace: Duration::from_secs(10 * 60),
            lease: Duration::from_secs(3600),
            idle_wait: Duration::from_millis(200),
            download_workers: 3,
            ..PipelineConfig::default()
        },
        archive: mintgate::archive::ArchiveConfig::default(),
        default_environment: "sandbox".to_owned(),
        mint,
        telemetry: Default::default(),
        events: Default::default(),
    }
}

/// Runs the demo and prints its report; fails if anything was lost or billed twice.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if args.verbose {
        mintgate::telemetry::init(LogFormat::Text, None);
    }
    let report = run_demo(&args, true).await?;
    print_report(&report);
    if !report.ok() {
        anyhow::bail!("the demo found a problem (see the report above)");
    }
    Ok(())
}

/// Runs the demo; `live` prints a progress line every second.
pub async fn run_demo(args: &DemoArgs, live: bool) -> anyhow::Result<DemoReport> {
    let real_start = Instant::now();
    let temp = tempfile::tempdir().context("creating a temporary folder")?;
    let archive = args
        .archive
        .clone()
        .unwrap_or_else(|| temp.path().join("archive"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the service")?;
    let address = listener.local_addr()?;
    let sim = mint_sim::Simulator::builder()
        .config(sim_config(args, format!("http://{address}/webhooks/mint")))
        .start()
        .await
        .context("starting the simulator")?;
    let admin = sim.admin();
    let sim_start = admin.now().await?;
    let clock = Clock::scaled(sim_start, args.time_scale);
    let config = service_config(&sim, temp.path(), archive.clone());
    let build = |listener: std::net::TcpListener| BuildOptions {
        clock: clock.clone(),
        owner: "demo".to_owned(),
        run_workers: true,
        listener: Some(listener),
        operator_listener: None,
        tune_mint: None,
        telemetry: None,
    };
    let mut app = Some(Application::build(config.clone(), build(listener)).await?);
    say(
        live,
        &format!(
            "mintgate-lab demo: simulator at {}, service at http://{address}, {} onboardings, time x{}",
            sim.base_url(),
            args.onboardings,
            args.time_scale
        ),
    );

    // The morning burst: more onboardings than the budget admits in a minute.
    let http = reqwest::Client::new();
    for i in 0..args.onboardings {
        let flow = if i % 5 == 4 {
            "flow-kyc-video"
        } else {
            "flow-kyc-basic"
        };
        let response = http
            .post(format!("http://{address}/v1/executions"))
            .bearer_auth(API_KEY)
            .json(&serde_json::json!({
                "flowId": flow,
                "input": {"customer": format!("customer-{i}")},
                "idempotencyKey": format!("demo-{}-{i}", args.seed),
            }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == reqwest::StatusCode::ACCEPTED,
            "the service refused onboarding {i}: {}",
            response.status()
        );
    }
    say(live, &format!("requested {} onboardings", args.onboardings));

    let mut storm_done = false;
    // (sim time the storm ends, 429s before it began, 429s when it ended)
    let mut storm: Option<(chrono::DateTime<chrono::Utc>, u64, Option<u64>)> = None;
    let mut restarted = false;
    let mut last_line = Instant::now() - Duration::from_secs(5);
    let store = mintgate::app::open_store(&config).await?;
    loop {
        let elapsed = real_start.elapsed();
        let overview = store.overview().await?;
        let count = |state: ExecutionState| {
            overview
                .executions_by_state
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n as u64)
        };
        let terminal = count(ExecutionState::Archived)
            + count(ExecutionState::Failed)
            + count(ExecutionState::Expired);
        // A 429 storm in the middle of the morning.
        if !storm_done && count(ExecutionState::Archived) >= u64::from(args.onboardings) / 5 {
            let mut faults = sim_config(args, String::new()).faults;
            // Every request is refused for the next 20 simulated minutes.
            faults.storm_for_secs = 20 * 60;
            let before = admin
                .usage()
                .await?
                .clients
                .get("demo")
                .map_or(0, |c| c.throttled);
            let ends = admin.now().await? + chrono::TimeDelta::seconds(20 * 60);
            admin.set_faults(faults).await?;
            storm = Some((ends, before, None));
            storm_done = true;
            say(
                live,
                "the simulator starts a 429 storm (20 simulated minutes)",
            );
        }
        // One crash of the service while downloads are in flight, then a restart on the same database.
        if !restarted && count(ExecutionState::Archived) >= u64::from(args.onboardings) / 3 {
            if let Some(running) = app.take() {
                say(
                    live,
                    "crashing the service (downloads in flight are abandoned) and restarting it",
                );
                running.kill().await;
            }
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("binding {address} again after the restart"))?;
            app = Some(Application::build(config.clone(), build(listener)).await?);
            restarted = true;
        }
        if let Some((ends, before, None)) = storm
            && admin.now().await? >= ends
        {
            let after = admin
                .usage()
                .await?
                .clients
                .get("demo")
                .map_or(0, |c| c.throttled);
            storm = Some((ends, before, Some(after)));
        }
        if live && last_line.elapsed() >= Duration::from_secs(1) {
            last_line = Instant::now();
            let usage = admin.usage().await?;
            let client = usage.clients.get("demo").cloned().unwrap_or_default();
            let sim_hours = (admin.now().await? - sim_start).num_minutes() as f64 / 60.0;
            println!(
                "[{:>5.1}s | day +{:>4.1}h] queued {:>3} starting {:>2} running {:>3} finished {:>2} downloading {:>2} archived {:>3} failed {:>2} expired {:>2} | units {:>5} 429s {:>3} billed {:>3}",
                elapsed.as_secs_f64(),
                sim_hours,
                count(ExecutionState::Queued),
                count(ExecutionState::Starting),
                count(ExecutionState::Running),
                count(ExecutionState::Finished),
                count(ExecutionState::Downloading),
                count(ExecutionState::Archived),
                count(ExecutionState::Failed),
                count(ExecutionState::Expired),
                client.units,
                client.throttled,
                client.starts_billed,
            );
        }
        if terminal >= u64::from(args.onboardings) || elapsed >= args.timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if let Some(app) = app.take() {
        app.shutdown().await;
    }
    let mut report = report(args, &store, &admin, sim_start, real_start, &sim).await?;
    report.throttled_in_storm = match storm {
        Some((_, before, Some(after))) => after - before,
        Some((_, before, None)) => report.throttled - before,
        None => 0,
    };
    sim.shutdown().await;
    Ok(report)
}

async fn report(
    args: &DemoArgs,
    store: &mintgate::store::SharedStore,
    admin: &mint_sim::AdminClient,
    sim_start: chrono::DateTime<chrono::Utc>,
    real_start: Instant,
    sim: &mint_sim::Simulator,
) -> anyhow::Result<DemoReport> {
    let executions = store
        .executions(ExecutionFilter {
            state: None,
            limit: i64::from(args.onboardings) * 2,
        })
        .await?;
    let mut by_state = BTreeMap::new();
    for execution in &executions {
        *by_state
            .entry(execution.state.as_str().to_owned())
            .or_insert(0u64) += 1;
    }
    let usage = admin.usage().await?;
    let client = usage.clients.get("demo").cloned().unwrap_or_default();
    // Duplicates from the simulator's truth: instances that carry the same execution id.
    let mut per_execution: BTreeMap<String, u64> = BTreeMap::new();
    let instances = admin.instances().await?;
    for instance in &instances {
        if let Some(id) = instance
            .input
            .get(mintgate::model::CORRELATION_KEY)
            .and_then(|v| v.as_str())
        {
            *per_execution.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    let duplicates_billed = per_execution.values().map(|n| n.saturating_sub(1)).sum();
    // Verify every archived file independently of the service: against the simulator's own hash.
    let mut verified = 0;
    let mut bad = 0;
    let mut bytes = 0;
    for execution in executions
        .iter()
        .filter(|e| e.state == ExecutionState::Archived)
    {
        let (Some(path), Some(instance)) = (&execution.archive_path, &execution.instance_id) else {
            bad += 1;
            continue;
        };
        let (expected, _) = admin.result_sha256(instance.as_str()).await?;
        match mintgate::archive::hash_file(std::path::Path::new(path)).await {
            Ok((sha, len)) if sha == expected => {
                verified += 1;
                bytes += len;
            }
            _ => bad += 1,
        }
    }
    let in_flight = executions.iter().filter(|e| !e.state.is_terminal()).count() as u64;
    let _ = sim;
    Ok(DemoReport {
        requested: u64::from(args.onboardings),
        by_state,
        started_in_mint: client.starts_billed,
        duplicates_billed,
        units_used: client.units,
        budget_units_per_minute: 100,
        throttled: client.throttled,
        throttled_in_storm: 0,
        cents_owed: client.cents_owed,
        bytes_archived: bytes,
        archives_verified: verified,
        archives_bad: bad,
        webhooks_attempted: usage.webhooks.attempted,
        webhooks_dropped: usage.webhooks.dropped,
        simulated_hours: (admin.now().await? - sim_start).num_minutes() as f64 / 60.0,
        real_seconds: real_start.elapsed().as_secs_f64(),
        in_flight,
    })
}

fn say(live: bool, line: &str) {
    if live {
        println!("{line}");
    }
}

fn print_report(report: &DemoReport) {
    let state = |name: &str| report.by_state.get(name).copied().unwrap_or(0);
    println!();
    println!(
        "mintgate-lab demo report ({:.1} simulated hours in {:.0} s)",
        report.simulated_hours, report.real_seconds
    );
    println!("  executions requested        {}", report.requested);
    println!("  started in Mint (billed)    {}", report.started_in_mint);
    println!(
        "  archived and verified       {} ({} bytes; {} bad)",
        report.archives_verified, report.bytes_archived, report.archives_bad
    );
    println!("  failed (faulted, abandoned) {}", state("failed"));
    println!("  expired                     {}", state("expired"));
    println!("  still in flight             {}", report.in_flight);
    println!(
        "  duplicates billed           {}   (must be 0)",
        report.duplicates_billed
    );
    println!(
        "  API units used              {} (budget {} per simulated minute)",
        report.units_used, report.budget_units_per_minute
    );
    println!(
        "  429s received               {} ({} during the injected storm, {} outside it; simulator's ground truth)",
        report.throttled,
        report.throttled_in_storm,
        report.throttled - report.throttled_in_storm
    );
    println!(
        "  money spent                 ${}.{:02}",
        report.cents_owed / 100,
        report.cents_owed % 100
    );
    println!(
        "  webhooks sent / lost        {} / {}",
        report.webhooks_attempted, report.webhooks_dropped
    );
    println!(
        "  verdict                     {}",
        if report.ok() {
            "OK: nothing lost, nothing billed twice"
        } else {
            "PROBLEM"
        }
    );
}
