//! `mintgate download`: streams an instance's result file to disk (into `PATH.part`, renamed when
//! complete), with a progress bar on a terminal and plain lines otherwise; size and SHA-256 at the
//! end.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
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
    /// Read the result from the service's archive instead of Mint: decrypted, checked against its
    /// manifest's SHA-256, no Mint units spent (works after Mint deleted its copy).
    #[arg(long)]
    from_archive: bool,
    #[command(flatten)]
    env: super::EnvArg,
    /// Print the outcome as JSON (progress, if any, goes to stderr).
    #[arg(long)]
    json: bool,
}

pub async fn run(args: DownloadArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    if args.from_archive {
        return from_archive(&args, &config).await;
    }
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
        progress_interval: if meter.terminal() {
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

/// `--from-archive`: the archived copy, decrypted and verified, into `PATH.part`, then renamed.
async fn from_archive(args: &DownloadArgs, config: &crate::config::Config) -> CliResult {
    use crate::archive::ManifestFile;
    let store = super::inspect::open_store(config, crate::store::OpenMode::ReadOnly).await?;
    let instance = mint_client::InstanceId::new(&args.instance_id)
        .map_err(|e| CliError::user(e.to_string()))?;
    let Some(execution) = store.execution_by_instance(&instance).await? else {
        return Err(CliError::user(format!(
            "the service archived no instance {}",
            args.instance_id
        ))
        .hint("only instances the service started are archived; `mintgate inspect ID` shows what it knows"));
    };
    if let Some(tombstone) = store.erasure(execution.id).await? {
        return Err(CliError::user(format!(
            "the result of instance {} was {} on {} by {}",
            args.instance_id,
            tombstone.kind,
            super::output::timestamp(tombstone.at),
            tombstone.operator
        )));
    }
    let Some(location) = execution.archive_path.clone() else {
        return Err(CliError::user(format!(
            "instance {} is not archived (yet): it is {}",
            args.instance_id,
            execution.state.as_str()
        )));
    };
    let archive = crate::app::open_archive(config).map_err(|e| CliError::user(format!("{e:#}")))?;
    let Some(key) = archive.key_of(&location) else {
        return Err(CliError::user(format!(
            "{location} is not in the configured archive ({})",
            archive.describe()
        ))
        .hint("after `mintgate archive migrate`, set `archive.url` to the target"));
    };
    let manifest = match archive.read_manifest(&key).await? {
        Some(ManifestFile::Intact(manifest)) => manifest,
        Some(ManifestFile::Tombstone(t)) => {
            return Err(CliError::user(format!(
                "the archived result was {} on {} by {}",
                t.removed, t.removed_at, t.removed_by
            )));
        }
        None => {
            return Err(CliError::remote(format!(
                "the manifest beside {location} is missing: the archive is damaged"
            )));
        }
    };
    let path = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.zip", args.instance_id)));
    if path.exists() && !args.force {
        return Err(CliError::user(format!("{} already exists", path.display()))
            .hint("choose another path with -o PATH, or replace it with --force"));
    }
    let mut part_name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    part_name.push(".part");
    let part = path.with_file_name(part_name);
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&part)
        .await
        .map_err(|e| CliError::user(format!("cannot write {}: {e}", part.display())))?;
    let copied = archive.copy_result(&manifest, &mut file).await;
    let (sha256, bytes) = match copied {
        Ok(read) => read,
        Err(error) => {
            let _ = tokio::fs::remove_file(&part).await;
            let wrong_key = error
                .chain()
                .any(|e| e.downcast_ref::<crate::archive::OpenError>().is_some());
            let error = CliError::remote(format!("{error:#}"));
            return Err(if wrong_key {
                CliError {
                    code: super::EXIT_USER,
                    ..error
                }
                .hint("the master key comes from `archive.encryption.key` (MINTGATE_ARCHIVE__ENCRYPTION__KEY) or `key_file`; older keys go in `archive.encryption.previous_keys`")
            } else {
                error
            });
        }
    };
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(CliError::remote(format!(
            "the archived copy reads as {bytes} bytes with SHA-256 {sha256}, but {} bytes with SHA-256 {} were archived: it is damaged",
            manifest.bytes, manifest.sha256
        )));
    }
    file.sync_all()
        .await
        .map_err(|e| CliError::remote(format!("writing {}: {e}", part.display())))?;
    drop(file);
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| CliError::remote(format!("renaming {}: {e}", part.display())))?;
    if args.json {
        print_json(&json!({
            "instanceId": args.instance_id,
            "path": path.display().to_string(),
            "bytes": bytes,
            "sha256": sha256,
            "from": location,
        }));
    } else {
        println!("saved {} (from the archive, verified)", path.display());
        println!("  size    {} ({} bytes)", human_bytes(bytes), bytes);
        println!("  sha256  {sha256}");
        println!("  from    {location}");
    }
    Ok(())
}

/// Shows a download's progress on stderr: an indicatif bar (bytes, rate, ETA) redrawn in place on a
/// terminal, a plain line every few seconds otherwise (logs and pipes get no control characters).
enum Meter {
    Bar(ProgressBar),
    Plain {
        started: Instant,
        state: Mutex<PlainState>,
    },
}

struct PlainState {
    last_line: Option<Instant>,
    last: Option<DownloadProgress>,
}

/// Least time between two plain progress lines.
const PLAIN_LINE_INTERVAL: Duration = Duration::from_secs(5);

