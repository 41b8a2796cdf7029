//! Streaming result-file downloads: constant memory, SHA-256 and byte count on the way, stall
//! detection instead of a total timeout, restart from zero or resume with `Range` after a cut, and
//! the result-file check ([`crate::ResultFileValidator`]) before the writer is flushed.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{self, HeaderValue};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::client::{MintClient, Reply, Req, Want};
use crate::error::{BoxError, DownloadErrorKind, Error, Operation};
use crate::ids::InstanceId;
use crate::result_file::{InvalidResultFile, ResultFileLimits, ResultFileValidator, ZipSummary};
use crate::retry::backoff_delay;

/// Write buffer of [`MintClient::download_result_to_path`] (the memory a download holds, with the
/// HTTP stack's own buffers).
const FILE_BUFFER_BYTES: usize = 1024 * 1024;

/// Progress of a download, as given to [`DownloadOptions::progress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Bytes of the file received so far (after a restart from zero this starts again).
    pub bytes: u64,
    /// The file's size, when the server said.
    pub total: Option<u64>,
    /// The attempt (1 + restarts + resumes).
    pub attempt: u32,
}

/// A progress callback. Called at most every `progress_interval` and once at the end; keep it cheap.
pub type ProgressFn = Arc<dyn Fn(DownloadProgress) + Send + Sync>;

/// How a download behaves. There is deliberately no total timeout: a 2 GB file may take a while.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Longest wait for the answer headers and the first body byte of an attempt.
    pub first_byte_timeout: Duration,
    /// A transfer slower than this over `rate_window` is a stall (treated like a cut connection).
    pub min_rate_bytes_per_sec: u64,
    /// See `min_rate_bytes_per_sec`.
    pub rate_window: Duration,
    /// Restarts (or resumes) after a cut or a stall before giving up.
    pub max_restarts: u32,
    /// Resume with `Range: bytes=N-` when the server advertised `Accept-Ranges: bytes`.
    pub resume: bool,
    /// Progress callback.
    pub progress: Option<ProgressFn>,
    /// Least time between two progress calls.
    pub progress_interval: Duration,
    /// Check that the answer is a ZIP result file (`Content-Type`, `Content-Length`, structure)
    /// before flushing the writer (default `true`). Turn it off only to fetch something that is
    /// knowingly not a result file.
    pub check_result_file: bool,
    /// Bounds of that check (the central directory size it reads).
    pub result_file_limits: ResultFileLimits,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            first_byte_timeout: Duration::from_secs(60),
            min_rate_bytes_per_sec: 16 * 1024,
            rate_window: Duration::from_secs(30),
            max_restarts: 3,
            resume: true,
            progress: None,
            progress_interval: Duration::from_millis(250),
            check_result_file: true,
            result_file_limits: ResultFileLimits::default(),
        }
    }
}

impl fmt::Debug for DownloadOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadOptions")
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("min_rate_bytes_per_sec", &self.min_rate_bytes_per_sec)
            .field("rate_window", &self.rate_window)
            .field("max_restarts", &self.max_restarts)
            .field("resume", &self.resume)
            .field("progress", &self.progress.is_some())
            .field("check_result_file", &self.check_result_file)
            .field("result_file_limits", &self.result_file_limits)
            .finish()
    }
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Download {
    /// Bytes written (the file's size).
    pub bytes: u64,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: String,
    /// Restarts from zero after a cut or a stall.
    pub restarts: u32,
    /// Resumptions with `Range` after a cut or a stall.
    pub resumes: u32,
    /// `Content-Type` of the answer.
    pub content_type: Option<String>,
    /// Wall time, first request to last byte.
    pub elapsed: Duration,
    /// What the result-file check found (`None` when it was turned off).
    pub zip: Option<ZipSummary>,
}

