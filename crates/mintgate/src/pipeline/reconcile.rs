//! Reconciliation of a start whose answer was lost: the instance is found, or proven absent, or
//! the execution waits for an operator's decision. It is never started again on a guess.
//!
//! Nothing about the instance list is assumed: not its order, not that its items echo `input`.
//! One scan walks the whole list of the flow, page by page (`totalCount` must hold on every page
//! and the walk must see that many distinct instances), and looks for the correlation ids of every
//! ambiguous execution of the flow at once. An item whose `input` the list leaves out is a
//! candidate when it was created no earlier than the earliest start looked for (less the
//! clock-skew allowance; an item without a usable `createdAt` is a candidate too): its `input` is
//! read with `GET /api/instances/{id}`. "Not started" is proven only when the walk was complete and
//! every candidate was read; a scan cut short by its cost bounds (`reconcile_max_units`,
//! `reconcile_max_duration`), a list that pages inconsistently, or a candidate that cannot be read
//! proves nothing. The scan's conclusions for the other executions are recorded as findings, so
//! their start jobs use them instead of walking the list again.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use chrono::{DateTime, Utc};
use mint_client::{ErrorKind, FlowId, Instance, InstanceId, MintClient};
use serde::Serialize;
use uuid::Uuid;

use super::{Pipeline, keep_lease};
use crate::clock::delta;
use crate::model::{CORRELATION_KEY, Execution, Lease};
use crate::store::{Finding, FindingOutcome};

/// Page size of the walk (Mint's largest).
const PAGE: u32 = mint_client::PAGE_LIMIT_MAX;
/// Candidates kept in a scan's report (for `inspect`); the counts are always complete.
const CANDIDATES_KEPT: usize = 25;

/// What reconciliation concluded for the execution whose start job ran it.
#[derive(Debug)]
pub(super) enum Resolution {
    /// The lost start had run: this is its instance.
    Found(Box<Instance>, serde_json::Value),
    /// Proven: the lost start had not run. Starting again bills once.
    Absent(serde_json::Value),
    /// Neither found nor ruled out: wait for an operator's decision.
    Undecided(String, serde_json::Value),
}

/// An ambiguous execution a scan looks for.
#[derive(Debug, Clone)]
struct Wanted {
    id: Uuid,
    /// Instances created before this cannot be this execution's.
    since: DateTime<Utc>,
    /// The start was sent this long before the scan began that an `absent` or `undecided`
    /// finding may be recorded for it (its own reconciliation would not run sooner).
    settled: bool,
}

/// One instance a scan looked at closely (an item without `input`, inside the window).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub instance_id: String,
    pub created_at: Option<String>,
    pub status: String,
    /// `ours`, `not ours`, `unreadable: …`, `not read: …`.
    pub verdict: String,
}

/// The figures of one scan: what it cost and what it saw.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanReport {
    /// Executions of the flow looked for at once.
    pub wanted: usize,
    pub pages: u64,
    /// `GET /api/instances/{id}` of candidates.
    pub reads: u64,
    /// Rate units spent (a page and a read cost one each).
    pub units: u64,
    /// Items the pages held (duplicates included).
    pub listed: u64,
    /// Distinct instances seen.
    pub distinct: u64,
    /// The list's `totalCount` on its first page.
    pub total_count: Option<u64>,
    /// The earliest creation time an instance of ours could have.
    pub window_from: Option<DateTime<Utc>>,
    /// Candidates (items without `input` inside the window, or without `createdAt`).
    pub candidates_total: u64,
    pub candidates: Vec<Candidate>,
    /// How long the scan took on the service's clock (simulated time under a simulator).
    pub took_ms: i64,
    /// How long it took in real time.
    pub real_ms: u64,
    /// Why absence is not proven (none: the walk was complete and every candidate read).
    pub unproven: Option<String>,
}

/// What a finished scan holds.
struct Scan {
    started_at: DateTime<Utc>,
    found: HashMap<Uuid, Instance>,
    report: ScanReport,
}

