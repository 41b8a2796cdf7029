//! `mintgate doctor --e2e FLOW_ID`: one minimal execution end to end through the running service,
//! each stage timed, stopping at the first missing link with what to check. It costs one billed
//! execution, so it asks first (unless `--yes`).
//!
//! The stages: the own API accepts it; the executor starts it in Mint (billed once); Mint runs it
//! (and the end user does their part, if the flow has one: the link is printed); the flow's last
//! step sends its webhook (or the poller finds the end: then the webhook is the missing link);
//! the downloader archives the result, verified; the cost ledger has its line. What only the
//! database knows (webhooks, the ledger) is read from it when this machine can; else it says so.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;
use serde_json::json;
use uuid::Uuid;

use super::output::{CliError, CliResult, EXIT_USER, print_json};
use crate::config::{Config, Scope, key_with};
use crate::model::ExecutionState;
use crate::view::ExecutionView;

/// The options of `doctor --e2e`.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    /// Run one execution of FLOW_ID end to end through the running service (costs one execution).
    #[arg(long, value_name = "FLOW_ID", conflicts_with_all = ["all", "contract"])]
    pub e2e: Option<String>,
    /// Do not ask before spending the execution.
    #[arg(long, requires = "e2e")]
    pub yes: bool,
    /// Give up after this long (e.g. `15m`; the end user's part, if any, counts).
    #[arg(long, value_name = "DURATION", default_value = "15m", value_parser = humantime::parse_duration, requires = "e2e")]
    pub timeout: Duration,
}

/// One stage and how it went.
struct Stage {
    name: &'static str,
    ok: bool,
    /// Seconds since the run began.
    at_secs: f64,
    detail: String,
    hint: Option<String>,
}

