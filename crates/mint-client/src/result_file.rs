//! Only a real result: a streaming check that an answer of the result-file endpoint is a ZIP
//! archive, usable with any destination (a local file, an object-store multipart upload).
//!
//! Why: a proxy or a misconfigured gateway can answer `200 text/html` with an error page, or cut a
//! file short with a `Content-Length` that agrees. Archiving such an answer as "the KYC result" and
//! letting Mint delete its copy 30 days later loses the evidence for good. The check therefore runs
//! on the bytes as they stream by, in bounded memory, and its verdict comes *before* the caller
//! commits the file (renames it, completes the upload):
//!
//! * `Content-Type` ([`classify_content_type`]): `application/zip`, `application/x-zip-compressed`,
//!   `application/x-zip`, `application/octet-stream` and a missing header are accepted; `text/*`,
//!   JSON (`application/json`, `application/problem+json`, any `+json`), XML and HTML are refused;
//!   any other type is let through to the structure check, which decides.
//! * `Content-Length` against the bytes received.
//! * The ZIP structure, from the first bytes (a ZIP signature) and a bounded tail buffer: the end of
//!   central directory record, the ZIP64 locator and record when present, and every central
//!   directory entry (signature, lengths, ZIP64 extra fields, its data lying before the central
//!   directory), all consistent with the file size. The tail buffer holds the last
//!   [`ResultFileLimits::central_directory_bytes_max`] bytes plus room for the end records
//!   (4 MiB + 66 KiB by default), whatever the file size.
//!
//! A refused answer is an [`InvalidResultFile`] that carries the first bytes in printable form, so an
//! operator reads `<html><head><title>502 Bad Gateway…` in the error.

use std::fmt;

/// How much of an answer's start is kept for the error message.
pub const FIRST_BYTES_KEPT: usize = 96;

const SIG_LOCAL: [u8; 4] = *b"PK\x03\x04";
const SIG_CENTRAL: [u8; 4] = *b"PK\x01\x02";
const SIG_END: [u8; 4] = *b"PK\x05\x06";
const SIG_SPAN_MARKER: [u8; 4] = *b"PK\x07\x08";
const SIG_ZIP64_END: [u8; 4] = *b"PK\x06\x06";
const SIG_ZIP64_LOCATOR: [u8; 4] = *b"PK\x06\x07";
const END_BYTES: usize = 22;
const COMMENT_BYTES_MAX: usize = 0xFFFF;
const ZIP64_LOCATOR_BYTES: usize = 20;
const ZIP64_END_BYTES_MIN: usize = 56;
/// Extensible data of a ZIP64 end record kept in the tail buffer (writers rarely put any there).
const ZIP64_EXTENSIBLE_BYTES_MAX: usize = 4096;
const CENTRAL_HEADER_BYTES: usize = 46;
const LOCAL_HEADER_BYTES: u64 = 30;

/// Bounds of the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultFileLimits {
    /// Largest central directory checked (default 4 MiB: some 50,000 entries with 40-byte names; a
    /// KYC result holds a report and tens of evidence files). The tail buffer is this plus the end
    /// records (at most 66 KiB more). A larger central directory is refused with
    /// [`ResultFileProblem::CentralDirectoryTooLarge`], which names this setting.
    pub central_directory_bytes_max: u64,
}

impl Default for ResultFileLimits {
    fn default() -> Self {
        Self {
            central_directory_bytes_max: 4 * 1024 * 1024,
        }
    }
}

impl ResultFileLimits {
    /// The bytes the tail buffer keeps.
    pub fn tail_bytes(&self) -> usize {
        usize::try_from(self.central_directory_bytes_max)
            .unwrap_or(usize::MAX)
            .saturating_add(
                END_BYTES
                    + COMMENT_BYTES_MAX
                    + ZIP64_LOCATOR_BYTES
                    + ZIP64_END_BYTES_MIN
                    + ZIP64_EXTENSIBLE_BYTES_MAX,
            )
    }
}

/// What a `Content-Type` says about a result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentTypeVerdict {
    /// A ZIP type, or `application/octet-stream`.
    Zip,
    /// No `Content-Type` (accepted: the structure decides).
    Missing,
    /// Another type, not known to be an error page (accepted: the structure decides).
    Unknown,
    /// Text, JSON, XML or HTML: an error page or a problem document, never a result file.
    Refused,
}

