//! `mintgate-lab bench report`: one page of every benchmark's figures beside its goal and its peer.
//!
//! The benchmarks themselves take minutes to hours, so the report runs none of them: it reads what
//! they printed with `--json`, saved as `<DIR>/<bench>.json` (`bench archive --json >
//! figures/archive.json`, …), and writes `report.md` with two SVG charts beside it:
//! `goals.svg` (each figure as a multiple of its goal: a bar past the line meets it) and
//! `peers.svg` (mintgate's figure beside its peer's, the peer = 1). A benchmark without its file is
//! listed as not measured; a figure missing from a file is reported as such, never guessed.
//!
//! [`FIGURES`] is the one list of what is shown: where each figure is in its benchmark's JSON
//! (a JSON pointer, or the ratio of two), its goal and its peer.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;

use Goal::{AtLeast, AtMost};
use Source::{At, Ratio};

/// `bench report`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Folder of the benchmarks' `--json` output, one `<bench>.json` per benchmark.
    #[arg(long)]
    pub from: PathBuf,
    /// Where to write `report.md`, `goals.svg` and `peers.svg` (default: the `--from` folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Where a figure is in its benchmark's JSON.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// The number at a JSON pointer.
    At(&'static str),
    /// The number at the first pointer divided by the one at the second.
    Ratio(&'static str, &'static str),
}

impl Source {
    fn read(self, json: &Value) -> Result<f64, String> {
        let at = |pointer: &str| {
            json.pointer(pointer)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("no number at {pointer}"))
        };
        match self {
            Self::At(pointer) => at(pointer),
            Self::Ratio(numerator, denominator) => {
                let d = at(denominator)?;
                if d == 0.0 {
                    return Err(format!("{denominator} is 0"));
                }
                Ok(at(numerator)? / d)
            }
        }
    }
}

/// A figure's goal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    /// Shown for information (a count, a peer's figure).
    None,
}

impl Goal {
    /// The figure as a multiple of its goal, oriented so that 1 or more meets it.
    fn attainment(self, value: f64) -> Option<f64> {
        match self {
            Self::AtLeast(goal) if goal > 0.0 => Some(value / goal),
            Self::AtMost(goal) if value > 0.0 => Some(goal / value),
            // At most 0 (429s, violations): met exactly when the value is 0.
            Self::AtMost(_) => Some(if value <= 0.0 { 1.0 } else { 0.0 }),
            _ => None,
        }
    }

    fn met(self, value: f64) -> Option<bool> {
        match self {
            Self::AtLeast(goal) => Some(value >= goal),
            Self::AtMost(goal) => Some(value <= goal),
            Self::None => None,
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Self::AtLeast(goal) => format!("≥ {}{}", number(goal), unit_suffix(unit)),
            Self::AtMost(goal) => format!("≤ {}{}", number(goal), unit_suffix(unit)),
            Self::None => "—".to_owned(),
        }
    }
}

/// One figure of the page.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// The benchmark (`mintgate-lab bench <bench> --json`, saved as `<bench>.json`).
    pub bench: &'static str,
    pub label: &'static str,
    pub source: Source,
    pub unit: &'static str,
    pub goal: Goal,
    /// The same figure for the peer it is compared with: its name and where it is.
    pub peer: Option<(&'static str, Source)>,
    /// Fewer is better (units, latencies): the peers chart shows the peer's figure over ours.
    pub less_is_better: bool,
}

const fn figure(
    bench: &'static str,
    label: &'static str,
    source: Source,
    unit: &'static str,
    goal: Goal,
) -> Figure {
    Figure {
        bench,
        label,
        source,
        unit,
        goal,
        peer: None,
        less_is_better: matches!(goal, AtMost(_)),
    }
}

const fn fewer(mut f: Figure) -> Figure {
    f.less_is_better = true;
    f
}

const fn with_peer(mut f: Figure, peer: &'static str, source: Source) -> Figure {
    f.peer = Some((peer, source));
    f
}

