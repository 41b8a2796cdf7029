//! The kill -9 soak: the real `serve` process (one on SQLite, or several replicas on PostgreSQL
//! and Redis) against a simulator with its faults on (5xx, lost start answers, cut downloads,
//! dropped and duplicated webhooks), SIGKILLed at seeded random moments and started again, while
//! executions are submitted through the API and the end users are played through the simulator's
//! admin API. At the end the simulator's truth decides:
//!
//! - each execution was started exactly once (`/_sim/starts` by correlation id; no start without
//!   one), and Mint billed exactly one start per execution;
//! - every execution is archived with the SHA-256 and size of the simulator's result file
//!   (`/_sim/results`), and the archive holds nothing else (each result and its manifest; the
//!   staging files of uploads a kill abandoned, `<name>#<n>`, are counted: the maintenance removes
//!   them after `archive.orphan_upload_age`);
//! - no well-formed request to the service was answered with a 5xx (refused connections while a
//!   replica is down are expected; the client then tries again with the same idempotency key);
//! - application events reached the run's endpoint (which refuses a seeded fifth of them) at
//!   least once each, signed, every copy of one event with the same `webhook-id` and body: each
//!   event of the feed (`GET /v1/events`), and `execution.started` and `execution.archived` for
//!   every execution.
//!
//! Used by the lab's `soak` test (bounded: a minute or so) and by `mintgate-lab bench soak` (as
//! long as asked). The seed decides the kill moments, the victims and the simulator's faults.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use mint_sim::{AdminClient, Faults, Limits, SimConfig, Simulator, StepConfig, UserStepAction};
use mintgate::model::ExecutionState;
use mintgate::view::ExecutionView;

const API_KEY: &str = "soak-api-key-0123456789";
const WEBHOOK_SECRET: &str = "soak-webhook-secret-0123456789";
const FLOW: &str = "flow-soak";
/// The run's event endpoint's key (`whsec_` + base64 of 32 bytes).
const EVENTS_SECRET: &str = "whsec_c29hay1ldmVudHMta2V5LTAxMjM0NTY3ODlhYmNkZWY=";

/// Where the service keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    /// One replica on a SQLite file in the run's folder.
    Sqlite,
    /// `replicas` replicas on PostgreSQL (a URL whose schema is the run's own) and Redis.
    Postgres {
        database_url: String,
        redis_url: String,
        replicas: usize,
    },
}

/// The soak's settings.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Decides the kill moments and victims, and seeds the simulator's faults.
    pub seed: u64,
    /// Executions submitted through the API.
    pub executions: usize,
    /// SIGKILLs (each followed by a restart of the same replica).
    pub kills: usize,
    pub backend: Backend,
    /// The program to run as `<program> --config <file> serve` (`mintgate`, or `mintgate-lab`,
    /// whose `serve` is the same command).
    pub service_binary: PathBuf,
    /// Size of each result file.
    pub result_file_bytes: u64,
    /// The whole run, after which it fails.
    pub deadline: Duration,
    /// Print progress lines.
    pub verbose: bool,
}

/// What happened, from the simulator's records and the run's own counts.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SoakReport {
    pub executions: usize,
    pub replicas: usize,
    pub kills: usize,
    pub archived: usize,
    pub starts_billed: u64,
    pub cents_owed: u64,
    pub result_file_requests: u64,
    pub downloads_billed: u64,
    pub server_errors_injected: u64,
    pub lost_starts: u64,
    pub cut_bodies: u64,
    pub webhooks_dropped: u64,
    pub webhooks_duplicated: u64,
    /// Requests to the service refused or cut by a kill (then sent again).
    pub requests_resent: u64,
    /// Staging files of uploads abandoned by kills (`<name>#<n>`, left for the maintenance).
    pub staging_files_left: usize,
    /// Application events in the feed, and those the endpoint acknowledged.
    pub events_written: usize,
    pub events_delivered: usize,
    /// Requests the endpoint got, those it refused, and events it acknowledged more than once
    /// (sent again after a kill).
    pub event_requests: usize,
    pub event_requests_refused: usize,
    pub events_delivered_again: usize,
    #[serde(rename = "elapsed_secs", serialize_with = "super::as_secs")]
    pub elapsed: Duration,
    /// Every broken invariant; empty when the run passed.
    pub violations: Vec<String>,
}

