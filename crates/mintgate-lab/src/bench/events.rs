//! Application events under a burst: a burst of executions runs through the pipeline (background
//! workers, a time-scaled simulator) while the service delivers their events to a local receiver.
//! Figures from the receiver's side: events acknowledged per second, and the delivery lag (from
//! the change's commit, the event's `timestamp` on the service's clock, to its arrival) p50, p99
//! and max, in real time; every request's signature is checked.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::clock::Clock;
use mintgate::config::{
    Config, DatabaseUrl, EventEndpoint, EventsConfig, PipelineConfig, ServiceConfig, WebhookConfig,
};
use mintgate::signing::SigningKey;

const API_KEY: &str = "bench-api-key-0123456789";
/// The endpoint's key: `whsec_` + base64 of 32 bytes.
const SECRET: &str = "whsec_QmVuY2htYXJrIGtleSBvZiBtaW50Z2F0ZSBldmVudHMhIQ==";

/// Options of `mintgate-lab bench events`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsBenchArgs {
    /// Executions in the burst.
    #[arg(long, default_value_t = 1000)]
    pub executions: u32,
    /// Simulated seconds per real second (Mint's budget and the pipeline's waits scale with it).
    #[arg(long, default_value_t = 120.0)]
    pub time_scale: f64,
    /// Deliveries in flight at once (`events.concurrency`).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Print the figures as one JSON document.
    #[arg(long)]
    pub json: bool,
}

/// The figures of one run.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsFigures {
    pub executions: u32,
    /// Events written to the outbox during the run (the store's count).
    pub events_written: usize,
    /// Distinct events the receiver acknowledged.
    pub events_delivered: usize,
    /// Requests the receiver got for an event it had acknowledged already (at-least-once).
    pub duplicates: usize,
    /// Requests whose signature did not verify (must be 0).
    pub bad_signatures: usize,
    /// Acknowledged events per second, first to last arrival (real time).
    pub delivered_per_second: f64,
    /// Delivery lag in real milliseconds: the change's commit to the event's arrival.
    pub lag_p50_ms: f64,
    pub lag_p99_ms: f64,
    pub lag_max_ms: f64,
    /// Real seconds from the first request of the burst to the last event delivered.
    pub run_secs: f64,
}

struct Arrival {
    id: String,
    at: Instant,
    /// The lag on the service's clock, in milliseconds.
    lag_clock_ms: i64,
    signed: bool,
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: EventsBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let mut sim_config = mint_sim::SimConfig::fixture();
    sim_config.time_scale = args.time_scale;
    sim_config.service.list_delay_micros_per_instance = 0;
    let sim = mint_sim::Simulator::builder()
        .config(sim_config)
        .start()
        .await?;
    let admin = sim.admin();
    let clock = Clock::scaled(admin.now().await?, args.time_scale);