/// Reconciles `execution`'s lost start: uses a finding another scan recorded for it, or scans the
/// flow (holding the job's lease meanwhile) and records the findings for the flow's other
/// ambiguous executions.
pub(super) async fn resolve(
    pipeline: &Pipeline,
    client: &MintClient,
    lease: &Lease,
    execution: &Execution,
) -> anyhow::Result<Resolution> {
    if let Some(resolution) = from_finding(pipeline, execution).await? {
        return Ok(resolution);
    }
    let now = pipeline.clock.now();
    let settle = delta(pipeline.config.reconcile_delay);
    let skew = delta(pipeline.config.reconcile_skew);
    let mut wanted: Vec<Wanted> = pipeline
        .store
        .ambiguous_starts(&execution.environment, &execution.flow_id)
        .await?
        .into_iter()
        .filter(|other| other.id != execution.id)
        .map(|other| Wanted {
            id: other.id,
            since: other.start_sent_at.unwrap_or(other.created_at) - skew,
            settled: other.start_sent_at.is_some_and(|sent| sent + settle <= now),
        })
        .collect();
    wanted.insert(
        0,
        Wanted {
            id: execution.id,
            since: execution.start_sent_at.unwrap_or(execution.created_at) - skew,
            settled: true,
        },
    );
    let scan = tokio::select! {
        scan = scan(pipeline, client, &execution.flow_id, &wanted) => scan,
        lost = keep_lease(pipeline, lease) => return Err(lost),
    };
    let scan = match scan {
        Ok(scan) => scan,
        Err(error) => return Err(super::classify(&error, 0).into()),
    };
    let report = &scan.report;
    tracing::info!(
        flow_id = execution.flow_id.as_str(),
        wanted = report.wanted,
        found = scan.found.len(),
        pages = report.pages,
        reads = report.reads,
        units = report.units,
        distinct = report.distinct,
        total_count = report.total_count,
        took_ms = report.took_ms,
        real_ms = report.real_ms,
        unproven = report.unproven.as_deref(),
        "reconciliation scan of the flow's instances"
    );
    crate::metrics::reconcile_scan(report.units, report.took_ms);

    let detail = serde_json::to_value(report).unwrap_or_default();
    let conclude = |id: Uuid| -> (FindingOutcome, Option<&Instance>) {
        match scan.found.get(&id) {
            Some(instance) => (FindingOutcome::Found, Some(instance)),
            None if report.unproven.is_none() => (FindingOutcome::Absent, None),
            None => (FindingOutcome::Undecided, None),
        }
    };
    let mut findings = Vec::new();
    for other in wanted.iter().skip(1) {
        let (outcome, instance) = conclude(other.id);
        if outcome != FindingOutcome::Found && !other.settled {
            // Sent too recently for this scan to speak for it: its own job will look.
            continue;
        }
        let mut detail = detail.clone();
        if let Some(instance) = instance {
            detail["instance"] = serde_json::to_value(instance).unwrap_or_default();
        }
        findings.push(Finding {
            execution_id: other.id,
            outcome,
            instance_id: instance.map(|i| i.id.clone()),
            scan_started_at: scan.started_at,
            detail,
        });
    }
    if !findings.is_empty() {
        pipeline
            .store
            .record_findings(findings, pipeline.clock.now())
            .await?;
        pipeline.wake.notify_waiters();
    }
    Ok(match conclude(execution.id) {
        (FindingOutcome::Found, Some(instance)) => {
            Resolution::Found(Box::new(instance.clone()), detail)
        }
        (FindingOutcome::Absent, _) => Resolution::Absent(detail),
        _ => Resolution::Undecided(
            report
                .unproven
                .clone()
                .unwrap_or_else(|| "the instance was neither found nor ruled out".to_owned()),
            detail,
        ),
    })
}