impl std::fmt::Display for SoakReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "soak: {} executions, {} replica(s), {} kills, {} archived in {:.1?}",
            self.executions, self.replicas, self.kills, self.archived, self.elapsed
        )?;
        writeln!(
            f,
            "  Mint billed {} starts ({} cents), {} result-file requests ({} downloads billed)",
            self.starts_billed, self.cents_owed, self.result_file_requests, self.downloads_billed
        )?;
        writeln!(
            f,
            "  faults met: {} 5xx, {} lost start answers, {} cut downloads, {} webhooks dropped, {} duplicated",
            self.server_errors_injected,
            self.lost_starts,
            self.cut_bodies,
            self.webhooks_dropped,
            self.webhooks_duplicated
        )?;
        writeln!(
            f,
            "  requests sent again after a kill: {}; staging files of abandoned uploads left: {}",
            self.requests_resent, self.staging_files_left
        )?;
        writeln!(
            f,
            "  events: {} written, {} delivered ({} requests, {} refused by the endpoint, {} delivered again)",
            self.events_written,
            self.events_delivered,
            self.event_requests,
            self.event_requests_refused,
            self.events_delivered_again
        )?;
        if self.violations.is_empty() {
            write!(f, "  every invariant held")
        } else {
            writeln!(f, "  {} VIOLATIONS:", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "    {v}")?;
            }
            Ok(())
        }
    }
}

