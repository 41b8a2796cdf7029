//! Monitoring: each alert's condition, driven in the simulator, read from the metric its rule
//! reads (`monitoring/alerts.yml`); the cost ledger against the simulator's billing; the hard cap;
//! the status page in headless Chromium; and no secret in logs or metrics.
//!
//! Every service has its own metrics registry, so tests running side by side never see each
//! other's figures: exact counts are safe.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mint_sim::{Faults, UserStepAction};
use mintgate::model::{ExecutionState, JobKind, JobState};
use serde_json::json;

use crate::helpers::{API_KEY, Setup, TestApp, WEBHOOK_SECRET, spawn_app, spawn_with};

/// The Prometheus text of the service.
async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The sum of the series of `name` that carry all of `labels` (0 when there is none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let (metric, rest) = match series.find('{') {
                Some(i) => series.split_at(i),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| number.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Runs the due jobs of the given kinds until none is due.
async fn run_kinds(app: &TestApp, kinds: &[JobKind]) {
    for _ in 0..1000 {
        let mut any = false;
        for kind in kinds {
            while app.pipeline().run_once(&[*kind]).await.unwrap() {
                any = true;
            }
        }
        if !any {
            return;
        }
    }
    panic!("the pipeline does not settle");
}

/// Starts an execution of `flow` and answers its id and instance.
async fn started(app: &TestApp, flow: &str) -> (uuid::Uuid, String) {
    let id = app.request(flow).await;
    run_kinds(app, &[JobKind::Start]).await;
    let instance = app.instance_of(id).await;
    (id, instance)
}

/// Lets the end user finish and the poller notice it, without downloading.
async fn finish_without_download(app: &TestApp, id: uuid::Uuid, instance: &str) {
    app.complete_user_steps(instance).await;
    for _ in 0..5 {
        app.advance(Duration::from_secs(10 * 60)).await;
        run_kinds(app, &[JobKind::Check]).await;
        if app.execution(id).await.state == ExecutionState::Finished {
            return;
        }
    }
    panic!(
        "the execution did not finish: {:?}",
        app.execution(id).await
    );
}

#[tokio::test]
async fn token_renewals_are_counted_and_a_failing_renewal_is_counted_as_a_failure() {
    let app = spawn_app().await;
    started(&app, "flow-kyc-basic").await;
    let text = scrape(&app).await;
    let env = [("environment", "sandbox")];
    assert_eq!(
        value(&text, "mintgate_mint_token_renewals_total", &env),
        1.0
    );
    assert_eq!(
        value(&text, "mintgate_mint_token_failures_total", &env),
        0.0
    );
    let expires_in = value(&text, "mintgate_mint_token_expires_in_seconds", &env);
    assert!(expires_in > 0.0 && expires_in <= 600.0, "{expires_in}");

    // The API client's secret is rotated in Mint and the current token revoked.
    let mut config = app.admin.config().await.unwrap();
    let mut client = config.clients.remove(0);
    assert_eq!(client.client_id, "demo");
    client.client_secret = "rotated-secret".to_owned();
    app.admin.put_client(client).await.unwrap();
    app.admin.revoke_tokens("demo").await.unwrap();
    app.request("flow-kyc-basic").await;
    run_kinds(&app, &[JobKind::Start]).await;
    let text = scrape(&app).await;
    assert!(value(&text, "mintgate_mint_token_failures_total", &env) >= 1.0);
}

#[tokio::test]
async fn a_429_storm_is_counted_and_a_spent_budget_reads_zero_units_left() {
    let mut app = spawn_app().await;
    // A small budget: 10 units a minute (9 after the 10 % headroom).
    app.config
        .mint
        .get_mut("sandbox")
        .unwrap()
        .budget_units_per_minute = 10;
    app.crash_and_restart().await;
    app.set_faults(Faults {
        storm_rate: 1.0,
        ..Faults::default()
    })
    .await;
    app.request("flow-kyc-basic").await;
    run_kinds(&app, &[JobKind::Start]).await;
    let text = scrape(&app).await;
    assert!(
        value(
            &text,
            "mintgate_mint_throttled_total",
            &[("operation", "start")]
        ) >= 1.0,
        "{text}"
    );
    assert!(value(&text, "mintgate_mint_requests_total", &[("status", "429")]) >= 1.0);
    assert!(value(&text, "mintgate_mint_retries_total", &[]) >= 1.0);

    app.set_faults(Faults::default()).await;
    let env = [("environment", "sandbox")];
    for _ in 0..12 {
        let text = scrape(&app).await;
        if value(&text, "mintgate_mint_budget_units_remaining", &env) == 0.0 {
            assert_eq!(value(&text, "mintgate_mint_budget_units_limit", &env), 9.0);
            let used = value(&text, "mintgate_mint_budget_units_used_total", &env);
            assert!(used >= 9.0, "{used}");
            return;
        }
        // Each start costs one unit (the flow check on arrival one more, once).
        app.request("flow-kyc-basic").await;
        // The first start after the storm may wait for the budget's adaptive pause.
        run_kinds(&app, &[JobKind::Start]).await;
    }
    panic!("the budget never ran out");
}

#[tokio::test]
async fn a_faulted_instance_counts_as_workflow_execution_failed() {
    let app = spawn_app().await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    app.admin.set_status(&instance, "Faulted").await.unwrap();
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kinds(&app, &[JobKind::Check]).await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Failed);
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "mintgate_executions_ended_total",
            &[("state", "failed"), ("reason", "workflow_execution_failed")]
        ),
        1.0
    );
    assert_eq!(
        value(&text, "mintgate_executions", &[("state", "failed")]),
        1.0
    );
}

