//! Durable webhook ingest: acknowledged webhooks per second and latency, loaded by `wrk` exactly as
//! the field guide's Express + BullMQ recipe is (`../shared/peers/express-bullmq`), which this
//! benchmark can run side by side in the same run, with the same `wrk` settings (threads,
//! connections, seconds) and the peer's own request script, Redis without and with
//! `appendfsync always`.

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
    /// Concurrent connections, one run for each (the peer's own script uses 32).
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    pub connections: Vec<u32>,
    /// Also run the Express + BullMQ peer from this folder (e.g. ../shared/peers/express-bullmq).
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// Also measure the machine's ceiling: bare hyper answering every webhook `200` at once (no
    /// routing, no limits, no check, no store) under the same `wrk`.
    #[arg(long)]
    pub ceiling: bool,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// One system's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Figures {
    pub system: String,
    pub acks_per_second: f64,
    pub p50: String,
    pub p99: String,
    pub requests: u64,
    pub non_2xx: u64,
    /// Webhooks (mintgate) or jobs (the peer) stored during the run.
    pub stored: String,
    /// CPU time of mintgate's process (every thread; not `wrk`'s) per webhook stored, in µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_webhook: Option<f64>,
}

/// CPU time (user and system, every thread) this process has used, in seconds, from
/// `/proc/self/stat` (in ticks of 1/100 s, Linux's fixed `USER_HZ`); `None` where there is none.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) in parentheses: state is the
    // first, utime the 12th and stime the 13th.
    let mut fields = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// The figures at one number of connections.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub connections: u32,
    pub mintgate: Figures,
    /// The peer with Redis's `appendfsync always` (acknowledged durably, as mintgate does).
    pub peer: Option<Figures>,
    /// The peer with Redis's persistence off (acknowledged before anything is durable).
    pub peer_without_fsync: Option<Figures>,
    /// mintgate's rate over the peer's with `appendfsync always` (goal >= 3).
    pub ratio: Option<f64>,
    /// Bare hyper answering `200` with nothing behind it: what this machine and `wrk` allow.
    pub ceiling: Option<Figures>,
}

/// The figures of one run of the benchmark: `c<connections>` for each number of connections.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub seconds: u32,
    #[serde(flatten)]
    pub runs: std::collections::BTreeMap<String, Run>,
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
    let mut measured = Vec::new();
    for &connections in &args.connections {
        // Warm up, then measure.
        run_wrk(&url, &script, 1, connections).await?;
        let before = app.pipeline().store.overview().await?.webhooks_recorded;
        let cpu_before = process_cpu_seconds();
        let result = run_wrk(&url, &script, args.seconds, connections).await?;
        let cpu_after = process_cpu_seconds();
        let after = app.pipeline().store.overview().await?.webhooks_recorded;
        let stored = after - before;
        let cpu_us_per_webhook = cpu_before
            .zip(cpu_after)
            .filter(|_| stored > 0)
            .map(|(before, after)| (after - before) * 1e6 / stored as f64);
        measured.push((
            connections,
            Figures {
                system: "mintgate sqlite(WAL, synchronous=FULL, group commit)".to_owned(),
                acks_per_second: result.requests_per_sec,
                p50: result.p50,
                p99: result.p99,
                requests: result.requests,
                non_2xx: result.non_2xx,
                stored: stored.to_string(),
                cpu_us_per_webhook,
            },
        ));
    }
    app.shutdown().await;
    sim.shutdown().await;
    let mut ceilings = std::collections::BTreeMap::new();
    if args.ceiling {
        let (url, server) = ceiling_server().await?;
        for &connections in &args.connections {
            run_wrk(&url, &script, 1, connections).await?;
            let result = run_wrk(&url, &script, args.seconds, connections).await?;
            ceilings.insert(
                connections,
                Figures {
                    system: "ceiling: bare hyper answering 200, no store".to_owned(),
                    acks_per_second: result.requests_per_sec,
                    p50: result.p50,
                    p99: result.p99,
                    requests: result.requests,
                    non_2xx: result.non_2xx,
                    stored: "0".to_owned(),
                    cpu_us_per_webhook: None,
                },
            );
        }
        server.abort();
    }
    let installed = match &args.peer {
        Some(peer) => Some(install_peer(peer)?),
        None => None,
    };
    let mut runs = std::collections::BTreeMap::new();
    for (connections, mintgate) in measured {
        let (peer_without_fsync, peer) = match &installed {
            Some((_work, copy)) => {
                let (none, always) = run_peer(copy, args.seconds, connections).await?;
                (Some(none), Some(always))
            }
            None => (None, None),
        };
        let ratio = peer
            .as_ref()
            .filter(|f| f.acks_per_second > 0.0)
            .map(|f| mintgate.acks_per_second / f.acks_per_second);
        runs.insert(
            format!("c{connections}"),
            Run {
                connections,
                mintgate,
                peer,
                peer_without_fsync,
                ratio,
                ceiling: ceilings.remove(&connections),
            },
        );
    }
    let report = Report {
        seconds: args.seconds,
        runs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    for run in report.runs.values() {
        let others = [&run.peer_without_fsync, &run.peer, &run.ceiling];
        for figures in std::iter::once(&run.mintgate).chain(others.into_iter().flatten()) {
            println!(
                "{} connections={} acks_per_s={:.0} p50={} p99={} requests={} non2xx={} stored={}",
                figures.system,
                run.connections,
                figures.acks_per_second,
                figures.p50,
                figures.p99,
                figures.requests,
                figures.non_2xx,
                figures.stored
            );
            if let Some(cpu) = figures.cpu_us_per_webhook {
                println!("  cpu_us_per_webhook={cpu:.1} (mintgate's process, every thread)");
            }
        }
        if let Some(ratio) = run.ratio {
            println!(
                "connections={}: mintgate / peer with appendfsync always = {ratio:.2} (goal >= 3)",
                run.connections
            );
        }
    }
    Ok(())
}