/// A writer that can throw away what it received, so a download can restart from byte zero.
pub trait RestartableWrite: AsyncWrite + Unpin + Send {
    /// Discards everything written so far (truncates to zero).
    fn restart(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

impl RestartableWrite for tokio::fs::File {
    async fn restart(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.set_len(0).await?;
        self.seek(io::SeekFrom::Start(0)).await?;
        Ok(())
    }
}

impl RestartableWrite for tokio::io::BufWriter<tokio::fs::File> {
    async fn restart(&mut self) -> io::Result<()> {
        self.flush().await?;
        self.get_mut().restart().await
    }
}

impl RestartableWrite for Vec<u8> {
    async fn restart(&mut self) -> io::Result<()> {
        self.clear();
        Ok(())
    }
}

/// Where the bytes go.
trait Sink: Send {
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = io::Result<()>> + Send;
    /// Truncates to zero; `None` if this sink cannot.
    fn restart(&mut self) -> Option<impl Future<Output = io::Result<()>> + Send>;
    fn finish(&mut self) -> impl Future<Output = io::Result<()>> + Send;
}

struct Plain<'w, W: ?Sized>(&'w mut W);

impl<W: AsyncWrite + Unpin + Send + ?Sized> Sink for Plain<'_, W> {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.write_all(chunk).await
    }
    fn restart(&mut self) -> Option<impl Future<Output = io::Result<()>> + Send> {
        None::<std::future::Ready<io::Result<()>>>
    }
    async fn finish(&mut self) -> io::Result<()> {
        self.0.flush().await
    }
}

struct Restartable<'w, W>(&'w mut W);

impl<W: RestartableWrite> Sink for Restartable<'_, W> {
    async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.0.write_all(chunk).await
    }
    fn restart(&mut self) -> Option<impl Future<Output = io::Result<()>> + Send> {
        Some(self.0.restart())
    }
    async fn finish(&mut self) -> io::Result<()> {
        self.0.flush().await
    }
}

/// How one attempt ended.
enum AttemptEnd {
    Complete,
    /// The bytes are not a result file: stop, keep nothing.
    Refused(InvalidResultFile),
    /// Cut, stalled or too slow: restart or resume.
    Broken(DownloadErrorKind, Option<BoxError>),
}

/// Parses `Content-Range: bytes START-END/TOTAL`.
pub(crate) fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, end.parse().ok()?, total))
}

/// Opens (creates or truncates) the `.part` file: readable by its owner only (`0600`), and never
/// through a symbolic link (`O_NOFOLLOW`), so a link planted at that name cannot redirect a result
/// (personal data) into another file.
async fn open_part(part: &Path) -> io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600).custom_flags(libc::O_NOFOLLOW);
    options.open(part).await
}

/// `path` + `.part`.
pub(crate) fn part_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

impl MintClient {
    /// Streams the result file of an instance into `writer` (5 budget units per attempt).
    ///
    /// Limitation: a generic writer cannot be rewound, so after a cut connection this can only
    /// *resume* (when the server offers `Accept-Ranges: bytes`); otherwise it fails with
    /// [`DownloadErrorKind::CannotRestart`]. Use [`MintClient::download_result_restartable`] or
    /// [`MintClient::download_result_to_path`] to restart from zero.
    pub async fn download_result<W>(
        &self,
        id: &InstanceId,
        writer: &mut W,
        opts: &DownloadOptions,
    ) -> Result<Download, Error>
    where
        W: AsyncWrite + Unpin + Send + ?Sized,
    {
        self.download_into(id, &mut Plain(writer), opts).await
    }

    /// Like [`MintClient::download_result`], into a writer that can be truncated, so a cut connection
    /// restarts the download from zero when resuming is not possible.
    pub async fn download_result_restartable<W>(
        &self,
        id: &InstanceId,
        writer: &mut W,
        opts: &DownloadOptions,
    ) -> Result<Download, Error>
    where
        W: RestartableWrite,
    {
        self.download_into(id, &mut Restartable(writer), opts).await
    }

    /// Downloads the result file to `path` safely: into `path.part`, fsync, atomic rename onto `path`,
    /// fsync of the directory. On failure the `.part` file is removed and `path` is untouched.
    pub async fn download_result_to_path(
        &self,
        id: &InstanceId,
        path: &Path,
        opts: &DownloadOptions,
    ) -> Result<Download, Error> {
        let io_err = |e: io::Error| Error::Download {
            instance_id: id.clone(),
            kind: DownloadErrorKind::Io,
            source: Some(Box::new(e)),
        };
        let part = part_path(path);
        let file = open_part(&part).await.map_err(io_err)?;
        // Few, large writes: each write of a tokio `File` is a hop to the blocking pool.
        let mut file = tokio::io::BufWriter::with_capacity(FILE_BUFFER_BYTES, file);
        let result = self
            .download_into(id, &mut Restartable(&mut file), opts)
            .await;
        let file = file.into_inner();
        let finished = match result {
            Ok(d) => async {
                file.sync_all().await?;
                drop(file);
                tokio::fs::rename(&part, path).await?;
                sync_dir(path).await?;
                Ok::<_, io::Error>(d)
            }
            .await
            .map_err(io_err),
            Err(e) => Err(e),
        };
        if finished.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        finished
    }