    // The receiver: checks each signature and records the arrival with its lag.
    let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
    let key = SigningKey::parse(&SecretString::from(SECRET)).map_err(anyhow::Error::msg)?;
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_url = format!("http://{}/events", receiver.local_addr()?);
    let app_router = {
        let (arrivals, key, clock) = (arrivals.clone(), key.clone(), clock.clone());
        axum::Router::new().route(
            "/events",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (arrivals, key, clock) = (arrivals.clone(), key.clone(), clock.clone());
                async move {
                    let at = Instant::now();
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let id = header("webhook-id");
                    let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or(0);
                    let signed = header("webhook-signature")
                        .split(' ')
                        .any(|s| s == key.sign(&id, timestamp, body.as_bytes()));
                    let committed = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|b| {
                            b["timestamp"]
                                .as_str()
                                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        });
                    let lag_clock_ms = committed.map_or(0, |c| {
                        (clock.now() - c.with_timezone(&chrono::Utc)).num_milliseconds()
                    });
                    arrivals.lock().unwrap().push(Arrival {
                        id,
                        at,
                        lag_clock_ms,
                        signed,
                    });
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(receiver, app_router).await });

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
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
            start_workers: 4,
            idle_wait: Duration::from_millis(20),
            ..PipelineConfig::default()
        },
        archive: mintgate::archive::ArchiveConfig::default(),
        default_environment: "sandbox".to_owned(),
        mint: crate::simulator_profiles(&sim, "demo"),
        telemetry: Default::default(),
        events: EventsConfig {
            endpoints: vec![EventEndpoint {
                name: "bench".to_owned(),
                url: receiver_url.parse()?,
                secret: SecretString::from(SECRET),
                previous_secret: None,
                types: Vec::new(),
            }],
            concurrency: args.concurrency,
            ..EventsConfig::default()
        },
    };
    config.validate()?;
    let app = Application::build(
        config,
        BuildOptions {
            clock: clock.clone(),
            listener: Some(listener),
            ..BuildOptions::default()
        },
    )
    .await?;
    let store = app.pipeline().store.clone();
    let url = format!("http://{}/v1/executions", app.address());
    let http = reqwest::Client::new();
    let started = Instant::now();
    let accepted = futures::stream::iter(0..args.executions)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
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
        .buffer_unordered(64)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .filter(Result::is_ok)
        .count();
    anyhow::ensure!(
        accepted == args.executions as usize,
        "only {accepted} executions accepted"
    );
    // Done when every execution's `execution.started` arrived and the outbox is all delivered.
    let deadline = Instant::now() + Duration::from_secs(1800);
    let written = loop {
        let mut written = Vec::new();
        loop {
            let after = written
                .last()
                .map_or(0, |e: &mintgate::store::OutboxEvent| e.seq);
            let page = store.outbox_after(after, 1000).await?;
            if page.is_empty() {
                break;
            }
            written.extend(page);
        }
        let delivered: std::collections::BTreeSet<String> = arrivals
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.id.clone())
            .collect();
        let started_events = written
            .iter()
            .filter(|e| e.event_type == "execution.started")
            .count();
        if started_events >= args.executions as usize
            && written.iter().all(|e| delivered.contains(&e.id))
        {
            break written;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "not done after 30 minutes: {} of {} events delivered",
            delivered.len(),
            written.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let run_secs = started.elapsed().as_secs_f64();
    app.shutdown().await;
    sim.shutdown().await;

    let arrivals = std::mem::take(&mut *arrivals.lock().unwrap());
    let mut first_arrival: BTreeMap<&str, &Arrival> = BTreeMap::new();
    for arrival in &arrivals {
        first_arrival.entry(arrival.id.as_str()).or_insert(arrival);
    }
    let mut lags: Vec<f64> = first_arrival
        .values()
        .map(|a| a.lag_clock_ms.max(0) as f64 / args.time_scale)
        .collect();
    lags.sort_by(f64::total_cmp);
    let percentile = |p: f64| -> f64 {
        if lags.is_empty() {
            return 0.0;
        }
        let rank = ((p * lags.len() as f64).ceil() as usize).clamp(1, lags.len());
        lags[rank - 1]
    };
    let (first, last) = (
        arrivals
            .iter()
            .map(|a| a.at)
            .min()
            .context("nothing arrived")?,
        arrivals
            .iter()
            .map(|a| a.at)
            .max()
            .context("nothing arrived")?,
    );
    let figures = EventsFigures {
        executions: args.executions,
        events_written: written.len(),
        events_delivered: first_arrival.len(),
        duplicates: arrivals.len() - first_arrival.len(),
        bad_signatures: arrivals.iter().filter(|a| !a.signed).count(),
        delivered_per_second: first_arrival.len() as f64 / (last - first).as_secs_f64().max(1e-9),
        lag_p50_ms: percentile(0.50),
        lag_p99_ms: percentile(0.99),
        lag_max_ms: percentile(1.0),
        run_secs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        println!(
            "{} executions: {} events written, {} delivered ({} duplicates, {} bad signatures) in {:.1} s",
            figures.executions,
            figures.events_written,
            figures.events_delivered,
            figures.duplicates,
            figures.bad_signatures,
            figures.run_secs
        );
        println!(
            "delivered {:.0} events/s; delivery lag p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (real time)",
            figures.delivered_per_second,
            figures.lag_p50_ms,
            figures.lag_p99_ms,
            figures.lag_max_ms
        );
    }
    anyhow::ensure!(figures.bad_signatures == 0, "a signature did not verify");
    Ok(())
}
