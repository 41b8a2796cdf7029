//! `mintgate decide`: an operator's answer for an execution in `needs_decision` (a start whose
//! answer was lost, whose instance reconciliation could neither find nor rule out).
//!
//! `--started INSTANCE_ID`: it was started; the instance is read from Mint first (it must exist;
//! its input should carry the execution's correlation id, and a warning says so when it does not),
//! then attached: the execution runs, is billed once, and is followed like any other.
//! `--not-started`: it was not started; the execution is queued and started again (billed once
//! more if it had in fact been started: that is the operator's call).
//!
//! Writes the service's database directly (like `dead-letters retry`), never migrating it: the
//! execution's change, an event and an audit record in one transaction; a running service picks the
//! follow-up job up at its next look at the queue.

use std::path::Path;

use chrono::{DateTime, Utc};
use mint_client::InstanceId;
use serde_json::json;
use uuid::Uuid;

use super::output::{CliError, CliResult, print_json};
use crate::model::{CORRELATION_KEY, ExecutionState};
use crate::store::{AuditRecord, Decision, OpenMode};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("decision").required(true).args(["started", "not_started"])))]
pub struct DecideArgs {
    /// The execution waiting for a decision (`mintgate inspect` shows why, and the candidates).
    #[arg(long, value_name = "ID")]
    execution: Uuid,
    /// It was started: attach this Mint instance (read from Mint and checked first).
    #[arg(long, value_name = "INSTANCE_ID")]
    started: Option<String>,
    /// It was not started: start it.
    #[arg(long)]
    not_started: bool,
    /// Who decides (recorded in the audit log and the event); default: the OS user.
    #[arg(long, value_name = "NAME")]
    operator: Option<String>,
    /// Why (e.g. a ticket number, what Signicat's dashboard showed); recorded in the audit log.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
    /// The time to record (RFC 3339), instead of the clock.
    #[arg(long, hide = true)]
    now: Option<DateTime<Utc>>,
}

pub async fn run(args: DecideArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let store = super::inspect::open_store(&config, OpenMode::ReadWrite).await?;
    let now = super::now_or(args.now);
    let Some(execution) = store.execution(args.execution).await? else {
        return Err(
            CliError::user(format!("the service has no execution {}", args.execution))
                .hint("`mintgate inspect ID` takes an execution id or an instance id"),
        );
    };
    if execution.state != ExecutionState::NeedsDecision {
        return Err(CliError::user(format!(
            "execution {} is {}, not waiting for a decision",
            execution.id,
            execution.state.as_str()
        ))
        .hint(format!(
            "`mintgate inspect {}` shows its whole chain",
            execution.id
        )));
    }
    let operator = super::erase::operator_name(args.operator);
    let mut warnings = Vec::new();
    let (decision, detail) = match &args.started {
        Some(instance) => {
            let instance_id = InstanceId::new(instance.as_str())
                .map_err(|e| CliError::user(format!("{instance:?}: {e}")))?;
            if let Some(other) = store.execution_by_instance(&instance_id).await? {
                return Err(CliError::user(format!(
                    "instance {instance_id} is already execution {}'s",
                    other.id
                ))
                .hint("one instance is one execution; look at the other candidates in `mintgate inspect`"));
            }
            let environment = execution.environment.as_str();
            let Some(profile) = config.mint.get(environment) else {
                return Err(CliError::user(format!(
                    "no Mint profile for the execution's environment {environment:?}"
                ))
                .hint("run the command with the service's configuration"));
            };
            profile
                .validate(environment)
                .map_err(|e| CliError::user(format!("{e:#}")))?;
            let client = super::client_for(environment, profile)?;
            let found = client
                .get_instance(&instance_id)
                .await
                .map_err(|e| CliError::from_mint(&e, environment))?;
            let carried = found
                .input
                .as_ref()
                .and_then(|input| input.get(CORRELATION_KEY))
                .and_then(|v| v.as_str())
                .map(str::to_owned);
            match carried.as_deref() {
                Some(id) if id == execution.id.to_string() => {}
                Some(other) => warnings.push(format!(
                    "instance {instance_id}'s input names execution {other}, not this one ({CORRELATION_KEY})"
                )),
                None => warnings.push(format!(
                    "instance {instance_id}'s input does not carry {CORRELATION_KEY}; attached on your word"
                )),
            }
            if let Some(flow) = &found.flow_id
                && flow != &execution.flow_id
            {
                warnings.push(format!(
                    "instance {instance_id} runs flow {flow}, the execution asked for {}",
                    execution.flow_id
                ));
            }
            if found.workflow_url.is_none() {
                warnings.push(
                    "Mint's instance answer gives no workflowUrl: the end user's link stays unknown \
                     (the execution shows workflowUrlUnknown)"
                        .to_owned(),
                );
            }
            let started_at = found
                .created_at
                .as_ref()
                .and_then(|t| t.plausible(now, execution.created_at))
                .unwrap_or(now);
            let detail = json!({
                "decision": "started",
                "instanceId": instance_id.as_str(),
                "inputCarriesId": carried.as_deref() == Some(execution.id.to_string().as_str()),
                "mintStatus": found.status.as_str(),
                "reason": args.reason,
                "warnings": warnings,
            });
            (
                Decision::Started {
                    instance_id,
                    mint_status: found.status.as_str().to_owned(),
                    started_at,
                    workflow_url: found.workflow_url.clone(),
                    cents: i64::from(profile.price_cents),
                },
                detail,
            )
        }
        None => (
            Decision::NotStarted,
            json!({"decision": "not_started", "reason": args.reason}),
        ),
    };
    let audit = AuditRecord {
        at: now,
        operator: operator.clone(),
        action: "decide".to_owned(),
        target: execution.id.to_string(),
        outcome: "done".to_owned(),
        detail: detail.clone(),
    };
    if !store.decide(execution.id, decision, audit, now).await? {
        return Err(CliError::user(format!(
            "execution {} is no longer waiting for a decision (decided meanwhile?)",
            execution.id
        ))
        .hint(format!("`mintgate inspect {}`", execution.id)));
    }
    if args.json {
        print_json(&json!({
            "executionId": execution.id,
            "operator": operator,
            "outcome": detail,
        }));
        return Ok(());
    }
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    match &args.started {
        Some(instance) => println!(
            "execution {} attached to instance {instance}: running, billed once; the service follows it from its next look at the queue",
            execution.id
        ),
        None => println!(
            "execution {} queued to start again; the service starts it at its next look at the queue",
            execution.id
        ),
    }
    println!("recorded in the audit log by {operator}");
    Ok(())
}
