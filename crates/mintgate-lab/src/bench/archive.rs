//! `mintgate bench archive`: Mint (the in-process simulator) → the archive, exactly as the
//! downloader does it (streamed into a multipart upload, SHA-256 on the way, completed, verified by
//! reading it back), beside the two-step way a script would do it: `curl` to disk, then an upload
//! of the file with boto3.
//!
//! Stores: the local filesystem store (`file://`) at `--size` (default 2 GiB), and an S3-compatible
//! server (moto, `--s3-url`) at `--s3-size` (default 256 MiB): moto keeps every object in memory
//! (its RSS is reported), so the big size goes to the filesystem unless asked otherwise. The
//! boto3 baseline runs against moto only (boto3 speaks S3).
//!
//! Memory: the simulator shares the process. Before each phase the peak is reset to the current RSS
//! (`/proc/self/clear_refs`), so a phase's `VmHWM` is the peak during that phase; the service side's
//! share is the archive phase's growth minus the simulator's own growth while serving curl.
//!
//! Time: the filesystem phase runs two alternating rounds (mintgate, curl, mintgate, curl) and
//! keeps each side's best time, as `bench download` does: the disk of a shared machine varies from
//! one minute to the next, and a single round compared two different moments.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mint_client::{
    DownloadOptions, FlowId, InstanceId, InstanceStatus, MintClient, MintConfig, StartInstance,
};
use secrecy::SecretString;
use serde_json::json;

use mintgate::archive::{Archive, ArchiveConfig, Keyring, Manifest, MasterKey, UploadMeta};

const MIB: f64 = 1024.0 * 1024.0;

/// `bench archive` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ArchiveBenchArgs {
    /// Size of the result file archived into the local filesystem store, e.g. 2GiB.
    #[arg(long, default_value = "2GiB", value_parser = super::parse_size)]
    pub size: u64,
    /// Size of the result file archived into the S3-compatible server (moto keeps it in memory).
    #[arg(long, default_value = "256MiB", value_parser = super::parse_size)]
    pub s3_size: u64,
    /// The S3-compatible server (a bucket of its own is made); empty: skip the S3 part.
    #[arg(
        long,
        env = "MINTGATE_BENCH_S3_URL",
        default_value = "http://127.0.0.1:5055"
    )]
    pub s3_url: String,
    /// Seal the result with client-side encryption on the way (both stores).
    #[arg(long)]
    pub encrypt: bool,
    /// Where the filesystem store and curl's file go (a temporary folder by default).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Print the figures as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: ArchiveBenchArgs) -> anyhow::Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    tokio::fs::create_dir_all(&dir).await?;
    let mut cfg = mint_sim::SimConfig {
        limits: mint_sim::Limits::unlimited(),
        ..mint_sim::SimConfig::default()
    };
    for (id, bytes) in [
        ("flow-bench-file", args.size),
        ("flow-bench-s3", args.s3_size),
    ] {
        cfg.flows.push(mint_sim::FlowConfig {
            id: id.into(),
            definition_id: format!("def-{id}"),
            name: id.into(),
            description: String::new(),
            version: 1,
            is_latest: true,
            is_published: true,
            result_file_bytes: bytes,
            steps: vec![],
        });
    }
    let sim = mint_sim::Simulator::builder()
        .config(cfg)
        .start()
        .await
        .context("starting the simulator")?;
    let result = bench(&sim, &args, &dir).await;
    sim.shutdown().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

