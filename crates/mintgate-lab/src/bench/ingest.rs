//! Durable webhook ingest: acknowledged webhooks per second and latency, loaded by `wrk` exactly as
//! the field guide's Express + BullMQ recipe is (`../shared/peers/express-bullmq`), which this
//! benchmark can run side by side in the same run.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use secrecy::SecretString;

use mintgate::app::{Application, BuildOptions};
use mintgate::config::{Config, DatabaseUrl, ServiceConfig, WebhookAuth, WebhookConfig};

const SECRET: &str = "bench-webhook-secret-0123456789";

/// Options of `mintgate-lab bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Seconds of load per run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Concurrent connections (the peer's script uses 32).
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Also run the Express + BullMQ peer from this folder (e.g. ../shared/peers/express-bullmq).
    #[arg(long)]
    pub peer: Option<PathBuf>,
}

struct WrkResult {
    requests_per_sec: f64,
    p50: String,
    p99: String,
    requests: u64,
    non_2xx: u64,
}

fn wrk_script(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("post.lua");
    let script = format!(
        r#"-- POST a Finished webhook with a distinct body each time (per thread and per run), with the shared secret.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{{"instanceId":"inst-%d-%d-%d","flowId":"flow-kyc-basic","status":"Finished"}}', tid or 0, math.random(1, 1e9), counter)
  return wrk.format("POST", "/webhooks/mint", {{["Content-Type"] = "application/json", ["X-Mint-Webhook-Secret"] = "{SECRET}"}}, body)
end
function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0))
end
"#
    );
    std::fs::write(&path, script)?;
    Ok(path)
}

async fn run_wrk(
    url: &str,
    script: &Path,
    seconds: u32,
    connections: u32,
) -> anyhow::Result<WrkResult> {
    let (url, script) = (url.to_owned(), script.to_owned());
    // wrk blocks: run it off the async workers, which serve the webhooks meanwhile.
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("wrk")
            .arg("-t2")
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg("--latency")
            .arg("-s")
            .arg(&script)
            .arg(&url)
            .output()
    })
    .await?
    .context("running wrk (install it with `apt-get install wrk`)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let field = |prefix: &str, index: usize| -> Option<String> {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(index).map(str::to_owned))
    };
    Ok(WrkResult {
        requests_per_sec: field("Requests/sec:", 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        p50: field("50%", 1).unwrap_or_default(),
        p99: field("99%", 1).unwrap_or_default(),
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        non_2xx: field("Non-2xx", 4)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// Runs the benchmark and prints one line per system measured.
pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let sim = mint_sim::Simulator::builder().start().await?;
    let mint = crate::simulator_profiles(&sim, "demo");
    let config = Config {
        listeners: mintgate::config::ListenersConfig::combined(),
        service: ServiceConfig {
            database_url: DatabaseUrl::sqlite_file(&temp.path().join("mintgate.db")),
            archive_dir: temp.path().join("archive"),
            api_keys: vec![mintgate::config::ApiKey::admin("bench-api-key-0123456789")],
            ..ServiceConfig::default()
        },
        webhook: WebhookConfig {
            auth: WebhookAuth::SharedSecret,
            secret: Some(SecretString::from(SECRET)),
            ..WebhookConfig::default()
        },
        pipeline: Default::default(),
        archive: mintgate::archive::ArchiveConfig::default(),
        default_environment: "sandbox".to_owned(),
        mint,
        telemetry: Default::default(),
        events: Default::default(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let app = Application::build(
        config.clone(),
        BuildOptions {
            run_workers: false,
            listener: Some(listener),
            ..BuildOptions::default()
        },
    )
    .await?;
    let url = format!("http://{}", app.address());
    let script = wrk_script(temp.path())?;
    // Warm up, then measure.
    run_wrk(&url, &script, 1, args.connections).await?;
    let before = app.pipeline().store.overview().await?.webhooks_recorded;
    let result = run_wrk(&url, &script, args.seconds, args.connections).await?;
    let after = app.pipeline().store.overview().await?.webhooks_recorded;
    app.shutdown().await;
    sim.shutdown().await;
    println!(
        "mintgate sqlite(WAL, synchronous=FULL, group commit) acks_per_s={:.0} p50={} p99={} requests={} non2xx={} webhooks_stored={}",
        result.requests_per_sec,
        result.p50,
        result.p99,
        result.requests,
        result.non_2xx,
        after - before
    );
    if let Some(peer) = args.peer {
        run_peer(&peer, args.seconds).await?;
    }
    Ok(())
}

async fn run_peer(peer: &Path, seconds: u32) -> anyhow::Result<()> {
    let work = tempfile::tempdir()?;
    let copy = work.path().join("peer");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(peer)
        .arg(&copy)
        .status()?;
    if !status.success() {
        bail!("copying the peer from {}", peer.display());
    }
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&copy)
        .status()?;
    let install = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent"])
        .current_dir(&copy)
        .status()
        .context("running npm install for the peer")?;
    if !install.success() {
        bail!("npm install failed for the peer");
    }
    let output = std::process::Command::new("bash")
        .arg(copy.join("bench.sh"))
        .arg(seconds.to_string())
        .current_dir(&copy)
        .output()
        .context("running the peer's bench.sh")?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    if !output.status.success() {
        bail!(
            "the peer's benchmark failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
