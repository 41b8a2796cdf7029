//! `mintgate-lab bench reconcile`: what reconciling a lost start costs on a busy flow, with Mint's
//! slow listing (100 µs of simulated time per instance of the flow, per page: 10 simulated seconds
//! a page at 100,000 instances) and lists that leave `input` out.
//!
//! For each flow size, on a fresh simulator seeded with that many week-old finished instances:
//! - `found`: a start whose answer was lost (Mint committed it) in a newest-first list: found at
//!   the head, one page and one read;
//! - `found-at-tail`: the same in an oldest-first list: the whole list walked before it is met;
//! - `absent`: a start answered `5xx` before Mint committed it: proven absent by a complete walk,
//!   then started once.
//!
//! Reported per case: Mint rate units (the simulator's count: pages and reads), the scan's time on
//! the service's clock (simulated time, budget waits included) and in real time, the simulator's
//! own listing latency, and the starts billed for the correlation id (1; or, for a start held for
//! an operator's decision because a cost bound was reached, no second one).

use std::time::{Duration, Instant};

use mint_sim::admin::SeedInstances;
use mint_sim::{BehaviourOverrides, Faults, ListField, ListOrder, SimConfig};
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{Config, DatabaseUrl, LogFormat, PipelineConfig, ServiceConfig};
use mintgate::model::{ExecutionState, JobKind};
use mintgate::store::{Created, NewExecution};

const FLOW: &str = "flow-kyc-basic";

