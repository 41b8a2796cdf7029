//! `mintgate doctor --contract`: one call to each read endpoint of Mint, each answer checked
//! against what mint-client expects ([`mint_client::contract`]): missing fields, other types,
//! unknown enum values, odd dates, pagination fields, the result file's headers. Nothing is
//! started, so nothing is billed; the calls cost about 4 rate units, plus 5 for the result file's
//! headers (`--result-file skip` saves them).

use mint_client::contract::{ContractReport, HeaderProbe, ProbeTarget, Severity, StepOutcome};
use mint_client::{FlowId, InstanceId};
use serde_json::json;

use super::output::{CliError, CliResult, EXIT_OK, EXIT_REMOTE, EXIT_USER, Table, print_json};
use crate::config::Config;

/// How `--contract` reads the result file's headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultFileProbe {
    /// `HEAD` (5 units, no byte of the file).
    Head,
    /// `GET` dropped after the headers (5 units; Mint may count it as a download).
    Get,
    /// Not at all.
    Skip,
}

/// The options of `doctor --contract`.
#[derive(Debug, Clone, clap::Args)]
pub struct ContractArgs {
    /// Check the shapes of Mint's answers against what mint-client expects (bills nothing).
    #[arg(long, conflicts_with = "all")]
    pub contract: bool,
    /// The flow whose instances are listed (default: the first flow listed).
    #[arg(long, value_name = "FLOW_ID", requires = "contract")]
    pub flow: Option<String>,
    /// The instance read alone and with its activities (default: the first listed).
    #[arg(long, value_name = "INSTANCE_ID", requires = "contract")]
    pub instance: Option<String>,
    /// How to read a finished instance's result-file headers.
    #[arg(long, value_enum, default_value = "head", requires = "contract")]
    pub result_file: ResultFileProbe,
}

pub async fn run(
    args: &ContractArgs,
    config: &Config,
    env: &super::EnvArg,
    json: bool,
) -> CliResult {
    let (name, profile) = super::pick_profile(config, env)?;
    let client = super::client_for(&name, profile)?;
    let target = ProbeTarget {
        flow_id: args
            .flow
            .as_deref()
            .map(FlowId::new)
            .transpose()
            .map_err(|e| CliError::user(format!("--flow: {e}")))?,
        instance_id: args
            .instance
            .as_deref()
            .map(InstanceId::new)
            .transpose()
            .map_err(|e| CliError::user(format!("--instance: {e}")))?,
        result_file: match args.result_file {
            ResultFileProbe::Head => Some(HeaderProbe::Head),
            ResultFileProbe::Get => Some(HeaderProbe::Get),
            ResultFileProbe::Skip => None,
        },
        ..ProbeTarget::default()
    };
    let report = client.probe_contract(&target).await;
    let code = exit_code(&report);
    if json {
        print_json(&json!({
            "environment": name,
            "units": report.units(),
            "worst": report.worst(),
            "exitCode": code,
            "steps": report.steps,
            "findings": report.findings,
        }));
    } else {
        print!("{}", render(&name, &report));
    }
    match code {
        EXIT_OK => Ok(()),
        code => Err(CliError::silent(code)),
    }
}

/// 2 when a call failed (the report is partial), 1 when an answer is one the client cannot use
/// (an `error` finding), else 0: warnings and infos are reported, not failed.
fn exit_code(report: &ContractReport) -> u8 {
    if report.has_failed_step() {
        EXIT_REMOTE
    } else if report.worst() == Some(Severity::Error) {
        EXIT_USER
    } else {
        EXIT_OK
    }
}

fn render(environment: &str, report: &ContractReport) -> String {
    let mut out = format!(
        "Mint's answers against mint-client's contract, environment {environment} ({} rate units, nothing started)\n\n",
        report.units()
    );
    let mut calls = Table::new(["CALL", "PATH", "OUTCOME"]);
    for step in &report.steps {
        let outcome = match &step.outcome {
            StepOutcome::Answered { status, findings } => {
                format!("{status}, {findings} finding(s)")
            }
            StepOutcome::Failed { status, error } => match status {
                Some(status) => format!("failed ({status}): {error}"),
                None => format!("failed: {error}"),
            },
            StepOutcome::Skipped { reason } => format!("skipped: {reason}"),
        };
        calls.row([
            format!("{} {}", step.method, step.endpoint.name()),
            step.path.clone(),
            outcome,
        ]);
    }
    out.push_str(&calls.render(0));
    out.push('\n');
    if report.findings.is_empty() {
        out.push_str("Every answer has the shape mint-client expects.\n");
        return out;
    }
    let mut findings = Table::new([
        "SEVERITY", "ENDPOINT", "FIELD", "EXPECTED", "FOUND", "TIMES",
    ]);
    for finding in &report.findings {
        findings.row([
            finding.severity.to_string(),
            finding.endpoint.name().to_owned(),
            finding.field.clone(),
            finding.expected.clone(),
            finding.found.clone(),
            finding.occurrences.to_string(),
        ]);
    }
    out.push_str(&findings.render(0));
    out.push('\n');
    for finding in report
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
    {
        out.push_str(&format!(
            "{} {} {}: {}\n",
            finding.severity,
            finding.endpoint.name(),
            finding.field,
            finding.impact
        ));
    }
    out
}
