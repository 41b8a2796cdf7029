//! `mintgate-lab bench replicas`: three replicas drain a burst of starts through one shared budget.
//!
//! The simulator and the replicas run `time_scale` times faster than real time, so Mint's budget
//! (100 units a simulated minute, 20 a simulated second) is a budget of 100 units every 60/scale
//! real seconds. The flow waits for its end user and the first poll is far off, so the drain spends
//! units on starts only (plus one flow listing and no token: tokens cost no units). Figures, in
//! simulated time, from the simulator's own records:
//!
//! - started executions per minute during the drain;
//! - the units Mint counted during the measured span (from just before the first request to just
//!   after the last start) as a fraction of what the fleet's budget admits in that span: the
//!   shared GCRA's instant capacity once plus its sustained rate over the span
//!   ([`GcraParams::admissible_units`], from the budget the replicas run, as `app::budget_config`
//!   derives it from the profile; goal at least 0.95), and for reference as a fraction of the
//!   profile's units a minute;
//! - 429s served (goal 0), and fallbacks to a local share (goal 0: Redis was used throughout;
//!   the run fails otherwise).

use std::time::{Duration, Instant};

use super::fleet::{Fleet, FleetOptions};
use anyhow::Context as _;
use mintgate::config::PipelineConfig;
use mintgate::shared::GcraParams;

/// The benchmark's settings.
#[derive(Debug, Clone)]
pub struct ReplicasArgs {
    pub database_url: String,
    pub redis_url: String,
    pub executions: usize,
    pub replicas: usize,
    pub time_scale: f64,
    /// Print the figures as JSON (for `bench report`).
    pub json: bool,
}

/// The figures of one run (`--json`), in simulated minutes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplicasFigures {
    pub replicas: usize,
    pub executions: usize,
    pub time_scale: f64,
    pub accepted_real_secs: f64,
    pub drained_real_secs: f64,
    pub drain_simulated_minutes: f64,
    /// The span the units are counted over (simulated minutes), the drain's and a little more.
    pub measured_simulated_minutes: f64,
    pub started_per_minute: f64,
    pub units: f64,
    pub units_per_minute: f64,
    pub fleet_rate_units_per_minute: f64,
    pub fleet_instant_capacity_units: u32,
    pub admissible_units: f64,
    /// Units spent / units the fleet's budget admits in the measured span (goal >= 0.95).
    pub fleet_budget_fraction: f64,
    /// Units spent / the profile's units a minute over the measured span.
    pub mint_budget_fraction: f64,
    /// Units Mint counted before the measured span (the replicas' start-up), left out.
    pub units_before: f64,
    pub throttled: u64,
    pub fallbacks: u64,
    pub tokens_issued: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ReplicasArgs) -> anyhow::Result<()> {
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    create_schema(&args.database_url, &schema).await?;
    let separator = if args.database_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let database_url = format!(
        "{}{separator}options[search_path]={schema}",
        args.database_url
    );
    let result = bench(&args, database_url).await;
    drop_schema(&args.database_url, &schema).await;
    result
}

async fn bench(args: &ReplicasArgs, database_url: String) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let mut sim = mint_sim::SimConfig::fixture();
    sim.service.list_delay_micros_per_instance = 0;
    let fleet = Fleet::start(FleetOptions {
        replicas: args.replicas,
        database_url,
        redis_url: args.redis_url.clone(),
        redis_key_prefix: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        sim,
        time_scale: args.time_scale,
        pipeline: PipelineConfig {
            // No polls during the drain: starts only.
            poll_grace: Duration::from_secs(24 * 3600),
            start_workers: 4,
            idle_wait: Duration::from_millis(200),
            ..PipelineConfig::default()
        },
        archive_dir: temp.path().join("archive"),
        archive: mintgate::archive::ArchiveConfig::default(),
        tune_mint: None,
    })
    .await?;
    let result = measure(args, &fleet).await;
    fleet.shutdown().await;
    result
}

