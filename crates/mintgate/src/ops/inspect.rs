//! `mintgate inspect`: the whole chain the service recorded for one execution: requested, started,
//! webhooks (authentic or not), polls, download attempts, the archived file, Mint's deletion
//! deadline and the cost. Reads the service's database directly, so it works while the service is
//! down too; read-only, and never migrating it (a schema other than this binary's is refused with
//! both versions named).

use std::path::Path;

use chrono::{DateTime, Utc};
use mint_client::InstanceId;
use serde_json::{Value, json};
use uuid::Uuid;

use super::output::{
    CliError, CliResult, dollars, human_bytes, print_json, timestamp, timestamp_relative,
};
use crate::config::Config;
use crate::model::{Event, Execution, JobKind};
use crate::store::{OpenMode, SchemaMismatch, SharedStore};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A Mint instance id, or a mintgate execution id.
    #[arg(value_name = "INSTANCE_ID|EXECUTION_ID")]
    id: String,
    /// Print the records as JSON.
    #[arg(long)]
    json: bool,
    /// The time to compare against (RFC 3339), instead of the clock.
    #[arg(long, hide = true)]
    now: Option<DateTime<Utc>>,
}

/// Opens the service's database in `mode` (never [`OpenMode::Migrate`]: only `mintgate serve`
/// creates and migrates it); refuses to create one where none exists, and a schema other than this
/// binary's.
pub(super) async fn open_store(config: &Config, mode: OpenMode) -> CliResult<SharedStore> {
    let url = config.service.database_url.expose_url();
    if let Some(file) = config.service.database_url.sqlite_path()
        && !file.exists()
    {
        return Err(CliError::user(format!(
            "there is no service database at {}",
            file.display()
        ))
        .hint(
            "this command reads the database of `mintgate serve` (`service.database_url`): run it \
             with the same --config file and MINTGATE_… variables as the service, on its machine",
        ));
    }
    debug_assert_ne!(mode, OpenMode::Migrate);
    crate::store::open(url, mode).await.map_err(|e| {
        if e.downcast_ref::<SchemaMismatch>().is_some() {
            CliError::user(format!("{e:#}"))
        } else {
            CliError::remote(format!("{e:#}"))
        }
    })
}