/// Every figure of the page, by benchmark, in the order shown.
pub const FIGURES: &[Figure] = &[
    // Durable webhook ingest (issue 16): at least three times the Express + BullMQ recipe.
    with_peer(
        figure(
            "ingest",
            "webhooks acknowledged durably, 32 connections",
            At("/c32/mintgate/acks_per_second"),
            "/s",
            Goal::None,
        ),
        "Express + BullMQ",
        At("/c32/peer/acks_per_second"),
    ),
    figure(
        "ingest",
        "ingest ÷ Express + BullMQ, 32 connections",
        At("/c32/ratio"),
        "×",
        AtLeast(3.0),
    ),
    with_peer(
        figure(
            "ingest",
            "webhooks acknowledged durably, 256 connections",
            At("/c256/mintgate/acks_per_second"),
            "/s",
            Goal::None,
        ),
        "Express + BullMQ",
        At("/c256/peer/acks_per_second"),
    ),
    figure(
        "ingest",
        "ingest ÷ Express + BullMQ, 256 connections",
        At("/c256/ratio"),
        "×",
        AtLeast(3.0),
    ),
    // Accepting a burst and starting at the budget (issue 16).
    figure(
        "burst",
        "10,000 executions accepted durably",
        At("/accept_secs"),
        "s",
        AtMost(1.5),
    ),
    figure(
        "burst",
        "acceptance latency p99",
        At("/accept_p99_ms"),
        "ms",
        Goal::None,
    ),
    figure(
        "burst",
        "starts per second ÷ the budget, time scale 120",
        At("/budget_fraction"),
        "",
        AtLeast(0.95),
    ),
    // The same burst on PostgreSQL (`bench burst --database-url … --json`, saved as
    // `burst-postgres.json`).
    figure(
        "burst-postgres",
        "10,000 executions accepted durably, PostgreSQL",
        At("/accept_secs"),
        "s",
        AtMost(1.5),
    ),
    figure(
        "burst-postgres",
        "acceptance latency p99, PostgreSQL",
        At("/accept_p99_ms"),
        "ms",
        Goal::None,
    ),
    figure(
        "burst-postgres",
        "starts per second ÷ the budget, time scale 120, PostgreSQL",
        At("/budget_fraction"),
        "",
        AtLeast(0.95),
    ),
    // Quota (issue 16): units per archived execution at 20 % lost webhooks.
    with_peer(
        figure(
            "quota",
            "units per archived execution, webhooks + guided polling",
            At("/webhooks/units_per_archived"),
            "",
            AtMost(9.0),
        ),
        "polling every 30 s",
        At("/poll_30s/units_per_archived"),
    ),
    with_peer(
        fewer(figure(
            "quota",
            "units per archived execution, webhooks + guided polling (vs 2 s)",
            At("/webhooks/units_per_archived"),
            "",
            Goal::None,
        )),
        "polling every 2 s",
        At("/poll_2s/units_per_archived"),
    ),
    figure(
        "quota",
        "units saved against polling every 30 s",
        At("/savings/0/saving_percent"),
        "%",
        AtLeast(75.0),
    ),
    figure(
        "quota",
        "units saved against polling every 2 s",
        At("/savings/1/saving_percent"),
        "%",
        AtLeast(98.0),
    ),
    // The archive (issue 12): Mint → store streamed and verified, beside curl to disk.
    with_peer(
        figure(
            "archive",
            "Mint → file:// archive, MiB/s",
            Ratio("/file/bytes", "/file/mintgate/transfer_secs"),
            "B/s",
            Goal::None,
        ),
        "curl to disk",
        Ratio("/file/bytes", "/file/curl_to_disk/transfer_secs"),
    ),
    figure(
        "archive",
        "archive speed ÷ curl to disk",
        Ratio(
            "/file/curl_to_disk/transfer_secs",
            "/file/mintgate/transfer_secs",
        ),
        "×",
        AtLeast(0.8),
    ),
    figure(
        "archive",
        "peak RSS growth while archiving",
        At("/file/mintgate/peak_growth_kib"),
        "KiB",
        AtMost(64.0 * 1024.0),
    ),
    // mint-client's download beside curl (issue 1).
    with_peer(
        figure(
            "download",
            "download to disk (SHA-256, fsync, rename)",
            At("/client_mib_per_sec"),
            "MiB/s",
            Goal::None,
        ),
        "curl -o + fsync",
        At("/curl_fsync_mib_per_sec"),
    ),
    figure(
        "download",
        "download speed ÷ curl -o + fsync",
        At("/ratio_to_curl_fsync"),
        "×",
        AtLeast(0.8),
    ),
    figure(
        "download",
        "client's share of peak RSS",
        At("/client_rss_growth_bytes"),
        "B",
        AtMost(64.0 * 1024.0 * 1024.0),
    ),
    // The public edge under attack (issue 11).
    figure(
        "edge",
        "acknowledgements under attack ÷ without",
        At("/rate_ratio"),
        "×",
        AtLeast(0.8),
    ),
    figure(
        "edge",
        "p99 under attack",
        At("/attacked/p99_ms"),
        "ms",
        AtMost(50.0),
    ),
    // Application events (issue 14).
    figure(
        "events",
        "events delivered",
        At("/deliveredPerSecond"),
        "/s",
        Goal::None,
    ),
    figure(
        "events",
        "delivery lag p99",
        At("/lagP99Ms"),
        "ms",
        Goal::None,
    ),
    figure(
        "events",
        "bad signatures",
        At("/badSignatures"),
        "",
        AtMost(0.0),
    ),
    // Reconciling a lost start (issue 10): 100,000 instances, proven absent (the whole list).
    figure(
        "reconcile",
        "units to prove a start absent among 100,000 instances",
        At("/5/units"),
        "",
        Goal::None,
    ),
    figure(
        "reconcile",
        "starts billed for that execution",
        At("/5/startsBilled"),
        "",
        AtMost(1.0),
    ),
    // Replicas on PostgreSQL + Redis (issue 7).
    figure(
        "replicas",
        "fleet budget used",
        At("/fleet_budget_fraction"),
        "",
        AtLeast(0.95),
    ),
    figure("replicas", "429s served", At("/throttled"), "", AtMost(0.0)),
    figure(
        "replicas",
        "fallbacks to a local share",
        At("/fallbacks"),
        "",
        AtMost(0.0),
    ),
    // The kill -9 soak (issue 17).
    figure("soak", "executions", At("/executions"), "", Goal::None),
    figure("soak", "kills", At("/kills"), "", Goal::None),
    figure(
        "soak",
        "archived ÷ executions",
        Ratio("/archived", "/executions"),
        "",
        AtLeast(1.0),
    ),
    figure(
        "soak",
        "starts billed ÷ executions",
        Ratio("/starts_billed", "/executions"),
        "",
        AtMost(1.0),
    ),
    // The simulator itself (its speed bounds every other figure).
    figure(
        "sim",
        "small requests answered",
        At("/requests_per_sec"),
        "/s",
        Goal::None,
    ),
];

