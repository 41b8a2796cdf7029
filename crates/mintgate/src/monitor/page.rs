//! The status page `GET /`: one [`Snapshot`] drawn as panels, each an askama template in
//! `crates/mintgate/templates/status/` with the view struct it renders.
//!
//! Why templates: every value that comes from outside (ids, flow names, Mint's failure reasons)
//! is escaped by the template engine, so no code path can forget it; the HTML reads as HTML.
//! Views hold display-ready values (strings, counts, CSS classes) and templates only place them.
//!
//! Adding a panel: write `templates/status/<name>.html` (one `<section>`), a view struct that
//! derives [`Template`] and implements [`Panel`], and name it in [`render`]'s list.

use std::fmt;

use askama::Template;

use super::{STATES, Snapshot};
use crate::clock::delta;
use crate::model::ExecutionState;
use crate::view::human_span;

/// Most end users waiting listed (the count covers all of them).
const WAITING_ROWS_MAX: usize = 15;
/// Most executions at risk listed (the count covers all of them).
const AT_RISK_ROWS_MAX: usize = 20;

/// A panel of the status page: a view built from the snapshot, rendered by its own template.
trait Panel: Template + Sized {
    fn new(snapshot: &Snapshot) -> Self;

    fn render_panel(snapshot: &Snapshot) -> askama::Result<PanelHtml> {
        Ok(PanelHtml(Self::new(snapshot).render()?))
    }
}

/// A panel's HTML. Made only from a template's output, whose values were escaped, so the page
/// places it as it is.
struct PanelHtml(String);

impl fmt::Display for PanelHtml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl askama::filters::HtmlSafe for PanelHtml {}

#[derive(Template)]
#[template(path = "status/page.html")]
struct Page {
    now: String,
    panels: Vec<PanelHtml>,
}

/// Renders the status page.
pub fn render(s: &Snapshot) -> askama::Result<String> {
    let panels = vec![
        BudgetPanel::render_panel(s)?,
        PausedPanel::render_panel(s)?,
        QueuePanel::render_panel(s)?,
        StatesPanel::render_panel(s)?,
        MoneyPanel::render_panel(s)?,
        WaitingPanel::render_panel(s)?,
        ArchivePanel::render_panel(s)?,
        FailuresPanel::render_panel(s)?,
    ];
    Page {
        now: s.now.format("%Y-%m-%d %H:%M:%S").to_string(),
        panels,
    }
    .render()
}

/// `$12.50`.
fn dollars(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}${}.{:02}", cents / 100, cents % 100)
}

fn ok_or_bad(ok: bool) -> &'static str {
    if ok { "ok" } else { "bad" }
}

/// Mint's request budget per client.
#[derive(Template)]
#[template(path = "status/budget.html")]
struct BudgetPanel {
    clients: Vec<BudgetRow>,
}

struct BudgetRow {
    environment: String,
    units_left: u32,
    units_left_class: &'static str,
    limit_per_minute: u32,
    waiting: usize,
    throttled_total: u64,
    retry_quota_tokens: u32,
    token_expires_in: String,
}

impl Panel for BudgetPanel {
    fn new(s: &Snapshot) -> Self {
        let clients = s
            .clients
            .iter()
            .map(|c| BudgetRow {
                environment: c.environment.clone(),
                units_left: c.budget.remaining_units,
                units_left_class: ok_or_bad(c.budget.remaining_units > 0),
                limit_per_minute: c.budget.effective_limit_units,
                waiting: c.budget.waiting,
                throttled_total: c.budget.throttled_total,
                retry_quota_tokens: c.retry_quota_tokens,
                token_expires_in: c
                    .token_expires_in_secs
                    .map_or("no token yet".to_owned(), |secs| {
                        human_span(chrono::TimeDelta::seconds(secs as i64))
                    }),
            })
            .collect();
        Self { clients }
    }
}

/// Work paused because the API client lacks a role (nothing when none is).
#[derive(Template)]
#[template(path = "status/paused.html")]
struct PausedPanel {
    pauses: Vec<PausedRow>,
}

struct PausedRow {
    environment: String,
    role: String,
    kind: &'static str,
    since: String,
    next_probe_in: String,
}