/// `[=========>          ]  45%  2.20 MiB / 5.00 MiB  1.10 MiB/s  ETA 2s`
const BAR_TEMPLATE: &str = "[{bar:30}] {percent:>3}%  {binary_bytes} / {binary_total_bytes}  {binary_bytes_per_sec}  ETA {eta}{msg}";
/// Before the size is known (or when the server sends none).
const SPINNER_TEMPLATE: &str = "{spinner} {binary_bytes}  {binary_bytes_per_sec}  {elapsed}{msg}";

impl Meter {
    fn new(terminal: bool) -> Self {
        if terminal {
            Self::bar(ProgressDrawTarget::stderr())
        } else {
            Self::Plain {
                started: Instant::now(),
                state: Mutex::new(PlainState {
                    last_line: None,
                    last: None,
                }),
            }
        }
    }

    fn bar(target: ProgressDrawTarget) -> Self {
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style(SPINNER_TEMPLATE));
        Self::Bar(bar)
    }

    fn terminal(&self) -> bool {
        matches!(self, Self::Bar(_))
    }

    fn begin(&self, id: &InstanceId, path: &Path) {
        let line = format!("downloading the result file of {id} to {}", path.display());
        match self {
            // Above the bar, whether or not it has been drawn yet.
            Self::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            Self::Plain { .. } => eprintln!("{line}"),
        }
    }

    fn update(&self, progress: DownloadProgress) {
        match self {
            Self::Bar(bar) => {
                if let Some(total) = progress.total.filter(|t| *t > 0)
                    && bar.length() != Some(total)
                {
                    bar.set_length(total);
                    bar.set_style(style(BAR_TEMPLATE).progress_chars("=> "));
                }
                if progress.attempt > 1 {
                    bar.set_message(format!("  (attempt {})", progress.attempt));
                }
                bar.set_position(progress.bytes);
            }
            Self::Plain { started, state } => {
                let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
                state.last = Some(progress);
                // The first line only after an interval: a quick download shows just its last line.
                let since = state.last_line.map_or(started.elapsed(), |at| at.elapsed());
                let due = since >= PLAIN_LINE_INTERVAL;
                let complete = progress.total.is_some_and(|t| progress.bytes >= t);
                if due && !complete {
                    eprintln!("{}", plain_line(progress, started.elapsed()));
                    state.last_line = Some(Instant::now());
                }
            }
        }
    }

    fn end(&self) {
        match self {
            // Leaves the last state drawn (`finish` would claim 100 % after a failure).
            Self::Bar(bar) => bar.abandon(),
            Self::Plain { started, state } => {
                let state = state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(progress) = state.last {
                    eprintln!("{}", plain_line(progress, started.elapsed()));
                }
            }
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a test renders both.
    ProgressStyle::with_template(template).expect("a valid progress template")
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
    use indicatif::TermLike;

    use super::*;

    /// A terminal that keeps the lines drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<Vec<String>>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.write_str(s)
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            // Blank writes pad a shorter line over a longer one.
            if !s.trim().is_empty() {
                self.0.lock().unwrap().push(s.to_owned());
            }
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn on_a_terminal_the_bar_shows_bytes_of_total_rate_and_eta() {
        let screen = Screen::default();
        let meter = Meter::bar(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        assert!(meter.terminal());
        let mib = 1024 * 1024;
        for (bytes, attempt) in [(mib, 1), (0, 2), (3 * mib, 2), (4 * mib, 2)] {
            meter.update(DownloadProgress {
                bytes,
                total: Some(4 * mib),
                attempt,
            });
        }
        meter.end();
        let last = screen.0.lock().unwrap().last().cloned().unwrap();
        assert!(
            last.starts_with("[==============================] 100%  4.00 MiB / 4.00 MiB  "),
            "{last}"
        );
        assert!(last.contains("/s  ETA "), "rate and ETA: {last}");
        assert!(last.ends_with("  (attempt 2)"), "{last}");
    }

    #[test]
    fn a_failed_download_leaves_the_bar_where_it_stopped() {
        let screen = Screen::default();
        let meter = Meter::bar(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        meter.update(DownloadProgress {
            bytes: 1024 * 1024,
            total: Some(4 * 1024 * 1024),
            attempt: 1,
        });
        meter.end();
        let last = screen.0.lock().unwrap().last().cloned().unwrap();
        assert!(
            last.starts_with("[=======>                      ]  25%  1.00 MiB / 4.00 MiB"),
            "{last}"
        );
    }

    #[test]
    fn without_a_size_the_bar_shows_bytes_and_rate() {
        let screen = Screen::default();
        let meter = Meter::bar(ProgressDrawTarget::term_like(Box::new(screen.clone())));
        meter.update(DownloadProgress {
            bytes: 512 * 1024,
            total: None,
            attempt: 1,
        });
        meter.end();
        let last = screen.0.lock().unwrap().last().cloned().unwrap();
        assert!(last.contains(" 512.00 KiB  "), "{last}");
        assert!(last.contains("/s  "), "{last}");
    }

    #[test]
    fn piped_lines_show_bytes_of_total_rate_and_time_left() {
        let progress = DownloadProgress {
            bytes: 1024 * 1024,
            total: Some(4 * 1024 * 1024),
            attempt: 1,
        };
        assert_eq!(
            plain_line(progress, Duration::from_secs(1)),
            "downloaded 1.0 MiB of 4.0 MiB (25 %) at 1.0 MiB/s, about 0:03 left"
        );
    }
}