async fn bench(
    sim: &mint_sim::Simulator,
    args: &ArchiveBenchArgs,
    dir: &Path,
) -> anyhow::Result<serde_json::Value> {
    let client = MintClient::new(MintConfig::new(
        sim.base_url(),
        sim.token_url(),
        "demo",
        SecretString::from("demo-secret"),
    ))?;
    let token = fetch_token(sim).await?;
    let header_file = dir.join("curl-auth-header");
    tokio::fs::write(&header_file, format!("Authorization: Bearer {token}\n")).await?;
    let keys = Arc::new(if args.encrypt {
        Keyring::single(MasterKey::generate("bench"))
    } else {
        Keyring::default()
    });
    let mut report = serde_json::Map::new();

    // 1. The local filesystem store at the big size.
    let id = finished_instance(&client, "flow-bench-file").await?;
    let settings = ArchiveConfig {
        url: Some(
            url::Url::from_directory_path(dir.join("archive"))
                .map_err(|()| anyhow::anyhow!("bad dir"))?,
        ),
        ..ArchiveConfig::default()
    };
    let archive = Archive::open_with_keys(&settings, dir, keys.clone())?;
    if !args.json {
        println!(
            "archive benchmark: {:.0} MiB into {} (part {} MiB × {} in flight{})",
            args.size as f64 / MIB,
            archive.describe(),
            settings.part_bytes / (1024 * 1024),
            settings.part_concurrency,
            if args.encrypt {
                ", client-side encryption"
            } else {
                ""
            }
        );
    }
    // Alternating rounds, the best time of each side (the disk of a shared machine varies from
    // one minute to the next); for memory, the highest peak of mintgate's rounds and the lowest of
    // the simulator's alone (what is subtracted from it).
    let mut file: Option<Measured> = None;
    let mut curl: Option<Measured> = None;
    for round in 0..FILE_ROUNDS {
        // The folder is removed after each round: open it again (that makes it again).
        let fresh;
        let archive = if round == 0 {
            &archive
        } else {
            fresh = Archive::open_with_keys(&settings, dir, keys.clone())?;
            &fresh
        };
        let ours = archive_once(&client, archive, &id, args.size).await?;
        let _ = tokio::fs::remove_dir_all(dir.join("archive")).await;
        let theirs = curl_to_disk(sim, &id, &header_file, &dir.join("curl.zip"), args.size).await?;
        let _ = tokio::fs::remove_file(dir.join("curl.zip")).await;
        file = Some(file.map_or(ours, |best| best.best_with(ours, true)));
        curl = Some(curl.map_or(theirs, |best| best.best_with(theirs, false)));
    }
    let (Some(file), Some(curl)) = (file, curl) else {
        bail!("no round was run");
    };
    print_pair(args, "file://", args.size, &file, &curl, None);
    report.insert(
        "file".into(),
        json!({"bytes": args.size, "mintgate": file.json(), "curl_to_disk": curl.json()}),
    );

    // 2. The S3-compatible server at the S3 size, beside curl + boto3.
    if !args.s3_url.is_empty() {
        let id = finished_instance(&client, "flow-bench-s3").await?;
        let bucket = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let settings = ArchiveConfig {
            url: Some(format!("s3://{bucket}/mintgate").parse()?),
            endpoint: Some(args.s3_url.parse().context("--s3-url")?),
            region: Some("us-east-1".into()),
            access_key_id: Some("bench".into()),
            secret_access_key: Some(SecretString::from("bench")),
            ..ArchiveConfig::default()
        };
        let archive = Archive::open_with_keys(&settings, dir, keys.clone())?;
        archive
            .s3()
            .context("an S3 archive")?
            .create(false)
            .await
            .with_context(|| format!("creating a bucket on {} (is moto running?)", args.s3_url))?;
        let moto_before = moto_rss_kib();
        let s3 = archive_once(&client, &archive, &id, args.s3_size).await?;
        let moto_after = moto_rss_kib();
        let path = dir.join("curl-s3.zip");
        let curl = curl_to_disk(sim, &id, &header_file, &path, args.s3_size).await?;
        let boto = boto3_upload(&args.s3_url, &bucket, &path).await;
        let _ = tokio::fs::remove_file(&path).await;
        print_pair(args, "s3:// (moto)", args.s3_size, &s3, &curl, Some(&boto));
        if !args.json {
            println!(
                "  moto RSS           {} before, {} after the archive phase (it keeps objects in memory)",
                fmt_kib(moto_before),
                fmt_kib(moto_after)
            );
        }
        report.insert(
            "s3".into(),
            json!({
                "bytes": args.s3_size,
                "mintgate": s3.json(),
                "curl_to_disk": curl.json(),
                "boto3_upload": match &boto {
                    Ok(secs) => json!({"secs": secs}),
                    Err(error) => json!({"error": format!("{error:#}")}),
                },
                "moto_rss_kib_before": moto_before,
                "moto_rss_kib_after": moto_after,
            }),
        );
    }
    let _ = tokio::fs::remove_file(&header_file).await;
    Ok(serde_json::Value::Object(report))
}

