//! The pipeline where Mint differs from the simulator's contract, and where the service itself
//! fails: panics in steps, odd timestamps, spurious `404`s, HTML result files, missing roles,
//! outages. Every assertion is on the simulator's truth (starts billed, results and hashes, usage).

use std::sync::atomic::Ordering;
use std::time::Duration;

use mint_sim::{BehaviourOverrides, FinishedAt};
use mintgate::config::PipelineConfig;
use mintgate::model::{ExecutionState, JobKind};

use crate::helpers::{Setup, TestApp, spawn_app, spawn_with};

/// The execution is archived and the archive holds exactly the simulator's file.
async fn assert_archived_as_the_simulator_says(app: &TestApp, id: uuid::Uuid) {
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let archive = view
        .archive
        .expect("an archived execution shows its archive");
    let instance = view.instance_id.unwrap();
    let results = app.admin.results(false).await.unwrap();
    let (sha256, bytes) = results
        .get(instance.as_str())
        .expect("the simulator holds the result");
    assert_eq!(&archive.sha256, sha256);
    assert_eq!(archive.bytes as u64, *bytes);
    let (on_disk, len) = mintgate::archive::hash_file(std::path::Path::new(&archive.path))
        .await
        .unwrap();
    assert_eq!((&on_disk, len), (sha256, *bytes));
}

async fn readyz(app: &TestApp) -> (u16, String) {
    let response = app
        .http
        .get(app.operator_url("/readyz"))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_panicking_step_is_the_jobs_error_and_the_job_is_retried() {
    let app = spawn_app().await;
    app.pipeline()
        .injected
        .step_panics
        .store(1, Ordering::Relaxed);
    let id = app.request("flow-kyc-basic").await;
    // The panic does not escape the runner.
    assert!(app.pipeline().run_once(&[JobKind::Start]).await.unwrap());
    let jobs = app.pipeline().store.jobs_for(id).await.unwrap();
    let start = jobs.iter().find(|j| j.kind == JobKind::Start).unwrap();
    assert_eq!(start.attempts, 1, "a panic uses up an attempt: {start:?}");
    let error = &start.errors.last().expect("the panic is recorded").error;
    assert!(
        error.contains("the start step panicked: injected panic in the start step"),
        "{error}"
    );
    assert_eq!(app.execution(id).await.state, ExecutionState::Queued);
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"].starts_billed,
        0
    );
    // Retried after its backoff, it starts once.
    app.advance(Duration::from_secs(3600)).await;
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Running);
    let starts = app.admin.starts_per_correlation_id().await.unwrap();
    assert_eq!(starts.get(&id.to_string()).copied(), Some(1), "{starts:?}");
}

#[tokio::test]
async fn a_worker_survives_panicking_steps_and_goes_on_working() {
    let app = spawn_with(Setup {
        background_workers: true,
        pipeline: PipelineConfig {
            idle_wait: Duration::from_millis(50),
            start_workers: 1,
            ..PipelineConfig::default()
        },
        ..Setup::default()
    })
    .await;
    app.pipeline()
        .injected
        .step_panics
        .store(2, Ordering::Relaxed);
    let first = app.request("flow-kyc-basic").await;
    let second = app.request("flow-kyc-basic").await;
    let store = app.pipeline().store.clone();
    app.eventually(Duration::from_secs(10), "both starts panicked once", || {
        let store = store.clone();
        async move {
            let mut panicked = 0;
            for id in [first, second] {
                let jobs = store.jobs_for(id).await.unwrap();
                panicked += jobs
                    .iter()
                    .filter(|j| j.errors.iter().any(|e| e.error.contains("panicked")))
                    .count();
            }
            panicked == 2
        }
    })
    .await;
    assert_eq!(app.pipeline().workers.live(JobKind::Start), 1);
    assert_eq!(readyz(&app).await, (200, "ready".to_owned()));
    // The one start worker, still alive, starts both once their backoff has passed.
    app.advance(Duration::from_secs(3600)).await;
    app.pipeline().wake.notify_waiters();
    app.eventually(Duration::from_secs(10), "both executions run", || async {
        app.execution(first).await.state == ExecutionState::Running
            && app.execution(second).await.state == ExecutionState::Running
    })
    .await;
    let starts = app.admin.starts_per_correlation_id().await.unwrap();
    assert_eq!(starts.get(&first.to_string()).copied(), Some(1));
    assert_eq!(starts.get(&second.to_string()).copied(), Some(1));
    assert_eq!(app.pipeline().workers.live(JobKind::Start), 1);
}

