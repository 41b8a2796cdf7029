//! `mintgate doctor`: is every Mint environment ready? Configuration, token, the three roles and
//! the budget, side by side, with what to do about each problem.
//!
//! Roles are probed without starting a billed execution: Mint checks the role before it looks the
//! resource up, so a call on an id that cannot exist answers `403` when the role is missing and
//! `404` when it is present.

use std::path::Path;

use mint_client::{Error as MintError, MintClient, Role};
use secrecy::ExposeSecret as _;
use serde_json::json;

use super::output::{CliError, CliResult, EXIT_OK, EXIT_REMOTE, EXIT_USER, Table, print_json};
use crate::config::Config;
use crate::roles::{ROLES, RoleProbe};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Check only this environment (default: `default_environment`).
    #[arg(long = "env", value_name = "NAME", conflicts_with = "all")]
    env: Option<String>,
    /// Check every configured environment, side by side.
    #[arg(long)]
    all: bool,
    /// Print the findings as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    contract: super::contract::ContractArgs,
    #[command(flatten)]
    e2e: super::e2e::E2eArgs,
}

/// Mint's rate limit per API client, in units a minute (the contract: about 100).
const MINT_UNITS_PER_MINUTE: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    /// Worth knowing; does not fail the run.
    Warning,
    /// The operator must change something (exit code 1).
    Problem,
    /// The check could not be completed (exit code 2).
    Failed,
    /// Not run, because an earlier check failed.
    Skipped,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Problem => "problem",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

#[derive(Debug)]
struct Check {
    name: String,
    status: Status,
    /// A few words for the table cell.
    summary: String,
    /// The whole story, for problems and warnings.
    message: Option<String>,
    hint: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, status: Status, summary: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            summary: summary.into(),
            message: None,
            hint: None,
        }
    }

    fn message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleState {
    Present,
    Missing,
    Unknown,
}

#[derive(Debug)]
struct EnvReport {
    name: String,
    client_id: String,
    api_base: String,
    checks: Vec<Check>,
    roles: Vec<(Role, RoleState)>,
    token: Option<serde_json::Value>,
    budget: Option<serde_json::Value>,
}

