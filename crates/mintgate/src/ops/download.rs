//! `mintgate download`: streams an instance's result file to disk (into `PATH.part`, renamed when
//! complete), with a progress bar on a terminal and plain lines otherwise; size and SHA-256 at the
//! end.

use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mint_client::{DownloadOptions, DownloadProgress, Error as MintError, InstanceId};
use serde_json::json;

use super::output::{CliError, CliResult, human_bytes, print_json};

#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// The Mint instance id.
    #[arg(value_name = "INSTANCE_ID")]
    instance_id: String,
    /// Where to write the file (default: `<instance id>.zip` in the current folder).
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Replace the file if it exists.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    env: super::EnvArg,
    /// Print the outcome as JSON (progress, if any, goes to stderr).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DownloadArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let (name, profile) = super::pick_profile(&config, &args.env)?;
    let client = super::client_for(&name, profile)?;
    let id = InstanceId::new(&args.instance_id).map_err(|e| CliError::user(e.to_string()))?;
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{id}.zip")));
    if path.exists() && !args.force {
        return Err(CliError::user(format!("{} already exists", path.display()))
            .hint("choose another path with -o PATH, or replace it with --force"));
    }
    let meter = Arc::new(Meter::new(std::io::stderr().is_terminal()));
    let options = DownloadOptions {
        progress: Some({
            let meter = meter.clone();
            Arc::new(move |p: DownloadProgress| meter.update(p))
        }),
        progress_interval: if meter.terminal {
            Duration::from_millis(100)
        } else {
            Duration::from_millis(250)
        },
        ..DownloadOptions::default()
    };
    meter.begin(&id, &path);
    let result = client.download_result_to_path(&id, &path, &options).await;
    meter.end();
    let download = result.map_err(|e| match e {
        MintError::NotReady { .. } => CliError::user(e.to_string())
            .hint(format!("`mintgate status {id}` says what it is waiting for")),
        MintError::NotFound { .. } => CliError::user(format!(
            "Mint has no instance {id} in the {name} environment"
        ))
        .hint("either the id is wrong (another environment? try --env), or Mint deleted the instance 30 days after it ended")
        .hint(format!("`mintgate inspect {id}` shows what the service archived")),
        e => CliError::from_mint(&e, &name),
    })?;
    if args.json {
        print_json(&json!({
            "instanceId": id.as_str(),
            "path": path.display().to_string(),
            "bytes": download.bytes,
            "sha256": download.sha256,
            "restarts": download.restarts,
            "resumes": download.resumes,
            "elapsedSecs": download.elapsed.as_secs_f64(),
        }));
    } else {
        println!("saved {}", path.display());
        println!(
            "  size    {} ({} bytes)",
            human_bytes(download.bytes),
            download.bytes
        );
        println!("  sha256  {}", download.sha256);
        if download.restarts + download.resumes > 0 {
            println!(
                "  the connection was cut: {} restart(s), {} resume(s)",
                download.restarts, download.resumes
            );
        }
    }
    Ok(())
}

/// Shows a download's progress on stderr: a bar redrawn in place on a terminal, a plain line every
/// few seconds otherwise (logs and pipes get no control characters).
struct Meter {
    terminal: bool,
    started: Instant,
    state: Mutex<MeterState>,
}

struct MeterState {
    last_line: Option<Instant>,
    last: Option<DownloadProgress>,
    drawn: bool,
}

/// Least time between two plain progress lines.
const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

impl Meter {
    fn new(terminal: bool) -> Self {
        Self {
            terminal,
            started: Instant::now(),
            state: Mutex::new(MeterState {
                last_line: None,
                last: None,
                drawn: false,
            }),
        }
    }

    fn begin(&self, id: &InstanceId, path: &Path) {
        eprintln!("downloading the result file of {id} to {}", path.display());
    }

