//! `mintgate status`: what an instance is doing, in plain words ("waiting for the end user at step
//! 'ID document scan' for 12 min"), with its steps. Mint's `Running` alone does not say whether Mint
//! or the end user is the one to wait for; the activities do.

use std::path::Path;

use chrono::{DateTime, TimeDelta, Utc};
use mint_client::{Activity, ActivityStatus, Error as MintError, Instance, InstanceId, Progress};
use serde_json::json;

use super::output::{CliError, CliResult, Table, ago, print_json, timestamp};
use crate::view::human_span;

/// Mint deletes an instance and its result file this long after the instance ended.
pub const RETENTION_DAYS: i64 = 30;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The Mint instance id.
    #[arg(value_name = "INSTANCE_ID")]
    instance_id: String,
    #[command(flatten)]
    env: super::EnvArg,
    /// Print the state as JSON.
    #[arg(long)]
    json: bool,
    /// The time to compare against (RFC 3339), instead of the clock.
    #[arg(long, hide = true)]
    now: Option<DateTime<Utc>>,
}

pub async fn run(args: StatusArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let (name, profile) = super::pick_profile(&config, &args.env)?;
    let client = super::client_for(&name, profile)?;
    let id = InstanceId::new(&args.instance_id).map_err(|e| CliError::user(e.to_string()))?;
    let now = super::now_or(args.now);
    let instance = client.get_instance(&id).await.map_err(|e| match e {
        MintError::NotFound { .. } => CliError::user(format!(
            "Mint has no instance {id} in the {name} environment"
        ))
        .hint(format!(
            "either the id is wrong (another environment? try --env), or Mint deleted the instance \
             {RETENTION_DAYS} days after it ended"
        ))
        .hint(format!(
            "`mintgate inspect {id}` shows what the service recorded and archived"
        )),
        e => CliError::from_mint(&e, &name),
    })?;
    let activities = client
        .activities(&id)
        .await
        .map_err(|e| CliError::from_mint(&e, &name))?;
    let summary = describe(&instance, &activities, now);
    let deletion = deletion_at(&instance);
    if args.json {
        print_json(&json!({
            "instanceId": instance.id.as_str(),
            "environment": name,
            "flowId": instance.flow_id.as_ref().map(|f| f.as_str()),
            "definitionId": instance.definition_id.as_ref().map(|d| d.as_str()),
            "status": instance.status.as_str(),
            "summary": summary,
            "createdAt": instance.created_at,
            "finishedAt": instance.finished_at,
            "deletionAt": deletion,
            "error": instance.error.as_ref().and_then(|e| e.message.clone()),
            "activities": activities.iter().map(|a| json!({
                "id": a.id,
                "name": a.name,
                "type": a.activity_type.as_str(),
                "status": a.status.as_str(),
                "startedAt": a.started_at,
                "completedAt": a.completed_at,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let flow = match (&instance.flow_id, &instance.definition_id) {
        (Some(flow), Some(definition)) => format!(" of flow {flow} (definition {definition})"),
        (Some(flow), None) => format!(" of flow {flow}"),
        _ => String::new(),
    };
    println!("instance {}{flow} in {name}", instance.id);
    println!("{summary}");
    if let Some(created) = instance.created_at.as_ref().and_then(|t| t.parsed()) {
        println!("started {} ({})", timestamp(created), ago(created, now));
    }
    if !activities.is_empty() {
        println!();
        let mut table = Table::new(["STEP", "TYPE", "STATE", "STARTED", "COMPLETED"]);
        for activity in &activities {
            table.row([
                activity.name.clone().unwrap_or_else(|| activity.id.clone()),
                activity.activity_type.as_str().to_owned(),
                activity_state(&activity.status),
                activity
                    .started_at
                    .as_ref()
                    .and_then(|t| t.parsed())
                    .map(|at| ago(at, now))
                    .unwrap_or_default(),
                activity
                    .completed_at
                    .as_ref()
                    .and_then(|t| t.parsed())
                    .map(|at| ago(at, now))
                    .unwrap_or_default(),
            ]);
        }
        print!("{}", table.render(2));
    }
    Ok(())
}

fn activity_state(status: &ActivityStatus) -> String {
    match status {
        ActivityStatus::Suspended => "waiting for the end user".to_owned(),
        ActivityStatus::Executing => "processing".to_owned(),
        ActivityStatus::Pending => "pending".to_owned(),
        ActivityStatus::Completed => "completed".to_owned(),
        ActivityStatus::Faulted => "faulted".to_owned(),
        other => other.as_str().to_owned(),
    }
}

/// When Mint deletes the instance and its result file (checked: Mint's `finishedAt` may be absurd).
pub fn deletion_at(instance: &Instance) -> Option<DateTime<Utc>> {
    instance
        .finished_at
        .as_ref()
        .and_then(|t| t.parsed())
        .and_then(|at| at.checked_add_signed(TimeDelta::days(RETENTION_DAYS)))
}

/// The instance's state in plain words, at `now`.
pub fn describe(instance: &Instance, activities: &[Activity], now: DateTime<Utc>) -> String {
    let step = |s: &Option<String>| {
        s.as_ref()
            .map(|s| format!(" at step '{s}'"))
            .unwrap_or_default()
    };
    let ended = |verb: &str| {
        let when = instance
            .finished_at
            .as_ref()
            .and_then(|t| t.parsed())
            .map(|at| format!(" {}", ago(at, now)))
            .unwrap_or_default();
        let deletion = match deletion_at(instance) {
            Some(deadline) if deadline > now => {
                format!("; result deleted by Mint in {}", human_span(deadline - now))
            }
            Some(_) => "; Mint has deleted the result".to_owned(),
            None => String::new(),
        };
        format!("{verb}{when}{deletion}")
    };
    match Progress::classify(instance, activities) {
        Progress::WaitingForUser { step: s, since } => match since.and_then(|t| t.parsed()) {
            Some(since) => format!(
                "waiting for the end user{} for {}",
                step(&s),
                human_span(now - since)
            ),
            None => format!("waiting for the end user{}", step(&s)),
        },
        Progress::Processing { step: Some(s) } => format!("processing step '{s}'"),
        Progress::Processing { step: None } => {
            "running; Mint reports no step in progress yet".to_owned()
        }
        Progress::Finished { .. } => ended("finished"),
        Progress::Faulted { message } => {
            let at_step = activities
                .iter()
                .find(|a| a.status == ActivityStatus::Faulted)
                .and_then(|a| a.name.clone())
                .map(|s| format!(" at step '{s}'"))
                .unwrap_or_default();
            format!(
                "{}{at_step}: {}",
                ended("faulted"),
                message.as_deref().unwrap_or("Mint gives no reason")
            )
        }
        Progress::Cancelled => ended("cancelled"),
        Progress::Expired => "deleted by Mint".to_owned(),
        Progress::Unknown { status } => {
            format!("status {status:?}, which mintgate does not know; see the steps")
        }
        _ => format!("status {}", instance.status.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(json: serde_json::Value) -> Instance {
        serde_json::from_value(json).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn a_suspended_step_reads_as_waiting_for_the_end_user() {
        let i = instance(json!({"id": "i-1", "status": "Running"}));
        let activities: Vec<Activity> = serde_json::from_value(json!([
            {"id": "a1", "name": "Prepare", "type": "http", "status": "Completed"},
            {"id": "a2", "name": "ID document scan", "type": "userTask", "status": "Suspended",
             "startedAt": "2026-01-01T10:00:00Z"},
        ]))
        .unwrap();
        assert_eq!(
            describe(&i, &activities, at("2026-01-01T10:12:00Z")),
            "waiting for the end user at step 'ID document scan' for 12 min"
        );
    }

    #[test]
    fn an_executing_step_reads_as_processing() {
        let i = instance(json!({"id": "i-1", "status": "Running"}));
        let activities: Vec<Activity> = serde_json::from_value(json!([
            {"id": "a1", "name": "AML screening", "type": "verification", "status": "Executing"},
        ]))
        .unwrap();
        assert_eq!(
            describe(&i, &activities, at("2026-01-01T10:12:00Z")),
            "processing step 'AML screening'"
        );
    }

    #[test]
    fn a_finished_instance_says_when_mint_deletes_its_result() {
        let i = instance(json!({"id": "i-1", "status": "Finished",
            "finishedAt": "2026-01-01T10:00:00Z"}));
        assert_eq!(
            describe(&i, &[], at("2026-01-04T10:00:00Z")),
            "finished 3 days ago; result deleted by Mint in 27 days"
        );
        assert_eq!(
            describe(&i, &[], at("2026-02-04T10:00:00Z")),
            "finished 34 days ago; Mint has deleted the result"
        );
    }
}