/// Options of `mintgate-lab bench reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// Flow sizes (instances already in the flow), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    pub instances: Vec<u64>,
    /// Simulated seconds per real second, for the simulator and the service alike. The
    /// simulator's own work per page (real time) counts as simulated time multiplied by this:
    /// keep it low enough that the modelled latency dominates (100: a 100,000-instance page is
    /// 10 simulated seconds = 100 real ms, its work a few real ms in a release build).
    #[arg(long, default_value_t = 100.0)]
    pub time_scale: f64,
    /// Print the figures as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// One case's figures.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CaseFigures {
    pub instances: u64,
    pub case: &'static str,
    /// What reconciliation concluded: `found`, `absent` or `needs_decision`.
    pub outcome: String,
    pub pages: u64,
    pub reads: u64,
    /// Units of the scan (pages + reads), from the simulator's count.
    pub units: u64,
    /// The scan's time on the service's clock (simulated), from its report.
    pub scan_simulated_secs: f64,
    /// The simulator's modelled listing latency, summed over the pages.
    pub listing_simulated_secs: f64,
    /// Real time of the reconciling step.
    pub real_secs: f64,
    /// Starts billed for the execution's correlation id (the simulator's truth; must be 1).
    pub starts_billed: u64,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let mut figures = Vec::new();
    for &instances in &args.instances {
        for case in ["found", "found-at-tail", "absent"] {
            let f = one_case(instances, case, args.time_scale).await?;
            if !args.json {
                println!(
                    "{:>7} instances, {:<13} -> {:<14} {:>5} pages + {:>3} reads = {:>5} units; scan {:>8.1} simulated s (listing {:>8.1} s), {:>6.2} real s; starts billed {}",
                    f.instances,
                    f.case,
                    f.outcome,
                    f.pages,
                    f.reads,
                    f.units,
                    f.scan_simulated_secs,
                    f.listing_simulated_secs,
                    f.real_secs,
                    f.starts_billed
                );
            }
            figures.push(f);
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    // Billed once, or, held for a decision, never started again (the lost start's own bill only).
    let wrong: Vec<_> = figures
        .iter()
        .filter(|f| f.starts_billed > 1 || (f.outcome != "needs_decision" && f.starts_billed != 1))
        .collect();
    if !wrong.is_empty() {
        anyhow::bail!("a start was billed more than once, or not at all: {wrong:?}");
    }
    Ok(())
}

async fn one_case(
    instances: u64,
    case: &'static str,
    time_scale: f64,
) -> anyhow::Result<CaseFigures> {
    let temp = tempfile::tempdir()?;
    let mut sim_config = SimConfig::fixture();
    sim_config.time_scale = time_scale;
    // Mint's slow listing, as the simulator models it by default.
    sim_config.service.list_delay_micros_per_instance = 100;
    let sim = mint_sim::Simulator::builder()
        .config(sim_config)
        .start()
        .await?;
    let admin = sim.admin();
    let week_ago = admin.now().await? - chrono::TimeDelta::days(7);
    admin
        .seed_instances(
            FLOW,
            &SeedInstances {
                count: instances,
                status: Some("Finished".to_owned()),
                created_at: Some(week_ago),
                interval_millis: 1000,
                duration_secs: 60,
                input: Some(serde_json::json!({"mintgateExecutionId": "someone-else-{{n}}"})),
                omit_ids: true,
                ..SeedInstances::default()
            },
        )
        .await?;
    admin
        .set_flow_behaviours(
            FLOW,
            BehaviourOverrides {
                list_omits: Some(vec![ListField::Input]),
                list_order: Some(if case == "found-at-tail" {
                    ListOrder::OldestFirst
                } else {
                    ListOrder::NewestFirst
                }),
                ..BehaviourOverrides::default()
            },
        )
        .await?;
    let clock = Clock::scaled(admin.now().await?, time_scale);
    let config = Config {
        listeners: mintgate::config::ListenersConfig::combined(),
        service: ServiceConfig {
            database_url: DatabaseUrl::sqlite_file(&temp.path().join("mintgate.db")),
            archive_dir: temp.path().join("archive"),
            api_keys: vec![mintgate::config::ApiKey::admin("bench-api-key-0123456789")],
            log_format: LogFormat::Text,
            ..ServiceConfig::default()
        },
        webhook: mintgate::config::WebhookConfig {
            secret: Some(SecretString::from("bench-webhook-secret-0123456789")),
            ..mintgate::config::WebhookConfig::default()
        },
        pipeline: PipelineConfig::default(),
        archive: mintgate::archive::ArchiveConfig::default(),
        default_environment: "sandbox".to_owned(),
        mint: crate::simulator_profiles(&sim, "demo"),
        telemetry: Default::default(),
        events: Default::default(),
    };
    let app = Application::build(
        config,
        BuildOptions {
            clock: clock.clone(),
            run_workers: false,
            listener: Some(std::net::TcpListener::bind("127.0.0.1:0")?),
            ..BuildOptions::default()
        },
    )
    .await?;
    let pipeline = app.pipeline().clone();
    let id = uuid::Uuid::now_v7();
    let created = pipeline
        .store
        .create_execution(NewExecution {
            id,
            idempotency_key: None,
            environment: "sandbox".to_owned(),
            flow_id: mint_client::FlowId::new(FLOW)?,
            input: serde_json::json!({"customer": "bench"}),
            now: clock.now(),
            traceparent: None,
        })
        .await?;
    anyhow::ensure!(
        matches!(created, Created::New(_)),
        "the execution was not created"
    );

    // The start: its answer lost after Mint committed it, or a 5xx before.
    admin
        .set_faults(if case == "absent" {
            Faults {
                seed: Some(2),
                server_error_rate: 1.0,
                ..Faults::default()
            }
        } else {
            Faults {
                seed: Some(1),
                lost_start_rate: 1.0,
                ..Faults::default()
            }
        })
        .await?;
    anyhow::ensure!(pipeline.run_once(&[JobKind::Start]).await?, "no start ran");
    admin.set_faults(Faults::default()).await?;
    let before = admin.usage().await?.clients["demo"].clone();

    // The reconciliation runs once the delay has passed on the scaled clock.
    let real = Instant::now();
    let deadline = real + Duration::from_secs(600);
    loop {
        if pipeline.run_once(&[JobKind::Start]).await? {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reconciliation never came due"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let real_secs = real.elapsed().as_secs_f64();
    let after = admin.usage().await?.clients["demo"].clone();
    let count = |usage: &mint_sim::ClientUsage, endpoint: &str| {
        usage.units_by_endpoint.get(endpoint).copied().unwrap_or(0)
    };
    let pages = count(&after, "list_instances") - count(&before, "list_instances");
    let reads = count(&after, "get_instance") - count(&before, "get_instance");
    let execution = pipeline
        .store
        .execution(id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the execution vanished"))?;
    let events = pipeline.store.events_for(id).await?;
    let scan = events
        .iter()
        .rev()
        .find(|e| {
            matches!(
                e.kind.as_str(),
                "reconcile_scan" | "reconciled_absent" | "needs_decision"
            )
        })
        .map(|e| e.detail.clone())
        .unwrap_or_default();
    let outcome = match (execution.state, scan.get("unproven")) {
        (ExecutionState::NeedsDecision, _) => "needs_decision".to_owned(),
        _ if events.iter().any(|e| e.kind == "reconciled_absent") => "absent".to_owned(),
        _ if events.iter().any(|e| e.kind == "reconciled") => "found".to_owned(),
        (state, _) => state.as_str().to_owned(),
    };
    let starts_billed = admin
        .starts_per_correlation_id()
        .await?
        .get(&id.to_string())
        .copied()
        .unwrap_or(0);
    app.shutdown().await;
    sim.shutdown().await;
    Ok(CaseFigures {
        instances,
        case,
        outcome,
        pages,
        reads,
        units: pages + reads,
        scan_simulated_secs: scan["tookMs"].as_f64().unwrap_or(0.0) / 1000.0,
        listing_simulated_secs: (after.list_latency_micros - before.list_latency_micros) as f64
            / 1e6,
        real_secs,
        starts_billed,
    })
}