/// Classifies a `Content-Type` value (parameters such as `; charset=` ignored, case-insensitive).
pub fn classify_content_type(content_type: Option<&str>) -> ContentTypeVerdict {
    let Some(value) = content_type else {
        return ContentTypeVerdict::Missing;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "" => ContentTypeVerdict::Missing,
        "application/zip"
        | "application/x-zip-compressed"
        | "application/x-zip"
        | "application/octet-stream" => ContentTypeVerdict::Zip,
        "application/json" | "application/xml" | "application/javascript" => {
            ContentTypeVerdict::Refused
        }
        e if e.starts_with("text/") || e.ends_with("+json") || e.ends_with("+xml") => {
            ContentTypeVerdict::Refused
        }
        _ => ContentTypeVerdict::Unknown,
    }
}

/// What is wrong with an answer that is not a result file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResultFileProblem {
    /// The `Content-Type` is text, JSON, XML or HTML.
    ContentType(String),
    /// The body was shorter or longer than `Content-Length`.
    LengthMismatch {
        /// `Content-Length`.
        expected: u64,
        /// Bytes received.
        received: u64,
    },
    /// The body was empty.
    Empty,
    /// The body does not start with a ZIP signature.
    NotZip,
    /// No end of central directory record ends the body (truncated, or not a ZIP).
    NoEndRecord,
    /// The ZIP structure contradicts itself or the file size.
    Inconsistent(String),
    /// The central directory is larger than [`ResultFileLimits::central_directory_bytes_max`].
    CentralDirectoryTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
}

impl fmt::Display for ResultFileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResultFileProblem::ContentType(t) => {
                write!(f, "Content-Type {t:?} is an error page's, not a ZIP's")
            }
            ResultFileProblem::LengthMismatch { expected, received } => write!(
                f,
                "Content-Length said {expected} bytes but {received} arrived"
            ),
            ResultFileProblem::Empty => f.write_str("the body is empty"),
            ResultFileProblem::NotZip => f.write_str("it does not start with a ZIP signature"),
            ResultFileProblem::NoEndRecord => f.write_str(
                "no ZIP end of central directory record at its end (truncated, or not a ZIP)",
            ),
            ResultFileProblem::Inconsistent(s) => {
                write!(f, "its ZIP structure is inconsistent: {s}")
            }
            ResultFileProblem::CentralDirectoryTooLarge { bytes, max } => write!(
                f,
                "its central directory of {bytes} bytes is larger than the {max} bytes checked \
                 (raise central_directory_bytes_max)"
            ),
        }
    }
}

/// An answer refused as a result file: what is wrong, and what it looked like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidResultFile {
    /// What is wrong.
    pub problem: ResultFileProblem,
    /// The answer's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The first bytes (at most [`FIRST_BYTES_KEPT`]) in printable form: other bytes shown as `.`,
    /// line breaks as spaces, `…` when there was more.
    pub first_bytes: String,
    /// Bytes received when it was refused.
    pub received_bytes: u64,
}

impl fmt::Display for InvalidResultFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the answer is not a result file: {} (Content-Type {}, {} bytes received",
            self.problem,
            self.content_type.as_deref().unwrap_or("missing"),
            self.received_bytes
        )?;
        if self.first_bytes.is_empty() {
            f.write_str(")")
        } else {
            write!(f, ", starting {:?})", self.first_bytes)
        }
    }
}

impl std::error::Error for InvalidResultFile {}

/// What the check found in a valid result file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipSummary {
    /// The file's size.
    pub bytes: u64,
    /// Entries in the central directory (0 for an empty archive, which is accepted).
    pub entries: u64,
    /// Size of the central directory.
    pub central_directory_bytes: u64,
    /// Whether ZIP64 end records are present.
    pub zip64: bool,
}

