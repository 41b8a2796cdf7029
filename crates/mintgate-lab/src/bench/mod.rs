//! `mintgate-lab bench …`: the benchmarks that hold the project's speed and memory goals. Each prints its
//! figures; none is a test (timings never decide whether a test passes).

pub mod archive;
pub mod burst;
pub mod download;
pub mod edge;
pub mod events;
pub mod fleet;
pub mod ingest;
pub mod quota;
pub mod reconcile;
pub mod replicas;
pub mod report;
pub mod sim;
pub mod soak;

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Mint → the archive (filesystem store at --size, moto at --s3-size), streamed and verified,
    /// beside curl to disk followed by a boto3 upload; peak RSS.
    Archive(archive::ArchiveBenchArgs),
    /// The simulator's serving rate: a 2 GiB result file over loopback, and small requests.
    Sim(mint_sim::bench::BenchArgs),
    /// The public listener under attack (slowloris, oversized, forged, signature lists): authentic
    /// webhooks acknowledged per second and p99 beside the same without the attack; RSS and fds.
    Edge(edge::EdgeArgs),
    /// Application events while the pipeline runs a burst: events delivered per second and the
    /// delivery lag p50/p99 at a local receiver that checks every signature.
    Events(events::EventsBenchArgs),
    /// Durable webhook ingest under load (wrk), optionally beside the Express + BullMQ peer.
    Ingest(ingest::IngestArgs),
    /// A burst of executions against a scaled budget: acceptance time, start rate, 429s.
    Burst(burst::BurstArgs),
    /// Download a result file to disk with mint-client, side by side with curl.
    Download {
        /// Size of the result file, e.g. 100MiB, 2GiB.
        #[arg(long, default_value = "2GiB", value_parser = parse_size)]
        size: u64,
        /// Where to write (a temporary folder by default).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print the figures as JSON (for `bench report`).
        #[arg(long)]
        json: bool,
    },
    /// Several replicas on PostgreSQL and Redis drain a burst of starts through one shared budget.
    Replicas {
        /// PostgreSQL server (a schema of its own is made and dropped).
        #[arg(
            long,
            env = "MINTGATE_BENCH_POSTGRES_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        database_url: String,
        #[arg(
            long,
            env = "MINTGATE_BENCH_REDIS_URL",
            default_value = "redis://127.0.0.1:6379"
        )]
        redis_url: String,
        #[arg(long, default_value_t = 200)]
        executions: usize,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        /// How much faster than real time the simulator and the replicas run.
        #[arg(long, default_value_t = 10.0)]
        time_scale: f64,
        /// Print the figures as JSON (for `bench report`).
        #[arg(long)]
        json: bool,
    },
    /// API units per archived execution: webhooks + fallback poller vs polling every 30 s and 2 s.
    Quota(quota::QuotaArgs),
    /// Reconciling a lost start on a flow of 10,000 and 100,000 instances with Mint's slow
    /// listing and lists without `input`: units and time (simulated and real), found or proven absent.
    Reconcile(reconcile::ReconcileArgs),
    /// The kill -9 soak: `serve` processes SIGKILLed at seeded moments against a faulty simulator,
    /// then checked against its truth (one start each, archived with Mint's SHA-256, nothing else
    /// in the archive, no 5xx). The lab's `soak` test runs a short one.
    Soak(SoakArgs),
    /// One Markdown page (with SVG charts) of every benchmark's figures beside its goal and its
    /// peer, from the `--json` output of the benchmarks saved as `<DIR>/<bench>.json`.
    Report(report::ReportArgs),
}

/// `bench soak`'s arguments.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 17)]
    seed: u64,
    #[arg(long, default_value_t = 200)]
    executions: usize,
    #[arg(long, default_value_t = 50)]
    kills: usize,
    /// PostgreSQL server (a schema of its own is made and dropped); without it, SQLite.
    #[arg(long, env = "MINTGATE_BENCH_POSTGRES_URL")]
    database_url: Option<String>,
    /// Redis server, with --database-url.
    #[arg(
        long,
        env = "MINTGATE_BENCH_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Replicas, with --database-url.
    #[arg(long, default_value_t = 2)]
    replicas: usize,
    /// The program run as `<program> --config <file> serve` (default: this one).
    #[arg(long)]
    service_binary: Option<PathBuf>,
    #[arg(long, default_value = "2MiB", value_parser = parse_size)]
    result_file_size: u64,
    /// The run fails if not done within this many minutes.
    #[arg(long, default_value_t = 30)]
    minutes: u64,
    /// Print the report as JSON (for `bench report`); progress goes to stderr either way.
    #[arg(long)]
    json: bool,
}

async fn run_soak(args: SoakArgs) -> anyhow::Result<()> {
    let service_binary = match args.service_binary {
        Some(path) => path,
        None => std::env::current_exe()?,
    };
    let schema = format!("soak_{}", uuid::Uuid::new_v4().simple());
    let backend = match &args.database_url {
        None => soak::Backend::Sqlite,
        Some(url) => {
            replicas::create_schema(url, &schema).await?;
            let separator = if url.contains('?') { '&' } else { '?' };
            soak::Backend::Postgres {
                database_url: format!("{url}{separator}options[search_path]={schema}"),
                redis_url: args.redis_url.clone(),
                replicas: args.replicas,
            }
        }
    };
    let report = soak::soak(soak::SoakOptions {
        seed: args.seed,
        executions: args.executions,
        kills: args.kills,
        backend,
        service_binary,
        result_file_bytes: args.result_file_size,
        deadline: std::time::Duration::from_secs(args.minutes * 60),
        verbose: true,
    })
    .await;
    if let Some(url) = &args.database_url {
        replicas::drop_schema(url, &schema).await;
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("mintgate-lab bench soak (seed {})\n{report}", args.seed);
    }
    anyhow::ensure!(
        report.violations.is_empty(),
        "the soak broke {} invariant(s)",
        report.violations.len()
    );
    Ok(())
}

/// Parses sizes such as `5MiB`, `2GiB`, `1000`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 100MiB, 2GiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KiB, MiB or GiB)"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs one benchmark.
pub async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Sim(args) => sim::run(args).await,
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Edge(args) => edge::run(args).await,
        BenchCommand::Burst(args) => burst::run(args).await,
        BenchCommand::Events(args) => events::run(args).await,
        BenchCommand::Download { size, dir, json } => {
            let temp = tempfile::tempdir()?;
            let dir = dir.unwrap_or_else(|| temp.path().to_path_buf());
            download::run(size, &dir, json).await
        }
        BenchCommand::Replicas {
            database_url,
            redis_url,
            executions,
            replicas,
            time_scale,
            json,
        } => {
            replicas::run(replicas::ReplicasArgs {
                database_url,
                redis_url,
                executions,
                replicas,
                time_scale,
                json,
            })
            .await
        }
        BenchCommand::Quota(args) => quota::run(args).await,
        BenchCommand::Reconcile(args) => reconcile::run(args).await,
        BenchCommand::Archive(args) => archive::run(args).await,
        BenchCommand::Soak(args) => run_soak(args).await,
        BenchCommand::Report(args) => report::run(&args),
    }
}

/// Serializes a duration as seconds (a float), as the figures' JSON does.
pub fn as_secs<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("100MiB"), Ok(100 << 20));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5PB").is_err());
    }
}