pub async fn run(args: InspectArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let store = open_store(&config, OpenMode::ReadOnly).await?;
    let now = super::now_or(args.now);
    let mut execution = match Uuid::parse_str(&args.id) {
        Ok(id) => store.execution(id).await?,
        Err(_) => None,
    };
    if execution.is_none()
        && let Ok(instance) = InstanceId::new(args.id.as_str())
    {
        execution = store.execution_by_instance(&instance).await?;
    }
    let Some(execution) = execution else {
        return Err(CliError::user(format!(
            "the service has no record of {:?} (neither an execution id nor an instance id it started)",
            args.id
        ))
        .hint("an instance started with --direct or by another system is not followed by the service")
        .hint(format!("`mintgate status {}` asks Mint", args.id)));
    };
    let events = store.events_for(execution.id).await?;
    let tombstone = store.erasure(execution.id).await?;
    let jobs = store.jobs_for(execution.id).await?;
    let webhooks = match &execution.instance_id {
        Some(instance) => store.webhooks_for(instance).await?,
        None => Vec::new(),
    };
    let price_cents = config
        .mint
        .get(&execution.environment)
        .map_or(50, |p| p.price_cents);
    let cost_cents = execution.billed_count * i64::from(price_cents);
    // Every check of the instance's state in Mint records how it came about (`via`).
    let checks: Vec<&Event> = events
        .iter()
        .filter(|e| e.detail.get("via").is_some())
        .collect();
    let download_jobs: Vec<_> = jobs
        .iter()
        .filter(|j| j.kind == JobKind::Download)
        .collect();
    let download_errors: Vec<_> = download_jobs.iter().flat_map(|j| j.errors.iter()).collect();
    let downloads_succeeded = events.iter().filter(|e| e.kind == "archived").count();
    if args.json {
        print_json(&json!({
            "execution": crate::view::view(&execution, now),
            "billedCount": execution.billed_count,
            "costCents": cost_cents,
            "startAttempts": execution.start_attempts,
            "startAmbiguous": execution.start_ambiguous,
            "decision": decision_json(&execution, &events),
            "events": events,
            "tombstone": tombstone,
            "webhooks": webhooks,
            "jobs": jobs,
        }));
        return Ok(());
    }
    print!(
        "{}",
        render(&execution, &events, now, &webhooks, price_cents)
    );
    let polls_by_poller = checks.iter().filter(|e| e.detail["via"] == "poll").count();
    println!(
        "checks in Mint: {} ({} by the poller, {} brought forward by a webhook)",
        checks.len(),
        polls_by_poller,
        checks.len() - polls_by_poller
    );
    print!("{}", render_decision(&execution, &events));
    let attempts = download_errors.len() + downloads_succeeded;
    println!(
        "downloads: {attempts} attempt(s), {} failed",
        download_errors.len()
    );
    for error in &download_errors {
        println!("  {}  {}", timestamp(error.at), error.error);
    }
    let dead: Vec<_> = jobs
        .iter()
        .filter(|j| j.state == crate::model::JobState::Dead)
        .collect();
    for job in dead {
        println!(
            "dead letter: {} job {} gave up after {} attempt(s); retry with `mintgate dead-letters retry {}`",
            job.kind.as_str(),
            job.id,
            job.attempts,
            job.id
        );
    }
    if let Some(tombstone) = &tombstone {
        println!(
            "tombstone: {} on {} by {}{}",
            tombstone.kind,
            timestamp(tombstone.at),
            tombstone.operator,
            tombstone
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        if let Some(location) = tombstone.removed["archive"].as_str() {
            println!("  removed {location} and the personal fields; the cost ledger is kept");
        }
    }
    match (&execution.archive_path, &execution.sha256, execution.bytes) {
        (Some(path), Some(sha256), Some(bytes)) => {
            println!("archive: {path}");
            println!(
                "  {} ({bytes} bytes), sha256 {sha256}",
                human_bytes(u64::try_from(bytes).unwrap_or(0))
            );
        }
        _ if tombstone.is_some() => {}
        _ => println!("archive: not archived yet"),
    }
    match execution.deadline_at {
        Some(deadline) if deadline > now => {
            println!("deletion by Mint: {}", timestamp_relative(deadline, now))
        }
        Some(deadline) => println!("deletion by Mint: {} (deleted)", timestamp(deadline)),
        None => println!("deletion by Mint: 30 days after the instance ends"),
    }
    if let Some(since) = execution.not_found_since {
        println!(
            "Mint answers 404 for it: {} time(s) in a row since {} (expired after \
             `pipeline.expiry_404_span`, or at once past the deletion deadline)",
            execution.not_found_count,
            timestamp(since)
        );
    }
    println!(
        "cost: {} execution(s) billed, {} ({} start attempt(s))",
        execution.billed_count,
        dollars(cost_cents),
        execution.start_attempts
    );
    Ok(())
}

fn render(
    execution: &Execution,
    events: &[Event],
    now: DateTime<Utc>,
    webhooks: &[crate::model::WebhookRecord],
    _price_cents: u32,
) -> String {
    let mut out = String::new();
    let instance = execution
        .instance_id
        .as_ref()
        .map(|i| format!(" (instance {i})"))
        .unwrap_or_default();
    out.push_str(&format!("execution {}{instance}\n", execution.id));
    out.push_str(&format!(
        "  flow {} in {}{}\n",
        execution.flow_id,
        execution.environment,
        execution
            .idempotency_key
            .as_deref()
            .map(|k| format!("; idempotency key {k}"))
            .unwrap_or_default()
    ));
    out.push_str(&format!(
        "  state: {}: {}\n",
        execution.state.as_str(),
        crate::view::summary(execution, now)
    ));
    out.push_str("\ntimeline:\n");
    for event in events {
        out.push_str(&format!(
            "  {}  {}\n",
            timestamp(event.at),
            describe_event(event)
        ));
    }
    let authentic = webhooks.iter().filter(|w| w.authentic).count();
    out.push_str(&format!(
        "\nwebhooks: {} received ({authentic} authentic, {} not authentic)\n",
        webhooks.len(),
        webhooks.len() - authentic
    ));
    for webhook in webhooks {
        out.push_str(&format!(
            "  {}  {}, claims {}\n",
            timestamp(webhook.received_at),
            if webhook.authentic {
                "authentic"
            } else {
                "NOT authentic"
            },
            webhook.claimed_status.as_deref().unwrap_or("nothing")
        ));
    }
    out
}

fn text(value: &Value) -> Option<&str> {
    value.as_str()
}

/// One event in words; unknown kinds are shown with their detail, so new ones are never hidden.
fn describe_event(event: &Event) -> String {
    let d = &event.detail;
    match event.kind.as_str() {
        "requested" => format!(
            "requested: flow {} in {}",
            text(&d["flowId"]).unwrap_or("?"),
            text(&d["environment"]).unwrap_or("?")
        ),
        "started" => format!(
            "started in Mint: instance {}",
            text(&d["instanceId"]).unwrap_or("?")
        ),
        "reconciled" => format!(
            "found in Mint after a lost start answer: instance {}",
            text(&d["instanceId"]).unwrap_or("?")
        ),
        "start_ambiguous" => {
            "the answer to the start was lost: looking for the instance before any retry".to_owned()
        }
        "reconcile_scan" => format!("reconciliation scan: {}", scan_figures(d)),
        "reconciled_absent" => format!(
            "proven not started (the whole list walked, every candidate read): starting again; {}",
            scan_figures(d)
        ),
        "needs_decision" => format!(
            "needs an operator's decision: {}; {}",
            text(&d["reason"]).unwrap_or("?"),
            scan_figures(d)
        ),
        "decided" => match text(&d["decision"]) {
            Some("started") => format!(
                "decided by {}: it was started, instance {} attached",
                text(&d["operator"]).unwrap_or("?"),
                text(&d["instanceId"]).unwrap_or("?")
            ),
            _ => format!(
                "decided by {}: it was not started, starting it",
                text(&d["operator"]).unwrap_or("?")
            ),
        },
        "webhook" => format!(
            "webhook received ({}), claims {}{}",
            if d["authentic"] == Value::Bool(true) {
                "authentic"
            } else {
                "NOT authentic"
            },
            text(&d["claimedStatus"]).unwrap_or("nothing"),
            text(&d["ignored"])
                .map(|i| format!("; ignored: {i}"))
                .unwrap_or_default()
        ),
        "checked" => {
            let progress = &d["progress"];
            let step = text(&progress["step"])
                .map(|s| format!(" at step '{s}'"))
                .unwrap_or_default();
            let what = match text(&progress["kind"]) {
                Some("waitingForUser") => format!("waiting for the end user{step}"),
                Some("processing") => format!("processing{step}"),
                _ => "running".to_owned(),
            };
            format!("checked {}: {what}", via(d))
        }
        "finished" => format!("finished in Mint (seen {})", via(d)),
        "archived" => format!(
            "archived ({}): {}",
            text(&d["how"]).unwrap_or("downloaded"),
            text(&d["location"]).unwrap_or("?")
        ),
        "not_found" => format!(
            "Mint answered 404 ({} in a row since {}): not taken for deleted yet",
            d["count"],
            text(&d["since"]).unwrap_or("?")
        ),
        "expired" => format!(
            "expired: {}",
            text(&d["reason"]).unwrap_or("Mint deleted the instance")
        ),
        "paused" => format!(
            "paused: the API client lacks the role {} ({} work waits, no attempt used, until it is granted)",
            text(&d["role"]).unwrap_or("?"),
            text(&d["kind"]).unwrap_or("?")
        ),
        "dead_letter" => format!(
            "dead letter: the {} job ran out of attempts: {}",
            text(&d["kind"]).unwrap_or("?"),
            text(&d["error"]).unwrap_or("?")
        ),
        "erased" | "purged" => format!(
            "{} by {}",
            if event.kind == "erased" {
                "erased (result and personal data removed)"
            } else {
                "purged by the retention policy"
            },
            text(&d["operator"]).unwrap_or("?")
        ),
        "dead_letter_retried" => format!(
            "dead letter retried by an operator: the {} job",
            text(&d["kind"]).unwrap_or("?")
        ),
        other if d.as_object().is_none_or(|o| o.is_empty()) => other.replace('_', " "),
        other => format!("{}: {d}", other.replace('_', " ")),
    }
}

/// A scan's cost and what it saw, in one line.
fn scan_figures(d: &Value) -> String {
    let took = d["tookMs"].as_i64().unwrap_or(0);
    format!(
        "{} page(s), {} instance read(s), {} unit(s), {} of {} instance(s) seen, {} candidate(s), {} s",
        d["pages"].as_u64().unwrap_or(0),
        d["reads"].as_u64().unwrap_or(0),
        d["units"].as_u64().unwrap_or(0),
        d["distinct"].as_u64().unwrap_or(0),
        d["totalCount"]
            .as_u64()
            .map_or_else(|| "?".to_owned(), |n| n.to_string()),
        d["candidatesTotal"].as_u64().unwrap_or(0),
        took / 1000
    )
}

/// The last `needs_decision` event of an execution still waiting for a decision.
fn pending_decision<'a>(execution: &Execution, events: &'a [Event]) -> Option<&'a Event> {
    if execution.state != crate::model::ExecutionState::NeedsDecision {
        return None;
    }
    events.iter().rev().find(|e| e.kind == "needs_decision")
}