    async fn download_into<S: Sink>(
        &self,
        id: &InstanceId,
        sink: &mut S,
        opts: &DownloadOptions,
    ) -> Result<Download, Error> {
        let started = Instant::now();
        let fail = |kind, source| Error::Download {
            instance_id: id.clone(),
            kind,
            source,
        };
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        let mut total: Option<u64> = None;
        let mut ranges = false;
        let mut if_range: Option<HeaderValue> = None;
        let mut content_type = None;
        let mut check: Option<ResultFileValidator> = None;
        let (mut restarts, mut resumes, mut attempt) = (0u32, 0u32, 0u32);
        let mut last_progress: Option<Instant> = None;
        let mut report = |bytes: u64, total: Option<u64>, attempt: u32, force: bool| {
            if let Some(cb) = &opts.progress {
                let now = Instant::now();
                if force || last_progress.is_none_or(|t| now - t >= opts.progress_interval) {
                    last_progress = Some(now);
                    cb(DownloadProgress {
                        bytes,
                        total,
                        attempt,
                    });
                }
            }
        };
        loop {
            attempt += 1;
            let resuming = written > 0;
            let range = format!("bytes={written}-");
            let mut req = Req {
                instance_id: Some(id),
                resource: format!("result file of instance {id}"),
                send_timeout: Some(opts.first_byte_timeout),
                ..Req::new(
                    Operation::ResultFile,
                    vec!["instances", id.as_str(), "result-file"],
                )
            };
            if resuming {
                req = req.header(header::RANGE, HeaderValue::from_str(&range).expect("ascii"));
                if let Some(v) = &if_range {
                    req = req.header(header::IF_RANGE, v.clone());
                }
            }
            let attempt_started = Instant::now();
            let resp = match self.execute(&req, Want::Headers).await {
                Ok(Reply::Stream(resp)) => resp,
                Ok(Reply::Body { .. }) => unreachable!("Want::Headers answers with a stream"),
                // A restart or resume that meets an outage: say how far the download had come.
                Err(e) if attempt > 1 && e.kind() == crate::error::ErrorKind::Outage => {
                    return Err(fail(
                        DownloadErrorKind::Interrupted {
                            bytes: written,
                            restarts: restarts + resumes,
                        },
                        Some(Box::new(e)),
                    ));
                }
                Err(e) => return Err(e),
            };
            let status = resp.status().as_u16();
            let headers = resp.headers();
            let header_str = |h| headers.get(h).and_then(|v: &HeaderValue| v.to_str().ok());
            if resuming && status == 206 {
                let cr = header_str(header::CONTENT_RANGE).and_then(parse_content_range);
                match cr {
                    Some((start, _, t))
                        if start == written && (t.is_none() || total.is_none() || t == total) => {}
                    other => {
                        // Not the part we asked for: start over without ranges.
                        tracing::warn!(
                            ?other,
                            written,
                            "inconsistent Content-Range; restarting from zero"
                        );
                        ranges = false;
                        drop(resp);
                        self.restart_sink(
                            id,
                            sink,
                            &mut hasher,
                            &mut written,
                            DownloadErrorKind::BadRange(format!("{other:?}")),
                        )
                        .await?;
                        if let Some(c) = &mut check {
                            c.restart();
                        }
                        restarts += 1;
                        if restarts > opts.max_restarts {
                            return Err(fail(
                                DownloadErrorKind::BadRange(format!("{other:?}")),
                                None,
                            ));
                        }
                        continue;
                    }
                }
            } else if resuming {
                // The server sent the whole file again (ranges withdrawn or the file changed).
                tracing::warn!(
                    status,
                    written,
                    "ranged request answered without a range; restarting from zero"
                );
                self.restart_sink(
                    id,
                    sink,
                    &mut hasher,
                    &mut written,
                    DownloadErrorKind::CannotRestart,
                )
                .await?;
            }
            if status == 206 && !resuming {
                return Err(fail(
                    DownloadErrorKind::BadRange("206 to a request without Range".into()),
                    None,
                ));
            }
            if status != 206 {
                total = resp.content_length();
                ranges = header_str(header::ACCEPT_RANGES)
                    .is_some_and(|v| v.trim().eq_ignore_ascii_case("bytes"));
                if_range = headers
                    .get(header::ETAG)
                    .filter(|v| !v.as_bytes().starts_with(b"W/"))
                    .or_else(|| headers.get(header::LAST_MODIFIED))
                    .cloned();
                content_type = header_str(header::CONTENT_TYPE).map(str::to_owned);
                // A whole answer: the check starts over with its headers.
                check = opts.check_result_file.then(|| {
                    ResultFileValidator::with_limits(
                        content_type.as_deref(),
                        total,
                        opts.result_file_limits.clone(),
                    )
                });
            }
            report(written, total, attempt, false);

            let end = self
                .stream_body(
                    resp,
                    sink,
                    &mut hasher,
                    &mut written,
                    check.as_mut(),
                    opts,
                    attempt_started,
                    |b| report(b, total, attempt, false),
                )
                .await
                .map_err(|e| fail(DownloadErrorKind::Io, Some(Box::new(e))))?;
            let end = match (end, total) {
                (AttemptEnd::Complete, Some(t)) if written > t => {
                    return Err(fail(
                        DownloadErrorKind::LengthMismatch {
                            expected: t,
                            received: written,
                        },
                        None,
                    ));
                }
                (AttemptEnd::Complete, Some(t)) if written < t => AttemptEnd::Broken(
                    DownloadErrorKind::Interrupted {
                        bytes: written,
                        restarts: restarts + resumes,
                    },
                    None,
                ),
                (end, _) => end,
            };
            match end {
                AttemptEnd::Refused(invalid) => {
                    tracing::warn!(instance_id = %id, error = %invalid, "the answer is not a result file");
                    return Err(fail(
                        DownloadErrorKind::NotAResultFile(Box::new(invalid)),
                        None,
                    ));
                }
                AttemptEnd::Complete => {
                    // The verdict comes before the writer is flushed: an invalid file is never
                    // committed.
                    let zip = match check.as_mut().map(ResultFileValidator::finish) {
                        Some(Ok(summary)) => Some(summary),
                        Some(Err(invalid)) => {
                            tracing::warn!(instance_id = %id, error = %invalid, "the answer is not a result file");
                            return Err(fail(
                                DownloadErrorKind::NotAResultFile(Box::new(invalid)),
                                None,
                            ));
                        }
                        None => None,
                    };
                    sink.finish()
                        .await
                        .map_err(|e| fail(DownloadErrorKind::Io, Some(Box::new(e))))?;
                    report(written, total, attempt, true);
                    let sha256 = hex::encode(hasher.finalize());
                    tracing::info!(instance_id = %id, bytes = written, %sha256, restarts, resumes, "result file downloaded");
                    return Ok(Download {
                        bytes: written,
                        sha256,
                        restarts,
                        resumes,
                        content_type,
                        elapsed: started.elapsed(),
                        zip,
                    });
                }
                AttemptEnd::Broken(kind, source) => {
                    if restarts + resumes >= opts.max_restarts {
                        let made = restarts + resumes;
                        let kind = match kind {
                            DownloadErrorKind::Interrupted { .. } => {
                                DownloadErrorKind::Interrupted {
                                    bytes: written,
                                    restarts: made,
                                }
                            }
                            DownloadErrorKind::Stalled { .. } => DownloadErrorKind::Stalled {
                                bytes: written,
                                restarts: made,
                            },
                            DownloadErrorKind::FirstByteTimeout { .. } => {
                                DownloadErrorKind::FirstByteTimeout {
                                    bytes: written,
                                    restarts: made,
                                }
                            }
                            k => k,
                        };
                        return Err(fail(kind, source));
                    }
                    let stalled = matches!(kind, DownloadErrorKind::Stalled { .. });
                    if ranges && opts.resume && written > 0 {
                        self.observe(crate::observe::ClientEvent::DownloadInterrupted {
                            stalled,
                            resumed: true,
                        });
                        resumes += 1;
                        tracing::warn!(instance_id = %id, %kind, written, "download broken; resuming with Range");
                    } else {
                        self.observe(crate::observe::ClientEvent::DownloadInterrupted {
                            stalled,
                            resumed: false,
                        });
                        restarts += 1;
                        tracing::warn!(instance_id = %id, %kind, written, "download broken; restarting from zero");
                        self.restart_sink(
                            id,
                            sink,
                            &mut hasher,
                            &mut written,
                            DownloadErrorKind::CannotRestart,
                        )
                        .await?;
                        if let Some(c) = &mut check {
                            c.restart();
                        }
                    }
                    let retry = &self.inner.cfg.retry;
                    let delay = backoff_delay(
                        restarts + resumes,
                        retry.base_delay,
                        retry.max_delay,
                        rand::random(),
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    async fn restart_sink<S: Sink>(
        &self,
        id: &InstanceId,
        sink: &mut S,
        hasher: &mut Sha256,
        written: &mut u64,
        kind_if_impossible: DownloadErrorKind,
    ) -> Result<(), Error> {
        let Some(fut) = sink.restart() else {
            return Err(Error::Download {
                instance_id: id.clone(),
                kind: if *written == 0 {
                    kind_if_impossible
                } else {
                    DownloadErrorKind::CannotRestart
                },
                source: None,
            });
        };
        fut.await.map_err(|e| Error::Download {
            instance_id: id.clone(),
            kind: DownloadErrorKind::Io,
            source: Some(Box::new(e)),
        })?;
        *hasher = Sha256::new();
        *written = 0;
        Ok(())
    }

    /// Streams one answer's body. `Err` only for sink (io) errors; network trouble is `Broken`.
    #[allow(clippy::too_many_arguments)]
    async fn stream_body<S: Sink>(
        &self,
        resp: reqwest::Response,
        sink: &mut S,
        hasher: &mut Sha256,
        written: &mut u64,
        mut check: Option<&mut ResultFileValidator>,
        opts: &DownloadOptions,
        attempt_started: Instant,
        mut progress: impl FnMut(u64),
    ) -> io::Result<AttemptEnd> {
        let mut body = resp.bytes_stream();
        let mut got_first = false;
        let mut window_start = Instant::now();
        let mut window_bytes: u64 = 0;
        let window = opts.rate_window.max(Duration::from_millis(1));
        let window_min = (opts.min_rate_bytes_per_sec as f64 * window.as_secs_f64()) as u64;
        loop {
            let deadline = if got_first {
                window_start + window
            } else {
                attempt_started + opts.first_byte_timeout
            };
            let next = tokio::time::timeout_at(deadline, body.next()).await;
            let now = Instant::now();
            match next {
                Ok(Some(Ok(chunk))) => {
                    got_first = true;
                    // Checked before it is written: a refused answer never reaches the writer.
                    if let Some(check) = check.as_deref_mut()
                        && let Err(invalid) = check.update(&chunk)
                    {
                        return Ok(AttemptEnd::Refused(invalid));
                    }
                    hasher.update(&chunk);
                    sink.write(&chunk).await?;
                    *written += chunk.len() as u64;
                    window_bytes += chunk.len() as u64;
                    progress(*written);
                }
                Ok(Some(Err(e))) => {
                    let kind = DownloadErrorKind::Interrupted {
                        bytes: *written,
                        restarts: 0,
                    };
                    return Ok(AttemptEnd::Broken(kind, Some(Box::new(e))));
                }
                Ok(None) => return Ok(AttemptEnd::Complete),
                Err(_) if !got_first => {
                    let kind = DownloadErrorKind::FirstByteTimeout {
                        bytes: *written,
                        restarts: 0,
                    };
                    return Ok(AttemptEnd::Broken(kind, None));
                }
                Err(_) => {}
            }
            if got_first && now >= window_start + window {
                if window_bytes < window_min {
                    let kind = DownloadErrorKind::Stalled {
                        bytes: *written,
                        restarts: 0,
                    };
                    return Ok(AttemptEnd::Broken(kind, None));
                }
                window_start = now;
                window_bytes = 0;
            }
        }
    }
}

#[cfg(unix)]
async fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[cfg(not(unix))]
async fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {

    #[cfg(unix)]
    #[tokio::test]
    async fn the_part_file_is_private_and_never_opened_through_a_link() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let part = part_path(&dir.path().join("result.zip"));
        drop(open_part(&part).await.unwrap());
        let mode = std::fs::metadata(&part).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");

        // A link planted at the `.part` name: refused, and its target untouched.
        std::fs::remove_file(&part).unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, &part).unwrap();
        assert!(open_part(&part).await.is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }
    use super::*;

    #[test]
    fn content_range_is_parsed() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 0-9/*"), Some((0, 9, None)));
        assert_eq!(parse_content_range("items 0-9/10"), None);
        assert_eq!(parse_content_range("bytes x-9/10"), None);
    }

    #[test]
    fn the_part_file_sits_next_to_the_target() {
        assert_eq!(
            part_path(Path::new("/tmp/a/result.zip")),
            PathBuf::from("/tmp/a/result.zip.part")
        );
        assert_eq!(part_path(Path::new("r.zip")), PathBuf::from("r.zip.part"));
    }

    #[tokio::test]
    async fn a_vec_restarts_by_clearing() {
        let mut v = b"partial".to_vec();
        v.restart().await.unwrap();
        assert!(v.is_empty());
    }
}