/// Checks a result file as it streams by: feed every chunk to [`ResultFileValidator::update`] in
/// order, then call [`ResultFileValidator::finish`] before committing the file anywhere.
///
/// `update` refuses early what it can (a refused `Content-Type` once the first bytes are kept, a
/// body that does not start like a ZIP, more bytes than `Content-Length`), so the caller can stop
/// reading; on any error, discard what was written.
///
/// ```
/// use mint_client::{ResultFileValidator, ResultFileProblem};
///
/// let mut check = ResultFileValidator::new(Some("text/html; charset=utf-8"), None);
/// let page = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
/// let refused = check.update(page).and_then(|()| check.finish()).unwrap_err();
/// assert!(matches!(refused.problem, ResultFileProblem::ContentType(_)));
/// assert!(refused.first_bytes.starts_with("<html><head><title>502 Bad Gateway"));
/// ```
#[derive(Debug, Clone)]
pub struct ResultFileValidator {
    limits: ResultFileLimits,
    content_type: Option<String>,
    content_type_refused: bool,
    declared_bytes: Option<u64>,
    received: u64,
    head: Vec<u8>,
    tail: Tail,
}

impl ResultFileValidator {
    /// A check for an answer with these headers, with the default limits.
    pub fn new(content_type: Option<&str>, content_length: Option<u64>) -> Self {
        Self::with_limits(content_type, content_length, ResultFileLimits::default())
    }

    /// A check with given limits.
    pub fn with_limits(
        content_type: Option<&str>,
        content_length: Option<u64>,
        limits: ResultFileLimits,
    ) -> Self {
        let tail = Tail::new(limits.tail_bytes(), content_length);
        Self {
            content_type_refused: classify_content_type(content_type)
                == ContentTypeVerdict::Refused,
            content_type: content_type.map(str::to_owned),
            declared_bytes: content_length,
            received: 0,
            head: Vec::with_capacity(FIRST_BYTES_KEPT),
            tail,
            limits,
        }
    }

    /// Bytes fed so far.
    pub fn received_bytes(&self) -> u64 {
        self.received
    }

    /// Forgets the bytes fed so far (the download restarts from zero).
    pub fn restart(&mut self) {
        self.received = 0;
        self.head.clear();
        self.tail.clear();
    }

    /// Feeds the next chunk. An error means the answer is certainly not a result file: stop.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), InvalidResultFile> {
        if self.head.len() < FIRST_BYTES_KEPT {
            let n = (FIRST_BYTES_KEPT - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..n]);
        }
        self.received = self.received.saturating_add(chunk.len() as u64);
        self.tail.push(chunk);
        let not_zip = self.head.len() >= 4 && !starts_like_a_zip(&self.head);
        // A refused type is reported as such, once the excerpt is kept or the body is no ZIP.
        if self.content_type_refused && (self.head.len() >= FIRST_BYTES_KEPT || not_zip) {
            return Err(self.refuse(self.content_type_problem()));
        }
        if not_zip {
            return Err(self.refuse(ResultFileProblem::NotZip));
        }
        if let Some(expected) = self.declared_bytes
            && self.received > expected
        {
            return Err(self.refuse(ResultFileProblem::LengthMismatch {
                expected,
                received: self.received,
            }));
        }
        Ok(())
    }

    /// The verdict once every byte was fed.
    pub fn finish(&mut self) -> Result<ZipSummary, InvalidResultFile> {
        if self.content_type_refused {
            return Err(self.refuse(self.content_type_problem()));
        }
        if self.received == 0 {
            return Err(self.refuse(ResultFileProblem::Empty));
        }
        if let Some(expected) = self.declared_bytes
            && self.received != expected
        {
            return Err(self.refuse(ResultFileProblem::LengthMismatch {
                expected,
                received: self.received,
            }));
        }
        if !starts_like_a_zip(&self.head) {
            return Err(self.refuse(ResultFileProblem::NotZip));
        }
        let tail = self.tail.contiguous();
        check_zip(tail, self.received, &self.limits).map_err(|p| self.refuse(p))
    }

    fn content_type_problem(&self) -> ResultFileProblem {
        ResultFileProblem::ContentType(self.content_type.clone().unwrap_or_default())
    }

    fn refuse(&self, problem: ResultFileProblem) -> InvalidResultFile {
        InvalidResultFile {
            problem,
            content_type: self.content_type.clone(),
            first_bytes: printable(&self.head, self.received > self.head.len() as u64),
            received_bytes: self.received,
        }
    }
}