/// The benchmarks whose file is not named after the command alone: the same benchmark run with
/// other options.
const FILE_COMMANDS: &[(&str, &str)] =
    &[("burst-postgres", "bench burst --database-url postgres://…")];

/// The command whose `--json` output `<bench>.json` holds.
fn command(bench: &str) -> String {
    FILE_COMMANDS
        .iter()
        .find(|(file, _)| *file == bench)
        .map_or_else(
            || format!("bench {bench}"),
            |(_, command)| (*command).to_owned(),
        )
}

/// A figure as read from its file.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: Figure,
    /// The value, or why there is none.
    pub value: Result<f64, String>,
    pub peer: Option<(&'static str, Result<f64, String>)>,
}

impl Row {
    pub fn met(&self) -> Option<bool> {
        self.value
            .as_ref()
            .ok()
            .and_then(|v| self.figure.goal.met(*v))
    }
}

/// Reads every figure of [`FIGURES`] from `dir`: a missing file leaves its figures unmeasured.
pub fn read(dir: &Path) -> anyhow::Result<Vec<Row>> {
    let mut files = std::collections::BTreeMap::new();
    for f in FIGURES {
        if files.contains_key(f.bench) {
            continue;
        }
        let path = dir.join(format!("{}.json", f.bench));
        let parsed = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes)
                .map_err(|e| format!("{} is not JSON: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("not measured (no {})", path.display()))
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        files.insert(f.bench, parsed);
    }
    Ok(FIGURES
        .iter()
        .map(|f| {
            let json = &files[f.bench];
            let read = |source: Source| match json {
                Ok(json) => source.read(json),
                Err(why) => Err(why.clone()),
            };
            Row {
                figure: *f,
                value: read(f.source),
                peer: f.peer.map(|(name, source)| (name, read(source))),
            }
        })
        .collect())
}

/// Runs `bench report`.
pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let rows = read(&args.from)?;
    let out = args.out.clone().unwrap_or_else(|| args.from.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let write = |name: &str, text: String| {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write("report.md", markdown(&rows))?;
    write("goals.svg", goals_chart(&rows))?;
    write("peers.svg", peers_chart(&rows))?;
    let measured = rows.iter().filter(|r| r.value.is_ok()).count();
    let missed = rows.iter().filter(|r| r.met() == Some(false)).count();
    println!(
        "wrote {} (+ goals.svg, peers.svg): {measured} of {} figures measured, {missed} short of their goal",
        out.join("report.md").display(),
        rows.len()
    );
    for row in rows.iter().filter(|r| r.value.is_err()) {
        if let Err(why) = &row.value {
            eprintln!("  {} / {}: {why}", row.figure.bench, row.figure.label);
        }
    }
    Ok(())
}

fn unit_suffix(unit: &str) -> String {
    match unit {
        "" => String::new(),
        "×" | "/s" | "%" => unit.to_owned(),
        _ => format!(" {unit}"),
    }
}

/// A number as people read it: integers without decimals, others with three significant digits.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        let digits = format!("{}", v.abs() as u64);
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        return if v < 0.0 {
            format!("-{grouped}")
        } else {
            grouped
        };
    }
    let magnitude = v.abs();
    if magnitude >= 100.0 {
        format!("{v:.0}")
    } else if magnitude >= 10.0 {
        format!("{v:.1}")
    } else if magnitude >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn value_text(value: &Result<f64, String>, unit: &str) -> String {
    match value {
        Ok(v) if unit == "B/s" => format!("{} MiB/s", number(v / (1024.0 * 1024.0))),
        Ok(v) => format!("{}{}", number(*v), unit_suffix(unit)),
        Err(_) => "—".to_owned(),
    }
}

/// Escapes text for a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The page: one table per benchmark, the charts on top.
pub fn markdown(rows: &[Row]) -> String {
    let mut md = String::new();
    let measured = rows.iter().filter(|r| r.value.is_ok()).count();
    let met = rows.iter().filter(|r| r.met() == Some(true)).count();
    let with_goal = rows
        .iter()
        .filter(|r| r.value.is_ok() && r.figure.goal != Goal::None)
        .count();
    let _ = writeln!(md, "# mintgate benchmarks\n");
    let _ = writeln!(
        md,
        "{measured} of {} figures measured; {met} of the {with_goal} measured figures with a goal meet it. \
         Each figure comes from the benchmark's own `--json` output (`mintgate-lab bench <name> --json`); \
         timings depend on the machine, so compare figures measured side by side in one run.\n",
        rows.len()
    );
    let _ = writeln!(md, "![Each figure as a multiple of its goal](goals.svg)\n");
    let _ = writeln!(md, "![mintgate beside its peers](peers.svg)\n");
    let mut bench = "";
    for row in rows {
        let f = &row.figure;
        if f.bench != bench {
            bench = f.bench;
            let _ = writeln!(md, "\n## `{}`\n", command(bench));
            let _ = writeln!(md, "| figure | value | goal | | peer |");
            let _ = writeln!(md, "|---|---:|---|---|---|");
        }
        let verdict = match (row.met(), &row.value) {
            (Some(true), _) => "met".to_owned(),
            (Some(false), _) => "**short**".to_owned(),
            (None, Err(why)) => cell(why),
            (None, Ok(_)) => String::new(),
        };
        let peer = match &row.peer {
            Some((name, Ok(v))) => format!("{name}: {}", value_text(&Ok(*v), f.unit)),
            Some((name, Err(why))) => format!("{name}: {}", cell(why)),
            None => String::new(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            cell(f.label),
            value_text(&row.value, f.unit),
            f.goal.describe(f.unit),
            verdict,
            peer
        );
    }
    md
}

/// Escapes text for SVG.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar: its length, colour and caption.
type Bar = (f64, &'static str, String);

/// Horizontal bars: `(label, bars)` groups, on a scale from 0 to a little past the longest bar (at
/// most four times `line`), with a dashed line at `line`.
fn bar_chart(title: &str, groups: &[(String, Vec<Bar>)], line: f64) -> String {
    const LABEL_W: f64 = 430.0;
    const PLOT_W: f64 = 380.0;
    const BAR_H: f64 = 16.0;
    const GAP: f64 = 10.0;
    let bars: usize = groups.iter().map(|(_, b)| b.len()).sum();
    let height = 50.0 + bars as f64 * BAR_H + groups.len() as f64 * GAP + 30.0;
    let max = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(v, _, _)| *v))
        .fold(line * 1.25, f64::max)
        .min(line * 4.0);
    let x = |v: f64| LABEL_W + (v.clamp(0.0, max) / max) * PLOT_W;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = LABEL_W + PLOT_W + 280.0
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="22" font-size="15" font-weight="bold">{}</text>"#,
        xml(title)
    );
    let mut y = 45.0;
    for (label, group) in groups {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + BAR_H * 0.75,
            xml(label)
        );
        for (value, colour, caption) in group {
            let _ = writeln!(
                svg,
                r#"<rect x="{LABEL_W}" y="{y}" width="{:.1}" height="{}" fill="{colour}"/><text x="{:.1}" y="{}">{}</text>"#,
                (x(*value) - LABEL_W).max(1.0),
                BAR_H - 2.0,
                x(*value) + 4.0,
                y + BAR_H * 0.75,
                xml(caption)
            );
            y += BAR_H;
        }
        y += GAP;
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{lx:.1}" y1="35" x2="{lx:.1}" y2="{y}" stroke="black" stroke-dasharray="4 3"/><text x="{lx:.1}" y="{}" text-anchor="middle">{}</text>"#,
        y + 15.0,
        number(line),
        lx = x(line)
    );
    svg.push_str("</svg>\n");
    svg
}