fn decision_json(execution: &Execution, events: &[Event]) -> Value {
    match pending_decision(execution, events) {
        Some(event) => json!({
            "reason": execution.decision_reason,
            "since": event.at,
            "scan": event.detail,
            "commands": {
                "started": format!("mintgate decide --execution {} --started <INSTANCE_ID>", execution.id),
                "notStarted": format!("mintgate decide --execution {} --not-started", execution.id),
            },
        }),
        None => Value::Null,
    }
}

/// What an operator needs to decide: why, the window and the candidates looked at, the commands.
fn render_decision(execution: &Execution, events: &[Event]) -> String {
    let mut out = String::new();
    if execution.workflow_url.is_none() && execution.workflow_url_unknown {
        out.push_str(
            "workflow link: unknown (the start's answer, the only one that gives it, was lost;              the instance was found by reconciliation)
",
        );
    }
    let Some(event) = pending_decision(execution, events) else {
        return out;
    };
    let d = &event.detail;
    out.push_str(&format!(
        "needs a decision since {}: {}
",
        timestamp(event.at),
        execution
            .decision_reason
            .as_deref()
            .or(text(&d["reason"]))
            .unwrap_or("no reason recorded")
    ));
    out.push_str(&format!(
        "  scan: {}
",
        scan_figures(d)
    ));
    if let Some(from) = text(&d["windowFrom"]) {
        out.push_str(&format!(
            "  instances created from {from} on (the start's sending time less the clock-skew allowance) could be it
"
        ));
    }
    let candidates = d["candidates"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if candidates.is_empty() {
        out.push_str(
            "  candidates looked at: none
",
        );
    } else {
        out.push_str(&format!(
            "  candidates looked at ({} of {}):
",
            candidates.len(),
            d["candidatesTotal"]
                .as_u64()
                .unwrap_or(candidates.len() as u64)
        ));
        for candidate in candidates {
            out.push_str(&format!(
                "    {}  created {}  {}  {}
",
                text(&candidate["instanceId"]).unwrap_or("?"),
                text(&candidate["createdAt"]).unwrap_or("?"),
                text(&candidate["status"]).unwrap_or("?"),
                text(&candidate["verdict"]).unwrap_or("?")
            ));
        }
    }
    out.push_str(&format!(
        "  decide: `mintgate decide --execution {id} --started <INSTANCE_ID>` (it was started: attach it)
          `mintgate decide --execution {id} --not-started` (it was not: start it)
",
        id = execution.id
    ));
    out
}

fn via(detail: &Value) -> &'static str {
    match text(&detail["via"]) {
        Some("webhook") => "after a webhook",
        _ => "by the poller",
    }
}
