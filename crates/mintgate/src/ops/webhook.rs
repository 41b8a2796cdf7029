//! `mintgate webhook step` and `mintgate webhook test`: what to add at the end of a flow so that
//! Mint tells the service when an instance ends, and a check that the service's public webhook
//! endpoint takes an authentic webhook and refuses a forged one.
//!
//! Mint's *Send raw HTTP request* step is known to send a URL (HTTPS only), static headers (a
//! secret stored in Mint's configuration can go in one) and a JSON body its author writes; nothing
//! shows that it can sign a body, hence the shared-secret header (`webhook.auth = "shared_secret"`,
//! the default).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret as _;
use serde_json::json;

use super::output::{CliError, CliResult, print_json};
use crate::config::{Config, WebhookAuth};

#[derive(Debug, clap::Subcommand)]
pub enum WebhookCommand {
    /// Print the "Send raw HTTP request" step to add at the end of a flow (URL, method,
    /// headers, body).
    #[command(
        after_help = "Examples:\n  mintgate webhook step --url https://kyc.example.com/webhooks/mint\n  mintgate webhook step --json --show-secret   # for a provisioning script"
    )]
    Step(StepArgs),
    /// Send an authentic sample webhook and a forged one to the public URL, and report what came
    /// back and what the service recorded.
    #[command(
        after_help = "Examples:\n  mintgate webhook test https://kyc.example.com/webhooks/mint\n  mintgate webhook test            # the public listener's own address\n\nThe sample names an instance that is not one of the service's: it is recorded as unknown and\ncosts nothing at Mint."
    )]
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct StepArgs {
    /// The HTTPS URL Mint calls (the public listener, or the reverse proxy in front of it).
    /// Default: the public listener's address when it serves TLS.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print the secret itself (by default it is shown as a reference to Mint's secrets).
    #[arg(long)]
    show_secret: bool,
    /// Print the step as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The webhook URL (default: the public listener's own address).
    url: Option<String>,
    /// A PEM file of extra trusted root certificates (a private CA or a self-signed test
    /// certificate).
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(command: WebhookCommand, config_path: Option<&Path>) -> CliResult {
    let config = super::load_config(config_path)?;
    match command {
        WebhookCommand::Step(args) => step(args, &config),
        WebhookCommand::Test(args) => test(args, &config).await,
    }
}

/// The public listener's own webhook URL (https when it serves TLS).
fn own_url(config: &Config) -> (String, bool) {
    let public = &config.listeners.public;
    let address = public
        .address
        .unwrap_or(crate::config::PUBLIC_ADDRESS_DEFAULT);
    let tls = public.tls_cert_file.is_some();
    let scheme = if tls { "https" } else { "http" };
    (format!("{scheme}://{address}/webhooks/mint"), tls)
}

fn step(args: StepArgs, config: &Config) -> CliResult {
    let webhook = &config.webhook;
    let url = match args.url {
        Some(url) => url,
        None => match own_url(config) {
            (url, true) => url,
            (_, false) => {
                return Err(CliError::user(
                    "Mint calls HTTPS URLs only, and the public listener serves plain HTTP",
                )
                .hint(
                    "pass the URL Mint will call: --url https://your-host/webhooks/mint (the \
                     reverse proxy in front of the public listener), or configure \
                     listeners.public.tls_cert_file and tls_key_file",
                ));
            }
        },
    };
    let parsed =
        url::Url::parse(&url).map_err(|e| CliError::user(format!("--url is not a URL: {e}")))?;
    if parsed.scheme() != "https" {
        return Err(CliError::user(format!(
            "Mint calls HTTPS URLs only; {} is {}",
            parsed.path(),
            parsed.scheme()
        ))
        .hint("give the https:// URL of the public listener or of its reverse proxy"));
    }
    let Some(secret) = &webhook.secret else {
        return Err(
            CliError::user("no webhook secret is configured (`webhook.secret`)").hint(
                "set webhook.secret (or MINTGATE_WEBHOOK__SECRET) to a long random value first",
            ),
        );
    };
    let secret_value = if args.show_secret {
        secret.expose_secret().to_owned()
    } else {
        "<the value of webhook.secret, stored in Mint's secrets and referenced here>".to_owned()
    };
    let body = r#"{"instanceId":"<the instance id variable>","flowId":"<the flow id variable>","status":"Finished"}"#;
    let hmac_note = (webhook.auth == WebhookAuth::Hmac).then_some(
        "webhook.auth is \"hmac\": nothing shows that Mint's step can sign a body. Use \
         webhook.auth = \"shared_secret\" (the default) unless your sender signs.",
    );
    if args.json {
        print_json(&json!({
            "step": "Send raw HTTP request",
            "position": "the last step of the flow",
            "method": "POST",
            "url": url,
            "headers": {
                "Content-Type": "application/json",
                webhook.secret_header.as_str(): secret_value,
            },
            "body": body,
            "secretShown": args.show_secret,
            "warning": hmac_note,
        }));
        return Ok(());
    }
    println!("Add this step at the end of the flow in Mint's builder:\n");
    println!("  step     Send raw HTTP request");
    println!("  method   POST");
    println!("  url      {url}");
    println!("  headers  Content-Type: application/json");
    println!("           {}: {secret_value}", webhook.secret_header);
    println!("  body     {body}");
    println!();
    println!(
        "In the body, insert Mint's variables for the instance id and the flow id where the\n\
         placeholders are (the builder's variable picker). Only instanceId is required; the\n\
         webhook is a hint: the service confirms the state with Mint before it acts, and its\n\
         poller catches instances whose webhook never comes."
    );
    if let Some(note) = hmac_note {
        println!("\nwarning: {note}");
    }
    println!("\nThen: mintgate webhook test {url}");
    Ok(())
}

/// One request of the test and what came back.
struct Sent {
    name: &'static str,
    expected: &'static str,
    status: Option<u16>,
    answer: String,
    passed: bool,
}

async fn test(args: TestArgs, config: &Config) -> CliResult {
    let webhook = &config.webhook;
    let Some(secret) = &webhook.secret else {
        return Err(
            CliError::user("no webhook secret is configured (`webhook.secret`)").hint(
                "the test signs its webhook as Mint's step would: configure the secret first",
            ),
        );
    };
    let url = args.url.clone().unwrap_or_else(|| own_url(config).0);
    let parsed = url::Url::parse(&url).map_err(|e| CliError::user(format!("not a URL: {e}")))?;
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(file) = &args.ca_file {
        let pem = std::fs::read(file)
            .map_err(|e| CliError::user(format!("cannot read {}: {e}", file.display())))?;
        for certificate in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| CliError::user(format!("{}: not PEM certificates: {e}", file.display())))?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    let http = builder
        .build()
        .map_err(|e| CliError::remote(format!("cannot build an HTTP client: {e}")))?;
    // An instance id that is no instance of ours: recorded as unknown, no Mint call.
    let instance = format!("mintgate-webhook-test-{}", uuid::Uuid::new_v4().simple());
    let body = json!({"instanceId": instance, "status": "Finished", "test": true}).to_string();
    // The sample carries the configured secret (or is signed with it), the forgery another one.
    let sign = |request: reqwest::RequestBuilder, secret: &[u8]| match webhook.auth {
        WebhookAuth::Hmac => {
            let now = Utc::now().timestamp();
            request
                .header(crate::webhook::TIMESTAMP_HEADER, now.to_string())
                .header(
                    crate::webhook::SIGNATURE_HEADER,
                    crate::webhook::sign(secret, now, body.as_bytes()),
                )
        }
        _ => request.header(webhook.secret_header.as_str(), secret),
    };
    let mut sent = Vec::new();
    for (name, expected, secret) in [
        (
            "authentic",
            "200, recorded",
            secret.expose_secret().as_bytes(),
        ),
        ("forged", "401, refused", b"not-the-secret".as_slice()),
    ] {
        let request = sign(
            http.post(parsed.clone())
                .header("content-type", "application/json")
                .body(body.clone()),
            secret,
        );
        let (status, answer) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                (Some(status), text.chars().take(300).collect::<String>())
            }
            Err(error) => (None, format!("{error:#}")),
        };
        let passed = match name {
            "authentic" => status.is_some_and(|s| (200..300).contains(&s)),
            _ => status == Some(401),
        };
        sent.push(Sent {
            name,
            expected,
            status,
            answer,
            passed,
        });
    }
    let recorded = recorded(config, &instance).await;
    let passed = sent.iter().all(|s| s.passed);
    let https = parsed.scheme() == "https";
    if args.json {
        print_json(&json!({
            "url": url,
            "https": https,
            "instanceId": instance,
            "requests": sent.iter().map(|s| json!({
                "name": s.name,
                "expected": s.expected,
                "status": s.status,
                "answer": s.answer,
                "passed": s.passed,
            })).collect::<Vec<_>>(),
            "recorded": recorded,
            "passed": passed,
        }));
    } else {
        println!("webhook test of {url} (sample instance {instance})\n");
        for s in &sent {
            println!(
                "  {:<9} expected {:<13} got {:<5} {}  {}",
                s.name,
                s.expected,
                s.status.map_or("none".to_owned(), |s| s.to_string()),
                if s.passed { "ok" } else { "FAILED" },
                s.answer
            );
        }
        println!("\n  recorded by the service: {recorded}");
        if !https {
            println!(
                "\n  note: Mint calls HTTPS URLs only; this was plain HTTP (fine behind a TLS proxy)"
            );
        }
    }
    if passed {
        Ok(())
    } else {
        let failed: Vec<&str> = sent.iter().filter(|s| !s.passed).map(|s| s.name).collect();
        Err(CliError::remote(format!(
            "the webhook endpoint did not answer as expected: {}",
            failed.join(", ")
        ))
        .hint("check the URL, that `mintgate serve` runs with the same webhook.secret, and the proxy in between"))
    }
}

/// What the service's database holds for the sample instance, when this machine can read it.
async fn recorded(config: &Config, instance: &str) -> serde_json::Value {
    let Ok(id) = mint_client::InstanceId::new(instance) else {
        return json!(null);
    };
    let store = match super::inspect::open_store(config, crate::store::OpenMode::ReadOnly).await {
        Ok(store) => store,
        Err(_) => return json!("unknown (the service's database is not readable from here)"),
    };
    match store.webhooks_for(&id).await {
        Ok(records) if records.is_empty() => json!("nothing"),
        Ok(records) => json!(
            records
                .iter()
                .map(|r| json!({
                    "authentic": r.authentic,
                    "matchedExecution": r.execution_id,
                    "meaning": if r.execution_id.is_none() {
                        "an instance the service does not know: recorded, no Mint call"
                    } else {
                        "an execution of the service"
                    },
                }))
                .collect::<Vec<_>>()
        ),
        Err(error) => json!(format!("unknown ({error:#})")),
    }
}