async fn measure(args: &ReplicasArgs, fleet: &Fleet) -> anyhow::Result<()> {
    let real_start = Instant::now();
    // The span is opened before the units are read and closed after: every unit counted was
    // spent inside it (units spent meanwhile by the replicas' start-up make the figure lower,
    // never higher).
    let sim_start = fleet.admin.now().await?;
    let units_before = demo_units(fleet).await?;
    for i in 0..args.executions {
        fleet
            .request(
                i % args.replicas,
                "flow-kyc-basic",
                serde_json::json!({"customer": i}),
            )
            .await?;
    }
    let accepted = real_start.elapsed();
    let deadline = Duration::from_secs(600);
    let instances = loop {
        let instances = fleet.admin.instances().await?;
        if instances.len() >= args.executions {
            break instances;
        }
        if real_start.elapsed() > deadline {
            anyhow::bail!(
                "only {} of {} executions started within {deadline:?}",
                instances.len(),
                args.executions
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let drained = real_start.elapsed();
    let last = instances
        .iter()
        .map(|i| i.created_at)
        .max()
        .context("no instance")?;
    let drain_minutes = ((last - sim_start).num_milliseconds() as f64 / 60_000.0).max(1e-9);
    let usage = fleet.admin.usage().await?;
    let sim_end = fleet.admin.now().await?;
    let client = usage.clients.get("demo").cloned().unwrap_or_default();
    let units = client.units as f64 - units_before;
    let span = (sim_end - sim_start)
        .to_std()
        .context("the simulator's clock went backwards")?;
    let measured_minutes = (span.as_secs_f64() / 60.0).max(1e-9);

    // The fleet's budget as the replicas run it (app::budget_config), in simulated time: the
    // clock of speed 1 leaves Mint's minute and second as they are. Replica 0's own gauge
    // (mintgate_mint_budget_units_limit) must show the same limit, or the figure would not be
    // that of the budget measured.
    let profile = fleet
        .config
        .mint
        .get(&fleet.config.default_environment)
        .context("the fleet's Mint profile")?;
    let budget = mintgate::app::budget_config(profile, &mintgate::clock::Clock::system());
    let metrics = fleet_metrics(fleet).await?;
    let gauge_limit = metric(&metrics[0], "mintgate_mint_budget_units_limit") as u32;
    anyhow::ensure!(
        gauge_limit == budget.limit_units,
        "replica 0 runs a limit of {gauge_limit} units, not the {} of its profile's budget",
        budget.limit_units
    );
    // Redis was used throughout: no replica fell back to its local share.
    let fallbacks = metrics
        .iter()
        .map(|m| metric(m, "mintgate_budget_fallbacks_total"))
        .sum::<f64>() as u64;
    let params = GcraParams::from_budget(&budget);
    let rate_per_minute = params.units_per_second() * 60.0;
    // Why not `capacity + rate × drain` with the whole run's units (the first version, which read
    // 1.03): Mint's count included the replicas' start-up (a flow listing and the role probes,
    // spent before the drain began, from a capacity refilled before it), while the span was the
    // drain's only. Here the units and the span are the same interval's, and the capacity counts
    // once in it, as the GCRA admits it.
    let admissible = params.admissible_units(span);
    let started = instances.len() as f64;
    let figures = ReplicasFigures {
        replicas: args.replicas,
        executions: args.executions,
        time_scale: args.time_scale,
        accepted_real_secs: accepted.as_secs_f64(),
        drained_real_secs: drained.as_secs_f64(),
        drain_simulated_minutes: drain_minutes,
        measured_simulated_minutes: measured_minutes,
        started_per_minute: started / drain_minutes,
        units,
        units_per_minute: units / drain_minutes,
        fleet_rate_units_per_minute: rate_per_minute,
        fleet_instant_capacity_units: params.window_capacity_units,
        admissible_units: admissible,
        fleet_budget_fraction: units / admissible,
        mint_budget_fraction: units
            / (f64::from(profile.budget_units_per_minute) * measured_minutes),
        units_before,
        throttled: client.throttled,
        fallbacks,
        tokens_issued: client.tokens_issued,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!("mintgate-lab bench replicas");
        println!(
            "  {} replicas, {} executions, time scale {}x (simulated minutes below)",
            args.replicas, args.executions, args.time_scale
        );
        println!(
            "  accepted in {:.2?} real; all started after {:.2?} real ({drain_minutes:.2} simulated min)",
            accepted, drained
        );
        println!(
            "  started:        {:.1} executions/min ({units:.0} units spent, {:.1} units/min)",
            started / drain_minutes,
            units / drain_minutes
        );
        println!(
            "  fleet budget:   {:.1} units/min sustained + {} at once → {admissible:.1} units admissible in the {measured_minutes:.2} min measured ({units:.0} spent; {units_before:.0} before, left out)",
            rate_per_minute, params.window_capacity_units
        );
        println!(
            "  fraction of the fleet budget used: {:.3} (goal ≥ 0.95)",
            units / admissible
        );
        println!(
            "  fraction of Mint's {} units/min:  {:.3}",
            profile.budget_units_per_minute,
            units / (f64::from(profile.budget_units_per_minute) * measured_minutes)
        );
        println!("  429s served:    {} (goal 0)", client.throttled);
        println!("  fallbacks to a local share (Redis unreachable): {fallbacks} (goal 0)");
        println!("  tokens issued:  {}", client.tokens_issued);
    }
    anyhow::ensure!(
        fallbacks == 0,
        "a replica fell back to its local share: the figures are not those of the shared budget"
    );
    Ok(())
}

/// The units Mint counted for the fleet's API client so far.
async fn demo_units(fleet: &Fleet) -> anyhow::Result<f64> {
    let usage = fleet.admin.usage().await?;
    Ok(usage.clients.get("demo").map_or(0.0, |c| c.units as f64))
}

/// Each replica's Prometheus text.
async fn fleet_metrics(fleet: &Fleet) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for address in &fleet.addresses {
        texts.push(
            reqwest::get(format!("http://{address}/metrics"))
                .await?
                .error_for_status()?
                .text()
                .await?,
        );
    }
    Ok(texts)
}

/// The sum of the series of `name` (0 when there is none).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            (series.split('{').next()? == name)
                .then(|| number.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

pub(crate) async fn create_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut connection = sqlx::PgConnection::connect(url)
        .await
        .context("connecting to PostgreSQL (--database-url)")?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut connection)
        .await?;
    connection.close().await.ok();
    Ok(())
}

pub(crate) async fn drop_schema(url: &str, schema: &str) {
    use sqlx::Connection as _;
    if let Ok(mut connection) = sqlx::PgConnection::connect(url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE"
        )))
        .execute(&mut connection)
        .await;
        connection.close().await.ok();
    }
}