#[tokio::test]
async fn readyz_fails_naming_the_pool_that_has_no_live_worker() {
    let app = spawn_with(Setup {
        background_workers: true,
        ..Setup::default()
    })
    .await;
    assert_eq!(readyz(&app).await, (200, "ready".to_owned()));
    let checkers = app.config.pipeline.check_workers as u32;
    app.pipeline()
        .injected
        .exit_workers(JobKind::Check, checkers);
    app.eventually(
        Duration::from_secs(10),
        "the check pool is empty",
        || async { app.pipeline().workers.live(JobKind::Check) == 0 },
    )
    .await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("worker_pool_down"), "{body}");
    assert!(
        body.contains("no live worker in the check pool(s)"),
        "{body}"
    );
    assert!(
        !body.contains("start pool") && !body.contains("download"),
        "{body}"
    );
    assert!(app.pipeline().workers.live(JobKind::Start) > 0);
}

#[tokio::test]
async fn absurd_finished_at_values_are_replaced_by_our_observation_and_archived() {
    let app = spawn_app().await;
    let odd = [
        FinishedAt::ChronoMax,
        FinishedAt::Year1,
        FinishedAt::Future,
        FinishedAt::BeforeCreatedAt,
        FinishedAt::Unparseable,
        FinishedAt::Null,
    ];
    let mut ids = Vec::new();
    for _ in odd {
        ids.push(app.request("flow-kyc-basic").await);
    }
    app.run_until_idle().await;
    for (id, finished_at) in ids.iter().zip(odd) {
        let instance = app.instance_of(*id).await;
        app.admin
            .set_instance_behaviours(
                &instance,
                BehaviourOverrides {
                    finished_at: Some(finished_at),
                    ..BehaviourOverrides::default()
                },
            )
            .await
            .unwrap();
        app.complete_user_steps(&instance).await;
    }
    let before = app.clock.now();
    for id in &ids {
        let view = app.drive_to_the_end(*id, 20).await;
        let finished = view.finished_at.expect("a finished execution has an end");
        assert!(
            finished >= before - chrono::TimeDelta::minutes(10) && finished <= app.clock.now(),
            "{finished} is not our observation: {view:?}"
        );
        assert_eq!(
            view.deadline_at,
            Some(finished + chrono::TimeDelta::days(30)),
            "{view:?}"
        );
        assert_archived_as_the_simulator_says(&app, *id).await;
    }
}

/// Requests an execution of `flow-kyc-basic`, starts it and lets its instance finish in Mint
/// (without running any check). Answers the execution and its instance.
async fn finished_in_mint(app: &TestApp) -> (uuid::Uuid, String) {
    let id = app.request("flow-kyc-basic").await;
    while app.pipeline().run_once(&[JobKind::Start]).await.unwrap() {}
    let instance = app.instance_of(id).await;
    app.complete_user_steps(&instance).await;
    app.advance(Duration::from_secs(60)).await;
    // The flow's last step (the webhook) runs before the instance is finished.
    let admin = app.admin.clone();
    app.eventually(
        Duration::from_secs(5),
        "the instance finishes in Mint",
        || {
            let (admin, instance) = (admin.clone(), instance.clone());
            async move { admin.instance(&instance).await.unwrap().status == "Finished" }
        },
    )
    .await;
    (id, instance)
}

/// Runs the due jobs of one kind only.
async fn run_kind(app: &TestApp, kind: JobKind) -> usize {
    let mut ran = 0;
    while app.pipeline().run_once(&[kind]).await.unwrap() {
        ran += 1;
        assert!(ran < 1000, "the {kind:?} jobs do not settle");
    }
    ran
}