/// The ceiling's server: hyper's HTTP/1 on the same runtime, reading each body and answering `200`
/// with the receiver's body, and nothing else. Answers its address and its accept loop.
async fn ceiling_server() -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let _ = http_body_util::BodyExt::collect(request.into_body()).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(
                                br#"{"received":true}"#,
                            )),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, server))
}

/// A writable copy of the peer's folder (shared/ is read-only) with its `npm install` done.
fn install_peer(peer: &Path) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
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
    Ok((work, copy))
}

/// Runs the installed peer with the same `wrk` settings as mintgate: Redis without, then with
/// `appendfsync always`.
async fn run_peer(
    copy: &Path,
    seconds: u32,
    connections: u32,
) -> anyhow::Result<(Figures, Figures)> {
    let mut figures = Vec::new();
    for (mode, durability) in [
        ("none", vec!["--appendonly", "no"]),
        (
            "always",
            vec!["--appendonly", "yes", "--appendfsync", "always"],
        ),
    ] {
        let data = tempfile::tempdir()?;
        let redis_port = free_port()?;
        let http_port = free_port()?;
        let mut redis = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(&durability)
            .arg("--dir")
            .arg(data.path())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server for the peer")?;
        wait_for_port(redis_port).await?;
        let mut node = tokio::process::Command::new("node")
            .arg(copy.join("server.js"))
            .env("PORT", http_port.to_string())
            .env("REDIS_PORT", redis_port.to_string())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the peer's server.js")?;
        wait_for_port(http_port).await?;
        let url = format!("http://127.0.0.1:{http_port}");
        let script = copy.join("post.lua");
        run_wrk(&url, &script, 1, connections).await?;
        let result = run_wrk(&url, &script, seconds, connections).await?;
        let jobs = std::process::Command::new("redis-cli")
            .args(["-p", &redis_port.to_string(), "eval"])
            .arg("return #redis.call('keys','bull:mint-downloads:[0-9]*')")
            .arg("0")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "?".to_owned());
        let _ = node.kill().await;
        let _ = redis.kill().await;
        figures.push(Figures {
            system: format!("peer express+bullmq redis_fsync={mode}"),
            acks_per_second: result.requests_per_sec,
            p50: result.p50,
            p99: result.p99,
            requests: result.requests,
            non_2xx: result.non_2xx,
            stored: jobs,
            cpu_us_per_webhook: None,
        });
    }
    let always = figures
        .pop()
        .context("the peer's run with appendfsync always")?;
    let none = figures.pop().context("the peer's run without fsync")?;
    Ok((none, always))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    bail!("nothing listens on 127.0.0.1:{port} after 10 s")
}