/// A finding another execution's scan recorded for this one, if it applies to its last start.
async fn from_finding(
    pipeline: &Pipeline,
    execution: &Execution,
) -> anyhow::Result<Option<Resolution>> {
    let Some(finding) = pipeline.store.finding(execution.id).await? else {
        return Ok(None);
    };
    let Some(sent) = execution.start_sent_at else {
        return Ok(None);
    };
    let mut detail = finding.detail.clone();
    if let Some(object) = detail.as_object_mut() {
        object.insert(
            "recordedByScanAt".to_owned(),
            serde_json::json!(finding.scan_started_at),
        );
    }
    let resolution = match finding.outcome {
        FindingOutcome::Found => {
            let instance = finding
                .detail
                .get("instance")
                .cloned()
                .and_then(|v| serde_json::from_value::<Instance>(v).ok());
            match instance {
                Some(instance) => {
                    if let Some(object) = detail.as_object_mut() {
                        object.remove("instance");
                    }
                    Resolution::Found(Box::new(instance), detail)
                }
                None => return Ok(None),
            }
        }
        // An absence proven by a scan that began before this start settled says nothing of it.
        FindingOutcome::Absent
            if finding.scan_started_at >= sent + delta(pipeline.config.reconcile_delay) =>
        {
            Resolution::Absent(detail)
        }
        FindingOutcome::Undecided if finding.scan_started_at >= sent => Resolution::Undecided(
            finding.detail["unproven"]
                .as_str()
                .unwrap_or("the instance was neither found nor ruled out")
                .to_owned(),
            detail,
        ),
        _ => return Ok(None),
    };
    tracing::info!(
        outcome = finding.outcome.as_str(),
        "reconciled from the finding of an earlier scan of the flow"
    );
    Ok(Some(resolution))
}

/// Whose start an instance's input says it is.
enum Owner {
    /// The input names one of the executions looked for.
    Ours(Uuid),
    /// The input is known and names none of them.
    NotOurs,
    /// The answer left the input out.
    Unknown,
}

fn owner(input: Option<&serde_json::Value>, wanted: &HashMap<String, Uuid>) -> Owner {
    match input {
        None => Owner::Unknown,
        Some(serde_json::Value::Object(map)) => match map
            .get(CORRELATION_KEY)
            .and_then(|v| v.as_str())
            .and_then(|id| wanted.get(id))
        {
            Some(id) => Owner::Ours(*id),
            None => Owner::NotOurs,
        },
        // `null` or another shape: no correlation id in it.
        Some(_) => Owner::NotOurs,
    }
}

/// The walk's state.
struct Walk<'a> {
    wanted: HashMap<String, Uuid>,
    window_from: DateTime<Utc>,
    seen: HashSet<InstanceId>,
    found: HashMap<Uuid, Instance>,
    to_read: Vec<Instance>,
    report: ScanReport,
    max_units: u64,
    deadline: DateTime<Utc>,
    pipeline: &'a Pipeline,
}

impl Walk<'_> {
    fn all_found(&self) -> bool {
        self.found.len() == self.wanted.len()
    }

    fn take(&mut self, item: Instance) {
        self.report.listed += 1;
        if !self.seen.insert(item.id.clone()) {
            return;
        }
        match owner(item.input.as_ref(), &self.wanted) {
            Owner::Ours(id) => {
                self.found.insert(id, item);
            }
            Owner::NotOurs => {}
            Owner::Unknown => {
                // Comparisons only: an absurd createdAt cannot make them panic.
                let created = item.created_at.as_ref().and_then(|t| t.parsed());
                if created.is_some_and(|at| at < self.window_from) {
                    return;
                }
                self.report.candidates_total += 1;
                self.to_read.push(item);
            }
        }
    }

    /// Whether `units` more may be spent; records why not otherwise.
    fn may_spend(&mut self, units: u64, what: &str) -> bool {
        if self.report.units + units > self.max_units {
            self.unproven(format!(
                "the scan's cost bound was reached ({} units, pipeline.reconcile_max_units) {what}",
                self.max_units
            ));
            return false;
        }
        if self.pipeline.clock.now() > self.deadline {
            self.unproven(format!(
                "the scan's time bound was reached (pipeline.reconcile_max_duration = {}) {what}",
                humantime::format_duration(self.pipeline.config.reconcile_max_duration)
            ));
            return false;
        }
        true
    }

    fn unproven(&mut self, reason: String) {
        if self.report.unproven.is_none() {
            self.report.unproven = Some(reason);
        }
    }

    fn keep(&mut self, instance: &Instance, verdict: String) {
        if self.report.candidates.len() < CANDIDATES_KEPT {
            self.report.candidates.push(Candidate {
                instance_id: instance.id.to_string(),
                created_at: instance.created_at.as_ref().map(|t| t.to_string()),
                status: instance.status.as_str().to_owned(),
                verdict,
            });
        }
    }
}