    fn update(&self, progress: DownloadProgress) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.last = Some(progress);
        let elapsed = self.started.elapsed();
        if self.terminal {
            let line = bar_line(progress, elapsed);
            // \r and "erase line": redraw in place.
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
            state.drawn = true;
        } else {
            // The first line only after an interval: a quick download shows just its last line.
            let since = state.last_line.map_or(elapsed, |at| at.elapsed());
            let due = since >= PLAIN_LINE_INTERVAL;
            let complete = progress.total.is_some_and(|t| progress.bytes >= t);
            if due && !complete {
                eprintln!("{}", plain_line(progress, elapsed));
                state.last_line = Some(Instant::now());
            }
        }
    }

    fn end(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.terminal && state.drawn {
            if let Some(progress) = state.last {
                eprint!("\r\x1b[2K{}\n", bar_line(progress, self.started.elapsed()));
            } else {
                eprintln!();
            }
        } else if let Some(progress) = state.last {
            eprintln!("{}", plain_line(progress, self.started.elapsed()));
        }
    }
}

fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64().max(0.001)
}

fn eta(progress: DownloadProgress, elapsed: Duration) -> Option<Duration> {
    let total = progress.total?;
    let rate = rate(progress.bytes, elapsed);
    if rate <= 0.0 || progress.bytes == 0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        total.saturating_sub(progress.bytes) as f64 / rate,
    ))
}

fn clock(duration: Duration) -> String {
    let secs = duration.as_secs();
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// `[=========>          ]  45%  2.2 MiB / 5.0 MiB  1.1 MiB/s  ETA 0:02`
fn bar_line(progress: DownloadProgress, elapsed: Duration) -> String {
    let speed = format!("{}/s", human_bytes(rate(progress.bytes, elapsed) as u64));
    let attempt = if progress.attempt > 1 {
        format!("  (attempt {})", progress.attempt)
    } else {
        String::new()
    };
    match progress.total {
        Some(total) if total > 0 => {
            let fraction = (progress.bytes as f64 / total as f64).clamp(0.0, 1.0);
            let filled = (fraction * BAR_WIDTH as f64) as usize;
            let mut bar = "=".repeat(filled);
            if filled < BAR_WIDTH {
                bar.push('>');
                bar.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
            }
            let eta = eta(progress, elapsed)
                .map(|d| format!("ETA {}", clock(d)))
                .unwrap_or_else(|| "ETA -:--".to_owned());
            format!(
                "[{bar}] {:>3.0}%  {} / {}  {speed}  {eta}{attempt}",
                fraction * 100.0,
                human_bytes(progress.bytes),
                human_bytes(total)
            )
        }
        _ => format!(
            "{}  {speed}  {}{attempt}",
            human_bytes(progress.bytes),
            clock(elapsed)
        ),
    }
}

/// `downloaded 2.2 MiB of 5.0 MiB (45 %) at 1.1 MiB/s, about 0:02 left`
fn plain_line(progress: DownloadProgress, elapsed: Duration) -> String {
    let speed = format!("{}/s", human_bytes(rate(progress.bytes, elapsed) as u64));
    match progress.total {
        Some(total) if total > 0 => {
            let percent = progress.bytes as f64 * 100.0 / total as f64;
            let left = eta(progress, elapsed)
                .filter(|_| progress.bytes < total)
                .map(|d| format!(", about {} left", clock(d)))
                .unwrap_or_default();
            format!(
                "downloaded {} of {} ({percent:.0} %) at {speed}{left}",
                human_bytes(progress.bytes),
                human_bytes(total)
            )
        }
        _ => format!("downloaded {} at {speed}", human_bytes(progress.bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_shows_bytes_rate_and_eta() {
        let progress = DownloadProgress {
            bytes: 1024 * 1024,
            total: Some(4 * 1024 * 1024),
            attempt: 1,
        };
        let line = bar_line(progress, Duration::from_secs(1));
        assert_eq!(
            line,
            "[=======>                      ]  25%  1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:03"
        );
        assert_eq!(
            plain_line(progress, Duration::from_secs(1)),
            "downloaded 1.0 MiB of 4.0 MiB (25 %) at 1.0 MiB/s, about 0:03 left"
        );
    }
}
