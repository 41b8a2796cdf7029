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
    /// Instances seeded for the listing run (0 skips it).
    #[arg(long, default_value_t = 100_000)]
    pub listing_instances: u64,
    /// Time scale of the listing run: the modelled listing latency (100 µs per instance, 10 s
    /// per page at 100,000 instances) passes this many times faster than real time.
    #[arg(long, default_value_t = 10_000.0)]
    pub listing_time_scale: f64,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        Self {
            small_mib: 100,
            large_mib: 2048,
            hash: false,
            clients: 16,
            request_secs: 3,
            listing_instances: 100_000,
            listing_time_scale: 10_000.0,
            json: false,
        }
    }
}

/// One result-file download.
#[derive(Debug, Clone, serde::Serialize)]
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
#[derive(Debug, Clone, serde::Serialize)]
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
    /// The listing run, if any.
    pub listing: Option<ListingFigures>,
}

/// Seeding a flow with many instances and paging through its slow listing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListingFigures {
    /// Instances seeded (finished, unbilled).
    pub instances: u64,
    /// Real time the seeding took.
    pub seed_secs: f64,
    /// Resident memory of the process before seeding, KiB.
    pub rss_before_kib: Option<u64>,
    /// Resident memory after seeding, KiB (the simulator holds every instance).
    pub rss_after_kib: Option<u64>,
    /// Pages of 100 read (`offset`/`limit`), every instance seen once, newest first.
    pub pages: u64,
    /// Time scale of the run.
    pub time_scale: f64,
    /// Simulated time the listings took (the simulator's own account).
    pub simulated_secs: f64,
    /// Real time the paging took.
    pub real_secs: f64,
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
        )?;
        if let Some(l) = &self.listing {
            let mib = |k: Option<u64>| {
                k.map_or_else(|| "n/a".to_owned(), |k| format!("{} MiB", k / 1024))
            };
            writeln!(
                f,
                "listing: {} instances seeded in {:.2} s, RSS {} -> {} ({} bytes per instance)",
                l.instances,
                l.seed_secs,
                mib(l.rss_before_kib),
                mib(l.rss_after_kib),
                match (l.rss_before_kib, l.rss_after_kib) {
                    (Some(a), Some(b)) if l.instances > 0 =>
                        (b.saturating_sub(a) * 1024 / l.instances).to_string(),
                    _ => "n/a".to_owned(),
                }
            )?;
            writeln!(
                f,
                "listing: {} pages of 100 = {:.0} simulated s ({:.1} s per page) in {:.2} real s at time scale {}",
                l.pages,
                l.simulated_secs,
                l.simulated_secs / l.pages.max(1) as f64,
                l.real_secs,
                l.time_scale
            )?;
        }
        Ok(())
    }
}

/// Resident memory of this process now, KiB.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
    let listing = if args.listing_instances > 0 {
        Some(listing(args).await?)
    } else {
        None
    };
    Ok(BenchReport {
        small,
        large,
        requests_per_sec,
        clients: args.clients.max(1),
        requests,
        listing,
    })
}

/// Seeds `listing_instances` finished instances into one flow and pages through its listing
/// (100 per page) with the default slow listing, at `listing_time_scale`.
pub async fn listing(args: &BenchArgs) -> anyhow::Result<ListingFigures> {
    let mut config = SimConfig::fixture();
    config.time_scale = 0.0;
    config.limits = Limits::unlimited();
    config.flows.push(bench_flow("bench-listing", 64 * 1024));
    let sim = Simulator::builder().config(config).start().await?;
    let admin = sim.admin();
    let rss_before_kib = rss_kib();
    let started = Instant::now();
    let seeded = admin
        .seed_instances(
            "bench-listing",
            &crate::admin::SeedInstances {
                count: args.listing_instances,
                status: Some("Finished".to_owned()),
                created_at: Some(admin.now().await? - chrono::Duration::days(1)),
                interval_millis: 1,
                duration_secs: 60,
                input: Some(serde_json::json!({ "mintgateExecutionId": "bench-{{n}}" })),
                omit_ids: true,
                ..Default::default()
            },
        )
        .await?;
    let seed_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        seeded.count == args.listing_instances,
        "seeded {}",
        seeded.count
    );
    let rss_after_kib = rss_kib();

    admin.set_time_scale(args.listing_time_scale).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut bearer = token(&http, &sim).await?;
    let started = Instant::now();
    let mut pages = 0u64;
    let mut renewals = 0u64;
    let mut previous: Option<String> = None;
    let mut seen = 0u64;
    loop {
        let url = format!(
            "{}/api/flows/bench-listing/instances?offset={seen}&limit=100",
            sim.base_url()
        );
        let mut response = http.get(&url).bearer_auth(&bearer).send().await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            // At this time scale the 600 s token lasts a few dozen pages: renew, as clients do.
            bearer = token(&http, &sim).await?;
            renewals += 1;
            response = http.get(&url).bearer_auth(&bearer).send().await?;
        }
        let page: serde_json::Value = response.error_for_status()?.json().await?;
        pages += 1;
        anyhow::ensure!(
            page["totalCount"] == args.listing_instances,
            "totalCount {}",
            page["totalCount"]
        );
        let items = page["items"].as_array().context("items")?;
        if items.is_empty() {
            break;
        }
        for item in items {
            // Newest first: the seeded numbers count down, each seen once.
            let number = item["input"]["mintgateExecutionId"]
                .as_str()
                .context("input")?
                .to_owned();
            let expected = format!("bench-{}", args.listing_instances - 1 - seen);
            anyhow::ensure!(
                number == expected,
                "{number} where {expected} was due (previous {previous:?})"
            );
            previous = Some(number);
            seen += 1;
        }
    }
    let real_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(seen == args.listing_instances, "saw {seen}");
    tracing::debug!("listing bench: {renewals} token renewals");
    let usage = admin.usage().await?;
    let simulated_micros = usage
        .clients
        .get("demo")
        .map_or(0, |c| c.list_latency_micros);
    sim.shutdown().await;
    Ok(ListingFigures {
        instances: args.listing_instances,
        seed_secs,
        rss_before_kib,
        rss_after_kib,
        pages,
        time_scale: args.listing_time_scale,
        simulated_secs: simulated_micros as f64 / 1e6,
        real_secs,
    })
}

/// Runs [`serve_rate`] and prints the figures.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        eprintln!("warning: debug build; figures are only meaningful with --release");
    }
    let report = serve_rate(&args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