fn requests(usage: &mint_sim::Usage, client: &str, endpoint: &str) -> u64 {
    usage.clients[client]
        .requests_by_endpoint
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

async fn job(app: &TestApp, id: uuid::Uuid, kind: JobKind) -> mintgate::model::Job {
    app.pipeline()
        .store
        .jobs_for(id)
        .await
        .unwrap()
        .into_iter()
        .rfind(|j| j.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} job"))
}

async fn metrics(app: &TestApp) -> String {
    app.http
        .get(app.operator_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn not_found_always() -> BehaviourOverrides {
    BehaviourOverrides {
        not_found_rate: Some(1.0),
        ..BehaviourOverrides::default()
    }
}

fn short_404_span() -> Setup {
    Setup {
        pipeline: PipelineConfig {
            idle_wait: Duration::from_millis(50),
            expiry_404_span: Duration::from_secs(2 * 3600),
            ..PipelineConfig::default()
        },
        ..Setup::default()
    }
}

#[tokio::test]
async fn spurious_404s_shorter_than_the_span_do_not_expire_an_instance() {
    let app = spawn_with(short_404_span()).await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.admin
        .set_instance_behaviours(&instance, not_found_always())
        .await
        .unwrap();
    // Ninety minutes of nothing but 404s (the span is two hours).
    for _ in 0..9 {
        app.advance(Duration::from_secs(10 * 60)).await;
        run_kind(&app, JobKind::Check).await;
    }
    let usage = app.admin.usage().await.unwrap();
    assert!(
        usage.behaviours.spurious_not_found >= 3,
        "{:?}",
        usage.behaviours
    );
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Running, "{view:?}");
    let check = job(&app, id, JobKind::Check).await;
    assert_eq!(check.attempts, 0, "a 404 used up an attempt: {check:?}");
    assert!(
        check
            .errors
            .iter()
            .any(|e| e.error.contains("not taken for deleted"))
    );
    // Mint answers again: the run of 404s is over, and the result is archived.
    app.admin
        .set_instance_behaviours(&instance, BehaviourOverrides::default())
        .await
        .unwrap();
    let view = app.drive_to_the_end(id, 30).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    assert_archived_as_the_simulator_says(&app, id).await;
}

#[tokio::test]
async fn unbroken_404s_over_the_span_expire_an_instance() {
    let app = spawn_with(short_404_span()).await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.admin
        .set_instance_behaviours(&instance, not_found_always())
        .await
        .unwrap();
    let mut rounds = 0;
    while app.execution(id).await.state == ExecutionState::Running {
        rounds += 1;
        assert!(rounds < 40, "never expired");
        app.advance(Duration::from_secs(10 * 60)).await;
        run_kind(&app, JobKind::Check).await;
    }
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Expired, "{view:?}");
    let reason = view.failure_reason.unwrap();
    assert!(reason.contains("expiry_404_span"), "{reason}");
    // Not before the span: at least 2 h of 10-minute rounds after the first 404.
    assert!(rounds >= 12, "expired after {rounds} rounds");
    let usage = app.admin.usage().await.unwrap();
    assert!(usage.behaviours.spurious_not_found >= 3);
}

#[tokio::test]
async fn a_result_left_past_the_deadline_by_our_record_is_expired_at_its_first_404() {
    let app = spawn_app().await;
    let (id, instance) = finished_in_mint(&app).await;
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kind(&app, JobKind::Check).await;
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Finished, "{view:?}");
    // Nobody downloads it for 31 days: Mint deletes it.
    app.advance(Duration::from_secs(31 * 24 * 3600)).await;
    assert!(
        app.admin
            .instance(&instance)
            .await
            .unwrap()
            .deleted_at
            .is_some()
    );
    assert_eq!(run_kind(&app, JobKind::Download).await, 1, "one try");
    let view = app.execution(id).await;
    assert_eq!(view.state, ExecutionState::Expired, "{view:?}");
    assert!(
        view.failure_reason.unwrap().contains("deadline"),
        "expired by our record of the deadline"
    );
    let usage = app.admin.usage().await.unwrap();
    assert!(
        usage.clients["demo"]
            .status_counts
            .get(&404)
            .is_some_and(|n| *n > 0)
    );
    assert_eq!(usage.clients["demo"].downloads_billed, 0);
}