/// Each measured figure with a goal, as a multiple of it (1 = the goal; longer is better).
pub fn goals_chart(rows: &[Row]) -> String {
    let groups: Vec<_> = rows
        .iter()
        .filter_map(|row| {
            let value = *row.value.as_ref().ok()?;
            let attainment = row.figure.goal.attainment(value)?;
            let colour = if row.met() == Some(true) {
                "#2e7d32"
            } else {
                "#c62828"
            };
            let caption = format!(
                "{} (goal {})",
                value_text(&Ok(value), row.figure.unit),
                row.figure.goal.describe(row.figure.unit)
            );
            Some((
                format!("{}: {}", row.figure.bench, row.figure.label),
                vec![(attainment, colour, caption)],
            ))
        })
        .collect();
    bar_chart(
        "Each figure as a multiple of its goal (past the line: met)",
        &groups,
        1.0,
    )
}

/// mintgate beside its peer, the peer's figure = 1 (for figures where more is better).
pub fn peers_chart(rows: &[Row]) -> String {
    let groups: Vec<_> = rows
        .iter()
        .filter_map(|row| {
            let value = *row.value.as_ref().ok()?;
            let (name, peer) = row.peer.as_ref()?;
            let peer = *peer.as_ref().ok()?;
            if peer <= 0.0 {
                return None;
            }
            let ours = if row.figure.less_is_better {
                peer / value.max(f64::MIN_POSITIVE)
            } else {
                value / peer
            };
            let unit = row.figure.unit;
            Some((
                format!("{}: {}", row.figure.bench, row.figure.label),
                vec![
                    (
                        ours,
                        "#1565c0",
                        format!("mintgate {}", value_text(&Ok(value), unit)),
                    ),
                    (
                        1.0,
                        "#9e9e9e",
                        format!("{name} {}", value_text(&Ok(peer), unit)),
                    ),
                ],
            ))
        })
        .collect();
    bar_chart(
        "mintgate beside its peers (the peer = 1; longer is better)",
        &groups,
        1.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, Value)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, json) in files {
            std::fs::write(
                dir.path().join(format!("{name}.json")),
                serde_json::to_vec(json).unwrap(),
            )
            .unwrap();
        }
        dir
    }

    fn row<'a>(rows: &'a [Row], bench: &str, label: &str) -> &'a Row {
        rows.iter()
            .find(|r| r.figure.bench == bench && r.figure.label == label)
            .unwrap()
    }

    #[test]
    fn figures_are_read_by_pointer_and_ratio_and_judged_against_their_goals() {
        let dir = dir_with(&[
            (
                "replicas",
                serde_json::json!({"fleet_budget_fraction": 0.993, "throttled": 2, "fallbacks": 0}),
            ),
            (
                "soak",
                serde_json::json!({"executions": 100, "kills": 25, "archived": 100, "starts_billed": 100}),
            ),
        ]);
        let rows = read(dir.path()).unwrap();
        let fraction = row(&rows, "replicas", "fleet budget used");
        assert_eq!(fraction.value, Ok(0.993));
        assert_eq!(fraction.met(), Some(true));
        assert_eq!(row(&rows, "replicas", "429s served").met(), Some(false));
        assert_eq!(
            row(&rows, "replicas", "fallbacks to a local share").met(),
            Some(true)
        );
        assert_eq!(row(&rows, "soak", "archived ÷ executions").value, Ok(1.0));
        let edge = row(&rows, "edge", "p99 under attack");
        assert!(edge.value.as_ref().unwrap_err().starts_with("not measured"));
        assert_eq!(edge.met(), None);
    }

    #[test]
    fn a_figure_missing_from_its_file_is_reported_not_guessed() {
        let dir = dir_with(&[("replicas", serde_json::json!({"throttled": 0}))]);
        let rows = read(dir.path()).unwrap();
        let fraction = row(&rows, "replicas", "fleet budget used");
        assert_eq!(
            fraction.value,
            Err("no number at /fleet_budget_fraction".to_owned())
        );
        let page = markdown(&rows);
        assert!(
            page.contains("no number at /fleet_budget_fraction"),
            "{page}"
        );
    }

    #[test]
    fn the_page_and_charts_show_each_figure_beside_its_goal_and_peer() {
        let dir = dir_with(&[
            (
                "download",
                serde_json::json!({"client_mib_per_sec": 250.0, "curl_fsync_mib_per_sec": 200.0,
                    "ratio_to_curl_fsync": 1.25, "client_rss_growth_bytes": 80 * 1024 * 1024}),
            ),
            (
                "events",
                serde_json::json!({"deliveredPerSecond": 900.5, "lagP99Ms": 12.0, "badSignatures": 0}),
            ),
            (
                "burst-postgres",
                serde_json::json!({"accept_secs": 1.2, "accept_p99_ms": 20.0, "budget_fraction": 0.97}),
            ),
        ]);
        let rows = read(dir.path()).unwrap();
        let page = markdown(&rows);
        // A file of the same benchmark run with other options is headed by its command.
        assert!(
            page.contains("## `bench burst --database-url postgres://…`"),
            "{page}"
        );
        assert!(
            page.contains(
                "| 10,000 executions accepted durably, PostgreSQL | 1.20 s | ≤ 1.50 s | met |"
            ),
            "{page}"
        );
        assert!(
            page.contains("| download speed ÷ curl -o + fsync | 1.25× | ≥ 0.800× | met |"),
            "{page}"
        );
        assert!(
            page.contains(
                "| client's share of peak RSS | 83,886,080 B | ≤ 67,108,864 B | **short** |"
            ),
            "{page}"
        );
        assert!(page.contains("curl -o + fsync: 200 MiB/s"), "{page}");
        let goals = goals_chart(&rows);
        assert!(goals.starts_with("<svg") && goals.trim_end().ends_with("</svg>"));
        assert_eq!(
            goals.matches("<rect x=").count(),
            5,
            "one bar per measured goal: {goals}"
        );
        assert!(
            goals.contains("#c62828"),
            "a figure short of its goal is red"
        );
        let peers = peers_chart(&rows);
        assert_eq!(
            peers.matches("<rect x=").count(),
            2,
            "mintgate and its peer: {peers}"
        );
        assert!(peers.contains("mintgate 250 MiB/s"), "{peers}");
        // Labels are escaped for XML.
        assert!(!goals.contains("÷ <"));
    }
}