/// SplitMix64: the run's seeded choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// One `serve` process.
struct Replica {
    index: usize,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Replica {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Starts the process (it is not ready yet: see [`wait_ready`]).
    fn spawn(&mut self, binary: &Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = tokio::process::Command::new(binary);
        command
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // The file is the whole configuration: nothing from this process's environment.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy().into_owned();
            if name.starts_with("MINTGATE_") || name.starts_with("MINT_") {
                command.env_remove(name);
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        self.child = Some(child);
        Ok(())
    }
}

/// Waits until the replica at `url` answers `/readyz`, without holding the fleet: requests meet
/// the replica while it starts (refused, then answered).
async fn wait_ready(
    index: usize,
    url: &str,
    log: &Path,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let ready = http
            .get(format!("{url}/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            anyhow::bail!(
                "replica {index} not ready after 60 s; its log:\n{}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Replica {
    /// SIGKILL, and wait until it is gone.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    fn is_up(&self) -> bool {
        self.child.is_some()
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A port below Linux's ephemeral range (32768–60999), free now: outgoing connections never take
/// it meanwhile, so a replica can bind it again after each kill.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let candidate = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", candidate)).is_ok() {
            return Ok(candidate);
        }
    }
    anyhow::bail!("no free port between 20000 and 32000")
}

/// The soak's flow: an automatic step, the end user, another automatic step, the webhook.
fn soak_flow(result_file_bytes: u64) -> mint_sim::FlowConfig {
    let mut flow = mint_sim::FlowConfig {
        id: FLOW.to_owned(),
        definition_id: format!("def-{FLOW}"),
        name: "Soak".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes,
        steps: vec![
            StepConfig::Auto {
                name: "Prepare session".to_owned(),
                activity_type: "http".to_owned(),
                duration_secs: 1,
                failure_probability: 0.0,
            },
            StepConfig::User {
                name: "Identity document".to_owned(),
                activity_type: "userTask".to_owned(),
                behaviour: None,
                timeout_secs: None,
            },
            StepConfig::Auto {
                name: "Verify document".to_owned(),
                activity_type: "verification".to_owned(),
                duration_secs: 1,
                failure_probability: 0.0,
            },
            StepConfig::webhook(),
        ],
    };
    for step in &mut flow.steps {
        if let StepConfig::HttpRequest { hmac_secret, .. } = step {
            *hmac_secret = Some(WEBHOOK_SECRET.to_owned());
        }
    }
    flow
}

fn toml_string(text: &str) -> String {
    // Rust's debug escaping of an ASCII string is a valid TOML basic string.
    format!("{text:?}")
}

#[allow(clippy::too_many_arguments)]
fn service_config(
    port: u16,
    database_url: &str,
    redis: Option<(&str, &str)>,
    replicas: usize,
    archive_dir: &Path,
    sim: &Simulator,
    events_url: &str,
) -> String {
    let redis = redis.map_or(String::new(), |(url, prefix)| {
        format!(
            "redis_url = {}\nredis_key_prefix = {}\n",
            toml_string(url),
            toml_string(prefix)
        )
    });
    format!(
        r#"default_environment = "sandbox"

[listeners]
combined = true

[listeners.public]
address = "127.0.0.1:{port}"

[service]
database_url = {database_url}
archive_dir = {archive_dir}
api_keys = [{api_key}]
replicas = {replicas}
shutdown_grace = "2s"
log_format = "text"
status_cache_ttl = "0s"
{redis}
[webhook]
auth = "hmac"
secret = {webhook_secret}
settle = "0s"

[pipeline]
poll_grace = "3s"
poll_interval_min = "1s"
poll_interval_max = "3s"
lease = "3s"
reconcile_delay = "2s"
idle_wait = "100ms"

[mint.sandbox]
api_base = {api_base}
token_url = {token_url}
client_id = "demo"
client_secret = "demo-secret"
budget_units_per_minute = 6000
budget_burst_units = 200

[events]
retry_schedule = ["100ms", "200ms", "500ms", "1s", "1s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s", "2s"]
timeout = "2s"
lease = "4s"

[[events.endpoints]]
name = "soak"
url = {events_url}
secret = {events_secret}
"#,
        database_url = toml_string(database_url),
        archive_dir = toml_string(&archive_dir.display().to_string()),
        api_key = toml_string(API_KEY),
        webhook_secret = toml_string(WEBHOOK_SECRET),
        api_base = toml_string(&sim.base_url()),
        token_url = toml_string(&sim.token_url()),
        events_url = toml_string(events_url),
        events_secret = toml_string(EVENTS_SECRET),
    )
}

/// One request the run's event endpoint got.
#[derive(Debug, Clone)]
struct EventReceived {
    id: String,
    body: String,
    signed: bool,
    acknowledged: bool,
}

/// The run's event endpoint: refuses a seeded fifth of the requests (`503`), acknowledges the
/// rest, records all of them with whether their signature verifies.
async fn event_endpoint(seed: u64) -> anyhow::Result<(String, Arc<Mutex<Vec<EventReceived>>>)> {
    let key = mintgate::signing::SigningKey::parse(&secrecy::SecretString::from(EVENTS_SECRET))
        .map_err(anyhow::Error::msg)?;
    let log: Arc<Mutex<Vec<EventReceived>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let rng = Arc::new(Mutex::new(Rng(seed ^ 0x6576_656e_7473)));
    let handler_log = log.clone();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let (log, key, rng) = (handler_log.clone(), key.clone(), rng.clone());
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                let id = header("webhook-id");
                let timestamp = header("webhook-timestamp").parse::<i64>().unwrap_or(0);
                let expected = key.sign(&id, timestamp, body.as_bytes());
                let signed = header("webhook-signature")
                    .split(' ')
                    .any(|s| s == expected);
                let acknowledged = rng.lock().unwrap_or_else(|e| e.into_inner()).below(5) != 0;
                log.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(EventReceived {
                        id,
                        body,
                        signed,
                        acknowledged,
                    });
                if acknowledged {
                    axum::http::StatusCode::NO_CONTENT
                } else {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                }
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, log))
}

