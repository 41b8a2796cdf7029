//! `bench edge`: the public listener under attack. Authentic webhooks are acknowledged per second
//! (and their p99 latency measured) first alone, then while slowloris connections, oversized
//! bodies, forged webhooks and the signature-list attack run against the same listener at the
//! same time. The service runs as a child process (`mintgate-lab serve`, the production code
//! path with its configuration from the environment), so its memory (RSS) and open file
//! descriptors are its own; they are sampled from `/proc` throughout.
//!
//! The webhooks name unknown instances, so Mint is never called and the figure is the edge's:
//! authentication, parsing, and the durable group-committed record (SQLite, `synchronous=FULL`).

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const SECRET: &str = "bench-webhook-secret-0123456789";
const API_KEY: &str = "bench-api-key-0123456789";

/// Options of `mintgate-lab bench edge`.
#[derive(Debug, Clone, clap::Args)]
pub struct EdgeArgs {
    /// Seconds of each measured phase (without, then with the attack).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Connections of the authentic sender.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Slowloris connections held open (each trickles a header byte a second, and reconnects when
    /// dropped).
    #[arg(long, default_value_t = 256)]
    pub slowloris: usize,
    /// Requests per second of each other attack: oversized bodies, forged webhooks, signature
    /// lists.
    #[arg(long, default_value_t = 200)]
    pub attack_rate: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub acks_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub acks: u64,
    pub errors: u64,
    pub rss_max_bytes: u64,
    pub fds_max: u64,
    /// Attack requests sent, by kind, and how they were answered.
    pub attack: AttackFigures,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct AttackFigures {
    pub slowloris_connections_opened: u64,
    pub oversized_sent: u64,
    pub oversized_refused_413: u64,
    pub forged_sent: u64,
    pub forged_refused_401: u64,
    pub signature_lists_sent: u64,
    pub signature_lists_refused: u64,
}

#[derive(Debug, Serialize)]
struct Report {
    auth: &'static str,
    seconds: u64,
    connections: usize,
    slowloris: usize,
    attack_rate: u64,
    unattacked: Phase,
    attacked: Phase,
    /// attacked / unattacked acknowledgements per second (goal: at least 0.8).
    rate_ratio: f64,
    /// Goal: p99 under 50 ms while attacked.
    p99_goal_ms: f64,
    rss_idle_bytes: u64,
    fds_idle: u64,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The service as a child process, with its configuration in the environment.
struct Service {
    child: tokio::process::Child,
    public: SocketAddr,
}

impl Service {
    async fn start(sim: &mint_sim::Simulator, dir: &std::path::Path) -> anyhow::Result<Self> {
        let public = free_port()?;
        let operator = free_port()?;
        let exe = std::env::current_exe().context("finding the lab binary")?;
        let child = tokio::process::Command::new(exe)
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .env("MINT_API_BASE", sim.base_url())
            .env("MINT_TOKEN_URL", sim.token_url())
            .env("MINT_CLIENT_ID", "demo")
            .env("MINT_CLIENT_SECRET", "demo-secret")
            .env("MINTGATE_WEBHOOK__AUTH", "hmac")
            .env("MINTGATE_WEBHOOK__SECRET", SECRET)
            .env("MINTGATE_SERVICE__API_KEYS", format!("[\"{API_KEY}\"]"))
            .env(
                "MINTGATE_SERVICE__DATABASE_URL",
                format!("sqlite://{}", dir.join("mintgate.db").display()),
            )
            .env("MINTGATE_SERVICE__ARCHIVE_DIR", dir.join("archive"))
            .env("MINTGATE_SERVICE__LOG_FORMAT", "text")
            .env("MINTGATE_LISTENERS__PUBLIC__ADDRESS", public.to_string())
            .env(
                "MINTGATE_LISTENERS__OPERATOR__ADDRESS",
                operator.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting `mintgate-lab serve`")?;
        let service = Self { child, public };
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let health = http
                .get(format!("http://{public}/healthz"))
                .send()
                .await
                .ok()
                .map(|r| r.status().is_success());
            if health == Some(true) {
                return Ok(service);
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the service did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The service's resident memory and open descriptors, from `/proc`.
fn sample(pid: u32) -> (u64, u64) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    (rss, fds)
}

fn signed_request(http: &reqwest::Client, url: &str, body: String) -> reqwest::RequestBuilder {
    let now = chrono::Utc::now().timestamp();
    let signature = mintgate::webhook::sign(SECRET.as_bytes(), now, body.as_bytes());
    http.post(url)
        .header("content-type", "application/json")
        .header(mintgate::webhook::TIMESTAMP_HEADER, now.to_string())
        .header(mintgate::webhook::SIGNATURE_HEADER, signature)
        .body(body)
}

/// The authentic sender: `connections` loops posting distinct signed webhooks until `stop`.
async fn authentic(
    public: SocketAddr,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<u32>, u64) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("a client");
    let url = format!("http://{public}/webhooks/mint");
    let counter = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (http, url, stop, counter, errors) = (
            http.clone(),
            url.clone(),
            stop.clone(),
            counter.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(16 * 1024);
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!(
                    r#"{{"instanceId":"{}","status":"Finished","n":{n}}}"#,
                    uuid::Uuid::new_v4()
                );
                let sent = Instant::now();
                match signed_request(&http, &url, body).send().await {
                    Ok(response) if response.status() == 200 => {
                        latencies.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(latencies) = task.await {
            all.extend(latencies);
        }
    }
    (all, errors.load(Ordering::Relaxed))
}

#[derive(Default)]
struct AttackCounters {
    slowloris: AtomicU64,
    oversized: AtomicU64,
    oversized_413: AtomicU64,
    forged: AtomicU64,
    forged_401: AtomicU64,
    lists: AtomicU64,
    lists_refused: AtomicU64,
}

impl AttackCounters {
    fn figures(&self) -> AttackFigures {
        AttackFigures {
            slowloris_connections_opened: self.slowloris.load(Ordering::Relaxed),
            oversized_sent: self.oversized.load(Ordering::Relaxed),
            oversized_refused_413: self.oversized_413.load(Ordering::Relaxed),
            forged_sent: self.forged.load(Ordering::Relaxed),
            forged_refused_401: self.forged_401.load(Ordering::Relaxed),
            signature_lists_sent: self.lists.load(Ordering::Relaxed),
            signature_lists_refused: self.lists_refused.load(Ordering::Relaxed),
        }
    }
}

/// Sends `request` on a fresh connection and answers the status of what comes back (if anything
/// comes back within 5 s).
async fn raw(public: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(public).await.ok()?;
    // The server may answer (and close) before all of it is written: that is the point.
    let _ = stream.write_all(request).await;
    let mut buffer = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .ok()?
        .ok()?;
    std::str::from_utf8(&buffer[..n])
        .ok()?
        .strip_prefix("HTTP/1.1 ")?
        .get(..3)?
        .parse()
        .ok()
}

/// Every attack at once, until `stop`.
fn attack(
    public: SocketAddr,
    args: &EdgeArgs,
    stop: Arc<AtomicBool>,
    counters: Arc<AttackCounters>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Slowloris: open, send a header a byte a second, never finish; reopen when dropped.
    for _ in 0..args.slowloris {
        let (stop, counters) = (stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut stream) = TcpStream::connect(public).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                counters.slowloris.fetch_add(1, Ordering::Relaxed);
                if stream
                    .write_all(b"POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await
                    .is_err()
                {
                    continue;
                }
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if stream.write_all(b"a").await.is_err() {
                        break;
                    }
                }
            }
        }));
    }
    let period = Duration::from_secs_f64(1.0 / args.attack_rate.max(1) as f64);
    // Oversized: a 100 MB body announced, a little of it sent.
    {
        let (stop, counters) = (stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            let mut request = format!(
                "POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\nX-Mint-Timestamp: {}\r\nX-Mint-Signature: v1={}\r\n\r\n",
                chrono::Utc::now().timestamp(),
                "0".repeat(64)
            )
            .into_bytes();
            request.extend(std::iter::repeat_n(b'x', 64 * 1024));
            let request = Arc::new(request);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let (counters, request) = (counters.clone(), request.clone());
                tokio::spawn(async move {
                    counters.oversized.fetch_add(1, Ordering::Relaxed);
                    if raw(public, &request).await == Some(413) {
                        counters.oversized_413.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }));
    }
    // Forged: well-formed, fresh, wrongly signed.
    {
        let (stop, counters) = (stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://{public}/webhooks/mint");
            let mut ticks = tokio::time::interval(period);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let (http, url, counters) = (http.clone(), url.clone(), counters.clone());
                tokio::spawn(async move {
                    let body = r#"{"instanceId":"forged-0001","status":"Finished"}"#;
                    let now = chrono::Utc::now().timestamp();
                    let signature =
                        mintgate::webhook::sign(b"not-the-secret-at-all", now, body.as_bytes());
                    counters.forged.fetch_add(1, Ordering::Relaxed);
                    let response = http
                        .post(&url)
                        .header(mintgate::webhook::TIMESTAMP_HEADER, now.to_string())
                        .header(mintgate::webhook::SIGNATURE_HEADER, signature)
                        .body(body)
                        .send()
                        .await;
                    if response.is_ok_and(|r| r.status() == 401) {
                        counters.forged_401.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }));
    }
    // Signature lists: thousands of entries (beyond the header limit) and a dozen (within it).
    {
        let (stop, counters) = (stop.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                n += 1;
                let entries = if n.is_multiple_of(2) { 3000 } else { 12 };
                let counters = counters.clone();
                tokio::spawn(async move {
                    let body = r#"{"instanceId":"forged-0002"}"#;
                    let list = vec![format!("v1={}", "ab".repeat(32)); entries].join(",");
                    let request = format!(
                        "POST /webhooks/mint HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Mint-Timestamp: {}\r\nX-Mint-Signature: {list}\r\n\r\n{body}",
                        body.len(),
                        chrono::Utc::now().timestamp()
                    );
                    counters.lists.fetch_add(1, Ordering::Relaxed);
                    if matches!(raw(public, request.as_bytes()).await, Some(401 | 431)) {
                        counters.lists_refused.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }));
    }
    tasks
}

async fn phase(service: &Service, args: &EdgeArgs, attacked: bool) -> anyhow::Result<Phase> {
    let pid = service.pid().context("the service has exited")?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(AttackCounters::default());
    let attacks = if attacked {
        let tasks = attack(service.public, args, stop.clone(), counters.clone());
        // Let the slowloris connections take their places first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        tasks
    } else {
        Vec::new()
    };
    let sender_stop = Arc::new(AtomicBool::new(false));
    let sender = tokio::spawn(authentic(
        service.public,
        args.connections,
        sender_stop.clone(),
    ));
    let started = Instant::now();
    let (mut rss_max, mut fds_max) = (0, 0);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (rss, fds) = sample(pid);
        rss_max = rss_max.max(rss);
        fds_max = fds_max.max(fds);
    }
    sender_stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let (mut latencies, errors) = sender.await?;
    stop.store(true, Ordering::Relaxed);
    for task in attacks {
        task.abort();
    }
    latencies.sort_unstable();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let index = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        f64::from(latencies[index]) / 1000.0
    };
    Ok(Phase {
        acks_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(0.50),
        p99_ms: percentile(0.99),
        acks: latencies.len() as u64,
        errors,
        rss_max_bytes: rss_max,
        fds_max,
        attack: counters.figures(),
    })
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: EdgeArgs) -> anyhow::Result<()> {
    if !cfg!(target_os = "linux") {
        bail!("bench edge reads the service's memory and descriptors from /proc (Linux only)");
    }
    let temp = tempfile::tempdir()?;
    let sim = mint_sim::Simulator::builder().start().await?;
    let mut service = Service::start(&sim, temp.path()).await?;
    let pid = service.pid().context("the service has exited")?;
    // Warm up (connections, the database's pages), then measure.
    let warm = EdgeArgs {
        seconds: 2,
        ..args.clone()
    };
    phase(&service, &warm, false).await?;
    let (rss_idle, fds_idle) = sample(pid);
    let unattacked = phase(&service, &args, false).await?;
    let attacked = phase(&service, &args, true).await?;
    let rate_ratio = if unattacked.acks_per_second > 0.0 {
        attacked.acks_per_second / unattacked.acks_per_second
    } else {
        0.0
    };
    let report = Report {
        auth: "hmac",
        seconds: args.seconds,
        connections: args.connections,
        slowloris: args.slowloris,
        attack_rate: args.attack_rate,
        unattacked,
        attacked,
        rate_ratio,
        p99_goal_ms: 50.0,
        rss_idle_bytes: rss_idle,
        fds_idle,
    };
    let _ = service.child.kill().await;
    sim.shutdown().await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    for (name, phase) in [
        ("unattacked", &report.unattacked),
        ("attacked", &report.attacked),
    ] {
        println!(
            "{name:<10} acks_per_s={:.0} p50={:.2}ms p99={:.2}ms acks={} errors={} rss_max={:.1}MiB fds_max={}",
            phase.acks_per_second,
            phase.p50_ms,
            phase.p99_ms,
            phase.acks,
            phase.errors,
            mib(phase.rss_max_bytes),
            phase.fds_max
        );
    }
    let a = &report.attacked.attack;
    println!(
        "attack: slowloris {} connections opened ({} held), oversized {} sent / {} refused 413, forged {} sent / {} refused 401, signature lists {} sent / {} refused (401 or 431), each at {}/s",
        a.slowloris_connections_opened,
        args.slowloris,
        a.oversized_sent,
        a.oversized_refused_413,
        a.forged_sent,
        a.forged_refused_401,
        a.signature_lists_sent,
        a.signature_lists_refused,
        args.attack_rate
    );
    println!(
        "ratio attacked/unattacked = {:.3} (goal >= 0.8); attacked p99 = {:.2} ms (goal < 50 ms); idle rss {:.1} MiB, fds {}",
        report.rate_ratio,
        report.attacked.p99_ms,
        mib(report.rss_idle_bytes),
        report.fds_idle
    );
    Ok(())
}