pub async fn run(
    args: &E2eArgs,
    flow_id: &str,
    config: &Config,
    environment: Option<&str>,
    json_output: bool,
) -> CliResult {
    let needed = [Scope::ExecutionsWrite, Scope::ExecutionsRead];
    let Some(key) = key_with(&config.service.api_keys, &needed) else {
        return Err(CliError::user(
            "no API key to reach the service: no key of `service.api_keys` has both scopes `executions:write` and `executions:read`",
        )
        .hint("doctor --e2e goes through the running service's own API, like `mintgate start`; a bare key has every scope"));
    };
    let key = &key.key;
    if !args.yes {
        confirm(flow_id)?;
    }
    let began = Instant::now();
    let secs = || began.elapsed().as_secs_f64();
    let base = super::start::service_url(config);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| CliError::remote(format!("cannot build an HTTP client: {e}")))?;
    let mut stages: Vec<Stage> = Vec::new();

    // 1. Accepted by the own API.
    let answer = http
        .post(format!("{base}/v1/executions"))
        .bearer_auth(key.expose_secret())
        .json(&json!({
            "flowId": flow_id,
            "input": {"mintgateDoctorE2e": true},
            "idempotencyKey": format!("doctor-e2e-{}", Uuid::new_v4().simple()),
            "environment": environment,
        }))
        .send()
        .await;
    let accepted: ExecutionView = match answer {
        Ok(response) if response.status().as_u16() == 202 => match response.json().await {
            Ok(view) => view,
            Err(e) => {
                stages.push(Stage {
                    name: "accepted",
                    ok: false,
                    at_secs: secs(),
                    detail: format!("unreadable answer: {e}"),
                    hint: None,
                });
                return finish(stages, json_output, None);
            }
        },
        Ok(response) => {
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            stages.push(Stage {
                name: "accepted",
                ok: false,
                at_secs: secs(),
                detail: format!("the service answered {status}: {}", text.chars().take(300).collect::<String>()),
                hint: Some("check the flow id (`mintgate flows`) and that the API key is one `mintgate serve` accepts".to_owned()),
            });
            return finish(stages, json_output, None);
        }
        Err(e) => {
            stages.push(Stage {
                name: "accepted",
                ok: false,
                at_secs: secs(),
                detail: format!("cannot reach the service at {base}: {e}"),
                hint: Some("is `mintgate serve` running? Its address is `service.url` (default: the operator listener)".to_owned()),
            });
            return finish(stages, json_output, None);
        }
    };
    let id = accepted.id;
    stages.push(Stage {
        name: "accepted",
        ok: true,
        at_secs: secs(),
        detail: format!("execution {id}"),
        hint: None,
    });

    // 2–5. Follow the execution through the service's API.
    let deadline = began + args.timeout;
    let mut started: Option<ExecutionView> = None;
    let mut finished: Option<f64> = None;
    let last = loop {
        let view = match get(&http, &base, key.expose_secret(), id).await {
            Ok(view) => view,
            Err(error) => {
                stages.push(Stage {
                    name: "followed",
                    ok: false,
                    at_secs: secs(),
                    detail: error,
                    hint: Some("the service stopped answering its own API".to_owned()),
                });
                return finish(stages, json_output, Some(id));
            }
        };
        if started.is_none() && view.instance_id.is_some() {
            stages.push(Stage {
                name: "started in Mint",
                ok: true,
                at_secs: secs(),
                detail: format!(
                    "instance {}{}",
                    view.instance_id.as_ref().map(|i| i.as_str()).unwrap_or(""),
                    view.workflow_url
                        .as_ref()
                        .map(|u| format!("; if the flow waits for its end user, open {u}"))
                        .unwrap_or_default()
                ),
                hint: None,
            });
            started = Some(view);
            continue;
        }
        if finished.is_none() && view.finished_at.is_some() {
            finished = Some(secs());
        }
        match view.state {
            ExecutionState::Archived | ExecutionState::Failed | ExecutionState::Expired => {
                break view;
            }
            state if state.as_str() == "needs_decision" => break view,
            _ => {}
        }
        if Instant::now() >= deadline {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    if started.is_none() {
        stages.push(Stage {
            name: "started in Mint",
            ok: false,
            at_secs: secs(),
            detail: format!("not started: {}", last.summary),
            hint: Some("`mintgate doctor` checks credentials and the Flow Editor role; `mintgate inspect` shows the start job's errors".to_owned()),
        });
        return finish(stages, json_output, Some(id));
    }
    let Some(finished_secs) = finished else {
        stages.push(Stage {
            name: "finished in Mint",
            ok: false,
            at_secs: secs(),
            detail: format!("not finished after {}: {}", humantime::format_duration(args.timeout), last.summary),
            hint: Some("a flow with a user step waits for its end user: open the link above, or use a flow without one".to_owned()),
        });
        return finish(stages, json_output, Some(id));
    };
    stages.push(Stage {
        name: "finished in Mint",
        ok: last.state != ExecutionState::Failed || last.finished_at.is_some(),
        at_secs: finished_secs,
        detail: last.summary.clone(),
        hint: None,
    });

    // The webhook: only the database knows whether one came.
    let recorded = database_facts(config, &last).await;
    let (webhook_ok, webhook_detail, webhook_hint) = match &recorded {
        Some(facts) if facts.webhooks > 0 => (
            true,
            format!("{} webhook(s) arrived, first at {}", facts.webhooks, facts.first_webhook.map(|t| t.to_rfc3339()).unwrap_or_default()),
            None,
        ),
        Some(_) => (
            false,
            "no webhook arrived: the poller found the end".to_owned(),
            Some("the flow's last step must send the webhook: `mintgate webhook step`, then `mintgate webhook test <url>`; check the URL is reachable from Mint (HTTPS) and the secret header".to_owned()),
        ),
        None => (
            true,
            "unknown (the service's database is not readable from here)".to_owned(),
            None,
        ),
    };
    stages.push(Stage {
        name: "webhook",
        ok: webhook_ok,
        at_secs: finished_secs,
        detail: webhook_detail,
        hint: webhook_hint,
    });

    // Archived and verified.
    match (&last.state, &last.archive) {
        (ExecutionState::Archived, Some(archive)) => stages.push(Stage {
            name: "archived",
            ok: true,
            at_secs: secs(),
            detail: format!(
                "{} bytes, SHA-256 {}, {}",
                archive.bytes, archive.sha256, archive.path
            ),
            hint: None,
        }),
        _ => {
            stages.push(Stage {
                name: "archived",
                ok: false,
                at_secs: secs(),
                detail: last.summary.clone(),
                hint: Some("`mintgate inspect` shows the download job's errors (the Flow Instance Download role? the archive's storage?)".to_owned()),
            });
            return finish(stages, json_output, Some(id));
        }
    }
    // The ledger.
    match &recorded {
        Some(facts) => stages.push(Stage {
            name: "ledger",
            ok: facts.billed == 1,
            at_secs: secs(),
            detail: format!("billed {} time(s)", facts.billed),
            hint: (facts.billed != 1)
                .then(|| "an execution is billed exactly once: see `mintgate inspect`".to_owned()),
        }),
        None => stages.push(Stage {
            name: "ledger",
            ok: true,
            at_secs: secs(),
            detail: "unknown (the service's database is not readable from here)".to_owned(),
            hint: None,
        }),
    }
    finish(stages, json_output, Some(id))
}

fn confirm(flow_id: &str) -> CliResult {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::user(format!(
            "doctor --e2e starts one billed execution of {flow_id}: confirm with --yes"
        )));
    }
    print!(
        "doctor --e2e starts one execution of {flow_id} in Mint: it is billed (about $0.50). Continue? [y/N] "
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    let _ = stdin.lock().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CliError::user("not confirmed: nothing was started"))
    }
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    id: Uuid,
) -> Result<ExecutionView, String> {
    let response = http
        .get(format!("{base}/v1/executions/{id}"))
        .bearer_auth(key)
        .send()
        .await
        .map_err(|e| format!("cannot reach the service: {e}"))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("the service answered {status} for execution {id}"));
    }
    response
        .json()
        .await
        .map_err(|e| format!("unreadable answer: {e}"))
}