/// Walks the flow's whole instance list once, looking for every execution of `wanted`.
async fn scan(
    pipeline: &Pipeline,
    client: &MintClient,
    flow_id: &FlowId,
    wanted: &[Wanted],
) -> Result<Scan, mint_client::Error> {
    let started_at = pipeline.clock.now();
    let real = Instant::now();
    let config = &pipeline.config;
    let concurrency = config.reconcile_concurrency.max(1);
    let mut walk = Walk {
        wanted: wanted.iter().map(|w| (w.id.to_string(), w.id)).collect(),
        window_from: wanted.iter().map(|w| w.since).min().unwrap_or(started_at),
        seen: HashSet::new(),
        found: HashMap::new(),
        to_read: Vec::new(),
        report: ScanReport {
            wanted: wanted.len(),
            ..ScanReport::default()
        },
        max_units: u64::from(config.reconcile_max_units),
        deadline: started_at + delta(config.reconcile_max_duration),
        pipeline,
    };
    walk.report.window_from = Some(walk.window_from);

    walk_list(&mut walk, client, flow_id, concurrency).await?;
    walk.report.took_ms = (pipeline.clock.now() - started_at).num_milliseconds();
    walk.report.real_ms = u64::try_from(real.elapsed().as_millis()).unwrap_or(u64::MAX);
    walk.report.distinct = walk.seen.len() as u64;
    Ok(Scan {
        started_at,
        found: walk.found,
        report: walk.report,
    })
}

/// Reads every page of the list (a few at a time), checking that it pages consistently.
async fn walk_list(
    walk: &mut Walk<'_>,
    client: &MintClient,
    flow_id: &FlowId,
    concurrency: usize,
) -> Result<(), mint_client::Error> {
    if !walk.may_spend(1, "before the first page") {
        return Ok(());
    }
    let first = match client.list_instances(flow_id, 0, PAGE).await {
        Ok(page) => page,
        Err(error) => return unreadable(walk, error, "the first page"),
    };
    walk.report.pages += 1;
    walk.report.units += 1;
    let total = first.total_count;
    walk.report.total_count = Some(total);
    check_page(walk, 0, total, &first);
    for item in first.items {
        walk.take(item);
    }
    // Candidates are read as they come, so an instance at the head of the list ends the walk.
    if !read_candidates(walk, client, concurrency).await? {
        return Ok(());
    }
    let offsets: Vec<u64> = (1..)
        .map(|n| n * u64::from(PAGE))
        .take_while(|offset| *offset < total)
        .collect();
    for chunk in offsets.chunks(concurrency) {
        if walk.all_found() {
            return Ok(());
        }
        if !walk.may_spend(
            chunk.len() as u64,
            &format!("after {} of {} pages", walk.report.pages, offsets.len() + 1),
        ) {
            return Ok(());
        }
        let pages = futures::future::join_all(
            chunk
                .iter()
                .map(|offset| client.list_instances(flow_id, *offset, PAGE)),
        )
        .await;
        for (offset, page) in chunk.iter().zip(pages) {
            walk.report.units += 1;
            let page = match page {
                Ok(page) => page,
                Err(error) => {
                    return unreadable(walk, error, &format!("the page at offset {offset}"));
                }
            };
            walk.report.pages += 1;
            check_page(walk, *offset, total, &page);
            for item in page.items {
                walk.take(item);
            }
        }
        if !read_candidates(walk, client, concurrency).await? {
            return Ok(());
        }
    }
    if walk.all_found() {
        return Ok(());
    }
    let distinct = walk.seen.len() as u64;
    if distinct != total {
        walk.unproven(format!(
            "the walk saw {distinct} distinct instances where the list counts {total}: its pages \
             overlap or shift (no stable order), so an instance may have been missed"
        ));
    }
    Ok(())
}

