//! `mintgate start`: starts an execution through the service's own API (so the budget, the
//! deduplication and the follow-up to the archive apply), or straight in Mint with `--direct`.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use mint_client::{FlowId, StartInstance};
use secrecy::ExposeSecret as _;
use serde_json::json;

use super::output::{CliError, CliResult, dollars, print_json};
use crate::config::{Config, Scope, key_with};
use crate::view::ExecutionView;

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    /// The flow id (not the definition id: see `mintgate flows`).
    #[arg(value_name = "FLOW_ID")]
    flow_id: String,
    /// The workflow's input: a file holding a JSON object, or `-` to read it from stdin.
    #[arg(long, value_name = "FILE|-")]
    input: Option<PathBuf>,
    /// The same key again returns the same execution instead of starting (and paying for) another.
    #[arg(long, value_name = "KEY", conflicts_with = "direct")]
    idempotency_key: Option<String>,
    /// Start straight in Mint, bypassing the service: no shared budget, no deduplication, nobody
    /// follows the instance to the archive.
    #[arg(long)]
    direct: bool,
    #[command(flatten)]
    env: super::EnvArg,
    /// Print the answer as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: StartArgs, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    let input = read_input(args.input.as_deref())?;
    if args.direct {
        direct(&args, &config, input).await
    } else {
        through_service(&args, &config, input).await
    }
}

fn read_input(source: Option<&Path>) -> CliResult<Option<serde_json::Value>> {
    let Some(source) = source else {
        return Ok(None);
    };
    let (text, what) = if source == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::user(format!("cannot read the input from stdin: {e}")))?;
        (text, "stdin".to_owned())
    } else {
        let text = std::fs::read_to_string(source).map_err(|e| {
            CliError::user(format!(
                "cannot read the input file {}: {e}",
                source.display()
            ))
        })?;
        (text, source.display().to_string())
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        CliError::user(format!("the input in {what} is not valid JSON: {e}"))
            .hint("the input is one JSON object, e.g. {\"customer\": \"42\"}")
    })?;
    if !value.is_object() {
        return Err(
            CliError::user(format!("the input in {what} is not a JSON object"))
                .hint("the input is one JSON object, e.g. {\"customer\": \"42\"}"),
        );
    }
    Ok(Some(value))
}

/// Where the service is: `service.url`, or its operator listener's address on this machine.
pub(super) fn service_url(config: &Config) -> String {
    match &config.service.url {
        Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        None => {
            let mut listen = config.listeners.operator_address();
            if listen.ip().is_unspecified() {
                listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            let listener = if config.listeners.combined {
                &config.listeners.public
            } else {
                &config.listeners.operator
            };
            let scheme = if listener.tls_cert_file.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{listen}")
        }
    }
}

async fn through_service(
    args: &StartArgs,
    config: &Config,
    input: Option<serde_json::Value>,
) -> CliResult {
    let Some(key) = key_with(&config.service.api_keys, &[Scope::ExecutionsWrite]) else {
        return Err(CliError::user(
            "no API key to reach the service: no key of `service.api_keys` has the scope `executions:write`",
        )
        .hint("set MINTGATE_SERVICE__API_KEYS='[\"…\"]' (one of the keys `mintgate serve` accepts; a bare key has every scope)")
        .hint("or start straight in Mint with --direct (no shared budget, no deduplication)"));
    };
    let base = service_url(config);
    let url = format!("{base}/v1/executions");
    let body = json!({
        "flowId": args.flow_id,
        "input": input,
        "idempotencyKey": args.idempotency_key,
        "environment": args.env.env,
    });
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(key.key.expose_secret())
        .json(&body)
        .timeout(std::time::Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| {
            CliError::remote(format!("cannot reach the service at {base}: {e}"))
                .hint("is `mintgate serve` running? Its address is `service.url` (default: the operator listener, `listeners.operator.address`)")
                .hint("or start straight in Mint with --direct (no shared budget, no deduplication)")
        })?;
    let status = response.status();
    let text = response
        .text()
        .await
        .map_err(|e| CliError::remote(format!("the service's answer was lost: {e}")))?;
    if status.as_u16() == 202 {
        let view: ExecutionView = serde_json::from_str(&text).map_err(|e| {
            CliError::remote(format!(
                "the service answered 202 with an unreadable body: {e}"
            ))
        })?;
        if args.json {
            print_json(&serde_json::from_str(&text).unwrap_or_default());
        } else {
            println!(
                "accepted: execution {} of flow {} in {}",
                view.id, view.flow_id, view.environment
            );
            println!("  state: {}", view.summary);
            if let Some(key) = &view.idempotency_key {
                println!("  idempotency key: {key} (the same key again returns this execution)");
            }
            println!("  follow it: mintgate inspect {}", view.id);
        }
        return Ok(());
    }
    let (code, message) = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(body) => (
            body["error"].as_str().unwrap_or("").to_owned(),
            body["message"].as_str().unwrap_or(&text).to_owned(),
        ),
        Err(_) => (String::new(), text.clone()),
    };
    let error = match status.as_u16() {
        401 => CliError::user(format!("the service refused the API key: {message}")).hint(
            "the first key of `service.api_keys` with the scope `executions:write` is sent; it must be one of the keys `mintgate serve` accepts",
        ),
        409 => CliError::user(message).hint(
            "an idempotency key names one request: use a new key for a different request",
        ),
        400..=499 => {
            let error = CliError::user(format!("the service refused the request: {message}"));
            match code.as_str() {
                "unknown_flow" | "definition_id_as_flow_id" => {
                    error.hint("`mintgate flows` lists the flow ids")
                }
                _ => error,
            }
        }
        _ => CliError::remote(format!("the service answered {status}: {message}"))
            .hint("see the service's log"),
    };
    Err(error)
}

async fn direct(args: &StartArgs, config: &Config, input: Option<serde_json::Value>) -> CliResult {
    let (name, profile) = super::pick_profile(config, &args.env)?;
    let client = super::client_for(&name, profile)?;
    let flow = FlowId::new(&args.flow_id).map_err(|e| CliError::user(e.to_string()))?;
    let started = client
        .start_instance(
            &flow,
            &StartInstance {
                input,
                workflow_url_ttl: None,
            },
        )
        .await
        .map_err(|e| CliError::from_mint(&e, &name))?;
    let instance = &started.instance;
    if args.json {
        print_json(&json!({
            "instanceId": instance.id.as_str(),
            "flowId": flow.as_str(),
            "environment": name,
            "status": instance.status.as_str(),
            "workflowUrl": started.workflow_url,
            "billedCents": profile.price_cents,
        }));
    } else {
        println!(
            "started instance {} of flow {flow} in {name} (billed {})",
            instance.id,
            dollars(i64::from(profile.price_cents))
        );
        println!("  status: {}", instance.status.as_str());
        if let Some(url) = &started.workflow_url {
            println!("  link for the end user: {url}");
        }
        println!("  follow it: mintgate status {} --env {name}", instance.id);
        println!("  note: started with --direct, so the service does not follow it to the archive");
    }
    Ok(())
}
