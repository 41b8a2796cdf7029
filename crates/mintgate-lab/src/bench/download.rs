//! Result-file download benchmark (mint-client against mint-sim, side by side with curl).
//!
//! Starts an in-process simulator whose flow `flow-bench` has a result file of `size_bytes` (rate
//! limits lifted), finishes an instance, downloads its result file to disk with `mint-client`
//! (SHA-256 on, `.part` + fsync + rename), then the same file with `curl -o`, and prints throughput,
//! peak memory and the ratio.
//!
//! Memory: the simulator shares the process, so a plain `VmHWM` would mix its serving memory with the
//! client's. Before each transfer the peak is reset to the current RSS (`echo 5 >
//! /proc/self/clear_refs`, Linux ≥ 4.0), so each phase's `VmHWM` is the peak *during* that phase. The
//! curl phase has the simulator serving and no client, so its growth over the baseline is the
//! simulator's own share; the client's share is the client phase's growth minus that.
//!
//! Time: best of two alternating rounds. The client fsyncs before its atomic rename, so curl is also
//! timed with an fsync of its file. CPU seconds per phase are printed too: on a busy machine they
//! compare the two more steadily than wall time.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mint_client::{DownloadOptions, FlowId, InstanceStatus, MintClient, MintConfig, StartInstance};
use secrecy::SecretString;

const MIB: f64 = 1024.0 * 1024.0;

/// The figures of one run (`--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DownloadFigures {
    pub bytes: u64,
    pub rounds: usize,
    pub client_secs: f64,
    pub client_mib_per_sec: f64,
    pub curl_secs: f64,
    pub curl_mib_per_sec: f64,
    pub curl_fsync_secs: f64,
    pub curl_fsync_mib_per_sec: f64,
    /// The client's speed as a fraction of `curl -o` + fsync (the same durability; goal >= 0.8).
    pub ratio_to_curl_fsync: f64,
    pub ratio_to_curl: f64,
    pub client_cpu_secs: f64,
    pub curl_phase_sim_cpu_secs: f64,
    pub curl_cpu_secs: f64,
    /// The client's share of the peak resident memory, bytes (goal < 64 MiB); `None` off Linux.
    pub client_rss_growth_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

/// Runs the benchmark for one file size, writing into `dir`; prints the figures (as JSON with
/// `json`).
pub async fn run(size_bytes: u64, dir: &Path, json: bool) -> anyhow::Result<()> {
    let mut cfg = mint_sim::SimConfig {
        limits: mint_sim::Limits::unlimited(),
        ..mint_sim::SimConfig::default()
    };
    cfg.flows.push(mint_sim::FlowConfig {
        id: "flow-bench".into(),
        definition_id: "def-bench".into(),
        name: "Benchmark".into(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: size_bytes,
        steps: vec![],
    });
    let sim = mint_sim::Simulator::builder()
        .config(cfg)
        .start()
        .await
        .context("starting the simulator")?;
    let result = bench(&sim, size_bytes, dir, json).await;
    sim.shutdown().await;
    let figures = result?;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    }
    Ok(())
}

