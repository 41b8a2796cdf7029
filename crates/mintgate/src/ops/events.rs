//! `mintgate events`: the deliveries of application events to the configured endpoints
//! (`[[events.endpoints]]`), and `redeliver` to send events again (one by its id, or every one
//! since a time), with fresh attempts. Reads (read-only) and writes (`redeliver`) the service's
//! database directly, never migrating it; a running service sends redelivered events at its next
//! look at the queue (within a few seconds).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::output::{CliError, CliResult, Table, print_json, timestamp};
use crate::store::{OpenMode, Redeliver};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EventsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Print as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// List deliveries, newest event first (the default).
    List {
        /// Only deliveries in this state.
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Send an event again (by its id, `msg_…`), or every event written since a time, to every
    /// configured endpoint whose types take it, with fresh attempts.
    Redeliver {
        /// The event's id (`webhook-id`), from `mintgate events list`.
        #[arg(
            value_name = "EVENT_ID",
            required_unless_present = "since",
            conflicts_with = "since"
        )]
        id: Option<String>,
        /// Every event written at or after this time: RFC 3339 (`2026-12-01T08:00:00Z`) or a
        /// span back from now (`2h`, `3days`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
    },
}

/// `--since`: an RFC 3339 time, or a span back from `now`.
fn parse_since(text: &str, now: DateTime<Utc>) -> CliResult<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|span| chrono::TimeDelta::from_std(span).ok())
        .and_then(|span| now.checked_sub_signed(span))
        .ok_or_else(|| {
            CliError::user(format!("--since {text:?} is neither a time nor a span")).hint(
                "give an RFC 3339 time (2026-12-01T08:00:00Z) or a span back from now (2h, 3days)",
            )
        })
}

pub async fn run(args: EventsArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let action = args.action.unwrap_or(Action::List {
        state: None,
        limit: 50,
    });
    let mode = match action {
        Action::List { .. } => OpenMode::ReadOnly,
        Action::Redeliver { .. } => OpenMode::ReadWrite,
    };
    match action {
        Action::List { state, limit } => {
            if !(1..=10_000).contains(&limit) {
                return Err(CliError::user("--limit must be 1 to 10000"));
            }
            let store = super::inspect::open_store(&config, mode).await?;
            let deliveries = store.deliveries(state.as_deref(), limit).await?;
            if args.json {
                let rows: Vec<_> = deliveries
                    .iter()
                    .map(|d| {
                        json!({
                            "eventId": d.event.id,
                            "type": d.event.event_type,
                            "executionId": d.execution_id,
                            "at": d.event.at,
                            "cursor": d.seq.to_string(),
                            "endpoint": d.endpoint,
                            "state": d.state,
                            "attempts": d.attempts,
                            "nextAttemptAt": (d.state == "pending").then_some(d.next_at),
                            "deliveredAt": d.delivered_at,
                            "lastStatus": d.last_status,
                            "lastError": d.last_error,
                        })
                    })
                    .collect();
                print_json(&json!(rows));
                return Ok(());
            }
            if deliveries.is_empty() {
                if config.events.endpoints.is_empty() {
                    println!(
                        "no deliveries: no endpoint is configured ([[events.endpoints]]); applications can read the feed, GET /v1/events"
                    );
                } else {
                    println!("no deliveries");
                }
                return Ok(());
            }
            let mut table = Table::new([
                "EVENT ID",
                "TYPE",
                "EXECUTION ID",
                "AT",
                "ENDPOINT",
                "STATE",
                "ATTEMPTS",
                "LAST ERROR",
            ]);
            for d in &deliveries {
                let state = if d.state == "pending" && d.attempts > 0 {
                    format!("pending (next {})", timestamp(d.next_at))
                } else {
                    d.state.clone()
                };
                table.row([
                    d.event.id.clone(),
                    d.event.event_type.clone(),
                    d.execution_id.to_string(),
                    timestamp(d.event.at),
                    d.endpoint.clone(),
                    state,
                    d.attempts.to_string(),
                    d.last_error.clone().unwrap_or_default(),
                ]);
            }
            print!("{}", table.render(0));
            println!(
                "\n{} deliver(ies); `mintgate events redeliver <event id>` (or --since TIME) sends events again",
                deliveries.len()
            );
            Ok(())
        }
        Action::Redeliver { id, since } => {
            config
                .events
                .validate()
                .map_err(|e| CliError::user(format!("{e:#}")))?;
            if config.events.endpoints.is_empty() {
                return Err(CliError::user("no event endpoint is configured").hint(
                    "add [[events.endpoints]] (name, url, secret) to the service's configuration",
                ));
            }
            let now = Utc::now();
            let which = match (id, since) {
                (Some(id), _) => Redeliver::Event(id),
                (None, Some(since)) => Redeliver::Since(parse_since(&since, now)?),
                (None, None) => unreachable!("clap requires one"),
            };
            let store = super::inspect::open_store(&config, mode).await?;
            if let Redeliver::Event(id) = &which
                && store.outbox_event(id).await?.is_none()
            {
                return Err(CliError::user(format!("there is no event {id:?}"))
                    .hint("`mintgate events list` shows the events' ids (msg_…)"));
            }
            let queued = store
                .redeliver(&which, &crate::events::filters(&config.events), now)
                .await?;
            if args.json {
                print_json(&json!({"queued": queued}));
            } else {
                println!(
                    "{queued} deliver(ies) queued with fresh attempts; the service sends them at its next look at the queue"
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_span_back() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2026-12-01T08:00:00Z", now).unwrap(),
            now - chrono::TimeDelta::hours(2)
        );
        assert_eq!(
            parse_since("2h", now).unwrap(),
            now - chrono::TimeDelta::hours(2)
        );
        assert!(parse_since("yesterday-ish", now).is_err());
    }
}