pub async fn run(args: DoctorArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    if let Some(flow) = &args.e2e.e2e {
        return super::e2e::run(&args.e2e, flow, &config, args.env.as_deref(), args.json).await;
    }
    if args.contract.contract {
        let env = super::EnvArg {
            env: args.env.clone(),
        };
        return super::contract::run(&args.contract, &config, &env, args.json).await;
    }
    let names: Vec<String> = if args.all {
        // The default environment (usually sandbox) first, then the others by name.
        let mut names: Vec<String> = config.mint.keys().cloned().collect();
        names.sort_by_key(|n| *n != config.default_environment);
        names
    } else {
        vec![
            args.env
                .clone()
                .unwrap_or_else(|| config.default_environment.clone()),
        ]
    };
    if config.mint.is_empty() {
        return Err(CliError::user("no Mint environment is configured").hint(
            "add a [mint.<name>] profile to the configuration file, or set MINT_CLIENT_ID and \
                 MINT_CLIENT_SECRET",
        ));
    }
    if let Some(unknown) = names.iter().find(|n| !config.mint.contains_key(*n)) {
        return Err(
            CliError::user(format!("no Mint profile for environment {unknown:?}")).hint(format!(
                "configured: {}",
                config.mint.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        );
    }
    let mut reports = Vec::new();
    for name in &names {
        reports.push(check_environment(&config, name).await);
    }
    let differences = role_differences(&reports);
    // The service's own checks (webhook secret, workers, database) matter to `serve`, not to the
    // Mint environments: reported, never failing the run.
    let service = config.validate().err().map(|e| format!("{e:#}"));
    let code = exit_code(&reports, &differences);
    if args.json {
        print_json(&to_json(&reports, &differences, service.as_deref(), code));
    } else {
        print!(
            "{}",
            render(&reports, &differences, service.as_deref(), code)
        );
    }
    match code {
        EXIT_OK => Ok(()),
        code => Err(CliError::silent(code)),
    }
}

fn exit_code(reports: &[EnvReport], differences: &[RoleDifference]) -> u8 {
    let statuses = || {
        reports
            .iter()
            .flat_map(|r| r.checks.iter().map(|c| c.status))
    };
    if statuses().any(|s| s == Status::Failed) {
        EXIT_REMOTE
    } else if statuses().any(|s| s == Status::Problem) || !differences.is_empty() {
        EXIT_USER
    } else {
        EXIT_OK
    }
}

async fn check_environment(config: &Config, name: &str) -> EnvReport {
    let profile = &config.mint[name];
    let mut report = EnvReport {
        name: name.to_owned(),
        client_id: profile.client_id.clone(),
        api_base: profile.api_base.to_string(),
        checks: Vec::new(),
        roles: ROLES.iter().map(|r| (*r, RoleState::Unknown)).collect(),
        token: None,
        budget: None,
    };
    // 1. Configuration.
    let mut usable = true;
    match profile.validate(name) {
        Ok(()) if profile.budget_units_per_minute > MINT_UNITS_PER_MINUTE => {
            report.checks.push(
                Check::new("configuration", Status::Warning, "warning")
                    .message(format!(
                        "`mint.{name}.budget_units_per_minute` is {}, above Mint's limit of about \
                         {MINT_UNITS_PER_MINUTE} units a minute: expect 429s",
                        profile.budget_units_per_minute
                    ))
                    .hint(format!(
                        "set `mint.{name}.budget_units_per_minute` to {MINT_UNITS_PER_MINUTE} or less"
                    )),
            );
        }
        Ok(()) => report
            .checks
            .push(Check::new("configuration", Status::Ok, "ok")),
        Err(error) => {
            let text = format!("{error:#}");
            // A secret with stray whitespace still gets a token attempt: Mint's answer shows it.
            let secret = profile.client_secret.expose_secret();
            usable = !profile.client_id.trim().is_empty()
                && !secret.trim().is_empty()
                && secret.trim() != secret;
            report.checks.push(
                Check::new("configuration", Status::Problem, "PROBLEM")
                    .message(text)
                    .hint(format!(
                        "fix the `[mint.{name}]` profile (or MINT_… variables for the default environment)"
                    )),
            );
        }
    }
    let client = if usable {
        match super::client_for(name, profile) {
            Ok(client) => Some(client),
            Err(error) => {
                report.checks.push(
                    Check::new("configuration", Status::Problem, "PROBLEM").message(error.message),
                );
                None
            }
        }
    } else {
        None
    };
    let Some(client) = client else {
        skip_rest(&mut report, "the configuration is not usable");
        return report;
    };
    // 2. Token.
    match client.fetch_token().await {
        Ok(info) => {
            let lifetime = info.expires_in.as_secs();
            report.token = Some(json!({
                "expiresInSecs": lifetime,
                "renewAfterSecs": info.renew_after.as_secs(),
                "tokenType": info.token_type,
                "scope": info.scope,
            }));
            let summary = format!("ok, lifetime {lifetime} s");
            let check = if lifetime < 60 {
                Check::new("token", Status::Warning, summary).message(format!(
                    "Mint gives this API client tokens of only {lifetime} s; every call renews often"
                ))
            } else {
                Check::new("token", Status::Ok, summary).message(format!(
                    "issued; lifetime {lifetime} s, renewed after {} s",
                    info.renew_after.as_secs()
                ))
            };
            report.checks.push(check);
        }
        Err(error) => {
            report.checks.push(token_problem(&error, name));
            skip_rest(&mut report, "no token");
            return report;
        }
    }
    // 3. Roles.
    let probe = crate::roles::probe_id("mintgate-doctor-probe");
    for (index, role) in ROLES.iter().enumerate() {
        let (state, check) = probe_role(&client, *role, &probe, name).await;
        report.roles[index].1 = state;
        report.checks.push(check);
    }
    // 4. Budget.
    report
        .checks
        .push(budget_check(&client, name, &mut report.budget).await);
    report
}

fn skip_rest(report: &mut EnvReport, why: &str) {
    let done: Vec<String> = report.checks.iter().map(|c| c.name.clone()).collect();
    for name in ["token"]
        .into_iter()
        .map(str::to_owned)
        .chain(ROLES.iter().map(Role::to_string))
        .chain(["budget".to_owned()])
    {
        if !done.contains(&name) {
            report
                .checks
                .push(Check::new(name, Status::Skipped, "skipped").message(why));
        }
    }
}

fn token_problem(error: &MintError, name: &str) -> Check {
    use mint_client::AuthErrorKind as K;
    let message = error.to_string();
    let (status, summary, hint) = match error {
        MintError::Auth { kind, .. } => match kind {
            K::InvalidClient => (
                Status::Problem,
                "REFUSED (invalid_client)",
                format!(
                    "copy the client id and secret of the {name} account's API client again from the \
                     Signicat dashboard into `mint.{name}.client_id` / `mint.{name}.client_secret`; \
                     a sandbox client does not work in production"
                ),
            ),
            K::InvalidScope => (
                Status::Problem,
                "REFUSED (invalid_scope)",
                "Mint needs scope \"signicat-api\"".to_owned(),
            ),
            K::OAuth(_) => (
                Status::Problem,
                "REFUSED",
                format!("check `mint.{name}.token_url`: it must be Mint's token endpoint"),
            ),
            K::TokenRejected | K::Unavailable => (
                Status::Failed,
                "FAILED",
                format!(
                    "check `mint.{name}.token_url` and that this machine can reach it, then run doctor again"
                ),
            ),
            _ => (Status::Failed, "FAILED", String::new()),
        },
        _ => (
            Status::Failed,
            "FAILED",
            format!("check `mint.{name}.token_url` and the network, then run doctor again"),
        ),
    };
    let check = Check::new("token", status, summary).message(message);
    if hint.is_empty() {
        check
    } else {
        check.hint(hint)
    }
}

/// Probes one role with a call on an id that cannot exist: 404 means present, 403 missing.
async fn probe_role(
    client: &MintClient,
    role: Role,
    probe: &str,
    environment: &str,
) -> (RoleState, Check) {
    let name = role.to_string();
    match crate::roles::probe(client, role, probe).await {
        RoleProbe::Present => (
            RoleState::Present,
            Check::new(name, Status::Ok, "ok")
                .message("present (a call on an id that does not exist answered 404)"),
        ),
        RoleProbe::Missing(error) => (
            RoleState::Missing,
            Check::new(name, Status::Problem, "MISSING")
                .message(error.to_string())
                .hint(format!(
                    "in the Signicat dashboard of the {environment} account, open API clients → {} → \
                     roles, and grant {role}",
                    client.config().client_id
                )),
        ),
        RoleProbe::Succeeded => (
            RoleState::Present,
            Check::new(name, Status::Warning, "ok?").message(format!(
                "the probe on the id {probe:?}, which should not exist, succeeded: the role is present, \
                 but check what Mint did"
            )),
        ),
        RoleProbe::Unknown(error) => {
            let cli = CliError::from_mint(&error, environment);
            let status = if cli.code == EXIT_USER {
                Status::Problem
            } else {
                Status::Failed
            };
            let mut check =
                Check::new(name, status, "FAILED").message(format!("could not probe: {error}"));
            if let Some(hint) = cli.hints.into_iter().next() {
                check = check.hint(hint);
            }
            (RoleState::Unknown, check)
        }
    }
}

async fn budget_check(
    client: &MintClient,
    name: &str,
    out: &mut Option<serde_json::Value>,
) -> Check {
    let snapshot = client.budget().snapshot().await;
    let minutes = snapshot.window.as_secs_f64() / 60.0;
    let per = if (minutes - 1.0).abs() < f64::EPSILON {
        "units/min".to_owned()
    } else {
        format!("units per {} s", snapshot.window.as_secs())
    };
    *out = Some(json!({
        "limitUnits": snapshot.limit_units,
        "remainingUnits": snapshot.remaining_units,
        "usedUnits": snapshot.used_units,
        "burstLimitUnits": snapshot.burst_limit_units,
        "throttled": snapshot.throttled_total,
        "windowSecs": snapshot.window.as_secs(),
    }));
    let summary = format!(
        "{}/{} {per} left",
        snapshot.remaining_units, snapshot.limit_units
    );
    let message = format!(
        "{} of {} {per} left after these checks used {}; bursts up to {} units a second",
        snapshot.remaining_units,
        snapshot.limit_units,
        snapshot.used_units,
        snapshot.burst_limit_units
    );
    if snapshot.throttled_total > 0 {
        Check::new("budget", Status::Warning, format!("{summary}, 429!"))
            .message(format!(
                "Mint answered 429 to these few checks: something else (`mintgate serve`?) is spending \
                 the {name} API client's budget of about {MINT_UNITS_PER_MINUTE} units a minute. {message}"
            ))
            .hint("every process using this API client shares one budget at Mint")
    } else {
        Check::new("budget", Status::Ok, summary).message(message)
    }
}

/// A role granted in one environment and missing in another (typically: in sandbox, not in
/// production, because roles are granted by hand per environment).
#[derive(Debug)]
struct RoleDifference {
    role: Role,
    granted_in: Vec<String>,
    missing_in: Vec<String>,
}

fn role_differences(reports: &[EnvReport]) -> Vec<RoleDifference> {
    let mut differences = Vec::new();
    for (index, role) in ROLES.iter().enumerate() {
        let with = |state: RoleState| -> Vec<String> {
            reports
                .iter()
                .filter(|r| r.roles[index].1 == state)
                .map(|r| r.name.clone())
                .collect()
        };
        let granted_in = with(RoleState::Present);
        let missing_in = with(RoleState::Missing);
        if !granted_in.is_empty() && !missing_in.is_empty() {
            differences.push(RoleDifference {
                role: *role,
                granted_in,
                missing_in,
            });
        }
    }
    differences
}

fn render(
    reports: &[EnvReport],
    differences: &[RoleDifference],
    service: Option<&str>,
    code: u8,
) -> String {
    let mut out = String::new();
    for report in reports {
        out.push_str(&format!(
            "{}: API client {} at {}\n",
            report.name, report.client_id, report.api_base
        ));
    }
    out.push('\n');
    let mut table = Table::new(
        std::iter::once("CHECK".to_owned()).chain(reports.iter().map(|r| r.name.clone())),
    );
    let names: Vec<String> = reports
        .first()
        .map(|r| r.checks.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let cells = reports.iter().map(|r| {
            let checks: Vec<&Check> = r.checks.iter().filter(|c| c.name == name).collect();
            // The worst of a name's checks (configuration can have two).
            checks
                .iter()
                .max_by_key(|c| severity(c.status))
                .map(|c| c.summary.clone())
                .unwrap_or_default()
        });
        table.row(std::iter::once(name.clone()).chain(cells));
    }
    out.push_str(&table.render(2));
    let findings: Vec<(&EnvReport, &Check)> = reports
        .iter()
        .flat_map(|r| r.checks.iter().map(move |c| (r, c)))
        .filter(|(_, c)| matches!(c.status, Status::Problem | Status::Failed | Status::Warning))
        .collect();
    if !findings.is_empty() {
        out.push_str("\nfindings:\n");
        for (report, check) in findings {
            let label = match check.status {
                Status::Warning => "warning",
                Status::Failed => "failed",
                _ => "problem",
            };
            out.push_str(&format!(
                "  {label}: {} {}: {}\n",
                report.name,
                check.name,
                check.message.as_deref().unwrap_or(&check.summary)
            ));
            if let Some(hint) = &check.hint {
                out.push_str(&format!("    hint: {hint}\n"));
            }
        }
    }
    if !differences.is_empty() {
        out.push_str("\nroles that differ between environments:\n");
        for d in differences {
            out.push_str(&format!(
                "  {} is granted in {} but missing in {}: roles are granted by hand, separately in \
                 each environment's dashboard; grant it in {} too\n",
                d.role,
                d.granted_in.join(", "),
                d.missing_in.join(", "),
                d.missing_in.join(", ")
            ));
        }
    }
    if let Some(service) = service {
        out.push_str(&format!(
            "\nnote: `mintgate serve` would refuse this configuration: {service}\n"
        ));
    }
    out.push('\n');
    out.push_str(match code {
        EXIT_OK => "all checks passed; no execution was started\n",
        EXIT_USER => {
            "some checks need attention (see above); no execution was started; run doctor again after fixing\n"
        }
        _ => "some checks could not be completed (see above); no execution was started\n",
    });
    out
}

fn severity(status: Status) -> u8 {
    match status {
        Status::Ok => 0,
        Status::Skipped => 1,
        Status::Warning => 2,
        Status::Problem => 3,
        Status::Failed => 4,
    }
}

fn to_json(
    reports: &[EnvReport],
    differences: &[RoleDifference],
    service: Option<&str>,
    code: u8,
) -> serde_json::Value {
    let environments: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let roles: serde_json::Map<String, serde_json::Value> = r
                .roles
                .iter()
                .map(|(role, state)| {
                    let state = match state {
                        RoleState::Present => "present",
                        RoleState::Missing => "missing",
                        RoleState::Unknown => "unknown",
                    };
                    (role.to_string(), json!(state))
                })
                .collect();
            json!({
                "name": r.name,
                "clientId": r.client_id,
                "apiBase": r.api_base,
                "ok": r.checks.iter().all(|c| matches!(c.status, Status::Ok | Status::Warning)),
                "checks": r.checks.iter().map(|c| json!({
                    "check": c.name,
                    "status": c.status.as_str(),
                    "summary": c.summary,
                    "message": c.message,
                    "hint": c.hint,
                })).collect::<Vec<_>>(),
                "roles": roles,
                "token": r.token,
                "budget": r.budget,
            })
        })
        .collect();
    json!({
        "ok": code == EXIT_OK,
        "exitCode": code,
        "environments": environments,
        "roleDifferences": differences.iter().map(|d| json!({
            "role": d.role.to_string(),
            "grantedIn": d.granted_in,
            "missingIn": d.missing_in,
        })).collect::<Vec<_>>(),
        "serviceConfigurationError": service,
        "executionsStarted": 0,
    })
}