/// Bytes in printable form: ASCII kept, line breaks and tabs as spaces, anything else as `.`;
/// `…` appended when `more` (there was more than this).
fn printable(bytes: &[u8], more: bool) -> String {
    let mut s: String = bytes
        .iter()
        .map(|&b| match b {
            b'\n' | b'\r' | b'\t' => ' ',
            0x20..=0x7e => char::from(b),
            _ => '.',
        })
        .collect();
    if more {
        s.push('…');
    }
    s
}

fn starts_like_a_zip(head: &[u8]) -> bool {
    head.len() >= 4
        && [SIG_LOCAL, SIG_END, SIG_SPAN_MARKER].contains(&[head[0], head[1], head[2], head[3]])
}

/// The last `cap` bytes of a stream: a ring buffer that grows up to `cap`.
#[derive(Debug, Clone)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    /// When full: the index of the oldest byte.
    start: usize,
}

impl Tail {
    fn new(cap: usize, expected: Option<u64>) -> Self {
        let initial = expected
            .and_then(|e| usize::try_from(e).ok())
            .unwrap_or(64 * 1024)
            .min(cap);
        Self {
            buf: Vec::with_capacity(initial),
            cap: cap.max(1),
            start: 0,
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    fn push(&mut self, mut data: &[u8]) {
        if data.len() >= self.cap {
            self.buf.clear();
            self.buf.extend_from_slice(&data[data.len() - self.cap..]);
            self.start = 0;
            return;
        }
        if self.buf.len() < self.cap {
            let n = (self.cap - self.buf.len()).min(data.len());
            let wanted = self.buf.len() + n;
            if wanted > self.buf.capacity() {
                // Grow by doubling, but never past the cap.
                let target = (self.buf.capacity() * 2).clamp(wanted, self.cap);
                self.buf.reserve_exact(target - self.buf.len());
            }
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
        while !data.is_empty() {
            let n = (self.cap - self.start).min(data.len());
            self.buf[self.start..self.start + n].copy_from_slice(&data[..n]);
            self.start = (self.start + n) % self.cap;
            data = &data[n..];
        }
    }

    fn contiguous(&mut self) -> &[u8] {
        if self.start != 0 {
            self.buf.rotate_left(self.start);
            self.start = 0;
        }
        &self.buf
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn sig_at(b: &[u8], at: usize, sig: [u8; 4]) -> bool {
    b.len() >= at + 4 && b[at..at + 4] == sig
}

fn inconsistent(s: impl Into<String>) -> ResultFileProblem {
    ResultFileProblem::Inconsistent(s.into())
}

/// Checks the ZIP structure from the last bytes of a file of `len` bytes (`tail` ends the file).
fn check_zip(
    tail: &[u8],
    len: u64,
    limits: &ResultFileLimits,
) -> Result<ZipSummary, ResultFileProblem> {
    // The file offset of tail[0].
    let base = len - tail.len() as u64;
    if tail.len() < END_BYTES {
        return Err(ResultFileProblem::NoEndRecord);
    }
    // The end record: its comment must end the file exactly.
    let last = tail.len() - END_BYTES;
    let first = last.saturating_sub(COMMENT_BYTES_MAX);
    let end = (first..=last)
        .rev()
        .find(|&i| {
            sig_at(tail, i, SIG_END)
                && i + END_BYTES + usize::from(u16_at(tail, i + 20)) == tail.len()
        })
        .ok_or(ResultFileProblem::NoEndRecord)?;
    let disk = u16_at(tail, end + 4);
    let cd_disk = u16_at(tail, end + 6);
    let entries_here16 = u16_at(tail, end + 8);
    let entries16 = u16_at(tail, end + 10);
    let cd_size32 = u32_at(tail, end + 12);
    let cd_offset32 = u32_at(tail, end + 16);
    let saturated = entries16 == u16::MAX
        || entries_here16 == u16::MAX
        || cd_size32 == u32::MAX
        || cd_offset32 == u32::MAX
        || disk == u16::MAX
        || cd_disk == u16::MAX;
    let has_locator =
        end >= ZIP64_LOCATOR_BYTES && sig_at(tail, end - ZIP64_LOCATOR_BYTES, SIG_ZIP64_LOCATOR);

    let (entries, cd_size, cd_offset, cd_end) = if has_locator {
        let locator = end - ZIP64_LOCATOR_BYTES;
        let record_disk = u32_at(tail, locator + 4);
        let record_offset = u64_at(tail, locator + 8);
        let disks = u32_at(tail, locator + 16);
        if record_disk != 0 || disks > 1 {
            return Err(inconsistent("the archive spans several disks"));
        }
        let locator_offset = base + locator as u64;
        if record_offset < base
            || record_offset.saturating_add(ZIP64_END_BYTES_MIN as u64) > locator_offset
        {
            return Err(inconsistent(format!(
                "the ZIP64 locator points at offset {record_offset}, not before itself at \
                 {locator_offset} within the last {} bytes",
                tail.len()
            )));
        }
        let record = (record_offset - base) as usize;
        if !sig_at(tail, record, SIG_ZIP64_END) {
            return Err(inconsistent(format!(
                "no ZIP64 end record at offset {record_offset}"
            )));
        }
        let record_size = u64_at(tail, record + 4);
        if record_size < 44 || record_offset.checked_add(12 + record_size) != Some(locator_offset) {
            return Err(inconsistent(format!(
                "the ZIP64 end record's size {record_size} does not reach its locator"
            )));
        }
        let disk64 = u32_at(tail, record + 16);
        let cd_disk64 = u32_at(tail, record + 20);
        let entries_here = u64_at(tail, record + 24);
        let entries = u64_at(tail, record + 32);
        let cd_size = u64_at(tail, record + 40);
        let cd_offset = u64_at(tail, record + 48);
        if disk64 != 0 || cd_disk64 != 0 {
            return Err(inconsistent("the archive spans several disks"));
        }
        if entries_here != entries {
            return Err(inconsistent(format!(
                "the ZIP64 end record counts {entries_here} entries on this disk of {entries}"
            )));
        }
        let agrees = (entries16 == u16::MAX || u64::from(entries16) == entries)
            && (cd_size32 == u32::MAX || u64::from(cd_size32) == cd_size)
            && (cd_offset32 == u32::MAX || u64::from(cd_offset32) == cd_offset);
        if !agrees {
            return Err(inconsistent(
                "the end record and the ZIP64 end record disagree",
            ));
        }
        (entries, cd_size, cd_offset, record_offset)
    } else {
        if saturated {
            return Err(inconsistent(
                "the end record holds ZIP64 markers but no ZIP64 locator precedes it",
            ));
        }
        if disk != 0 || cd_disk != 0 {
            return Err(inconsistent("the archive spans several disks"));
        }
        if entries_here16 != entries16 {
            return Err(inconsistent(format!(
                "the end record counts {entries_here16} entries on this disk of {entries16}"
            )));
        }
        (
            u64::from(entries16),
            u64::from(cd_size32),
            u64::from(cd_offset32),
            base + end as u64,
        )
    };

    if cd_offset.checked_add(cd_size) != Some(cd_end) {
        return Err(inconsistent(format!(
            "the central directory ({cd_size} bytes at offset {cd_offset}) does not end where the \
             end records begin (offset {cd_end}) in a file of {len} bytes"
        )));
    }
    if cd_size > limits.central_directory_bytes_max {
        return Err(ResultFileProblem::CentralDirectoryTooLarge {
            bytes: cd_size,
            max: limits.central_directory_bytes_max,
        });
    }
    if cd_offset < base {
        // Only when a ZIP64 record carries more extensible data than the buffer allows for.
        return Err(inconsistent(format!(
            "the central directory starts before the last {} bytes kept",
            tail.len()
        )));
    }
    if entries > cd_size / CENTRAL_HEADER_BYTES as u64 {
        return Err(inconsistent(format!(
            "{entries} entries cannot fit in a central directory of {cd_size} bytes"
        )));
    }
    let start = (cd_offset - base) as usize;
    let cd = &tail[start..start + cd_size as usize];
    check_entries(cd, entries, cd_offset)?;
    Ok(ZipSummary {
        bytes: len,
        entries,
        central_directory_bytes: cd_size,
        zip64: has_locator,
    })
}

fn check_entries(cd: &[u8], entries: u64, cd_offset: u64) -> Result<(), ResultFileProblem> {
    let mut at = 0usize;
    let mut first_data = u64::MAX;
    for index in 0..entries {
        if at + CENTRAL_HEADER_BYTES > cd.len() {
            return Err(inconsistent(format!(
                "entry {index} runs past the end of the central directory"
            )));
        }
        if !sig_at(cd, at, SIG_CENTRAL) {
            return Err(inconsistent(format!(
                "entry {index} has no central directory header signature"
            )));
        }
        let compressed32 = u32_at(cd, at + 20);
        let uncompressed32 = u32_at(cd, at + 24);
        let name_len = usize::from(u16_at(cd, at + 28));
        let extra_len = usize::from(u16_at(cd, at + 30));
        let comment_len = usize::from(u16_at(cd, at + 32));
        let disk16 = u16_at(cd, at + 34);
        let offset32 = u32_at(cd, at + 42);
        let name_at = at + CENTRAL_HEADER_BYTES;
        let next = name_at + name_len + extra_len + comment_len;
        if next > cd.len() {
            return Err(inconsistent(format!(
                "entry {index}'s name, extra field and comment run past the central directory"
            )));
        }
        let name = printable(&cd[name_at..name_at + name_len.min(60)], name_len > 60);
        let extra = &cd[name_at + name_len..name_at + name_len + extra_len];
        // ZIP64 extended information: only the saturated fields, in this order.
        let mut fields = zip64_extra(extra).unwrap_or_default().into_iter();
        let mut wide = |narrow: u64, saturated: bool, what: &str| {
            if !saturated {
                return Ok(narrow);
            }
            fields.next().ok_or_else(|| {
                inconsistent(format!(
                    "entry {index} ({name}) lacks the ZIP64 {what} its header points to"
                ))
            })
        };
        let _uncompressed = wide(
            u64::from(uncompressed32),
            uncompressed32 == u32::MAX,
            "size",
        )?;
        let compressed = wide(
            u64::from(compressed32),
            compressed32 == u32::MAX,
            "compressed size",
        )?;
        let offset = wide(u64::from(offset32), offset32 == u32::MAX, "offset")?;
        let disk = wide(u64::from(disk16), disk16 == u16::MAX, "disk number")?;
        if disk != 0 {
            return Err(inconsistent(format!(
                "entry {index} ({name}) starts on disk {disk}"
            )));
        }
        let data_end = offset
            .checked_add(LOCAL_HEADER_BYTES + name_len as u64)
            .and_then(|x| x.checked_add(compressed));
        if data_end.is_none_or(|e| e > cd_offset) {
            return Err(inconsistent(format!(
                "entry {index} ({name}): {compressed} bytes at offset {offset} do not end before \
                 the central directory at {cd_offset}"
            )));
        }
        first_data = first_data.min(offset);
        at = next;
    }
    if at != cd.len() {
        return Err(inconsistent(format!(
            "{} bytes follow the {entries} entries of the central directory",
            cd.len() - at
        )));
    }
    if entries > 0 && first_data != 0 {
        return Err(inconsistent(format!(
            "the first entry starts at offset {first_data}, not at the start of the file"
        )));
    }
    Ok(())
}

/// The 8-byte values of the ZIP64 extended information extra field (id 1), if present.
fn zip64_extra(mut extra: &[u8]) -> Option<Vec<u64>> {
    while extra.len() >= 4 {
        let id = u16_at(extra, 0);
        let size = usize::from(u16_at(extra, 2));
        let data = extra.get(4..4 + size)?;
        if id == 1 {
            return Some(data.chunks_exact(8).map(|c| u64_at(c, 0)).collect());
        }
        extra = &extra[4 + size..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    use proptest::prelude::*;

    /// A real ZIP made with the `zip` crate.
    pub(crate) fn make_zip(entries: &[(String, Vec<u8>)], zip64: bool, comment: &str) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(zip64);
        for (name, data) in entries {
            w.start_file(name.as_str(), options).unwrap();
            w.write_all(data).unwrap();
        }
        w.set_comment(comment.to_owned());
        if zip64 {
            w.set_zip64_comment(Some("z64"));
        }
        w.finish().unwrap().into_inner()
    }

    fn check(
        bytes: &[u8],
        content_type: Option<&str>,
        chunk: usize,
    ) -> Result<ZipSummary, InvalidResultFile> {
        let mut v = ResultFileValidator::new(content_type, Some(bytes.len() as u64));
        for c in bytes.chunks(chunk.max(1)) {
            v.update(c)?;
        }
        v.finish()
    }

    fn sample() -> Vec<(String, Vec<u8>)> {
        vec![
            ("report.json".into(), br#"{"result":"ok"}"#.to_vec()),
            ("evidence/selfie.jpg".into(), vec![0xFF; 5000]),
        ]
    }

    #[test]
    fn a_real_zip_passes_with_its_entries_counted() {
        let z = make_zip(&sample(), false, "kyc");
        let s = check(&z, Some("application/zip"), 777).unwrap();
        assert_eq!((s.entries, s.zip64, s.bytes), (2, false, z.len() as u64));
    }

    #[test]
    fn a_zip64_archive_passes() {
        let z = make_zip(&sample(), true, "");
        let s = check(&z, None, 100).unwrap();
        assert!(s.zip64, "{s:?}");
        assert_eq!(s.entries, 2);
    }

    #[test]
    fn more_than_65535_entries_need_zip64_and_pass() {
        let entries: Vec<_> = (0..70_000).map(|i| (format!("{i:x}"), vec![])).collect();
        let z = make_zip(&entries, false, "");
        let s = check(&z, Some("application/octet-stream"), 64 * 1024).unwrap();
        assert_eq!((s.entries, s.zip64), (70_000, true));
    }

    #[test]
    fn a_central_directory_over_the_cap_is_refused_naming_the_setting() {
        let entries: Vec<_> = (0..100).map(|i| (format!("entry-{i}"), vec![1])).collect();
        let z = make_zip(&entries, false, "");
        let limits = ResultFileLimits {
            central_directory_bytes_max: 1024,
        };
        let mut v = ResultFileValidator::with_limits(None, None, limits);
        v.update(&z).unwrap();
        let e = v.finish().unwrap_err();
        assert!(
            matches!(
                e.problem,
                ResultFileProblem::CentralDirectoryTooLarge { max: 1024, .. }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("central_directory_bytes_max"), "{e}");
    }

    #[test]
    fn an_html_page_is_refused_early_with_its_first_bytes() {
        let page = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n<body><center>nginx</center></body></html>\n";
        for ct in [Some("text/html"), Some("application/zip"), None] {
            let mut v = ResultFileValidator::new(ct, Some(page.len() as u64));
            let e = v.update(page).unwrap_err();
            assert!(
                e.first_bytes
                    .starts_with("<!DOCTYPE html> <html><head><title>502 Bad Gateway"),
                "{e}"
            );
            assert!(e.to_string().contains("502 Bad Gateway"), "{e}");
        }
    }

    #[test]
    fn a_json_problem_is_refused_by_its_content_type_even_when_short() {
        let body = br#"{"title":"Oops","status":500}"#;
        let mut v = ResultFileValidator::new(Some("application/problem+json"), None);
        // Shorter than the kept excerpt: the refusal comes from the signature, or at the end.
        let e = v.update(body).and_then(|()| v.finish()).unwrap_err();
        assert!(e.first_bytes.contains("Oops"), "{e}");
        // A ZIP body labelled as text is refused too: the label says something is wrong.
        let z = make_zip(&sample(), false, "");
        assert!(matches!(
            check(&z, Some("text/plain"), 1 << 20).unwrap_err().problem,
            ResultFileProblem::ContentType(_)
        ));
    }

    #[test]
    fn truncation_and_length_mismatch_are_refused() {
        let z = make_zip(&sample(), false, "");
        let cut = &z[..z.len() - 10];
        let mut v = ResultFileValidator::new(None, None);
        v.update(cut).unwrap();
        assert_eq!(
            v.finish().unwrap_err().problem,
            ResultFileProblem::NoEndRecord
        );
        let mut v = ResultFileValidator::new(None, Some(z.len() as u64));
        v.update(cut).unwrap();
        assert!(matches!(
            v.finish().unwrap_err().problem,
            ResultFileProblem::LengthMismatch { .. }
        ));
        let mut v = ResultFileValidator::new(None, Some(10));
        assert!(
            v.update(&z).is_err(),
            "more than Content-Length is refused at once"
        );
        let mut v = ResultFileValidator::new(None, None);
        assert_eq!(v.finish().unwrap_err().problem, ResultFileProblem::Empty);
    }

    #[test]
    fn a_restart_forgets_what_was_fed() {
        let z = make_zip(&sample(), false, "");
        let mut v = ResultFileValidator::new(None, Some(z.len() as u64));
        v.update(&z[..z.len() / 2]).unwrap();
        v.restart();
        v.update(&z).unwrap();
        assert_eq!(v.finish().unwrap().entries, 2);
    }

    #[test]
    fn content_types_are_classified() {
        use ContentTypeVerdict::*;
        for (ct, want) in [
            (Some("application/zip"), Zip),
            (Some("Application/ZIP; name=x.zip"), Zip),
            (Some("application/x-zip-compressed"), Zip),
            (Some("application/octet-stream"), Zip),
            (None, Missing),
            (Some(""), Missing),
            (Some("text/html; charset=utf-8"), Refused),
            (Some("text/plain"), Refused),
            (Some("application/json"), Refused),
            (Some("application/problem+json"), Refused),
            (Some("application/xhtml+xml"), Refused),
            (Some("application/pdf"), Unknown),
        ] {
            assert_eq!(classify_content_type(ct), want, "{ct:?}");
        }
    }

    #[test]
    fn the_tail_ring_keeps_the_last_bytes() {
        let mut t = Tail::new(10, None);
        for chunk in (0u8..37).collect::<Vec<_>>().chunks(3) {
            t.push(chunk);
        }
        assert_eq!(t.contiguous(), &(27u8..37).collect::<Vec<_>>()[..]);
        t.push(&(100u8..125).collect::<Vec<_>>());
        assert_eq!(t.contiguous(), &(115u8..125).collect::<Vec<_>>()[..]);
    }

    fn entries_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
        prop::collection::vec(
            (
                "[a-z]{1,12}(/[a-z]{1,8})?",
                prop::collection::vec(any::<u8>(), 0..300),
            ),
            1..20,
        )
        .prop_map(|v| {
            // Unique names (the zip crate refuses duplicates).
            v.into_iter()
                .enumerate()
                .map(|(i, (n, d))| (format!("{i}-{n}"), d))
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn real_zips_pass_whatever_the_chunking(
            entries in entries_strategy(),
            zip64 in any::<bool>(),
            comment in "[ -~]{0,40}",
            chunk in 1usize..5000,
        ) {
            let z = make_zip(&entries, zip64, &comment);
            let s = check(&z, Some("application/zip"), chunk).unwrap();
            prop_assert_eq!(s.entries, entries.len() as u64);
            prop_assert_eq!(s.bytes, z.len() as u64);
        }

        #[test]
        fn truncated_zips_are_refused(
            entries in entries_strategy(),
            zip64 in any::<bool>(),
            cut in 1usize..200,
        ) {
            let z = make_zip(&entries, zip64, "");
            let keep = z.len().saturating_sub(cut);
            let mut v = ResultFileValidator::new(None, None);
            let verdict = v.update(&z[..keep]).and_then(|()| v.finish());
            prop_assert!(verdict.is_err(), "a ZIP cut by {} bytes passed", cut);
        }

        #[test]
        fn corrupted_zips_never_panic(
            entries in entries_strategy(),
            zip64 in any::<bool>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut z = make_zip(&entries, zip64, "");
            for (at, byte) in flips {
                let i = at.index(z.len());
                z[i] = byte;
            }
            let _ = check(&z, None, 333);
        }

        #[test]
        fn corrupted_end_records_are_refused(
            entries in entries_strategy(),
            offset_delta in 1u32..1000,
        ) {
            // Move the central directory offset: the entries no longer line up.
            let mut z = make_zip(&entries, false, "");
            let end = z.len() - END_BYTES;
            let offset = u32_at(&z, end + 16).wrapping_add(offset_delta);
            z[end + 16..end + 20].copy_from_slice(&offset.to_le_bytes());
            prop_assert!(check(&z, None, 4096).is_err());
        }

        #[test]
        fn random_bytes_and_html_never_panic_and_never_pass(
            body in prop::collection::vec(any::<u8>(), 0..2000),
            html in "<html>[ -~]{0,500}</html>",
            content_type in prop::option::of("[a-z]{1,12}/[a-z+.-]{1,20}"),
        ) {
            let random = check(&body, content_type.as_deref(), 100);
            // Random bytes could start with "PK\x03\x04" and still never form a consistent ZIP here.
            prop_assert!(random.is_err());
            let page = check(html.as_bytes(), content_type.as_deref(), 64);
            prop_assert!(page.is_err());
        }
    }
}