async fn finished_instance(client: &MintClient, flow: &str) -> anyhow::Result<InstanceId> {
    let id = client
        .start_instance(&FlowId::new(flow)?, &StartInstance::default())
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
    Ok(id)
}

/// Rounds of the filesystem phase (mintgate, then curl, alternating); the best time of each counts.
const FILE_ROUNDS: usize = 2;

/// One measured phase.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Download + upload, until the upload completed.
    transfer_secs: f64,
    /// Verification (read back, decrypt, hash) and the manifest.
    verify_secs: f64,
    baseline_kib: Option<u64>,
    peak_kib: Option<u64>,
}

impl Measured {
    /// The faster transfer of two rounds (with its verification time), and the higher memory peak
    /// (`higher_peak`) or the lower one.
    fn best_with(self, other: Measured, higher_peak: bool) -> Measured {
        let faster = if other.transfer_secs < self.transfer_secs {
            other
        } else {
            self
        };
        let peak = if (other.growth_kib() > self.growth_kib()) == higher_peak {
            other
        } else {
            self
        };
        Measured {
            baseline_kib: peak.baseline_kib,
            peak_kib: peak.peak_kib,
            ..faster
        }
    }

    fn growth_kib(&self) -> u64 {
        match (self.peak_kib, self.baseline_kib) {
            (Some(p), Some(b)) => p.saturating_sub(b),
            _ => 0,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "transfer_secs": self.transfer_secs,
            "verify_secs": self.verify_secs,
            "peak_rss_kib": self.peak_kib,
            "baseline_rss_kib": self.baseline_kib,
            "peak_growth_kib": self.growth_kib(),
        })
    }
}

/// Mint → archive, as the downloader does it; checked against the simulator's own hash.
async fn archive_once(
    client: &MintClient,
    archive: &Archive,
    id: &InstanceId,
    size: u64,
) -> anyhow::Result<Measured> {
    let baseline_kib = reset_peak();
    let started = Instant::now();
    let meta = UploadMeta {
        execution_id: "bench".into(),
        instance_id: id.to_string(),
    };
    let finished_at = chrono::Utc::now();
    let mut upload = archive.begin(id.as_str(), finished_at, &meta).await?;
    let download = client
        .download_result_restartable(id, &mut upload, &DownloadOptions::default())
        .await?;
    let uploaded = upload.finish().await?;
    let transfer_secs = started.elapsed().as_secs_f64();
    let verify_started = Instant::now();
    let manifest = Manifest {
        execution_id: "bench".into(),
        environment: "sandbox".into(),
        flow_id: "flow-bench".into(),
        instance_id: id.to_string(),
        started_at: None,
        finished_at: Some(finished_at),
        deadline_at: None,
        archived_at: finished_at,
        bytes: download.bytes,
        sha256: download.sha256.clone(),
        location: String::new(),
        content_type: download.content_type.clone(),
        stored_bytes: None,
        stored_sha256: None,
        encryption: None,
        server_side_encryption: None,
        sse_kms_key_id: None,
        object_lock: None,
        purge_after: None,
        version_id: None,
    };
    archive.commit(&uploaded, manifest).await?;
    let verify_secs = verify_started.elapsed().as_secs_f64();
    let (expected, expected_len) = mint_sim::result_file_sha256(0, id.as_str(), size);
    if download.sha256 != expected || download.bytes != expected_len {
        bail!(
            "the archive got a wrong file: {} bytes, sha256 {}",
            download.bytes,
            download.sha256
        );
    }
    Ok(Measured {
        transfer_secs,
        verify_secs,
        baseline_kib,
        peak_kib: peak_kib(),
    })
}