impl Panel for PausedPanel {
    fn new(s: &Snapshot) -> Self {
        let pauses = s
            .pauses
            .iter()
            .map(|p| PausedRow {
                environment: p.environment.clone(),
                role: p.role.clone(),
                kind: p.kind.as_str(),
                since: format!("{} ago", human_span(s.now - p.since)),
                next_probe_in: human_span((p.next_probe_at - s.now).max(chrono::TimeDelta::zero())),
            })
            .collect();
        Self { pauses }
    }
}

/// The job queue.
#[derive(Template)]
#[template(path = "status/queue.html")]
struct QueuePanel {
    ready_starts: i64,
    ready_checks: i64,
    ready_downloads: i64,
    running_jobs: i64,
    dead_letters: i64,
    dead_letters_class: &'static str,
    held: i64,
}

impl Panel for QueuePanel {
    fn new(s: &Snapshot) -> Self {
        let ready = |kind: &str| {
            s.overview
                .jobs_ready
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0, |(_, n)| *n)
        };
        Self {
            ready_starts: ready("start"),
            ready_checks: ready("check"),
            ready_downloads: ready("download"),
            running_jobs: s.overview.jobs_running,
            dead_letters: s.overview.dead_letters,
            dead_letters_class: ok_or_bad(s.overview.dead_letters == 0),
            held: s.held,
        }
    }
}

/// Executions by state, zeros included.
#[derive(Template)]
#[template(path = "status/states.html")]
struct StatesPanel {
    counts: Vec<(&'static str, i64)>,
}

impl Panel for StatesPanel {
    fn new(s: &Snapshot) -> Self {
        let counts = STATES
            .iter()
            .map(|state| (state.as_str(), s.count(*state)))
            .collect();
        Self { counts }
    }
}

/// The month's spend, its projection, the alert threshold and the cap.
#[derive(Template)]
#[template(path = "status/money.html")]
struct MoneyPanel {
    month: String,
    cost: String,
    cost_class: &'static str,
    executions: i64,
    projected: String,
    alert: String,
    cap: String,
    flows: Vec<FlowRow>,
}

struct FlowRow {
    flow: String,
    executions: i64,
    cost: String,
}

impl Panel for MoneyPanel {
    fn new(s: &Snapshot) -> Self {
        let spend = &s.spend;
        Self {
            month: spend.month.clone(),
            cost: dollars(spend.cents),
            cost_class: ok_or_bad(!spend.over_alert()),
            executions: spend.executions,
            projected: dollars(spend.projected_cents),
            alert: spend
                .alert_cents
                .map_or("none".to_owned(), |c| dollars(c as i64)),
            cap: spend.cap_cents.map_or("none".to_owned(), |c| {
                format!(
                    "{} ({})",
                    dollars(c as i64),
                    spend.cap_source.unwrap_or("config")
                )
            }),
            flows: spend
                .by_flow
                .iter()
                .map(|(flow, (executions, cents))| FlowRow {
                    flow: flow.clone(),
                    executions: *executions,
                    cost: dollars(*cents),
                })
                .collect(),
        }
    }
}

/// End users Mint waits for.
#[derive(Template)]
#[template(path = "status/waiting.html")]
struct WaitingPanel {
    count: i64,
    longest: String,
    rows: Vec<WaitingRow>,
}

struct WaitingRow {
    execution: String,
    flow: String,
    step: String,
    waited: String,
}

impl Panel for WaitingPanel {
    fn new(s: &Snapshot) -> Self {
        Self {
            count: s.overview.waiting_for_user,
            longest: s.longest_wait().map_or("none".to_owned(), human_span),
            rows: s
                .waiting
                .iter()
                .take(WAITING_ROWS_MAX)
                .map(|w| WaitingRow {
                    execution: w.execution.id.to_string(),
                    flow: w.execution.flow_id.to_string(),
                    step: w.step.clone().unwrap_or_default(),
                    waited: w
                        .since
                        .map_or(String::new(), |since| human_span(s.now - since)),
                })
                .collect(),
        }
    }
}

/// The archive's backlog and what Mint deletes soon.
#[derive(Template)]
#[template(path = "status/archive.html")]
struct ArchivePanel {
    backlog: i64,
    oldest: String,
    window: String,
    at_risk: i64,
    at_risk_class: &'static str,
    rows: Vec<AtRiskRow>,
}

struct AtRiskRow {
    execution: String,
    flow: String,
    instance: String,
    deleted_in: String,
}

impl Panel for ArchivePanel {
    fn new(s: &Snapshot) -> Self {
        Self {
            backlog: s.backlog(),
            oldest: s
                .oldest_unarchived_age()
                .map_or("none".to_owned(), human_span),
            window: human_span(delta(s.at_risk_window)),
            at_risk: s.at_risk_count,
            at_risk_class: ok_or_bad(s.at_risk_count == 0),
            rows: s
                .at_risk
                .iter()
                .take(AT_RISK_ROWS_MAX)
                .map(|e| AtRiskRow {
                    execution: e.id.to_string(),
                    flow: e.flow_id.to_string(),
                    instance: e
                        .instance_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    deleted_in: e
                        .deadline_at
                        .map_or(String::new(), |deadline| human_span(deadline - s.now)),
                })
                .collect(),
        }
    }
}

/// The executions waiting for an operator's decision, then the latest failed and expired ones,
/// with their reasons.
#[derive(Template)]
#[template(path = "status/failures.html")]
struct FailuresPanel {
    rows: Vec<FailureRow>,
}

struct FailureRow {
    ago: String,
    flow: String,
    state: &'static str,
    reason: String,
}

impl Panel for FailuresPanel {
    fn new(s: &Snapshot) -> Self {
        let rows = s
            .failures
            .iter()
            .map(|e| FailureRow {
                ago: human_span(s.now - e.updated_at),
                flow: e.flow_id.to_string(),
                state: e.state.as_str(),
                reason: match e.state {
                    ExecutionState::NeedsDecision => format!(
                        "needs an operator's decision (mintgate decide --execution {}): {}",
                        e.id,
                        e.decision_reason.as_deref().unwrap_or("no reason recorded")
                    ),
                    _ => e.failure_reason.clone().unwrap_or_default(),
                },
            })
            .collect();
        Self { rows }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use chrono::{TimeZone as _, Utc};
    use mint_client::BudgetSnapshot;

    use super::*;
    use crate::model::{Execution, ExecutionState, Progress};
    use crate::monitor::{ClientView, Waiting};
    use crate::spend::SpendSummary;
    use crate::store::Overview;

    const HOSTILE: &str = "<script>alert('x')</script>&\"";

    /// An execution of `flow`. Its ids are mint-client ids, whose type admits no markup at all
    /// (`[A-Za-z0-9._~:-]`), so they are the one outside text that cannot be hostile here.
    fn execution(state: ExecutionState, flow: &str) -> Execution {
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 11, 0, 0).unwrap();
        Execution {
            state,
            instance_id: Some(mint_client::InstanceId::new("instance-1").unwrap()),
            started_at: Some(at),
            deadline_at: Some(at + chrono::TimeDelta::hours(30)),
            failure_reason: Some(format!("Mint said {HOSTILE}")),
            start_sent_at: Some(at),
            start_attempts: 1,
            billed_count: 1,
            ..Execution::queued(
                uuid::Uuid::nil(),
                None,
                "sandbox".to_owned(),
                mint_client::FlowId::new(flow).unwrap(),
                serde_json::Value::Null,
                at,
                None,
            )
        }
    }

