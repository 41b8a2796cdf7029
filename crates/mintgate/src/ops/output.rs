//! What the operator commands print: errors with hints (in the manner of jj and uv), tables, JSON,
//! and human sizes and times.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::view::human_span;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the user or the configuration must change something.
pub const EXIT_USER: u8 = 1;
/// Exit code: a remote service or this program failed.
pub const EXIT_REMOTE: u8 = 2;

/// An error as the operator sees it: what went wrong, what to do next, and the exit code.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    pub hints: Vec<String>,
}

impl CliError {
    /// A mistake the operator can fix (exit code 1).
    pub fn user(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_USER,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    /// A remote or internal failure (exit code 2).
    pub fn remote(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_REMOTE,
            message: message.into(),
            hints: Vec::new(),
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hints.push(hint.into());
        self
    }

    /// Failed with an already reported outcome (e.g. `doctor` printed its findings).
    pub fn silent(code: u8) -> Self {
        Self {
            code,
            message: String::new(),
            hints: Vec::new(),
        }
    }

    /// Prints the error and its hints on stderr.
    pub fn report(&self) {
        if self.message.is_empty() {
            return;
        }
        let mut text = format!("error: {}\n", self.message);
        for hint in &self.hints {
            let _ = writeln!(text, "hint: {hint}");
        }
        eprint!("{text}");
    }

    /// A Mint client error, classified once: the operator's to fix (1) or a failure (2), with a hint.
    pub fn from_mint(error: &mint_client::Error, environment: &str) -> Self {
        use mint_client::{AuthErrorKind, Error as E};
        let message = error.to_string();
        match error {
            E::Config(_) | E::InvalidId(_) => Self::user(message),
            E::MissingRole { .. } => Self::user(message).hint(format!(
                "`mintgate doctor --env {environment}` checks every role without starting an execution"
            )),
            E::Auth { kind, .. } => match kind {
                AuthErrorKind::Unavailable => Self::remote(message).hint(format!(
                    "check `mint.{environment}.token_url` and that this machine can reach it"
                )),
                _ => Self::user(message).hint(format!(
                    "check `mint.{environment}.client_id` and `mint.{environment}.client_secret` \
                     (MINT_CLIENT_ID / MINT_CLIENT_SECRET for the default environment); \
                     `mintgate doctor --env {environment}` tells more"
                )),
            },
            E::DefinitionIdAsFlowId { .. } => {
                Self::user(message).hint("`mintgate flows` lists flow ids beside definition ids")
            }
            E::NotFound { .. } | E::Expired { .. } => Self::user(message),
            E::NotReady { .. } => Self::user(message),
            E::Ambiguous { flow_id, .. } => Self::remote(message).hint(format!(
                "do not start it again blindly: look for the new instance among the instances of {flow_id} \
                 first (starting through the service, without --direct, reconciles this by itself)"
            )),
            E::NotSent {
                reason: mint_client::NotSentReason::Connect,
                ..
            } => Self::remote(message).hint(format!(
                "check `mint.{environment}.api_base` and that this machine can reach it"
            )),
            E::RateLimited { .. } => Self::remote(message).hint(
                "the API client's budget (about 100 units a minute, shared with `mintgate serve`) is \
                 used up; try again in a minute",
            ),
            _ => Self::remote(message),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> Self {
        Self::remote(format!("{error:#}"))
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Prints a value as pretty JSON on stdout.
pub fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// A plain-text table: columns padded to their widest cell, two spaces apart, no borders, so it
/// reads well in a terminal, in a log and in a snapshot.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            rows: vec![header.into_iter().map(Into::into).collect()],
        }
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table, each line indented by `indent` spaces.
    pub fn render(&self, indent: usize) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = " ".repeat(indent);
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A byte count in binary units: "5.0 MiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time as UTC, to the second.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A time and how long ago (or how far ahead) it is: "2026-11-27 18:39:49 UTC (12 min ago)".
pub fn timestamp_relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!("{} ({})", timestamp(at), relative(at, now))
}

/// "12 min ago" or "in 27 days".
pub fn relative(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at <= now {
        format!("{} ago", human_span(now - at))
    } else {
        format!("in {}", human_span(at - now))
    }
}

/// How long ago something happened: "12 min ago"; "just now" for a time a little ahead of this
/// machine's clock (Mint's clock and ours are never quite the same).
pub fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    if at > now {
        "just now".to_owned()
    } else {
        format!("{} ago", human_span(now - at))
    }
}

/// Cents as dollars: "$0.50".
pub fn dollars(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_trim_line_ends() {
        let mut table = Table::new(["FLOW ID", "NAME"]);
        table.row(["flow-kyc-basic", "KYC basic"]);
        table.row(["f", ""]);
        assert_eq!(
            table.render(2),
            "  FLOW ID         NAME\n  flow-kyc-basic  KYC basic\n  f\n"
        );
    }

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(256 * 1024), "256.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
    }

    #[test]
    fn relative_times_read_both_ways() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let earlier = now - chrono::TimeDelta::minutes(12);
        assert_eq!(relative(earlier, now), "12 min ago");
        assert_eq!(
            relative(now + chrono::TimeDelta::days(27), now),
            "in 27 days"
        );
        assert_eq!(dollars(150), "$1.50");
    }
}