/// Every event of the feed, read from `base` (`(id, type, executionId)`).
async fn read_feed(
    http: &reqwest::Client,
    base: &str,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut cursor = "0".to_owned();
    let mut events = Vec::new();
    loop {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/events?after={cursor}&limit=1000"))
            .bearer_auth(API_KEY)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let items = page["events"].as_array().cloned().unwrap_or_default();
        if items.is_empty() {
            return Ok(events);
        }
        for item in &items {
            let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            events.push((
                text(&item["id"]),
                text(&item["type"]),
                text(&item["data"]["executionId"]),
            ));
        }
        cursor = page["nextCursor"].as_str().unwrap_or("0").to_owned();
    }
}

/// What the run's clients saw of the service.
#[derive(Default)]
struct Seen {
    /// Execution ids by submission number.
    ids: BTreeMap<usize, uuid::Uuid>,
    server_errors: Vec<String>,
    resent: u64,
}

/// Sends a well-formed request to the first replica up (from `start`), again on a refused or cut
/// connection, until it is answered; a 5xx is recorded as a violation (and tried again).
async fn send(
    replicas: &Arc<tokio::sync::Mutex<Vec<Replica>>>,
    seen: &Arc<Mutex<Seen>>,
    start: usize,
    deadline: Instant,
    what: &str,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    let mut attempt = 0;
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what}: no answer before the deadline"
        );
        let url = {
            let replicas = replicas.lock().await;
            let n = replicas.len();
            (0..n)
                .map(|k| &replicas[(start + attempt + k) % n])
                .find(|r| r.is_up())
                .map(|r| r.url(""))
        };
        attempt += 1;
        let Some(base) = url else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match build(&base).timeout(Duration::from_secs(20)).send().await {
            Ok(response) if response.status().is_server_error() => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let line = format!(
                    "{what}: {status} {}",
                    body.chars().take(300).collect::<String>()
                );
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .server_errors
                    .push(line);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Ok(response) => return Ok(response),
            Err(_) => {
                // Refused (the replica is down) or cut by a kill: the same request again.
                seen.lock().unwrap_or_else(|e| e.into_inner()).resent += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Plays the end users: completes every waiting user step, until `stop`.
async fn play_end_users(admin: AdminClient, stop: tokio_util_like::Stop) {
    while !stop.is_set() {
        if let Ok(instances) = admin.instances().await {
            for instance in instances {
                let waiting = instance.status == "Running"
                    && instance
                        .activities
                        .last()
                        .is_some_and(|a| a.status == "Suspended");
                if waiting {
                    let _ = admin
                        .user_step(&instance.id, UserStepAction::Complete)
                        .await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A flag shared by the run's tasks (no extra dependency for a cancellation token).
mod tokio_util_like {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Clone, Default)]
    pub struct Stop(Arc<AtomicBool>);

    impl Stop {
        pub fn set(&self) {
            self.0.store(true, Ordering::Relaxed);
        }
        pub fn is_set(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }
}

/// Runs the soak. `Err` when it could not run; the report's `violations` say whether it passed.
pub async fn soak(options: SoakOptions) -> anyhow::Result<SoakReport> {
    let run_started = Instant::now();
    let deadline = run_started + options.deadline;
    let dir = tempfile::tempdir()?;
    let archive_dir = dir.path().join("archive");
    let replica_count = match &options.backend {
        Backend::Sqlite => 1,
        Backend::Postgres { replicas, .. } => (*replicas).max(1),
    };
    let ports = (0..replica_count)
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<_>>>()?;

    let mut sim_config = SimConfig::fixture();
    sim_config.seed = options.seed;
    sim_config.time_scale = 1.0;
    sim_config.service.list_delay_micros_per_instance = 0;
    sim_config.flows = vec![soak_flow(options.result_file_bytes)];
    sim_config.limits = Limits {
        window_secs: 60,
        window_units: 100_000,
        burst_window_millis: 1000,
        burst_units: 10_000,
        ..sim_config.limits.clone()
    };
    sim_config.webhook_url = Some(format!("http://127.0.0.1:{}/webhooks/mint", ports[0]));
    let sim = Simulator::builder()
        .config(sim_config)
        .start()
        .await
        .context("starting the simulator")?;
    let admin = sim.admin();
    admin
        .set_faults(Faults {
            seed: Some(options.seed),
            server_error_rate: 0.05,
            lost_start_rate: 0.1,
            cut_body_rate: 0.15,
            cut_body_at_fraction: 0.5,
            webhook_drop_rate: 0.1,
            webhook_duplicate_rate: 0.1,
            ..Faults::default()
        })
        .await?;

    let (database_url, redis) = match &options.backend {
        Backend::Sqlite => (
            format!("sqlite://{}", dir.path().join("mintgate.db").display()),
            None,
        ),
        Backend::Postgres {
            database_url,
            redis_url,
            ..
        } => (
            database_url.clone(),
            Some((
                redis_url.clone(),
                format!("soak-{}", uuid::Uuid::new_v4().simple()),
            )),
        ),
    };
    let (events_url, events_log) = event_endpoint(options.seed).await?;
    let mut replicas = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let config = dir.path().join(format!("replica-{index}.toml"));
        std::fs::write(
            &config,
            service_config(
                *port,
                &database_url,
                redis.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
                replica_count,
                &archive_dir,
                &sim,
                &events_url,
            ),
        )?;
        replicas.push(Replica {
            index,
            port: *port,
            config,
            log: dir.path().join(format!("replica-{index}.log")),
            child: None,
        });
    }
    let http = reqwest::Client::new();
    for replica in &mut replicas {
        replica.spawn(&options.service_binary)?;
        wait_ready(replica.index, &replica.url(""), &replica.log, &http).await?;
    }
    let replicas = Arc::new(tokio::sync::Mutex::new(replicas));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = tokio_util_like::Stop::default();
    let players = tokio::spawn(play_end_users(admin.clone(), stop.clone()));

    // Submissions: a quarter at once, the rest one by one while replicas are being killed.
    let submitter = {
        let replicas = replicas.clone();
        let seen = seen.clone();
        let http = http.clone();
        let executions = options.executions;
        let seed = options.seed;
        tokio::spawn(async move {
            for i in 0..executions {
                if i >= executions / 4 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let body = serde_json::json!({
                    "flowId": FLOW,
                    "input": {"customer": i},
                    "idempotencyKey": format!("soak-{seed}-{i}"),
                });
                let response = send(
                    &replicas,
                    &seen,
                    i,
                    deadline,
                    "POST /v1/executions",
                    |base| {
                        http.post(format!("{base}/v1/executions"))
                            .bearer_auth(API_KEY)
                            .json(&body)
                    },
                )
                .await?;
                let status = response.status();
                let text = response.text().await?;
                anyhow::ensure!(
                    status.is_success(),
                    "POST /v1/executions answered {status}: {text}"
                );
                let view: ExecutionView = serde_json::from_str(&text)?;
                seen.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .ids
                    .insert(i, view.id);
            }
            anyhow::Ok(())
        })
    };

    // The kills: at seeded moments, a seeded victim, restarted after a seeded pause.
    let mut rng = Rng(options.seed);
    let mut kills = 0;
    while kills < options.kills {
        tokio::time::sleep(rng.millis(200, 1500)).await;
        let victim = rng.below(replica_count as u64) as usize;
        replicas.lock().await[victim].kill().await;
        kills += 1;
        if options.verbose {
            eprintln!(
                "  kill {kills}/{}: replica {victim} at {:.1?}",
                options.kills,
                run_started.elapsed()
            );
        }
        tokio::time::sleep(rng.millis(0, 500)).await;
        let (url, log) = {
            let mut fleet = replicas.lock().await;
            fleet[victim]
                .spawn(&options.service_binary)
                .with_context(|| format!("restarting replica {victim} after kill {kills}"))?;
            (fleet[victim].url(""), fleet[victim].log.clone())
        };
        wait_ready(victim, &url, &log, &http).await?;
    }
    submitter.await.context("the submitter panicked")??;

    // Wait until every execution has ended.
    let ids: Vec<uuid::Uuid> = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ids
        .values()
        .copied()
        .collect();
    let mut views: BTreeMap<uuid::Uuid, ExecutionView> = BTreeMap::new();
    loop {
        for (k, id) in ids.iter().enumerate() {
            if views.get(id).is_some_and(|v| v.state.is_terminal()) {
                continue;
            }
            let response = send(
                &replicas,
                &seen,
                k,
                deadline,
                "GET /v1/executions/{id}",
                |base| {
                    http.get(format!("{base}/v1/executions/{id}"))
                        .bearer_auth(API_KEY)
                },
            )
            .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "GET /v1/executions/{id} answered {}",
                response.status()
            );
            views.insert(*id, response.json().await?);
        }
        let open = views.values().filter(|v| !v.state.is_terminal()).count();
        if open == 0 {
            break;
        }
        if Instant::now() > deadline {
            let open: Vec<String> = views
                .values()
                .filter(|v| !v.state.is_terminal())
                .map(|v| format!("{} {:?} {}", v.id, v.state, v.summary))
                .collect();
            stop.set();
            anyhow::bail!(
                "{} executions still open at the deadline: {open:?}; replica 0's log:\n{}",
                open.len(),
                tail(&replicas.lock().await[0].log)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.set();
    let _ = players.await;
    // Every event of the feed acknowledged by the endpoint (retries after refusals and kills).
    let feed = read_feed(&http, &replicas.lock().await[0].url("")).await?;
    loop {
        let acknowledged: BTreeSet<String> = events_log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.acknowledged)
            .map(|r| r.id.clone())
            .collect();
        if feed.iter().all(|(id, _, _)| acknowledged.contains(id)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for replica in replicas.lock().await.iter_mut() {
        replica.kill().await;
    }

    // The verdict, from the simulator's truth.
    let mut report = SoakReport {
        executions: ids.len(),
        replicas: replica_count,
        kills,
        ..SoakReport::default()
    };
    let mut violations = Vec::new();
    {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        violations.extend(
            seen.server_errors
                .iter()
                .map(|e| format!("5xx on a well-formed request: {e}")),
        );
        report.requests_resent = seen.resent;
    }
    if ids.len() != options.executions {
        violations.push(format!(
            "{} of {} executions were accepted",
            ids.len(),
            options.executions
        ));
    }
    let starts = admin.starts().await?;
    let results = admin.results(false).await?;
    let usage = admin.usage().await?;
    for id in &ids {
        let started = starts
            .by_correlation_id
            .get(&id.to_string())
            .map_or(0, Vec::len);
        if started != 1 {
            violations.push(format!(
                "execution {id} was started {started} times in Mint"
            ));
        }
    }
    if !starts.without_correlation_id.is_empty() {
        violations.push(format!(
            "starts without a correlation id: {:?}",
            starts.without_correlation_id
        ));
    }
    let ours: BTreeSet<String> = ids.iter().map(ToString::to_string).collect();
    for correlation in starts.by_correlation_id.keys() {
        if !ours.contains(correlation) {
            violations.push(format!("a start for no accepted execution: {correlation}"));
        }
    }
    let mut expected_files = BTreeSet::new();
    for view in views.values() {
        if view.state != ExecutionState::Archived {
            violations.push(format!(
                "execution {} ended {:?}: {}",
                view.id, view.state, view.summary
            ));
            continue;
        }
        report.archived += 1;
        let (Some(instance), Some(archive)) = (&view.instance_id, &view.archive) else {
            violations.push(format!(
                "execution {} archived without its archive",
                view.id
            ));
            continue;
        };
        match results.get(instance.as_str()) {
            Some((sha256, size)) => {
                if &archive.sha256 != sha256 || archive.bytes as u64 != *size {
                    violations.push(format!(
                        "execution {}: archived {} ({} bytes), Mint's file is {sha256} ({size} bytes)",
                        view.id, archive.sha256, archive.bytes
                    ));
                }
                match mintgate::archive::hash_file(Path::new(&archive.path)).await {
                    Ok((on_disk, len)) if on_disk == *sha256 && len == *size => {}
                    Ok((on_disk, len)) => violations.push(format!(
                        "{}: on disk {on_disk} ({len} bytes), Mint's file is {sha256}",
                        archive.path
                    )),
                    Err(e) => violations.push(format!("{}: {e:#}", archive.path)),
                }
            }
            None => violations.push(format!(
                "execution {}: instance {instance} is not a finished instance in Mint",
                view.id
            )),
        }
        let path = PathBuf::from(&archive.path);
        expected_files.insert(path.with_extension("json"));
        expected_files.insert(path);
    }
    for file in walk(&archive_dir) {
        // `<name>#<n>`: the local store's staging file of an upload a kill abandoned; invisible
        // to readers and removed by the maintenance after `archive.orphan_upload_age`.
        let staging = file
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once('#'))
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if staging {
            report.staging_files_left += 1;
        } else if !expected_files.contains(&file) {
            violations.push(format!(
                "in the archive but no execution's: {}",
                file.display()
            ));
        }
    }
    if results.len() != ids.len() {
        violations.push(format!(
            "Mint has {} finished instances for {} executions",
            results.len(),
            ids.len()
        ));
    }
    let client = usage.clients.get("demo").cloned().unwrap_or_default();
    if client.starts_billed != ids.len() as u64 {
        violations.push(format!(
            "Mint billed {} starts for {} executions",
            client.starts_billed,
            ids.len()
        ));
    }
    report.starts_billed = client.starts_billed;
    report.cents_owed = client.cents_owed;
    report.result_file_requests = client
        .requests_by_endpoint
        .get("result_file")
        .copied()
        .unwrap_or(0);
    report.downloads_billed = client.downloads_billed;
    report.server_errors_injected = usage.faults.server_errors;
    report.lost_starts = usage.faults.lost_starts;
    report.cut_bodies = usage.faults.cut_bodies;
    report.webhooks_dropped = usage.webhooks.dropped;
    report.webhooks_duplicated = usage.webhooks.duplicated;
    // Events: each one in the feed acknowledged, signed, one body per id; each execution told.
    let received = events_log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut bodies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut acknowledged: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &received {
        bodies.entry(&r.id).or_default().insert(&r.body);
        if r.acknowledged {
            *acknowledged.entry(&r.id).or_default() += 1;
        }
        if !r.signed {
            violations.push(format!(
                "event {} arrived with a signature that does not verify",
                r.id
            ));
        }
    }
    for (id, variants) in &bodies {
        if variants.len() > 1 {
            violations.push(format!(
                "event {id} arrived with {} different bodies",
                variants.len()
            ));
        }
    }
    for (id, event_type, execution) in &feed {
        if !acknowledged.contains_key(id.as_str()) {
            violations.push(format!(
                "event {id} ({event_type} of {execution}) was never delivered"
            ));
        }
    }
    for id in &ids {
        for wanted in ["execution.started", "execution.archived"] {
            let count = feed
                .iter()
                .filter(|(_, t, e)| t == wanted && *e == id.to_string())
                .count();
            if count != 1 {
                violations.push(format!("execution {id} has {count} {wanted} events"));
            }
        }
    }
    report.events_written = feed.len();
    report.events_delivered = acknowledged.len();
    report.event_requests = received.len();
    report.event_requests_refused = received.iter().filter(|r| !r.acknowledged).count();
    report.events_delivered_again = acknowledged.values().map(|n| n.saturating_sub(1)).sum();
    report.violations = violations;
    report.elapsed = run_started.elapsed();
    sim.shutdown().await;
    Ok(report)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// What [`kill_during_burst`] found.
#[derive(Debug)]
pub struct BurstKill {
    /// Requests answered `202` before the kill.
    pub acknowledged: usize,
    /// Requests that got no answer (cut by the kill) or another one.
    pub unanswered: usize,
    /// Acknowledged executions the database does not hold, or holds without their start job.
    pub lost: Vec<String>,
    /// Executions the database holds after the kill (acknowledged or not: a commit whose answer
    /// the kill cut is durable too).
    pub stored: usize,
}

/// A burst of `POST /v1/executions` (`concurrency` at a time, each with its own idempotency key)
/// against the real `serve` process on SQLite, SIGKILLed once `kill_after` requests have been
/// acknowledged; then the database is opened again and every acknowledged execution looked for,
/// with its start job. Nothing is acknowledged before it is durable: `lost` must be empty.
pub async fn kill_during_burst(
    service_binary: &Path,
    executions: usize,
    concurrency: usize,
    kill_after: usize,
) -> anyhow::Result<BurstKill> {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut sim_config = SimConfig::fixture();
    sim_config.flows = vec![soak_flow(1024)];
    let sim = Simulator::builder()
        .config(sim_config)
        .start()
        .await
        .context("starting the simulator")?;
    let database_url = format!("sqlite://{}", dir.path().join("mintgate.db").display());
    let config = dir.path().join("replica.toml");
    std::fs::write(
        &config,
        service_config(
            port,
            &database_url,
            None,
            1,
            &dir.path().join("archive"),
            &sim,
            // No receiver: the events wait in the outbox (this run looks at the executions).
            "http://127.0.0.1:9/events",
        ),
    )?;
    let mut replica = Replica {
        index: 0,
        port,
        config,
        log: dir.path().join("replica.log"),
        child: None,
    };
    let http = reqwest::Client::new();
    replica.spawn(service_binary)?;
    wait_ready(0, &replica.url(""), &replica.log, &http).await?;
    let url = replica.url("/v1/executions");
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let reached = Arc::new(tokio::sync::Notify::new());
    let burst = {
        let acknowledged = acknowledged.clone();
        let reached = reached.clone();
        let http = http.clone();
        async move {
            futures::stream::iter(0..executions)
                .for_each_concurrent(concurrency, |i| {
                    let (http, url) = (http.clone(), url.clone());
                    let (acknowledged, reached) = (acknowledged.clone(), reached.clone());
                    async move {
                        let body = serde_json::json!({
                            "flowId": FLOW,
                            "input": {"customer": i},
                            "idempotencyKey": format!("burst-{i}"),
                        });
                        let answer = http
                            .post(&url)
                            .bearer_auth(API_KEY)
                            .json(&body)
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await;
                        let Ok(response) = answer else { return };
                        if response.status() != reqwest::StatusCode::ACCEPTED {
                            return;
                        }
                        let Ok(view) = response.json::<ExecutionView>().await else {
                            return;
                        };
                        let mut acknowledged =
                            acknowledged.lock().unwrap_or_else(|e| e.into_inner());
                        acknowledged.push(view.id.to_string());
                        if acknowledged.len() >= kill_after {
                            reached.notify_one();
                        }
                    }
                })
                .await;
        }
    };
    let burst = tokio::spawn(burst);
    tokio::select! {
        () = reached.notified() => {}
        () = tokio::time::sleep(Duration::from_secs(60)) => anyhow::bail!(
            "fewer than {kill_after} executions acknowledged in 60 s; the log:\n{}",
            tail(&replica.log)
        ),
    }
    replica.kill().await;
    burst.await.context("the burst panicked")?;
    sim.shutdown().await;
    let acknowledged = acknowledged
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let store = mintgate::store::open(&database_url, mintgate::store::OpenMode::ReadWrite).await?;
    let mut lost = Vec::new();
    for id in &acknowledged {
        let uuid = uuid::Uuid::parse_str(id)?;
        let held = store.execution(uuid).await?.is_some()
            && store
                .jobs_for(uuid)
                .await?
                .iter()
                .any(|job| job.kind == mintgate::model::JobKind::Start);
        if !held {
            lost.push(id.clone());
        }
    }
    let stored = usize::try_from(
        store
            .overview()
            .await?
            .executions_by_state
            .iter()
            .map(|(_, n)| *n)
            .sum::<i64>(),
    )
    .unwrap_or(0);
    Ok(BurstKill {
        unanswered: executions - acknowledged.len(),
        acknowledged: acknowledged.len(),
        lost,
        stored,
    })
}