#[tokio::test]
async fn slow_downloads_show_low_throughput_and_cut_ones_show_interruptions() {
    let mut setup = Setup::default();
    for flow in &mut setup.sim.flows {
        flow.result_file_bytes = 48 * 1024;
    }
    let app = spawn_with(setup).await;
    app.set_faults(Faults {
        slow_body_rate: 1.0,
        slow_body_bytes_per_sec: 48 * 1024,
        ..Faults::default()
    })
    .await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    finish_without_download(&app, id, &instance).await;
    run_kinds(&app, &[JobKind::Download]).await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Archived);
    let text = scrape(&app).await;
    let bytes = value(&text, "mintgate_download_bytes_total", &[]);
    let seconds = value(&text, "mintgate_download_duration_seconds_sum", &[]);
    assert_eq!(bytes, 48.0 * 1024.0);
    // The rule's expression: average throughput below 1 MiB/s.
    assert!(
        bytes / seconds < 1024.0 * 1024.0,
        "{bytes} B in {seconds} s"
    );
    assert_eq!(
        value(
            &text,
            "mintgate_download_throughput_bytes_per_second_count",
            &[]
        ),
        1.0
    );

    app.set_faults(Faults {
        cut_body_rate: 1.0,
        cut_body_at_fraction: 0.5,
        ..Faults::default()
    })
    .await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    finish_without_download(&app, id, &instance).await;
    run_kinds(&app, &[JobKind::Download]).await;
    assert_ne!(app.execution(id).await.state, ExecutionState::Archived);
    let text = scrape(&app).await;
    let interruptions = value(
        &text,
        "mintgate_download_interruptions_total",
        &[("cause", "cut")],
    );
    assert!(interruptions >= 3.0, "{interruptions}");
}

#[tokio::test]
async fn a_finished_instance_left_unarchived_for_28_days_is_at_risk() {
    let app = spawn_app().await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    finish_without_download(&app, id, &instance).await;
    let text = scrape(&app).await;
    assert_eq!(
        value(&text, "mintgate_archive_backlog_executions", &[]),
        1.0
    );
    assert_eq!(
        value(&text, "mintgate_archive_at_risk_executions", &[]),
        0.0
    );

    app.advance(Duration::from_secs(28 * 24 * 3600)).await;
    let text = scrape(&app).await;
    assert_eq!(
        value(&text, "mintgate_archive_at_risk_executions", &[]),
        1.0
    );
    let age = value(&text, "mintgate_archive_oldest_unarchived_age_seconds", &[]);
    assert!(age >= 28.0 * 24.0 * 3600.0, "{age}");
}