/// What the database says of the run: webhooks for the instance, starts billed.
struct Facts {
    webhooks: usize,
    first_webhook: Option<DateTime<Utc>>,
    billed: i64,
}

async fn database_facts(config: &Config, view: &ExecutionView) -> Option<Facts> {
    let store = super::inspect::open_store(config, crate::store::OpenMode::ReadOnly)
        .await
        .ok()?;
    let webhooks = match &view.instance_id {
        Some(instance) => store.webhooks_for(instance).await.ok()?,
        None => Vec::new(),
    };
    let execution = store.execution(view.id).await.ok()??;
    Some(Facts {
        webhooks: webhooks.iter().filter(|w| w.authentic).count(),
        first_webhook: webhooks.iter().map(|w| w.received_at).min(),
        billed: execution.billed_count,
    })
}

fn finish(stages: Vec<Stage>, json_output: bool, id: Option<Uuid>) -> CliResult {
    let passed = stages.iter().all(|s| s.ok);
    if json_output {
        print_json(&json!({
            "executionId": id,
            "passed": passed,
            "stages": stages.iter().map(|s| json!({
                "stage": s.name,
                "ok": s.ok,
                "atSeconds": (s.at_secs * 10.0).round() / 10.0,
                "detail": s.detail,
                "hint": s.hint,
            })).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "doctor --e2e{}\n",
            id.map(|i| format!(": execution {i}")).unwrap_or_default()
        );
        for s in &stages {
            println!(
                "  {:<4} {:<16} {:>7.1} s  {}",
                if s.ok { "ok" } else { "FAIL" },
                s.name,
                s.at_secs,
                s.detail
            );
            if let Some(hint) = &s.hint {
                println!("       hint: {hint}");
            }
        }
        if passed {
            println!("\nEvery link works.");
        } else if let Some(first) = stages.iter().find(|s| !s.ok) {
            println!("\nThe first missing link: {}.", first.name);
        }
    }
    if passed {
        Ok(())
    } else {
        Err(CliError::silent(EXIT_USER))
    }
}
