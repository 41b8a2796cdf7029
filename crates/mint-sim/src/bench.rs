//! The simulator's serving benchmark: result-file rate on loopback, small-request rate and peak
//! memory. Not a test: run it in release (`cargo run --release -p mint-sim -- bench`, or
//! `mintgate bench sim`).
//!
//! The simulator and the downloading client run in this one process, so the peak resident memory
//! (VmHWM, reset between runs through `/proc/self/clear_refs`) covers both; it must not grow with
//! the file size.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::config::{FlowConfig, Limits, SimConfig};
use crate::{Simulator, result_file_sha256};

/// What to measure.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Size of the small result file, MiB.
    #[arg(long, default_value_t = 100)]
    pub small_mib: u64,
    /// Size of the large result file, MiB.
    #[arg(long, default_value_t = 2048)]
    pub large_mib: u64,
    /// Also hash the downloads with SHA-256 and check them against `result_file_sha256`.
    #[arg(long)]
    pub hash: bool,
    /// Concurrent clients of the small-request run.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Length of the small-request run, seconds.
    #[arg(long, default_value_t = 3)]
    pub request_secs: u64,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            small_mib: 100,
            large_mib: 2048,
            hash: false,
            clients: 16,
            request_secs: 3,
        }
    }
}

/// One result-file download.
#[derive(Debug, Clone)]
pub struct DownloadFigures {
    /// Bytes received.
    pub bytes: u64,
    /// Wall time of the download (headers to last byte).
    pub elapsed: Duration,
    /// Peak resident memory of the process during the download, KiB (`None` off Linux).
    pub peak_rss_kib: Option<u64>,
    /// Whether the SHA-256 matched `result_file_sha256` (`None` when not hashed).
    pub sha256_ok: Option<bool>,
}

impl DownloadFigures {
    /// Bytes per second.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// All figures of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The small download.
    pub small: DownloadFigures,
    /// The large download.
    pub large: DownloadFigures,
    /// `GET /api/instances/{id}` answered per second (rate limits lifted).
    pub requests_per_sec: f64,
    /// Concurrent clients of the request run.
    pub clients: usize,
    /// Requests answered in the run.
    pub requests: u64,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = |f: &mut fmt::Formatter<'_>, name: &str, d: &DownloadFigures| {
            writeln!(
                f,
                "result file {name:>5}: {:>6} MiB in {:>6.2} s = {:>7.0} MB/s ({:.2} GiB/s), peak RSS {}{}",
                d.bytes / (1024 * 1024),
                d.elapsed.as_secs_f64(),
                d.bytes_per_sec() / 1e6,
                d.bytes_per_sec() / (1024.0 * 1024.0 * 1024.0),
                d.peak_rss_kib
                    .map(|k| format!("{} MiB", k / 1024))
                    .unwrap_or_else(|| "n/a".to_owned()),
                match d.sha256_ok {
                    Some(true) => ", sha256 ok",
                    Some(false) => ", SHA256 MISMATCH",
                    None => "",
                }
            )
        };
        line(f, "small", &self.small)?;
        line(f, "large", &self.large)?;
        writeln!(
            f,
            "small requests: {:.0} req/s (GET /api/instances/{{id}}, {} clients, {} requests)",
            self.requests_per_sec, self.clients, self.requests
        )
    }
}

/// Peak resident set size of this process, KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resets the peak (Linux: writing 5 to clear_refs resets VmHWM to the current RSS).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn bench_flow(id: &str, bytes: u64) -> FlowConfig {
    FlowConfig {
        id: id.to_owned(),
        definition_id: format!("def-{id}"),
        name: id.to_owned(),
        description: "benchmark flow: finishes at once".to_owned(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: bytes,
        steps: Vec::new(),
    }
}

async fn token(http: &reqwest::Client, sim: &Simulator) -> anyhow::Result<String> {
    let answer: serde_json::Value = http
        .post(sim.token_url())
        .basic_auth("demo", Some("demo-secret"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "signicat-api"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the token answer")
}

async fn download(
    http: &reqwest::Client,
    sim: &Simulator,
    bearer: &str,
    instance_id: &str,
    expected_bytes: u64,
    hash: bool,
) -> anyhow::Result<DownloadFigures> {
    reset_peak_rss();
    let started = Instant::now();
    let mut response = http
        .get(format!(
            "{}/api/instances/{instance_id}/result-file",
            sim.base_url()
        ))
        .bearer_auth(bearer)
        .send()
        .await?
        .error_for_status()?;
    let mut hasher = hash.then(Sha256::new);
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len() as u64;
        if let Some(h) = hasher.as_mut() {
            h.update(&chunk);
        }
    }
    let elapsed = started.elapsed();
    let sha256_ok = match hasher {
        Some(h) => {
            let (expected, _) = result_file_sha256(sim.seed(), instance_id, expected_bytes);
            Some(hex::encode(h.finalize()) == expected)
        }
        None => None,
    };
    Ok(DownloadFigures {
        bytes,
        elapsed,
        peak_rss_kib: peak_rss_kib(),
        sha256_ok,
    })
}

/// Starts a simulator, downloads a small and a large result file over loopback, then measures the
/// small-request rate with rate limits lifted.
pub async fn serve_rate(args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let small_bytes = args.small_mib * 1024 * 1024;
    let large_bytes = args.large_mib * 1024 * 1024;
    let mut config = SimConfig::fixture();
    config.time_scale = 0.0;
    config.limits = Limits::unlimited();
    config.service.list_delay_micros_per_instance = 0;
    config.flows.push(bench_flow("bench-small", small_bytes));
    config.flows.push(bench_flow("bench-large", large_bytes));
    let sim = Simulator::builder().config(config).start().await?;
    let admin = sim.admin();
    let small_id = admin
        .create_instances("bench-small", 1, None)
        .await?
        .pop()
        .context("no instance created")?;
    let large_id = admin
        .create_instances("bench-large", 1, None)
        .await?
        .pop()
        .context("no instance created")?;

    let http = reqwest::Client::builder().no_proxy().build()?;
    let bearer = token(&http, &sim).await?;
    let small = download(&http, &sim, &bearer, &small_id, small_bytes, args.hash).await?;
    let large = download(&http, &sim, &bearer, &large_id, large_bytes, args.hash).await?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.request_secs);
    let url = format!("{}/api/instances/{small_id}", sim.base_url());
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let http = http.clone();
        let url = url.clone();
        let bearer = bearer.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < deadline {
                let response = http.get(&url).bearer_auth(&bearer).send().await?;
                anyhow::ensure!(response.status() == 200, "status {}", response.status());
                response.bytes().await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut requests = 0;
    for task in tasks {
        requests += task.await??;
    }
    let requests_per_sec = requests as f64 / started.elapsed().as_secs_f64();
    sim.shutdown().await;
    Ok(BenchReport {
        small,
        large,
        requests_per_sec,
        clients: args.clients.max(1),
        requests,
    })
}

/// Runs [`serve_rate`] and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let report = serve_rate(&args).await?;
    print!("{report}");
    Ok(())
}