#[tokio::test]
async fn a_download_that_keeps_failing_ends_as_a_dead_letter() {
    let app = spawn_app().await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    // Every answer for the result file is an HTML error page: a counted failure each time.
    app.admin
        .set_instance_behaviours(
            &instance,
            mint_sim::BehaviourOverrides {
                result_file_html_rate: Some(1.0),
                ..mint_sim::BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    finish_without_download(&app, id, &instance).await;
    for _ in 0..12 {
        app.run_until_idle().await;
        app.advance(Duration::from_secs(3600)).await;
    }
    let text = scrape(&app).await;
    assert_eq!(value(&text, "mintgate_dead_letter_jobs", &[]), 1.0);
    // The operator's listing shows it, for this execution.
    let listing: serde_json::Value = app
        .http
        .get(app.operator_url("/v1/dead-letters"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = listing["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listing}");
    assert!(items[0].to_string().contains(&id.to_string()), "{listing}");
    assert_eq!(
        value(
            &text,
            "mintgate_dead_letters_total",
            &[("kind", "download")]
        ),
        1.0
    );
}

#[tokio::test]
async fn refused_webhooks_are_counted_by_reason() {
    let app = spawn_app().await;
    let response = app
        .http
        .post(app.url("/webhooks/mint"))
        .json(&json!({"instanceId": "i-1", "status": "Finished"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let text = scrape(&app).await;
    // Exactly one: no other test's webhooks leak into this service's metrics.
    assert_eq!(value(&text, "mintgate_webhooks_refused_total", &[]), 1.0);
}

#[tokio::test]
async fn spend_above_the_threshold_raises_the_alert_metric() {
    let mut setup = Setup::default();
    setup.pipeline.monthly_spend_alert_cents = Some(50);
    let app = spawn_with(setup).await;
    started(&app, "flow-kyc-basic").await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, "mintgate_spend_month_cents", &[]), 50.0);
    assert_eq!(value(&text, "mintgate_spend_over_threshold", &[]), 0.0);
    started(&app, "flow-kyc-video").await;
    let text = scrape(&app).await;
    assert_eq!(value(&text, "mintgate_spend_month_executions", &[]), 2.0);
    assert_eq!(value(&text, "mintgate_spend_month_cents", &[]), 100.0);
    assert_eq!(
        value(&text, "mintgate_spend_alert_threshold_cents", &[]),
        50.0
    );
    assert_eq!(value(&text, "mintgate_spend_over_threshold", &[]), 1.0);
    assert!(value(&text, "mintgate_spend_month_projected_cents", &[]) >= 100.0);
}

async fn budget(app: &TestApp) -> serde_json::Value {
    let response = app
        .http
        .get(app.url("/v1/budget"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_ledger_agrees_to_the_cent_with_the_simulators_billing() {
    let app = spawn_app().await;
    // Lost start answers: billed by Mint, found again by reconciliation, billed once by us.
    app.set_faults(Faults {
        seed: Some(3),
        lost_start_rate: 0.4,
        ..Faults::default()
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let flow = if i % 3 == 0 {
            "flow-kyc-video"
        } else {
            "flow-kyc-basic"
        };
        ids.push(app.request(flow).await);
    }
    for _ in 0..20 {
        run_kinds(&app, &[JobKind::Start]).await;
        let mut open = 0;
        for id in &ids {
            if app.execution(*id).await.instance_id.is_none() {
                open += 1;
            }
        }
        if open == 0 {
            break;
        }
        app.advance(Duration::from_secs(60)).await;
    }
    let usage = app.admin.usage().await.unwrap();
    let truth = usage.clients.get("demo").unwrap();
    let ledger = budget(&app).await;
    assert_eq!(ledger["cents"].as_u64().unwrap(), truth.cents_owed);
    assert_eq!(ledger["executions"].as_u64().unwrap(), truth.starts_billed);
    assert_eq!(truth.cents_owed, 8 * 50, "every execution started once");
    let by_flow = ledger["byFlow"].as_object().unwrap();
    assert_eq!(by_flow["sandbox/flow-kyc-video"], json!([3, 150]));
    assert_eq!(by_flow["sandbox/flow-kyc-basic"], json!([5, 250]));
    let by_day: i64 = ledger["byDay"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v[1].as_i64().unwrap())
        .sum();
    assert_eq!(by_day, 400);
}

#[tokio::test]
async fn the_hard_cap_holds_new_starts_in_the_queue_and_releases_them_when_raised() {
    let mut setup = Setup::default();
    setup.pipeline.monthly_spend_cap_cents = Some(100);
    let app = spawn_with(setup).await;
    let ids = [
        app.request("flow-kyc-basic").await,
        app.request("flow-kyc-basic").await,
        app.request("flow-kyc-basic").await,
    ];
    run_kinds(&app, &[JobKind::Start]).await;
    let mut states = Vec::new();
    for id in ids {
        states.push(app.execution(id).await.state);
    }
    let held = ids[states
        .iter()
        .position(|s| *s == ExecutionState::Queued)
        .expect("one execution is held")];
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == ExecutionState::Running)
            .count(),
        2
    );
    let cents = |usage: mint_sim::Usage| usage.clients.get("demo").unwrap().cents_owed;
    assert_eq!(cents(app.admin.usage().await.unwrap()), 100);
    // Held, not dropped: its start job waits in the queue without using up attempts.
    let jobs = app.pipeline().store.jobs_for(held).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Ready);
    assert_eq!(jobs[0].attempts, 0);
    assert!(jobs[0].errors[0].error.contains("spend cap"));
    let text = scrape(&app).await;
    assert_eq!(value(&text, "mintgate_spend_held_executions", &[]), 1.0);
    assert_eq!(value(&text, "mintgate_spend_cap_cents", &[]), 100.0);
    // Later still held.
    app.advance(Duration::from_secs(3600)).await;
    run_kinds(&app, &[JobKind::Start]).await;
    assert_eq!(app.execution(held).await.state, ExecutionState::Queued);

    // An operator raises the cap.
    let response = app
        .http
        .put(app.url("/v1/budget/cap"))
        .bearer_auth(API_KEY)
        .json(&json!({"cents": 150}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["capCents"], 150);
    assert_eq!(answer["capSource"], "operator");
    app.advance(Duration::from_secs(5 * 60)).await;
    run_kinds(&app, &[JobKind::Start]).await;
    assert_eq!(app.execution(held).await.state, ExecutionState::Running);
    assert_eq!(cents(app.admin.usage().await.unwrap()), 150);
    let text = scrape(&app).await;
    assert_eq!(value(&text, "mintgate_spend_held_executions", &[]), 0.0);

    // Without the key, the cap cannot be changed.
    let response = app
        .http
        .put(app.url("/v1/budget/cap"))
        .json(&json!({"cents": 1000000}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

/// Headless Chromium's DOM of `url`, or `None` (with the reason printed) when Chromium is not
/// installed outside CI.
async fn chromium_dom(url: String, screenshot: Option<std::path::PathBuf>) -> Option<String> {
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(binary) = binary else {
        assert!(
            std::env::var_os("CI").is_none(),
            "Chromium is not installed, and under CI this test must run (.ci/run installs it)"
        );
        crate::helpers::skip(
            "monitoring::the_status_page_renders_in_headless_chromium",
            "Chromium is not installed (apt-get install chromium); under CI (CI set, as .ci/run does) it must run",
        );
        return None;
    };
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                &format!("--user-data-dir={}", profile.path().display()),
            ])
            .args(match &screenshot {
                Some(path) => vec![
                    format!("--screenshot={}", path.display()),
                    "--window-size=1200,900".to_owned(),
                ],
                None => vec!["--dump-dom".to_owned()],
            })
            .arg(&url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[tokio::test]
async fn the_status_page_renders_in_headless_chromium() {
    let mut setup = Setup::default();
    setup.pipeline.monthly_spend_alert_cents = Some(75);
    let app = spawn_with(setup).await;
    // One end user waiting, one failure with Mint's generic message, one at risk.
    let (_, waiting) = started(&app, "flow-kyc-basic").await;
    let (_, faulted) = started(&app, "flow-kyc-video").await;
    app.admin.set_status(&faulted, "Faulted").await.unwrap();
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kinds(&app, &[JobKind::Check]).await;
    let page = app.http.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let Some(dom) = chromium_dom(app.url("/"), None).await else {
        return;
    };
    // For a person to look at: MINTGATE_STATUS_SCREENSHOT=/tmp/status.png cargo test … status_page
    if let Some(path) = std::env::var_os("MINTGATE_STATUS_SCREENSHOT") {
        chromium_dom(app.url("/"), Some(std::path::PathBuf::from(path))).await;
    }
    assert!(dom.contains("<h1>mintgate status</h1>"), "{dom}");
    assert!(dom.contains("id=\"state-running\">1<"), "{dom}");
    assert!(dom.contains("id=\"state-failed\">1<"), "{dom}");
    assert!(dom.contains("id=\"waiting-count\">1<"), "{dom}");
    assert!(dom.contains("id=\"month-cost\">$1.00<"), "{dom}");
    assert!(dom.contains("Workflow execution failed"), "{dom}");
    assert!(dom.contains("sandbox/flow-kyc-video"), "{dom}");
    assert!(dom.contains("id=\"dead-letters\">0<"), "{dom}");
    assert!(!dom.contains("<script"), "no JavaScript: {dom}");
    let _ = waiting;
    let _ = UserStepAction::Complete;
}

/// A writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Whether `text` holds a simulator access token (`sim.` and 48 hex digits).
fn holds_sim_token(text: &str) -> bool {
    text.match_indices("sim.").any(|(i, _)| {
        let rest = &text[i + 4..];
        rest.len() >= 48 && rest[..48].chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[tokio::test]
async fn logs_are_json_with_job_ids_and_no_secret_reaches_logs_or_metrics() {
    let captured = Captured::default();
    let subscriber = mintgate::telemetry::json_subscriber(
        captured.clone(),
        tracing_subscriber::EnvFilter::new("info,mintgate=debug,mint_client=debug"),
    );
    // The test's runtime has one thread: everything the service does logs here.
    let _guard = crate::helpers::capture_tracing(subscriber);
    let app = spawn_app().await;
    let (id, instance) = started(&app, "flow-kyc-basic").await;
    app.complete_user_steps(&instance).await;
    app.advance(Duration::from_secs(10 * 60)).await;
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Archived);
    // A webhook with a wrong signature and a request with a wrong key are refused (and logged).
    let response = app
        .http
        .post(app.url("/webhooks/mint"))
        .header("X-Mint-Timestamp", "1")
        .header("X-Mint-Signature", format!("v1={WEBHOOK_SECRET}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let metrics = scrape(&app).await;
    let page = app
        .http
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let mut job_lines = 0;
    for line in logs.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        let spans = entry["spans"].as_array().cloned().unwrap_or_default();
        if let Some(job) = spans.iter().find(|s| s["name"] == "job") {
            job_lines += 1;
            for field in ["job_id", "execution_id", "kind"] {
                assert!(job.get(field).is_some(), "{field} missing: {line}");
            }
        }
    }
    assert!(job_lines >= 5, "{job_lines} lines in job spans:\n{logs}");
    assert!(
        logs.contains(&format!("\"instance_id\":\"{instance}\"")),
        "the instance id is in the job lines"
    );
    for (what, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("status page", &page),
    ] {
        for secret in ["demo-secret", WEBHOOK_SECRET, API_KEY] {
            assert!(!text.contains(secret), "{secret:?} appears in the {what}");
        }
        assert!(
            !holds_sim_token(text),
            "a Mint access token appears in the {what}"
        );
    }
    assert!(holds_sim_token(&format!("sim.{}", "ab".repeat(24))));
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_read_is_defined_in_the_metrics_module() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let defined = std::fs::read_to_string(root.join("crates/mintgate/src/metrics.rs")).unwrap();
    for file in ["monitoring/alerts.yml", "monitoring/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut names = 0;
        for (i, _) in text.match_indices("mintgate_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            if base == "mintgate" {
                continue;
            }
            names += 1;
            assert!(
                defined.contains(&format!("\"{base}\"")),
                "{file} reads {name}, which src/metrics.rs does not define"
            );
        }
        assert!(names > 10, "{file}");
    }
}