async fn bench(
    sim: &mint_sim::Simulator,
    size_bytes: u64,
    dir: &Path,
    json: bool,
) -> anyhow::Result<DownloadFigures> {
    tokio::fs::create_dir_all(dir)
        .await
        .with_context(|| format!("creating {}", dir.display()))?;
    let client = MintClient::new(MintConfig::new(
        sim.base_url(),
        sim.token_url(),
        "demo",
        SecretString::from("demo-secret"),
    ))?;
    let flow = FlowId::new("flow-bench")?;
    let id = client
        .start_instance(&flow, &StartInstance::default())
        .await?
        .instance
        .id;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get_instance(&id).await?.status != InstanceStatus::Finished {
        if Instant::now() > deadline {
            bail!("instance {id} did not finish");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (expected_sha, expected_len) = mint_sim::result_file_sha256(0, id.as_str(), size_bytes);

    eprintln!(
        "download benchmark: {} ({:.0} MiB), into {}",
        id,
        size_bytes as f64 / MIB,
        dir.display()
    );

    let token = fetch_token(sim).await?;
    let header_file = dir.join("curl-auth-header");
    tokio::fs::write(&header_file, format!("Authorization: Bearer {token}\n")).await?;
    let url = format!("{}/api/instances/{}/result-file", sim.base_url(), id);

    // Best of ROUNDS, alternating, so a busy machine disturbs both sides alike.
    let mut client_best = Phase::default();
    let mut curl_best = Phase::default();
    let mut curl_fsync_secs = f64::MAX;
    for _ in 0..ROUNDS {
        // mint-client: streaming, SHA-256, .part + fsync + atomic rename.
        let client_path = dir.join("mint-client.zip");
        let phase = Phase::start();
        let download = client
            .download_result_to_path(&id, &client_path, &DownloadOptions::default())
            .await?;
        let phase = phase.finish();
        if download.sha256 != expected_sha || download.bytes != expected_len {
            bail!(
                "mint-client got a wrong file: {} bytes, sha256 {}",
                download.bytes,
                download.sha256
            );
        }
        let _ = tokio::fs::remove_file(&client_path).await;
        client_best = client_best.best(phase);

        // curl -o, same file, same server; the token is in a header file, not on the command line.
        let curl_path = dir.join("curl.zip");
        let phase = Phase::start();
        let mut curl = std::process::Command::new("curl");
        curl.args(["-sS", "--fail", "-o"])
            .arg(&curl_path)
            .arg("-H")
            .arg(format!("@{}", header_file.display()))
            .arg(&url);
        // tokio's `process` feature is not enabled in this workspace: run curl on a blocking thread.
        let out = tokio::task::spawn_blocking(move || curl.output())
            .await?
            .context("running curl")?;
        let phase = phase.finish();
        if !out.status.success() {
            bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // The same durability as the client's: fsync the file curl wrote.
        let fsync_started = Instant::now();
        tokio::fs::File::open(&curl_path).await?.sync_all().await?;
        curl_fsync_secs = curl_fsync_secs.min(phase.secs + fsync_started.elapsed().as_secs_f64());
        let curl_len = tokio::fs::metadata(&curl_path).await?.len();
        let _ = tokio::fs::remove_file(&curl_path).await;
        if curl_len != expected_len {
            bail!("curl got {curl_len} bytes, expected {expected_len}");
        }
        curl_best = curl_best.best(phase);
    }
    let _ = tokio::fs::remove_file(&header_file).await;

    let mb = size_bytes as f64 / MIB;
    let rate = |secs: f64| mb / secs;
    let client_growth = client_best.peak_growth_kib();
    let sim_growth = curl_best.peak_growth_kib();
    let figures = DownloadFigures {
        bytes: size_bytes,
        rounds: ROUNDS,
        client_secs: client_best.secs,
        client_mib_per_sec: rate(client_best.secs),
        curl_secs: curl_best.secs,
        curl_mib_per_sec: rate(curl_best.secs),
        curl_fsync_secs,
        curl_fsync_mib_per_sec: rate(curl_fsync_secs),
        ratio_to_curl_fsync: curl_fsync_secs / client_best.secs,
        ratio_to_curl: curl_best.secs / client_best.secs,
        client_cpu_secs: client_best.cpu_self,
        curl_phase_sim_cpu_secs: curl_best.cpu_self,
        curl_cpu_secs: curl_best.cpu_children,
        client_rss_growth_bytes: client_best
            .peak_kib
            .map(|_| client_growth.saturating_sub(sim_growth) * 1024),
        peak_rss_bytes: client_best.peak_kib.map(|k| k * 1024),
    };
    if json {
        return Ok(figures);
    }
    println!(
        "  mint-client        {:7.2} s {:8.1} MiB/s   (SHA-256, .part, fsync, rename; best of {ROUNDS})",
        client_best.secs,
        rate(client_best.secs)
    );
    println!(
        "  curl -o            {:7.2} s {:8.1} MiB/s",
        curl_best.secs,
        rate(curl_best.secs)
    );
    println!(
        "  curl -o + fsync    {:7.2} s {:8.1} MiB/s",
        curl_fsync_secs,
        rate(curl_fsync_secs)
    );
    println!(
        "  ratio              {:.2} of curl -o, {:.2} of curl -o + fsync (goal ≥ 0.80)",
        curl_best.secs / client_best.secs,
        curl_fsync_secs / client_best.secs
    );
    // The simulator serves in this process during both phases; curl's own CPU is its child's.
    println!(
        "  CPU seconds        client phase {:.2} (simulator + client); curl phase {:.2} simulator + {:.2} curl",
        client_best.cpu_self, curl_best.cpu_self, curl_best.cpu_children
    );
    println!(
        "  memory             peak RSS during the client download {} (baseline {}, growth {}); \
         the simulator alone grows {} serving curl; client share ≈ {} (goal < 64 MiB)",
        fmt_kib(client_best.peak_kib),
        fmt_kib(client_best.baseline_kib),
        fmt_kib(Some(client_growth)),
        fmt_kib(Some(sim_growth)),
        fmt_kib(Some(client_growth.saturating_sub(sim_growth))),
    );
    Ok(figures)
}

/// Transfers timed per size: the best of this many (alternating client and curl).
const ROUNDS: usize = 2;

/// One timed transfer: wall time, CPU time and peak memory.
#[derive(Debug, Clone, Copy)]
struct Phase {
    started: Option<Instant>,
    secs: f64,
    cpu_self: f64,
    cpu_children: f64,
    baseline_kib: Option<u64>,
    peak_kib: Option<u64>,
}

impl Default for Phase {
    fn default() -> Self {
        Self {
            started: None,
            secs: f64::MAX,
            cpu_self: 0.0,
            cpu_children: 0.0,
            baseline_kib: None,
            peak_kib: None,
        }
    }
}

impl Phase {
    fn start() -> Self {
        let (cpu_self, cpu_children) = cpu_secs();
        Self {
            baseline_kib: reset_peak(),
            started: Some(Instant::now()),
            cpu_self,
            cpu_children,
            ..Self::default()
        }
    }

    fn finish(self) -> Self {
        let (cpu_self, cpu_children) = cpu_secs();
        Self {
            secs: self.started.map_or(f64::MAX, |s| s.elapsed().as_secs_f64()),
            cpu_self: cpu_self - self.cpu_self,
            cpu_children: cpu_children - self.cpu_children,
            peak_kib: peak_kib(),
            ..self
        }
    }

    /// The faster of two transfers; memory is the worse of the two.
    fn best(self, other: Self) -> Self {
        let (mut fast, slow) = if other.secs < self.secs {
            (other, self)
        } else {
            (self, other)
        };
        if slow.peak_growth_kib() > fast.peak_growth_kib() && slow.peak_kib.is_some() {
            fast.baseline_kib = slow.baseline_kib;
            fast.peak_kib = slow.peak_kib;
        }
        fast
    }

    fn peak_growth_kib(&self) -> u64 {
        match (self.peak_kib, self.baseline_kib) {
            (Some(p), Some(b)) => p.saturating_sub(b),
            _ => 0,
        }
    }
}

/// CPU seconds (user + system) of this process and of its waited-for children, from
/// `/proc/self/stat` (clock ticks, assumed 100 per second as on every common Linux).
fn cpu_secs() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the parenthesised command name; utime is field 14 (index 11 here).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0.0) / 100.0;
    (get(11) + get(12), get(13) + get(14))
}

/// Fetches a token for curl (the client never hands its token out).
async fn fetch_token(sim: &mint_sim::Simulator) -> anyhow::Result<String> {
    #[derive(serde::Deserialize)]
    struct Token {
        access_token: String,
    }
    let token: Token = reqwest::Client::new()
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
    Ok(token.access_token)
}

/// Resets `VmHWM` to the current RSS and returns the current RSS (KiB), where Linux allows.
fn reset_peak() -> Option<u64> {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

fn peak_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn fmt_kib(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "n/a".into(),
    }
}