/// Notes what makes a page inconsistent with the walk.
fn check_page(walk: &mut Walk<'_>, offset: u64, total: u64, page: &mint_client::Page<Instance>) {
    if page.total_count != total {
        walk.unproven(format!(
            "the list's totalCount changed during the walk ({total}, then {} at offset {offset})",
            page.total_count
        ));
    }
    let expected = total.saturating_sub(offset).min(u64::from(PAGE));
    if page.items.len() as u64 != expected {
        walk.unproven(format!(
            "the page at offset {offset} held {} items where {expected} were due",
            page.items.len()
        ));
    }
}

/// A list or read error: an outage or a 429 is retried later (the job is delayed); an answer
/// that cannot be used proves nothing, and the scan says so.
#[allow(clippy::result_large_err)] // mint-client's error, passed on as it is
fn unreadable(
    walk: &mut Walk<'_>,
    error: mint_client::Error,
    what: &str,
) -> Result<(), mint_client::Error> {
    match error.kind() {
        ErrorKind::Unexpected | ErrorKind::Invalid | ErrorKind::NotFound => {
            walk.unproven(format!("{what} could not be read: {error}"));
            Ok(())
        }
        _ => Err(error),
    }
}

/// Reads the `input` of the candidates met so far (a few at a time), within the cost bounds.
/// Answers whether the walk may go on (false: a cost bound was reached).
async fn read_candidates(
    walk: &mut Walk<'_>,
    client: &MintClient,
    concurrency: usize,
) -> Result<bool, mint_client::Error> {
    let candidates = std::mem::take(&mut walk.to_read);
    let total = candidates.len();
    let mut read = 0usize;
    for chunk in candidates.chunks(concurrency) {
        if walk.all_found() {
            break;
        }
        if !walk.may_spend(
            chunk.len() as u64,
            &format!("after reading {read} of {total} candidates"),
        ) {
            for candidate in &candidates[read..] {
                walk.keep(
                    candidate,
                    "not read: the scan's bound was reached".to_owned(),
                );
            }
            break;
        }
        let answers = futures::future::join_all(
            chunk
                .iter()
                .map(|candidate| client.get_instance(&candidate.id)),
        )
        .await;
        for (candidate, answer) in chunk.iter().zip(answers) {
            read += 1;
            walk.report.units += 1;
            walk.report.reads += 1;
            match answer {
                Ok(instance) => match owner(instance.input.as_ref(), &walk.wanted) {
                    Owner::Ours(id) => {
                        walk.keep(candidate, "ours".to_owned());
                        walk.found.insert(id, instance);
                    }
                    Owner::NotOurs => walk.keep(candidate, "not ours".to_owned()),
                    Owner::Unknown => {
                        walk.keep(candidate, "unreadable: no input in the answer".to_owned());
                        walk.unproven(format!(
                            "instance {} answered without its input",
                            candidate.id
                        ));
                    }
                },
                Err(error) => {
                    walk.keep(candidate, format!("unreadable: {error}"));
                    unreadable(walk, error, &format!("instance {}", candidate.id))?;
                }
            }
        }
    }
    // An unreadable candidate proves nothing absent any more, but the walk may still find the
    // instances it looks for.
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_names_an_execution_or_none() {
        let id = Uuid::now_v7();
        let wanted = HashMap::from([(id.to_string(), id)]);
        let ours = serde_json::json!({CORRELATION_KEY: id.to_string(), "x": 1});
        assert!(matches!(owner(Some(&ours), &wanted), Owner::Ours(found) if found == id));
        let other = serde_json::json!({CORRELATION_KEY: Uuid::now_v7().to_string()});
        assert!(matches!(owner(Some(&other), &wanted), Owner::NotOurs));
        assert!(matches!(
            owner(Some(&serde_json::Value::Null), &wanted),
            Owner::NotOurs
        ));
        assert!(matches!(owner(None, &wanted), Owner::Unknown));
    }
}
