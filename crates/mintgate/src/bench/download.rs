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

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mint_client::{DownloadOptions, FlowId, InstanceStatus, MintClient, MintConfig, StartInstance};
use secrecy::SecretString;

const MIB: f64 = 1024.0 * 1024.0;

/// Runs the benchmark for one file size, writing into `dir`.
pub async fn run(size_bytes: u64, dir: &Path) -> anyhow::Result<()> {
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
    let result = bench(&sim, size_bytes, dir).await;
    sim.shutdown().await;
    result
}

async fn bench(sim: &mint_sim::Simulator, size_bytes: u64, dir: &Path) -> anyhow::Result<()> {
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

    println!(
        "download benchmark: {} ({:.0} MiB), into {}",
        id,
        size_bytes as f64 / MIB,
        dir.display()
    );

    // mint-client: streaming, SHA-256, .part + fsync + atomic rename.
    let client_path = dir.join("mint-client.zip");
    let baseline_client = reset_peak();
    let started = Instant::now();
    let download = client
        .download_result_to_path(&id, &client_path, &DownloadOptions::default())
        .await?;
    let client_secs = started.elapsed().as_secs_f64();
    let peak_client = peak_kib();
    if download.sha256 != expected_sha || download.bytes != expected_len {
        bail!(
            "mint-client got a wrong file: {} bytes, sha256 {}",
            download.bytes,
            download.sha256
        );
    }
    let _ = tokio::fs::remove_file(&client_path).await;

    // curl -o, same file, same server; the token is passed in a header file, not on the command line.
    let token = fetch_token(sim).await?;
    let header_file = dir.join("curl-auth-header");
    tokio::fs::write(&header_file, format!("Authorization: Bearer {token}\n")).await?;
    let url = format!("{}/api/instances/{}/result-file", sim.base_url(), id);
    let curl_path = dir.join("curl.zip");
    let baseline_curl = reset_peak();
    let started = Instant::now();
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
    let curl_secs = started.elapsed().as_secs_f64();
    let peak_curl = peak_kib();
    let _ = tokio::fs::remove_file(&header_file).await;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let curl_len = tokio::fs::metadata(&curl_path).await?.len();
    let _ = tokio::fs::remove_file(&curl_path).await;
    if curl_len != expected_len {
        bail!("curl got {curl_len} bytes, expected {expected_len}");
    }

    let mb = size_bytes as f64 / MIB;
    let client_rate = mb / client_secs;
    let curl_rate = mb / curl_secs;
    let client_growth = kib_delta(peak_client, baseline_client);
    let sim_growth = kib_delta(peak_curl, baseline_curl);
    println!(
        "  mint-client  {client_secs:8.2} s  {client_rate:8.1} MiB/s  (SHA-256, fsync, rename; {} restarts)",
        download.restarts + download.resumes
    );
    println!("  curl -o      {curl_secs:8.2} s  {curl_rate:8.1} MiB/s");
    println!(
        "  ratio        {:.2} of curl's throughput (goal ≥ 0.80)",
        client_rate / curl_rate
    );
    println!(
        "  memory       process peak during the client download {} (baseline {}, growth {}); \
         simulator alone while serving curl grows {}; client share ≈ {} (goal < 64 MiB)",
        fmt_kib(peak_client),
        fmt_kib(baseline_client),
        fmt_kib(Some(client_growth)),
        fmt_kib(Some(sim_growth)),
        fmt_kib(Some(client_growth.saturating_sub(sim_growth))),
    );
    Ok(())
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

fn kib_delta(peak: Option<u64>, base: Option<u64>) -> u64 {
    match (peak, base) {
        (Some(p), Some(b)) => p.saturating_sub(b),
        _ => 0,
    }
}

fn fmt_kib(kib: Option<u64>) -> String {
    match kib {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "n/a".into(),
    }
}