/// `curl -o` (+ fsync), from the same simulator.
async fn curl_to_disk(
    sim: &mint_sim::Simulator,
    id: &InstanceId,
    header_file: &Path,
    path: &Path,
    size: u64,
) -> anyhow::Result<Measured> {
    let url = format!("{}/api/instances/{}/result-file", sim.base_url(), id);
    let baseline_kib = reset_peak();
    let started = Instant::now();
    let mut curl = std::process::Command::new("curl");
    curl.args(["-sS", "--fail", "-o"])
        .arg(path)
        .arg("-H")
        .arg(format!("@{}", header_file.display()))
        .arg(&url);
    let out = tokio::task::spawn_blocking(move || curl.output())
        .await?
        .context("running curl")?;
    if !out.status.success() {
        bail!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    tokio::fs::File::open(path).await?.sync_all().await?;
    let transfer_secs = started.elapsed().as_secs_f64();
    let len = tokio::fs::metadata(path).await?.len();
    if len != size {
        bail!("curl got {len} bytes, expected {size}");
    }
    Ok(Measured {
        transfer_secs,
        verify_secs: 0.0,
        baseline_kib,
        peak_kib: peak_kib(),
    })
}

/// Uploads a file with boto3 (`upload_file`: its default multipart transfer), timed by Python.
async fn boto3_upload(endpoint: &str, bucket: &str, path: &Path) -> anyhow::Result<f64> {
    let script = "import sys, time, boto3\n\
        s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='bench', aws_secret_access_key='bench')\n\
        t = time.perf_counter()\n\
        s3.upload_file(sys.argv[3], sys.argv[2], 'boto3/' + sys.argv[3].split('/')[-1])\n\
        print(time.perf_counter() - t)\n";
    let mut python = std::process::Command::new("python3");
    python
        .arg("-c")
        .arg(script)
        .arg(endpoint)
        .arg(bucket)
        .arg(path);
    let out = tokio::task::spawn_blocking(move || python.output())
        .await?
        .context("running python3 (boto3)")?;
    if !out.status.success() {
        bail!(
            "boto3 failed (pip install boto3): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("boto3's timing")
}

fn print_pair(
    args: &ArchiveBenchArgs,
    store: &str,
    size: u64,
    mintgate: &Measured,
    curl: &Measured,
    boto: Option<&anyhow::Result<f64>>,
) {
    if args.json {
        return;
    }
    let mb = size as f64 / MIB;
    let total = mintgate.transfer_secs + mintgate.verify_secs;
    println!("{store}, {mb:.0} MiB");
    println!(
        "  mintgate           {:7.2} s {:8.1} MiB/s  streamed Mint → store; + verify {:.2} s (read back{}) = {:.2} s, {:.1} MiB/s",
        mintgate.transfer_secs,
        mb / mintgate.transfer_secs,
        mintgate.verify_secs,
        if args.encrypt { ", decrypt" } else { "" },
        total,
        mb / total
    );
    println!(
        "  curl -o + fsync    {:7.2} s {:8.1} MiB/s",
        curl.transfer_secs,
        mb / curl.transfer_secs
    );
    if let Some(boto) = boto {
        match boto {
            Ok(secs) => println!(
                "  + boto3 upload     {:7.2} s {:8.1} MiB/s  (curl + boto3: {:.2} s, {:.1} MiB/s)",
                secs,
                mb / secs,
                curl.transfer_secs + secs,
                mb / (curl.transfer_secs + secs)
            ),
            Err(error) => println!("  boto3              not measured: {error:#}"),
        }
    }
    let growth = mintgate.growth_kib();
    let sim_growth = curl.growth_kib();
    println!(
        "  memory             peak RSS {} (baseline {}, growth {}); the simulator alone grows {} serving curl; service side ≈ {} (goal ≤ 64 MiB)",
        fmt_kib(mintgate.peak_kib),
        fmt_kib(mintgate.baseline_kib),
        fmt_kib(Some(growth)),
        fmt_kib(Some(sim_growth)),
        fmt_kib(Some(growth.saturating_sub(sim_growth)))
    );
}

/// A token for curl (the client never hands its token out).
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

/// The resident memory of the local moto server, if one runs (found by its command line).
fn moto_rss_kib() -> Option<u64> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "moto.server|moto_server"])
        .output()
        .ok()?;
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()?
        .trim()
        .to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

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