    /// A snapshot in which every value that comes from outside is hostile markup.
    fn hostile_snapshot() -> Snapshot {
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let flow = format!("sandbox/{HOSTILE}");
        let failed = execution(ExecutionState::Failed, "flow-1");
        let mut running = execution(ExecutionState::Running, "flow-1");
        running.progress = Some(Progress::WaitingForUser {
            step: Some(HOSTILE.to_owned()),
            since: None,
        });
        let finished = execution(ExecutionState::Finished, "flow-1");
        Snapshot {
            now,
            clients: vec![ClientView {
                environment: HOSTILE.to_owned(),
                budget: BudgetSnapshot {
                    limit_units: 100,
                    effective_limit_units: 90,
                    used_units: 90,
                    remaining_units: 0,
                    burst_limit_units: 20,
                    burst_used_units: 0,
                    waiting: 3,
                    paused_for: None,
                    throttled_total: 7,
                    window: Duration::from_secs(60),
                },
                retry_quota_tokens: 450,
                token_expires_in_secs: Some(300.0),
            }],
            overview: Overview {
                executions_by_state: vec![
                    ("running".to_owned(), 1),
                    ("failed".to_owned(), 1),
                    ("finished".to_owned(), 2),
                ],
                jobs_ready: vec![("download".to_owned(), 4)],
                jobs_running: 1,
                dead_letters: 2,
                webhooks_recorded: 0,
                oldest_unarchived_finished_at: Some(now - chrono::TimeDelta::days(28)),
                waiting_for_user: 1,
            },
            waiting: vec![Waiting {
                step: Some(HOSTILE.to_owned()),
                since: Some(now - chrono::TimeDelta::minutes(12)),
                execution: running,
            }],
            unarchived: vec![finished.clone()],
            at_risk: vec![finished],
            at_risk_count: 1,
            at_risk_window: Duration::from_secs(2 * 24 * 3600),
            spend: SpendSummary {
                month: "2026-11".to_owned(),
                executions: 3,
                cents: 150,
                projected_cents: 450,
                alert_cents: Some(100),
                cap_cents: Some(1000),
                cap_source: Some("operator"),
                by_flow: BTreeMap::from([(flow, (3, 150))]),
                by_day: BTreeMap::new(),
                rows: Vec::new(),
            },
            held: 0,
            failures: vec![failed],
            pauses: vec![crate::model::WorkPause {
                environment: HOSTILE.to_owned(),
                kind: crate::model::JobKind::Download,
                role: "Flow Instance Download".to_owned(),
                operation: "result_file".to_owned(),
                detail: HOSTILE.to_owned(),
                since: now - chrono::TimeDelta::minutes(7),
                probed_at: None,
                next_probe_at: now + chrono::TimeDelta::minutes(3),
            }],
            events_pending: (0, None),
        }
    }