#[tokio::test]
async fn an_html_page_answered_for_the_result_is_never_archived() {
    let app = spawn_app().await;
    let (id, instance) = finished_in_mint(&app).await;
    app.admin
        .set_instance_behaviours(
            &instance,
            BehaviourOverrides {
                result_file_html_rate: Some(1.0),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kind(&app, JobKind::Check).await;
    run_kind(&app, JobKind::Download).await;
    let download = job(&app, id, JobKind::Download).await;
    assert_eq!(
        download.attempts, 1,
        "a non-ZIP answer is a counted failure"
    );
    let error = &download.errors.last().unwrap().error;
    assert!(error.contains("text/html"), "{error}");
    assert!(
        error.contains("<!"),
        "the first bytes are in the error: {error}"
    );
    let view = app.execution(id).await;
    assert_ne!(view.state, ExecutionState::Archived, "{view:?}");
    assert!(view.archive.is_none());
    assert!(
        app.archive()
            .existing(&instance, view.finished_at.unwrap())
            .await
            .unwrap()
            .is_none(),
        "the archive holds nothing for it"
    );
    let usage = app.admin.usage().await.unwrap();
    assert!(usage.behaviours.html_result_files >= 1);
    assert_eq!(usage.clients["demo"].downloads_billed, 0);
    // The page goes away: the next try archives the simulator's file.
    app.admin
        .set_instance_behaviours(&instance, BehaviourOverrides::default())
        .await
        .unwrap();
    app.advance(Duration::from_secs(3600)).await;
    run_kind(&app, JobKind::Download).await;
    assert_archived_as_the_simulator_says(&app, id).await;
}

#[tokio::test]
async fn a_429_on_the_result_file_delays_the_download_without_an_attempt() {
    let app = spawn_app().await;
    let (id, instance) = finished_in_mint(&app).await;
    app.admin
        .set_instance_behaviours(
            &instance,
            BehaviourOverrides {
                result_file_throttle_rate: Some(1.0),
                result_file_throttle_retry_after_secs: Some(60),
                ..BehaviourOverrides::default()
            },
        )
        .await
        .unwrap();
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kind(&app, JobKind::Check).await;
    for _ in 0..10 {
        run_kind(&app, JobKind::Download).await;
        app.advance(Duration::from_secs(2 * 60)).await;
    }
    let download = job(&app, id, JobKind::Download).await;
    assert_eq!(
        download.attempts, 0,
        "a 429 used up an attempt: {download:?}"
    );
    assert!(download.errors.iter().all(|e| e.error.contains("429")));
    assert!(
        app.pipeline()
            .store
            .dead_letters()
            .await
            .unwrap()
            .is_empty()
    );
    let usage = app.admin.usage().await.unwrap();
    assert!(
        usage.behaviours.result_file_throttled >= 10,
        "{:?}",
        usage.behaviours
    );
    app.admin
        .set_instance_behaviours(&instance, BehaviourOverrides::default())
        .await
        .unwrap();
    app.advance(Duration::from_secs(3 * 60)).await;
    run_kind(&app, JobKind::Download).await;
    assert_archived_as_the_simulator_says(&app, id).await;
}

const ALL_ROLES: [&str; 3] = ["Flow Viewer", "Flow Editor", "Flow Instance Download"];

#[tokio::test]
async fn a_missing_role_pauses_its_work_without_attempts_and_resumes_when_granted() {
    let app = spawn_with(Setup {
        client_id: "no-download",
        ..Setup::default()
    })
    .await;
    let (id, _instance) = finished_in_mint(&app).await;
    app.advance(Duration::from_secs(10 * 60)).await;
    app.run_until_idle().await;
    // The download met the 403: downloads are paused in sandbox, no attempt used.
    let download = job(&app, id, JobKind::Download).await;
    assert_eq!(download.attempts, 0, "{download:?}");
    let pauses = app.pipeline().store.work_pauses().await.unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(
        (
            pauses[0].environment.as_str(),
            pauses[0].kind,
            pauses[0].role.as_str()
        ),
        ("sandbox", JobKind::Download, "Flow Instance Download")
    );
    let scraped = metrics(&app).await;
    assert!(
        scraped.contains(
            "mintgate_missing_role{environment=\"sandbox\",role=\"Flow Instance Download\"} 1"
        ),
        "{scraped}"
    );
    assert!(
        scraped.contains("mintgate_missing_role{environment=\"sandbox\",role=\"Flow Viewer\"} 0")
    );
    let page = app
        .http
        .get(app.operator_url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<section id=\"paused\""), "{page}");
    // Hours pass: the paused download is not tried again (claims skip it); probes, which bill
    // nothing, find the role still missing.
    let before = app.admin.usage().await.unwrap();
    // Units, not requests: the simulator's tokens expire in simulated time, so a call after the
    // clock moved meets a 401 (no units) before its 403 (5 units).
    let units = |usage: &mint_sim::Usage| {
        usage.clients["no-download"]
            .units_by_endpoint
            .get("result_file")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(units(&before), 5, "the one refused download");
    for _ in 0..6 {
        app.advance(Duration::from_secs(30 * 60)).await;
        app.run_until_idle().await;
        assert_eq!(app.pipeline().probe_paused_roles().await.unwrap(), 0);
    }
    let after = app.admin.usage().await.unwrap();
    assert_eq!(
        units(&after) - units(&before),
        6 * 5,
        "one probe per due interval, no download"
    );
    assert_eq!(after.clients["no-download"].starts_billed, 1);
    assert_eq!(after.clients["no-download"].downloads_billed, 0);
    assert_eq!(job(&app, id, JobKind::Download).await.attempts, 0);
    assert!(
        app.pipeline()
            .store
            .dead_letters()
            .await
            .unwrap()
            .is_empty()
    );
    // An operator grants the role; the next probe lifts the pause and the work resumes by itself.
    app.admin
        .put_client(mint_sim::ClientConfig::new(
            "no-download",
            "no-download-secret",
            &ALL_ROLES,
        ))
        .await
        .unwrap();
    assert_eq!(
        app.pipeline().probe_paused_roles().await.unwrap(),
        0,
        "not due yet"
    );
    app.advance(app.config.pipeline.role_probe_interval).await;
    assert_eq!(app.pipeline().probe_paused_roles().await.unwrap(), 1);
    app.run_until_idle().await;
    assert_archived_as_the_simulator_says(&app, id).await;
    assert!(metrics(&app).await.contains(
        "mintgate_missing_role{environment=\"sandbox\",role=\"Flow Instance Download\"} 0"
    ));
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(usage.clients["no-download"].starts_billed, 1);
    assert_eq!(usage.clients["no-download"].downloads_billed, 1);
}

#[tokio::test]
async fn serve_probes_the_roles_at_start_and_holds_starts_until_the_role_is_granted() {
    let app = spawn_with(Setup {
        client_id: "viewer",
        background_workers: true,
        ..Setup::default()
    })
    .await;
    let store = app.pipeline().store.clone();
    app.eventually(
        Duration::from_secs(10),
        "the start-up probe paused the work",
        || {
            let store = store.clone();
            async move { store.work_pauses().await.unwrap().len() == 2 }
        },
    )
    .await;
    let pauses = store.work_pauses().await.unwrap();
    let paused: Vec<_> = pauses.iter().map(|p| (p.kind, p.role.as_str())).collect();
    assert!(
        paused.contains(&(JobKind::Start, "Flow Editor")),
        "{paused:?}"
    );
    assert!(
        paused.contains(&(JobKind::Download, "Flow Instance Download")),
        "{paused:?}"
    );
    let id = app.request("flow-kyc-basic").await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("degraded:"), "{body}");
    assert!(body.contains("start work in sandbox is paused"), "{body}");
    assert!(
        body.contains("the API client lacks the role Flow Editor"),
        "{body}"
    );
    // The start is held, not tried: Mint saw only the probe (a flow that cannot exist).
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(usage.clients["viewer"].starts_billed, 0);
    assert_eq!(requests(&usage, "viewer", "start"), 1, "only the probe");
    assert_eq!(app.execution(id).await.state, ExecutionState::Queued);
    assert_eq!(job(&app, id, JobKind::Start).await.attempts, 0);
    app.admin
        .put_client(mint_sim::ClientConfig::new(
            "viewer",
            "viewer-secret",
            &ALL_ROLES,
        ))
        .await
        .unwrap();
    app.advance(app.config.pipeline.role_probe_interval).await;
    app.eventually(Duration::from_secs(10), "the execution starts", || async {
        app.execution(id).await.state == ExecutionState::Running
    })
    .await;
    let starts = app.admin.starts_per_correlation_id().await.unwrap();
    assert_eq!(starts.get(&id.to_string()).copied(), Some(1), "{starts:?}");
    app.eventually(Duration::from_secs(10), "every pause is lifted", || {
        let store = store.clone();
        async move { store.work_pauses().await.unwrap().is_empty() }
    })
    .await;
    assert_eq!(readyz(&app).await, (200, "ready".to_owned()));
}

#[tokio::test]
async fn a_token_endpoint_outage_delays_starts_without_using_attempts() {
    let app = spawn_with(Setup {
        gate_token_endpoint: true,
        ..Setup::default()
    })
    .await;
    let gate = app.token_gate.as_ref().unwrap();
    gate.set_open(false);
    let id = app.request("flow-kyc-basic").await;
    // More rounds than a start has attempts.
    for _ in 0..15 {
        app.run_until_idle().await;
        app.advance(Duration::from_secs(3 * 60)).await;
    }
    assert!(gate.refused() >= 15, "the outage was not met");
    let start = job(&app, id, JobKind::Start).await;
    assert_eq!(start.attempts, 0, "an outage used up an attempt: {start:?}");
    assert!(
        app.pipeline()
            .store
            .dead_letters()
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(app.execution(id).await.state, ExecutionState::Queued);
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(usage.clients["demo"].tokens_issued, 0);
    assert_eq!(usage.clients["demo"].starts_billed, 0);
    gate.set_open(true);
    app.advance(Duration::from_secs(3 * 60)).await;
    app.run_until_idle().await;
    assert_eq!(app.execution(id).await.state, ExecutionState::Running);
    let starts = app.admin.starts_per_correlation_id().await.unwrap();
    assert_eq!(starts.get(&id.to_string()).copied(), Some(1));
}

/// Mint's and the client's rate limits lifted: a test whose downloads are cut again and again
/// (four tries of 5 units a round) must not wait for the budget's real-time minute.
fn without_rate_limits() -> Setup {
    let mut setup = Setup {
        configure: |config| {
            for profile in config.mint.values_mut() {
                profile.budget_units_per_minute = 100_000;
                profile.budget_burst_units = 10_000;
            }
        },
        ..Setup::default()
    };
    setup.sim.limits.window_units = 200_000;
    setup.sim.limits.burst_units = 20_000;
    setup
}

#[tokio::test]
async fn cut_downloads_delay_without_attempts_until_the_result_is_at_risk_then_archive() {
    let app = spawn_with(without_rate_limits()).await;
    let (id, _instance) = finished_in_mint(&app).await;
    app.advance(Duration::from_secs(10 * 60)).await;
    run_kind(&app, JobKind::Check).await;
    app.set_faults(mint_sim::Faults {
        seed: Some(4),
        cut_body_rate: 1.0,
        cut_body_at_fraction: 0.5,
        ..mint_sim::Faults::default()
    })
    .await;
    // More rounds than a download has attempts.
    for _ in 0..12 {
        run_kind(&app, JobKind::Download).await;
        app.advance(Duration::from_secs(3 * 60)).await;
    }
    let usage = app.admin.usage().await.unwrap();
    assert!(usage.faults.cut_bodies >= 12, "{:?}", usage.faults);
    let download = job(&app, id, JobKind::Download).await;
    assert_eq!(
        download.attempts, 0,
        "a cut download used up an attempt: {download:?}"
    );
    assert!(
        app.pipeline()
            .store
            .dead_letters()
            .await
            .unwrap()
            .is_empty()
    );
    // What bounds the delays is Mint's deletion: close to it, the result is reported at risk.
    assert!(
        metrics(&app)
            .await
            .contains("mintgate_archive_at_risk_executions 0")
    );
    app.advance(Duration::from_secs(28 * 24 * 3600)).await;
    assert!(
        metrics(&app)
            .await
            .contains("mintgate_archive_at_risk_executions 1")
    );
    app.set_faults(mint_sim::Faults::default()).await;
    run_kind(&app, JobKind::Download).await;
    assert_archived_as_the_simulator_says(&app, id).await;
}
