//! The operator commands, run as the real binary against an in-process simulator (and, for the
//! commands that read the service's records, the service), configured through a TOML file and
//! environment variables as an operator would. Human output is snapshot-tested with ids, times,
//! ports and paths redacted; every output is piped, so none may hold a control character.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;
use mint_sim::{ClientConfig, SimConfig, Simulator, UserStepAction};
use secrecy::ExposeSecret as _;
use tempfile::TempDir;

use crate::helpers::{API_KEY, Setup, TestApp, spawn_app, spawn_with};

/// A simulator with small result files. Its clock runs in real time (so its rate windows pass, as
/// Mint's do) and tests move it forward further.
async fn simulator() -> Simulator {
    simulator_at(1.0).await
}

/// A simulator whose clock only moves when the test moves it: for outputs that show times. (Its rate
/// windows never pass either, so such a test must stay under one window's units.)
async fn frozen_simulator() -> Simulator {
    simulator_at(0.0).await
}

async fn simulator_at(time_scale: f64) -> Simulator {
    let mut config = SimConfig::fixture();
    config.seed = 7;
    config.time_scale = time_scale;
    config.service.list_delay_micros_per_instance = 0;
    for flow in &mut config.flows {
        flow.result_file_bytes = 64 * 1024;
    }
    Simulator::builder().config(config).start().await.unwrap()
}

/// What `mintgate serve` needs besides Mint, so that `doctor` has nothing to say about it.
const SERVICE_TOML: &str = "[webhook]\nsecret = \"a-webhook-secret-of-some-length\"\n\n";

/// One `[mint.<name>]` profile of a configuration file.
fn profile(sim: &Simulator, name: &str, client_id: &str, secret: &str) -> String {
    format!(
        "[mint.{name}]\napi_base = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{client_id}\"\nclient_secret = \"{secret}\"\n\n",
        sim.base_url(),
        sim.token_url()
    )
}

/// A temporary folder holding `mintgate.toml`.
pub(crate) struct Files {
    dir: TempDir,
}

impl Files {
    pub(crate) fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mintgate.toml"), toml).unwrap();
        Self { dir }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("mintgate.toml")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The configuration file of a running service (the same file `mintgate serve` would read).
pub(crate) fn service_toml(app: &TestApp) -> String {
    let config = &app.config;
    let sandbox = &config.mint["sandbox"];
    format!(
        "default_environment = \"sandbox\"\n\n[listeners]\ncombined = true\n\n[listeners.public]\naddress = \"{}\"\n\n[service]\ndatabase_url = \"{}\"\narchive_dir = \"{}\"\napi_keys = [\"{API_KEY}\"]\n\n[webhook]\nauth = {}\nsecret = \"{}\"\n\n[mint.sandbox]\napi_base = \"{}\"\ntoken_url = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
        app.address,
        config.service.database_url.expose_url(),
        config.service.archive_dir.display(),
        serde_json::to_string(&config.webhook.auth).unwrap(),
        config
            .webhook
            .secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_default(),
        sandbox.api_base,
        sandbox.token_url,
        sandbox.client_id,
        sandbox.client_secret.expose_secret(),
    )
}

/// `mintgate --config FILE ARGS…` with nothing from the test's own environment.
pub(crate) fn mintgate(config: &Path, args: &[&str]) -> Command {
    let mut command = Command::cargo_bin("mintgate").unwrap();
    command
        .env_clear()
        .arg("--config")
        .arg(config)
        .args(args)
        .timeout(Duration::from_secs(30));
    command
}

/// Runs the binary off the async runtime (the simulator keeps serving meanwhile) and checks that
/// its piped output holds no control characters.
pub(crate) async fn run(mut command: Command) -> Output {
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    for (name, bytes) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let text = String::from_utf8(bytes.clone()).expect("output is UTF-8");
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "piped {name} holds a control character: {text:?}"
        );
    }
    output
}

pub(crate) fn code(output: &Output) -> i32 {
    output.status.code().expect("exited with a code")
}

pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Exit code, stdout and stderr in one text, for a snapshot.
pub(crate) fn transcript(output: &Output) -> String {
    format!(
        "exit code: {}\n--- stdout\n{}--- stderr\n{}",
        code(output),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Redacts what changes from run to run: ids, times, ports, temporary paths, hashes, rates.
fn filters(dir: Option<&Path>) -> Vec<(String, String)> {
    let mut filters = Vec::new();
    if let Some(dir) = dir {
        filters.push((escape(&dir.display().to_string()), "[TMP]".to_owned()));
    }
    // Temporary folders the service's helpers made (the archive), and the archive's date folders.
    filters.push((r"\S*/\.tmp[A-Za-z0-9]+".to_owned(), "[TMP]".to_owned()));
    filters.push((r"/\d{4}/\d{2}/".to_owned(), "/[YYYY]/[MM]/".to_owned()));
    for (pattern, replacement) in [
        (
            r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            "[ID]",
        ),
        (r"trace id [^)\s]+", "trace id [TRACE]"),
        (r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", "[TIME]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[TIME]"),
        (r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]"),
        (r"\b[0-9a-f]{64}\b", "[SHA256]"),
        (r"[\d.]+ (B|KiB|MiB|GiB)/s", "[RATE]"),
        (r"expires=\d+", "expires=[EXPIRES]"),
    ] {
        filters.push((pattern.to_owned(), replacement.to_owned()));
    }
    filters
}

macro_rules! snapshot {
    ($name:expr, $text:expr, $dir:expr) => {{
        let filters = filters($dir);
        let mut settings = insta::Settings::clone_current();
        for (pattern, replacement) in &filters {
            settings.add_filter(pattern, replacement.clone());
        }
        settings.bind(|| insta::assert_snapshot!($name, $text));
    }};
}

async fn starts_billed(sim: &Simulator) -> u64 {
    sim.admin()
        .usage()
        .await
        .unwrap()
        .clients
        .values()
        .map(|c| c.starts_billed)
        .sum()
}

#[tokio::test]
async fn doctor_passes_for_the_client_with_every_role_and_starts_nothing() {
    let sim = simulator().await;
    // The lifetime shown is the one Mint gave, not a default.
    let mut demo = ClientConfig::new(
        "demo",
        "demo-secret",
        &["Flow Viewer", "Flow Editor", "Flow Instance Download"],
    );
    demo.token_lifetime_secs = 900;
    sim.admin().put_client(demo).await.unwrap();
    let files = Files::new(&format!(
        "{SERVICE_TOML}{}",
        profile(&sim, "sandbox", "demo", "demo-secret")
    ));
    let output = run(mintgate(&files.config(), &["doctor"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("doctor_demo", transcript(&output), None);
    let usage = sim.admin().usage().await.unwrap();
    let demo = &usage.clients["demo"];
    assert_eq!(demo.starts_billed, 0);
    assert_eq!(demo.cents_owed, 0);
    // The start probe did reach Mint (and was refused as an unknown flow).
    assert_eq!(demo.requests_by_endpoint.get("start"), Some(&1));
    assert!(sim.admin().instances().await.unwrap().is_empty());
}

#[tokio::test]
async fn doctor_names_the_missing_roles_of_the_viewer_and_no_download_clients() {
    let sim = simulator().await;
    for (client, missing) in [
        ("viewer", &["Flow Editor", "Flow Instance Download"][..]),
        ("no-download", &["Flow Instance Download"][..]),
    ] {
        let files = Files::new(&profile(
            &sim,
            "sandbox",
            client,
            &format!("{client}-secret"),
        ));
        let output = run(mintgate(&files.config(), &["doctor"])).await;
        assert_eq!(code(&output), 1, "{}", transcript(&output));
        let text = stdout(&output);
        for role in missing {
            assert!(
                text.contains(&format!("this API client lacks the role {role}")),
                "{text}"
            );
        }
        snapshot!(format!("doctor_{client}"), transcript(&output), None);
    }
    assert_eq!(starts_billed(&sim).await, 0);
    assert!(sim.admin().instances().await.unwrap().is_empty());
}

#[tokio::test]
async fn doctor_flags_a_role_granted_in_sandbox_but_missing_in_production() {
    let sim = simulator().await;
    let toml = format!(
        "{SERVICE_TOML}{}{}",
        profile(&sim, "sandbox", "demo", "demo-secret"),
        profile(&sim, "production", "no-download", "no-download-secret")
    );
    let files = Files::new(&toml);
    let output = run(mintgate(&files.config(), &["doctor", "--all"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    snapshot!("doctor_two_environments", transcript(&output), None);

    let output = run(mintgate(&files.config(), &["doctor", "--all", "--json"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["roleDifferences"],
        serde_json::json!([{
            "role": "Flow Instance Download",
            "grantedIn": ["sandbox"],
            "missingIn": ["production"],
        }])
    );
    assert_eq!(report["environments"][0]["token"]["expiresInSecs"], 600);
    assert_eq!(starts_billed(&sim).await, 0);
}

#[tokio::test]
async fn doctor_explains_a_secret_with_trailing_whitespace_and_never_prints_it() {
    let sim = simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret\\n"));
    let output = run(mintgate(&files.config(), &["doctor"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let text = transcript(&output);
    assert!(text.contains("whitespace"), "{text}");
    assert!(
        !text.contains("demo-secret"),
        "the secret was printed: {text}"
    );
    snapshot!("doctor_whitespace_secret", text, None);
}

#[tokio::test]
async fn doctor_reads_the_conventional_mint_variables_and_reports_an_unreachable_token_endpoint() {
    let files = Files::new("");
    let mut command = mintgate(&files.config(), &["doctor"]);
    command
        .env("MINT_CLIENT_ID", "demo")
        .env("MINT_CLIENT_SECRET", "demo-secret")
        .env("MINT_API_BASE", "http://127.0.0.1:9/mint")
        .env("MINT_TOKEN_URL", "http://127.0.0.1:9/token");
    let output = run(command).await;
    assert_eq!(code(&output), 2, "{}", transcript(&output));
    snapshot!("doctor_unreachable", transcript(&output), None);
}

#[tokio::test]
async fn flows_shows_flow_ids_beside_definition_ids() {
    let sim = simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret"));
    let output = run(mintgate(&files.config(), &["flows"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("flows", transcript(&output), None);

    let output = run(mintgate(
        &files.config(),
        &["flows", "--search", "video", "--json"],
    ))
    .await;
    assert_eq!(code(&output), 0);
    let flows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(flows[0]["id"], "flow-kyc-video");
    assert_eq!(flows[0]["definitionId"], "def-kyc-video");
    assert_eq!(flows.as_array().unwrap().len(), 1);
}

/// `-v` logs each exchange with Mint (method, path, status, latency), `-vv` the headers too; the
/// client secret and the tokens never appear; without `-v` nothing is logged.
#[tokio::test]
async fn verbose_operator_commands_log_each_exchange_and_no_secret() {
    let sim = simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret"));
    let output = run(mintgate(&files.config(), &["flows"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    assert!(output.stderr.is_empty(), "{}", transcript(&output));

    let output = run(mintgate(&files.config(), &["-v", "flows"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let exchange = stderr
        .lines()
        .find(|line| line.contains("exchange") && line.contains("/api/flows"))
        .unwrap_or_else(|| panic!("no exchange logged at -v: {stderr}"));
    for field in ["method=\"GET\"", "status=200", "latency_ms="] {
        assert!(exchange.contains(field), "{field} missing: {exchange}");
    }
    assert!(
        !stderr.contains("headers="),
        "headers only at -vv: {stderr}"
    );

    let output = run(mintgate(&files.config(), &["-vv", "flows"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.contains("headers="), "{stderr}");
    assert!(
        !stderr.contains("demo-secret"),
        "the client secret leaked: {stderr}"
    );
    // The simulator's tokens are `sim.` and 48 hex digits.
    let leaked = stderr.match_indices("sim.").any(|(at, _)| {
        let rest = &stderr[at + 4..];
        rest.len() >= 48 && rest[..48].chars().all(|c| c.is_ascii_hexdigit())
    });
    assert!(!leaked, "a token leaked: {stderr}");
    for line in stderr
        .lines()
        .filter(|l| l.to_lowercase().contains("authorization"))
    {
        assert!(
            line.contains("redacted"),
            "an unredacted credential: {line}"
        );
    }
}

/// `doctor --contract` reads each endpoint once and bills nothing; the simulator's contract
/// itself gives no finding, and a changed answer shape is reported (table and JSON) with exit
/// code 1 when the client could not use it.
#[tokio::test]
async fn doctor_contract_reports_a_changed_answer_and_bills_nothing() {
    let sim = simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret"));
    let starts = || async { sim.admin().usage().await.unwrap().clients["demo"].starts_billed };
    let output = run(mintgate(&files.config(), &["doctor", "--contract"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    assert!(
        stdout(&output).contains("Every answer has the shape mint-client expects"),
        "{}",
        transcript(&output)
    );

    let mut behaviours = mint_sim::Behaviours::default();
    behaviours.contract.insert(
        "list_instances".to_owned(),
        vec![mint_sim::ContractChange::BareArray],
    );
    sim.admin().set_behaviours(behaviours).await.unwrap();
    let output = run(mintgate(&files.config(), &["doctor", "--contract"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let text = stdout(&output);
    assert!(text.contains("list_instances"), "{text}");
    assert!(text.contains("error"), "{text}");

    let output = run(mintgate(
        &files.config(),
        &["doctor", "--contract", "--json", "--result-file", "skip"],
    ))
    .await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["endpoint"] == "list_instances" && f["severity"] == "error"),
        "{report:#}"
    );
    assert_eq!(starts().await, 0, "the probe started nothing");
}

/// `webhook step` prints the flow's last step for an HTTPS URL, the secret as a reference unless
/// asked; `webhook test` sends an authentic webhook (recorded, for an instance the service does
/// not know, so Mint is not called) and a forged one (refused).
#[tokio::test]
async fn webhook_step_and_test_against_the_running_service() {
    let app = spawn_with(Setup::default()).await;
    let files = Files::new(&service_toml(&app));
    let secret = app
        .config
        .webhook
        .secret
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();

    // Plain HTTP public listener and no --url: Mint could not call it.
    let output = run(mintgate(&files.config(), &["webhook", "step"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    assert!(
        transcript(&output).contains("HTTPS"),
        "{}",
        transcript(&output)
    );

    let url = "https://kyc.example.com/webhooks/mint";
    let output = run(mintgate(
        &files.config(),
        &["webhook", "step", "--url", url],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let text = stdout(&output);
    for expected in ["POST", url, "X-Mint-Webhook-Secret", "instanceId"] {
        assert!(text.contains(expected), "{expected} missing: {text}");
    }
    assert!(
        !text.contains(&secret),
        "the secret is shown only when asked: {text}"
    );
    let output = run(mintgate(
        &files.config(),
        &["webhook", "step", "--url", url, "--json", "--show-secret"],
    ))
    .await;
    let step: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(step["headers"]["X-Mint-Webhook-Secret"], secret.as_str());
    assert_eq!(step["method"], "POST");

    let before = app.admin.usage().await.unwrap();
    let target = format!("http://{}/webhooks/mint", app.address);
    let output = run(mintgate(
        &files.config(),
        &["webhook", "test", &target, "--json"],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["requests"][0]["status"], 200, "{report:#}");
    assert_eq!(report["requests"][1]["status"], 401, "{report:#}");
    assert!(
        report["requests"][1]["answer"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{report:#}"
    );
    assert_eq!(report["recorded"][0]["authentic"], true, "{report:#}");
    assert!(report["recorded"][0]["matchedExecution"].is_null());
    assert!(!transcript(&output).contains(&secret));
    app.run_until_idle().await;
    assert_eq!(
        app.admin.usage().await.unwrap().clients,
        before.clients,
        "the sample webhook cost nothing at Mint"
    );

    // A wrong secret in the configuration: the authentic sample is refused, the test fails.
    let wrong = service_toml(&app).replace(&secret, "a-different-secret-of-some-length");
    let files = Files::new(&wrong);
    let output = run(mintgate(&files.config(), &["webhook", "test", &target])).await;
    assert_eq!(code(&output), 2, "{}", transcript(&output));
    assert!(
        transcript(&output).contains("FAILED"),
        "{}",
        transcript(&output)
    );
}

/// Runs `doctor --e2e` against the test service while playing the service's workers, the end
/// user and the passing of time, as the real world would; answers the command's output.
async fn doctor_e2e(app: &TestApp, files: &Files) -> Output {
    let command = mintgate(
        &files.config(),
        &["doctor", "--e2e", "flow-kyc-basic", "--yes", "--json"],
    );
    let cli = tokio::spawn(run(command));
    let store = app.pipeline().store.clone();
    while !cli.is_finished() {
        app.run_until_idle().await;
        let running = store
            .executions(mintgate::store::ExecutionFilter {
                state: Some(mintgate::model::ExecutionState::Running),
                limit: 10,
            })
            .await
            .unwrap();
        for instance in running.iter().filter_map(|e| e.instance_id.as_ref()) {
            let state = app.admin.instance(instance.as_str()).await.unwrap();
            if state.activities.iter().any(|a| a.status == "Suspended") {
                app.admin
                    .user_step(instance.as_str(), UserStepAction::Complete)
                    .await
                    .unwrap();
            }
        }
        app.advance(Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cli.await.unwrap()
}

/// `doctor --e2e` runs one execution through the running service: every stage passes and
/// exactly one start is billed; with every webhook lost it still archives (the poller) but names
/// the webhook as the missing link.
#[tokio::test]
async fn doctor_e2e_passes_bills_one_start_and_names_a_lost_webhook() {
    let app = spawn_with(Setup::default()).await;
    let files = Files::new(&service_toml(&app));
    let billed = || async {
        app.admin
            .usage()
            .await
            .unwrap()
            .clients
            .values()
            .map(|c| c.starts_billed)
            .sum::<u64>()
    };

    // Without --yes and without a terminal: refused, nothing started.
    let output = run(mintgate(
        &files.config(),
        &["doctor", "--e2e", "flow-kyc-basic"],
    ))
    .await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    assert!(
        transcript(&output).contains("--yes"),
        "{}",
        transcript(&output)
    );
    assert_eq!(billed().await, 0);

    let output = doctor_e2e(&app, &files).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let stages: Vec<&str> = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "accepted",
            "started in Mint",
            "finished in Mint",
            "webhook",
            "archived",
            "ledger"
        ],
        "{report:#}"
    );
    assert_eq!(report["passed"], true, "{report:#}");
    assert_eq!(billed().await, 1, "exactly one start billed");

    app.set_faults(mint_sim::Faults {
        webhook_drop_rate: 1.0,
        ..mint_sim::Faults::default()
    })
    .await;
    let output = doctor_e2e(&app, &files).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let webhook = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "webhook")
        .unwrap();
    assert_eq!(webhook["ok"], false, "{report:#}");
    assert!(
        webhook["hint"].as_str().unwrap().contains("webhook step"),
        "{report:#}"
    );
    let archived = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "archived")
        .unwrap();
    assert_eq!(archived["ok"], true, "the poller archived it: {report:#}");
    assert_eq!(billed().await, 2);
}

/// Starts an instance with `mintgate start --direct` and answers its id.
async fn start_direct(sim: &Simulator, files: &Files) -> String {
    std::fs::write(files.path("input.json"), r#"{"customer": "c-42"}"#).unwrap();
    let input = files.path("input.json");
    let output = run(mintgate(
        &files.config(),
        &[
            "start",
            "flow-kyc-basic",
            "--direct",
            "--input",
            input.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("start_direct", transcript(&output), Some(files.dir.path()));
    let instances = sim.admin().instances().await.unwrap();
    assert_eq!(instances.len(), 1);
    instances[0].id.clone()
}

async fn status(sim: &Simulator, files: &Files, instance: &str) -> Output {
    let now = sim.admin().now().await.unwrap().to_rfc3339();
    run(mintgate(
        &files.config(),
        &["status", instance, "--now", &now],
    ))
    .await
}

#[tokio::test]
async fn status_says_in_plain_words_who_the_instance_waits_for() {
    let sim = frozen_simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret"));
    let instance = start_direct(&sim, &files).await;
    assert_eq!(starts_billed(&sim).await, 1);
    let admin = sim.admin();

    admin.advance_clock(Duration::from_secs(2)).await.unwrap();
    admin
        .advance_clock(Duration::from_secs(12 * 60))
        .await
        .unwrap();
    let output = status(&sim, &files, &instance).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    assert!(
        stdout(&output).contains("waiting for the end user at step 'Identity document' for 12 min"),
        "{}",
        stdout(&output)
    );
    snapshot!("status_waiting", transcript(&output), None);

    admin
        .user_step(&instance, UserStepAction::Complete)
        .await
        .unwrap();
    let output = status(&sim, &files, &instance).await;
    assert!(
        stdout(&output).contains("processing step 'Verify document'"),
        "{}",
        stdout(&output)
    );
    snapshot!("status_processing", transcript(&output), None);

    admin.advance_clock(Duration::from_secs(5)).await.unwrap();
    admin
        .advance_clock(Duration::from_secs(3 * 24 * 3600))
        .await
        .unwrap();
    let output = status(&sim, &files, &instance).await;
    assert!(
        stdout(&output).contains("finished 3 days ago; result deleted by Mint in 27 days"),
        "{}",
        stdout(&output)
    );
    snapshot!("status_finished", transcript(&output), None);

    let output = run(mintgate(&files.config(), &["status", &instance, "--json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["status"], "Finished");
    assert_eq!(json["activities"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn status_of_an_unknown_instance_is_a_user_error_with_what_to_try() {
    let sim = simulator().await;
    let files = Files::new(&profile(&sim, "sandbox", "demo", "demo-secret"));
    let output = run(mintgate(&files.config(), &["status", "no-such-instance"])).await;
    assert_eq!(code(&output), 1);
    snapshot!("status_unknown", transcript(&output), None);
}

#[tokio::test]
async fn download_prints_size_and_sha256_and_plain_progress_when_piped() {
    let sim = simulator().await;
    let files = Files::new(&format!(
        "{}{}",
        profile(&sim, "sandbox", "demo", "demo-secret"),
        profile(&sim, "production", "no-download", "no-download-secret")
    ));
    let instance = start_direct(&sim, &files).await;
    let admin = sim.admin();
    admin.advance_clock(Duration::from_secs(2)).await.unwrap();
    admin
        .user_step(&instance, UserStepAction::Complete)
        .await
        .unwrap();
    admin.advance_clock(Duration::from_secs(5)).await.unwrap();

    let path = files.path("result.zip");
    let output = run(mintgate(
        &files.config(),
        &["download", &instance, "-o", path.to_str().unwrap()],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let (sha256, size) = admin.result_sha256(&instance).await.unwrap();
    let text = stdout(&output);
    assert!(text.contains(&sha256), "{text}");
    assert!(text.contains(&format!("({size} bytes)")), "{text}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    snapshot!("download", transcript(&output), Some(files.dir.path()));

    // Not over an existing file without --force.
    let output = run(mintgate(
        &files.config(),
        &["download", &instance, "-o", path.to_str().unwrap()],
    ))
    .await;
    assert_eq!(code(&output), 1);
    // An API client without the role is told which role, where to grant it.
    let other = files.path("other.zip");
    let output = run(mintgate(
        &files.config(),
        &[
            "download",
            &instance,
            "--env",
            "production",
            "-o",
            other.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(code(&output), 1);
    snapshot!(
        "download_missing_role",
        transcript(&output),
        Some(files.dir.path())
    );
    assert!(!other.exists());
}

#[tokio::test]
async fn start_goes_through_the_service_and_inspect_shows_the_whole_chain() {
    let app = spawn_with(Setup::default()).await;
    let files = Files::new(&service_toml(&app));
    let start = || {
        mintgate(
            &files.config(),
            &[
                "start",
                "flow-kyc-basic",
                "--idempotency-key",
                "signup-42",
                "--input",
                "-",
            ],
        )
    };
    let mut command = start();
    command.write_stdin(r#"{"customer": "42"}"#);
    let output = run(command).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("start_through_service", transcript(&output), None);
    // The same key again: the same execution, nothing new to bill.
    let mut command = start();
    command.write_stdin(r#"{"customer": "42"}"#);
    let again = run(command).await;
    assert_eq!(stdout(&again), stdout(&output));

    app.run_until_idle().await;
    let execution = app
        .pipeline()
        .store
        .executions(Default::default())
        .await
        .unwrap();
    assert_eq!(execution.len(), 1);
    let id = execution[0].id;
    let instance = app.instance_of(id).await;
    app.complete_user_steps(&instance).await;
    app.eventually(
        Duration::from_secs(10),
        "the execution is archived",
        || async {
            app.run_until_idle().await;
            app.execution(id).await.state.as_str() == "archived"
        },
    )
    .await;
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"].starts_billed,
        1
    );

    let now = app.clock.now().to_rfc3339();
    for key in [instance.clone(), id.to_string()] {
        let output = run(mintgate(&files.config(), &["inspect", &key, "--now", &now])).await;
        assert_eq!(code(&output), 0, "{}", transcript(&output));
        snapshot!("inspect", transcript(&output), Some(files.dir.path()));
    }
    let output = run(mintgate(&files.config(), &["inspect", &instance, "--json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["execution"]["state"], "archived");
    assert_eq!(json["costCents"], 50);
}

#[tokio::test]
async fn start_without_a_reachable_service_says_how_to_proceed() {
    let sim = simulator().await;
    let toml = format!(
        "[listeners.operator]\naddress = \"127.0.0.1:9\"\n\n[service]\napi_keys = [\"{API_KEY}\"]\n\n{}",
        profile(&sim, "sandbox", "demo", "demo-secret")
    );
    let files = Files::new(&toml);
    let output = run(mintgate(&files.config(), &["start", "flow-kyc-basic"])).await;
    assert_eq!(code(&output), 2, "{}", transcript(&output));
    snapshot!("start_service_unreachable", transcript(&output), None);
    assert_eq!(starts_billed(&sim).await, 0);
}

#[tokio::test]
async fn dead_letters_are_listed_and_retried() {
    let app = spawn_app().await;
    let files = Files::new(&service_toml(&app));
    let output = run(mintgate(&files.config(), &["dead-letters"])).await;
    assert_eq!(code(&output), 0);
    assert_eq!(stdout(&output), "no dead letters\n");

    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    // Every answer for the result file is an HTML error page: a counted failure each time.
    let html_page = |rate: f64| mint_sim::BehaviourOverrides {
        result_file_html_rate: Some(rate),
        ..mint_sim::BehaviourOverrides::default()
    };
    app.admin
        .set_instance_behaviours(&instance, html_page(1.0))
        .await
        .unwrap();
    app.complete_user_steps(&instance).await;
    for _ in 0..20 {
        app.advance(Duration::from_secs(31 * 60)).await;
        app.run_until_idle().await;
    }
    let output = run(mintgate(&files.config(), &["dead-letters"])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("dead_letters", transcript(&output), None);

    // The error pages stop; an operator retries.
    app.admin
        .set_instance_behaviours(&instance, html_page(0.0))
        .await
        .unwrap();
    let output = run(mintgate(
        &files.config(),
        &["dead-letters", "retry", "--all"],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("dead_letters_retry", transcript(&output), None);
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state.as_str(), "archived");
    let output = run(mintgate(
        &files.config(),
        &["dead-letters", "retry", "not-a-job"],
    ))
    .await;
    assert_eq!(code(&output), 1);
}

#[tokio::test]
async fn commands_that_read_the_service_refuse_to_invent_a_database() {
    let sim = simulator().await;
    let files = Files::new(&format!(
        "[service]\ndatabase_url = \"sqlite://{}\"\n\n{}",
        files_path_placeholder(),
        profile(&sim, "sandbox", "demo", "demo-secret")
    ));
    let output = run(mintgate(&files.config(), &["inspect", "x"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    snapshot!("inspect_no_database", transcript(&output), None);
    assert!(!Path::new(&files_path_placeholder()).exists());
}

fn files_path_placeholder() -> String {
    "/nonexistent-mintgate-test/mintgate.db".to_owned()
}

#[tokio::test]
async fn commands_that_read_the_service_refuse_an_older_schema_and_leave_it_unchanged() {
    use sha2::Digest as _;
    let files = Files::new("");
    let database = files.path("mintgate.db");
    // The schema an older mintgate left: its first migration only.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&database)
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    <sqlx::Sqlite as mintgate::store::sql::Dialect>::migrator()
        .run_to(1, &pool)
        .await
        .unwrap();
    pool.close().await;
    let latest = <sqlx::Sqlite as mintgate::store::sql::Dialect>::migrator()
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap();
    std::fs::write(
        files.config(),
        format!(
            "[service]\ndatabase_url = \"sqlite://{}\"\n",
            database.display()
        ),
    )
    .unwrap();
    let digest = |path: &Path| hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()));
    let before = digest(&database);
    for args in [
        &["inspect", "x"][..],
        &["dead-letters"][..],
        &["dead-letters", "retry", "--all"][..],
    ] {
        let output = run(mintgate(&files.config(), args)).await;
        assert_eq!(code(&output), 1, "{args:?}: {}", transcript(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("schema is at version 1 ("), "{stderr}");
        assert!(
            stderr.contains(&format!("this mintgate's version {latest} (")),
            "{stderr}"
        );
        assert!(stderr.contains("run `mintgate serve` once"), "{stderr}");
        assert_eq!(digest(&database), before, "{args:?} changed the database");
    }
    let leftovers: Vec<_> = std::fs::read_dir(files.dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("mintgate.db"))
        .collect();
    assert_eq!(
        leftovers,
        ["mintgate.db"],
        "no journal or WAL file was made"
    );
}

#[tokio::test]
async fn download_from_the_archive_then_erase_keeps_the_ledger_and_a_tombstone() {
    let app = spawn_with(Setup::default()).await;
    let files = Files::new(&service_toml(&app));
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state.as_str(), "archived");
    let instance = view.instance_id.clone().unwrap().to_string();
    let archived_path = view.archive.as_ref().unwrap().path.clone();
    let (expected, bytes) = app.admin.result_sha256(&instance).await.unwrap();
    let downloads_before = app.admin.usage().await.unwrap().clients["demo"]
        .requests_by_endpoint
        .get("result_file")
        .copied();

    // The archived copy, without asking Mint.
    let copy = files.path("copy.zip");
    let output = run(mintgate(
        &files.config(),
        &[
            "download",
            &instance,
            "--from-archive",
            "-o",
            copy.to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let (sha, len) = mintgate::archive::hash_file(&copy).await.unwrap();
    assert_eq!((sha, len), (expected.clone(), bytes));
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        downloads_before,
        "--from-archive asked Mint"
    );

    let output = run(mintgate(
        &files.config(),
        &[
            "erase",
            "--execution",
            &id.to_string(),
            "--operator",
            "alice",
            "--reason",
            "GDPR #812",
        ],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    assert!(stdout(&output).contains("alice"), "{}", transcript(&output));
    // The result is gone; its manifest is a tombstone without the hash.
    assert!(!Path::new(&archived_path).exists());
    let manifest =
        std::fs::read_to_string(Path::new(&archived_path).with_extension("json")).unwrap();
    assert!(manifest.contains("\"removed\": \"erased\""), "{manifest}");
    assert!(!manifest.contains(&expected), "{manifest}");
    // The database keeps ids, state, bill; not the input or the hash.
    let store = app.pipeline().store.clone();
    let execution = store.execution(id).await.unwrap().unwrap();
    assert_eq!(execution.state.as_str(), "erased");
    assert_eq!(execution.input, serde_json::json!({}));
    assert_eq!(
        (
            execution.sha256,
            execution.archive_path,
            execution.workflow_url
        ),
        (None, None, None)
    );
    assert_eq!(execution.billed_count, 1);
    let month = execution.created_at.format("%Y-%m").to_string();
    let ledger = store.spend(&month).await.unwrap();
    assert_eq!(
        ledger.iter().map(|r| r.cents).sum::<i64>(),
        50,
        "{ledger:?}"
    );
    let audit = store.audit_for(&id.to_string()).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            audit[0].operator.as_str(),
            audit[0].action.as_str(),
            audit[0].outcome.as_str()
        ),
        ("alice", "erase", "done")
    );

    let output = run(mintgate(&files.config(), &["inspect", &id.to_string()])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let text = stdout(&output);
    assert!(
        text.contains("tombstone: erased") && text.contains("by alice (GDPR #812)"),
        "{text}"
    );
    assert!(!text.contains(&expected), "{text}");

    // Erasing again changes nothing; reading the archive now says what happened.
    let output = run(mintgate(
        &files.config(),
        &["erase", "--instance", &instance],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let output = run(mintgate(
        &files.config(),
        &[
            "download",
            &instance,
            "--from-archive",
            "-o",
            files.path("again.zip").to_str().unwrap(),
        ],
    ))
    .await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    assert!(
        transcript(&output).contains("erased"),
        "{}",
        transcript(&output)
    );
}

#[tokio::test]
async fn erase_refuses_an_execution_still_in_flight_and_audits_the_refusal() {
    let app = spawn_with(Setup::default()).await;
    let files = Files::new(&service_toml(&app));
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let output = run(mintgate(
        &files.config(),
        &["erase", "--execution", &id.to_string(), "--operator", "bob"],
    ))
    .await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    assert!(
        transcript(&output).contains("still running"),
        "{}",
        transcript(&output)
    );
    let audit = app
        .pipeline()
        .store
        .audit_for(&id.to_string())
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].operator.as_str(), audit[0].outcome.as_str()),
        ("bob", "refused")
    );
    assert_eq!(app.execution(id).await.state.as_str(), "running");
}

/// Starts billed for one correlation id: the simulator's truth.
async fn starts_of(app: &TestApp, id: uuid::Uuid) -> u64 {
    app.admin
        .starts_per_correlation_id()
        .await
        .unwrap()
        .get(&id.to_string())
        .copied()
        .unwrap_or(0)
}

/// Requests an execution whose start goes wrong as `faults` say (answer lost after Mint committed
/// it, or a 5xx before it did), then lets the reconciliation run: with the scan's cost bound at 2
/// units and 150 older instances listed oldest first without their input, it can neither find nor
/// rule out the instance.
async fn held_for_a_decision(app: &TestApp, faults: mint_sim::Faults) -> uuid::Uuid {
    app.set_faults(faults).await;
    let id = app.request("flow-kyc-basic").await;
    assert!(
        app.pipeline()
            .run_once(&[mintgate::model::JobKind::Start])
            .await
            .unwrap()
    );
    app.set_faults(mint_sim::Faults::default()).await;
    app.advance(Duration::from_secs(31)).await;
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state.as_str(), "needs_decision");
    id
}

#[tokio::test]
async fn an_execution_held_for_a_decision_is_inspected_then_decided_both_ways() {
    let app = spawn_with(Setup {
        pipeline: mintgate::config::PipelineConfig {
            idle_wait: Duration::from_millis(50),
            reconcile_max_units: 2,
            ..mintgate::config::PipelineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    let week_ago = app.admin.now().await.unwrap() - chrono::TimeDelta::days(7);
    app.admin
        .seed_instances(
            "flow-kyc-basic",
            &mint_sim::admin::SeedInstances {
                count: 150,
                status: Some("Finished".to_owned()),
                created_at: Some(week_ago),
                interval_millis: 1000,
                duration_secs: 60,
                input: Some(serde_json::json!({"mintgateExecutionId": "other-{{n}}"})),
                omit_ids: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    app.admin
        .set_flow_behaviours(
            "flow-kyc-basic",
            mint_sim::BehaviourOverrides {
                list_omits: Some(vec![mint_sim::ListField::Input]),
                list_order: Some(mint_sim::ListOrder::OldestFirst),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let files = Files::new(&service_toml(&app));

    // It was started (the answer was lost): inspect says why it waits, then the operator attaches
    // the instance.
    let lost = held_for_a_decision(
        &app,
        mint_sim::Faults {
            seed: Some(1),
            lost_start_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(starts_of(&app, lost).await, 1);
    let now = app.clock.now().to_rfc3339();
    let output = run(mintgate(
        &files.config(),
        &["inspect", &lost.to_string(), "--now", &now],
    ))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!(
        "inspect_needs_decision",
        transcript(&output),
        Some(files.dir.path())
    );
    let output = run(mintgate(
        &files.config(),
        &["inspect", &lost.to_string(), "--json"],
    ))
    .await;
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["execution"]["state"], "needs_decision");
    assert!(
        json["decision"]["reason"]
            .as_str()
            .unwrap()
            .contains("cost bound")
    );
    let instance = app
        .admin
        .instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.input["mintgateExecutionId"] == lost.to_string())
        .unwrap()
        .id;
    let decide = |args: &[&str]| {
        let mut all = vec!["decide"];
        all.extend_from_slice(args);
        mintgate(&files.config(), &all)
    };
    let output = run(decide(&[
        "--execution",
        &lost.to_string(),
        "--started",
        &instance,
        "--operator",
        "alice",
    ]))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("decide_started", transcript(&output), None);
    let view = app.execution(lost).await;
    assert_eq!(view.state.as_str(), "running");
    assert_eq!(view.instance_id.unwrap().as_str(), instance);
    assert!(view.workflow_url_unknown);
    assert_eq!(
        starts_of(&app, lost).await,
        1,
        "attached, not started again"
    );
    let store = app.pipeline().store.clone();
    assert_eq!(
        store.execution(lost).await.unwrap().unwrap().billed_count,
        1
    );
    let audit = store.audit_for(&lost.to_string()).await.unwrap();
    assert_eq!(
        (audit[0].operator.as_str(), audit[0].action.as_str()),
        ("alice", "decide")
    );
    assert_eq!(audit[0].detail["inputCarriesId"], true);
    // Decided once: a second decision is refused.
    let output = run(decide(&["--execution", &lost.to_string(), "--not-started"])).await;
    assert_eq!(code(&output), 1, "{}", transcript(&output));
    let view = app.drive_to_the_end(lost, 20).await;
    assert_eq!(view.state.as_str(), "archived");

    // It was not started (a 5xx before Mint committed it): the operator has it started.
    let refused = held_for_a_decision(
        &app,
        mint_sim::Faults {
            seed: Some(2),
            server_error_rate: 1.0,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(starts_of(&app, refused).await, 0);
    let output = run(decide(&[
        "--execution",
        &refused.to_string(),
        "--not-started",
        "--operator",
        "bob",
        "--reason",
        "not in Signicat's dashboard",
    ]))
    .await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    snapshot!("decide_not_started", transcript(&output), None);
    app.run_until_idle().await;
    let view = app.execution(refused).await;
    assert_eq!(view.state.as_str(), "running", "{view:?}");
    assert!(view.workflow_url.is_some());
    assert_eq!(starts_of(&app, refused).await, 1);
    let output = run(mintgate(
        &files.config(),
        &["inspect", &refused.to_string()],
    ))
    .await;
    assert!(
        stdout(&output).contains("decided by bob: it was not started, starting it"),
        "{}",
        transcript(&output)
    );
}

#[tokio::test]
async fn inspect_shows_a_run_of_404s_and_a_paused_download() {
    let app = spawn_with(Setup {
        client_id: "no-download",
        ..Setup::default()
    })
    .await;
    let files = Files::new(&service_toml(&app));
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    // Mint answers 404 for the running instance (spuriously: it exists).
    let not_found = |rate: f64| mint_sim::BehaviourOverrides {
        not_found_rate: Some(rate),
        ..mint_sim::BehaviourOverrides::default()
    };
    app.admin
        .set_instance_behaviours(&instance, not_found(1.0))
        .await
        .unwrap();
    app.advance(Duration::from_secs(10 * 60)).await;
    app.run_until_idle().await;
    let output = run(mintgate(&files.config(), &["inspect", &id.to_string()])).await;
    assert_eq!(code(&output), 0, "{}", transcript(&output));
    let text = stdout(&output);
    assert!(
        text.contains("Mint answers 404 for it: 1 time(s) in a row"),
        "{text}"
    );
    assert!(
        text.contains("Mint answered 404 (1 in a row since"),
        "the timeline says so: {text}"
    );
    // Mint answers again; the instance finishes; the download meets the missing role.
    app.admin
        .set_instance_behaviours(&instance, not_found(0.0))
        .await
        .unwrap();
    app.complete_user_steps(&instance).await;
    app.eventually(
        Duration::from_secs(10),
        "the download is paused",
        || async {
            app.advance(Duration::from_secs(10 * 60)).await;
            app.run_until_idle().await;
            !app.pipeline().store.work_pauses().await.unwrap().is_empty()
        },
    )
    .await;
    let output = run(mintgate(&files.config(), &["inspect", &id.to_string()])).await;
    let text = stdout(&output);
    assert!(
        !text.contains("Mint answers 404 for it"),
        "the run is over: {text}"
    );
    assert!(
        text.contains(
            "paused: the API client lacks the role Flow Instance Download (download work waits"
        ),
        "{text}"
    );
}