    #[test]
    fn text_from_outside_is_escaped_everywhere_on_the_page() {
        let html = render(&hostile_snapshot()).unwrap();
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("alert('x')"), "{html}");
        // environment (budget, paused), the ledger's flow (money), step, reason; ids cannot hold
        // markup
        let escaped = "&#60;script&#62;alert(&#39;x&#39;)&#60;/script&#62;&#38;&#34;";
        assert_eq!(html.matches(escaped).count(), 5, "{html}");
    }

    #[test]
    fn the_page_shows_each_panel_with_its_figures() {
        let html = render(&hostile_snapshot()).unwrap();
        for id in [
            "budget", "paused", "queue", "states", "money", "waiting", "archive", "failures",
        ] {
            assert_eq!(
                html.matches(&format!("<section id=\"{id}\"")).count(),
                1,
                "{id}: {html}"
            );
        }
        assert!(html.contains("as of 2026-11-30 12:00:00 UTC"), "{html}");
        assert!(html.contains("<td class=\"n bad\">0</td><td class=\"n\">90</td>"));
        assert!(html.contains("<td>5 min</td></tr>"), "token: {html}");
        assert!(html.contains("id=\"dead-letters\">2<"), "{html}");
        assert!(
            html.contains(
                "<td>Flow Instance Download</td><td>download</td><td>7 min ago</td><td>3 min</td>"
            ),
            "paused: {html}"
        );
        assert!(html.contains("<th>ready downloads</th><td class=\"n\">4<"));
        assert!(html.contains("id=\"state-finished\">2<"), "{html}");
        assert!(
            html.contains("id=\"state-expired\">0<"),
            "zeros too: {html}"
        );
        assert!(html.contains("class=\"big bad\" id=\"month-cost\">$1.50<"));
        assert!(html.contains("alert above: $1.00 &middot; hard cap: $10.00 (operator)"));
        assert!(html.contains("id=\"waiting-count\">1<"), "{html}");
        assert!(html.contains("longest wait: 12 min"), "{html}");
        assert!(html.contains("id=\"backlog\">2<"), "{html}");
        assert!(html.contains("oldest: 28 days"), "{html}");
        assert!(html.contains("(within 2 days)"), "{html}");
        assert!(html.contains("<td class=\"bad\">29 h</td>"), "{html}");
        assert_eq!(html.matches("<tr class=\"failure\">").count(), 1);
        assert!(html.contains("<td>60 min ago</td>"), "{html}");
        assert!(!html.contains("colspan"), "no 'none' row with a failure");
    }

    #[test]
    fn no_failures_read_none() {
        let mut snapshot = hostile_snapshot();
        snapshot.failures.clear();
        let html = render(&snapshot).unwrap();
        assert!(html.contains("<td colspan=\"4\" class=\"muted\">none</td>"));
    }

    #[test]
    fn cents_read_as_dollars() {
        assert_eq!(dollars(0), "$0.00");
        assert_eq!(dollars(12345), "$123.45");
        assert_eq!(dollars(-5), "-$0.05");
    }
}
