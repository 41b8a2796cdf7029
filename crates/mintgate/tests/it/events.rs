//! Application events: signed deliveries to a local receiver (checked with an implementation of
//! the Standard Webhooks signature written here, not the service's), retries through outages and a
//! crash, order per execution, dead letters and redelivery, and the feed's cursor across a restart
//! and across two replicas on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit as _, Mac as _};
use mintgate::config::{EventEndpoint, EventsConfig};
use mintgate::store::{EventStore as _, Redeliver};
use secrecy::SecretString;
use serde_json::Value;
use sha2::Sha256;

use crate::helpers::*;

/// The endpoint's key now, and the one being rotated out (Standard Webhooks secrets).
fn secret(byte: u8) -> String {
    format!("whsec_{}", STANDARD.encode([byte; 32]))
}

/// What the receiver does with a request.
const ACCEPT: u8 = 0;
const REFUSE: u8 = 1;
const HANG: u8 = 2;

/// One request the receiver got, in arrival order.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    /// The status it was answered with (none: it was never answered).
    status: Option<u16>,
}

/// A local HTTP endpoint that records every event posted to it.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
    mode: Arc<AtomicU8>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let mode = Arc::new(AtomicU8::new(ACCEPT));
        let (handler_log, handler_mode) = (log.clone(), mode.clone());
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (log, mode) = (handler_log.clone(), handler_mode.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let mode = mode.load(Ordering::SeqCst);
                    let status = match mode {
                        ACCEPT => Some(204),
                        REFUSE => Some(503),
                        _ => None,
                    };
                    log.lock().unwrap().push(Received {
                        id: header("webhook-id"),
                        timestamp: header("webhook-timestamp"),
                        signature: header("webhook-signature"),
                        body,
                        status,
                    });
                    if mode == HANG {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                    }
                    axum::http::StatusCode::from_u16(status.unwrap_or(500)).unwrap()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, log, mode }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn log(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// The event ids answered `2xx`.
    fn acknowledged(&self) -> BTreeSet<String> {
        self.log()
            .into_iter()
            .filter(|r| r.status.is_some_and(|s| (200..300).contains(&s)))
            .map(|r| r.id)
            .collect()
    }
}

/// The Standard Webhooks check, written from the specification: the key is the base64 after
/// `whsec_`; the signed content is `{id}.{timestamp}.{body}`; the header holds space-separated
/// `v1,<base64 HMAC-SHA256>` entries, any of which may match.
fn signed_with(secret: &str, received: &Received) -> bool {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    received
        .signature
        .split(' ')
        .any(|entry| entry.strip_prefix("v1,") == Some(expected.as_str()))
}

fn endpoint(url: &str, previous: bool) -> EventEndpoint {
    EventEndpoint {
        name: "app".to_owned(),
        url: url.parse().unwrap(),
        secret: SecretString::from(secret(1)),
        previous_secret: previous.then(|| SecretString::from(secret(2))),
        types: Vec::new(),
    }
}

/// Events retried every 100 ms (up to `attempts` attempts in all), on a service restarted with
/// them.
async fn with_endpoint(mut app: TestApp, receiver: &Receiver, attempts: usize) -> TestApp {
    app.config.events = EventsConfig {
        endpoints: vec![endpoint(&receiver.url, true)],
        retry_schedule: vec![Duration::from_millis(100).into(); attempts - 1],
        timeout: Duration::from_secs(2),
        lease: Duration::from_secs(4),
        ..EventsConfig::default()
    };
    app.crash_and_restart().await;
    app
}

/// Runs the deliveries step by step until `done` holds (at most 20 s).
async fn deliver_until(app: &TestApp, what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "not delivered: {what}"
        );
        app.app.as_ref().unwrap().events().run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn body(received: &Received) -> Value {
    serde_json::from_str(&received.body).unwrap()
}

#[tokio::test]
async fn events_arrive_signed_in_order_per_execution_through_an_outage() {
    let receiver = Receiver::start().await;
    let app = with_endpoint(spawn_app().await, &receiver, 30).await;
    // The receiver is down from the start: every first attempt fails.
    receiver.set(REFUSE);
    let ids = [
        app.request("flow-kyc-basic").await,
        app.request("flow-kyc-basic").await,
    ];
    let mut views = Vec::new();
    for id in ids {
        views.push(app.drive_to_the_end(id, 30).await);
    }
    for _ in 0..3 {
        app.app.as_ref().unwrap().events().run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert!(
        receiver.log().iter().all(|r| r.status == Some(503)),
        "nothing is acknowledged during the outage"
    );
    receiver.set(ACCEPT);
    let outbox = app.pipeline().store.outbox_after(0, 1000).await.unwrap();
    let expected: BTreeSet<String> = outbox.iter().map(|e| e.id.clone()).collect();
    deliver_until(&app, "every event", || {
        receiver.acknowledged().is_superset(&expected)
    })
    .await;

    let log = receiver.log();
    // Every request is signed with the current key and the previous one (a rotation).
    for received in &log {
        assert!(signed_with(&secret(1), received), "{received:?}");
        assert!(signed_with(&secret(2), received), "{received:?}");
        assert_eq!(received.signature.split(' ').count(), 2);
        assert!(
            !received.body.contains("customer"),
            "the input leaked: {}",
            received.body
        );
    }
    // Retries carry the same id and the same body.
    let mut bodies: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for received in &log {
        bodies
            .entry(&received.id)
            .or_default()
            .insert(&received.body);
    }
    assert!(bodies.values().all(|b| b.len() == 1), "{bodies:?}");
    assert!(
        log.iter().filter(|r| r.status == Some(503)).count() >= 2,
        "the outage was retried"
    );
    // Each execution: started (with its workflow URL) and archived (with its hash), and an
    // event is sent only once the one before it was acknowledged.
    for view in &views {
        let events: Vec<_> = outbox
            .iter()
            .filter(|e| e.execution_id == view.id)
            .collect();
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types.first(), Some(&"execution.started"), "{types:?}");
        assert_eq!(types.last(), Some(&"execution.archived"), "{types:?}");
        for pair in events.windows(2) {
            let acknowledged = log
                .iter()
                .position(|r| r.id == pair[0].id && r.status == Some(204))
                .unwrap();
            let first_sent = log.iter().position(|r| r.id == pair[1].id).unwrap();
            assert!(
                acknowledged < first_sent,
                "{} was sent before {} was acknowledged",
                pair[1].event_type,
                pair[0].event_type
            );
        }
        let started = log.iter().find(|r| r.id == events[0].id).map(body).unwrap();
        assert_eq!(started["type"], "execution.started");
        assert_eq!(started["data"]["executionId"], view.id.to_string());
        assert_eq!(
            started["data"]["workflowUrl"].as_str(),
            view.workflow_url.as_deref()
        );
        assert_eq!(
            started["data"]["instanceId"].as_str(),
            view.instance_id.as_ref().map(|i| i.as_str())
        );
        let archived = log
            .iter()
            .find(|r| r.id == events.last().unwrap().id)
            .map(body)
            .unwrap();
        let instance = view.instance_id.as_ref().unwrap().as_str();
        let truth = app.admin.instance(instance).await.unwrap();
        assert_eq!(truth.status, "Finished");
        assert_eq!(
            archived["data"]["sha256"].as_str(),
            view.archive.as_ref().map(|a| a.sha256.as_str())
        );
    }
}

#[tokio::test]
async fn a_dead_letter_lets_the_next_event_go_and_is_redelivered_on_request() {
    let receiver = Receiver::start().await;
    // Two attempts in all.
    let app = with_endpoint(spawn_app().await, &receiver, 2).await;
    receiver.set(REFUSE);
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let store = app.pipeline().store.clone();
    let started = store.outbox_after(0, 10).await.unwrap();
    assert_eq!(started.len(), 1, "{started:?}");
    let started = started[0].clone();
    deliver_until(&app, "two refused attempts", || {
        receiver.log().iter().filter(|r| r.id == started.id).count() >= 2
    })
    .await;
    // Out of attempts: a dead letter, and no third attempt.
    app.eventually(Duration::from_secs(10), "the dead letter", || async {
        store
            .deliveries(Some("dead"), 10)
            .await
            .unwrap()
            .iter()
            .any(|d| d.event.id == started.id)
    })
    .await;
    for _ in 0..3 {
        app.app.as_ref().unwrap().events().run_once().await.unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(
        receiver.log().iter().filter(|r| r.id == started.id).count(),
        2
    );
    // The execution's next event is not held behind its dead one.
    receiver.set(ACCEPT);
    app.drive_to_the_end(id, 30).await;
    let archived = store
        .outbox_after(started.seq, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.event_type == "execution.archived")
        .unwrap();
    deliver_until(&app, "the archived event", || {
        receiver.acknowledged().contains(&archived.id)
    })
    .await;
    assert!(!receiver.acknowledged().contains(&started.id));

    // `mintgate events list --state dead`, then `mintgate events redeliver ID`.
    let toml = format!(
        "{}\n[events]\nretry_schedule = [\"100ms\"]\n\n[[events.endpoints]]\nname = \"app\"\nurl = \"{}\"\nsecret = \"{}\"\n",
        crate::cli::service_toml(&app),
        receiver.url,
        secret(1)
    );
    let files = crate::cli::Files::new(&toml);
    let output = crate::cli::run(crate::cli::mintgate(
        &files.config(),
        &["events", "list", "--state", "dead"],
    ))
    .await;
    assert_eq!(
        crate::cli::code(&output),
        0,
        "{}",
        crate::cli::transcript(&output)
    );
    let listed = crate::cli::stdout(&output);
    assert!(listed.contains(&started.id), "{listed}");
    assert!(listed.contains("503"), "{listed}");
    let output = crate::cli::run(crate::cli::mintgate(
        &files.config(),
        &["events", "redeliver", &started.id],
    ))
    .await;
    assert_eq!(
        crate::cli::code(&output),
        0,
        "{}",
        crate::cli::transcript(&output)
    );
    let output = crate::cli::run(crate::cli::mintgate(
        &files.config(),
        &["events", "redeliver", "msg_none"],
    ))
    .await;
    assert_eq!(
        crate::cli::code(&output),
        1,
        "{}",
        crate::cli::transcript(&output)
    );
    deliver_until(&app, "the redelivered event", || {
        receiver.acknowledged().contains(&started.id)
    })
    .await;
    // `--since` sends every event again, under the same ids.
    let before = receiver.log().len();
    let queued = store
        .redeliver(
            &Redeliver::Since(chrono::DateTime::UNIX_EPOCH),
            &mintgate::events::filters(&app.config.events),
            app.clock.now(),
        )
        .await
        .unwrap();
    let all = store.outbox_after(0, 100).await.unwrap();
    assert_eq!(queued as usize, all.len());
    deliver_until(&app, "everything again", || {
        receiver.log()[before..]
            .iter()
            .filter(|r| r.status == Some(204))
            .count()
            >= all.len()
    })
    .await;
    let again: BTreeSet<_> = receiver.log()[before..]
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(again, all.iter().map(|e| e.id.clone()).collect());
}

#[tokio::test]
async fn an_event_in_flight_when_the_service_is_killed_is_sent_again_with_the_same_id() {
    let receiver = Receiver::start().await;
    let mut app = with_endpoint(
        spawn_with(Setup {
            background_workers: true,
            ..Setup::default()
        })
        .await,
        &receiver,
        30,
    )
    .await;
    // The receiver takes the event and never answers: the service is killed meanwhile.
    receiver.set(HANG);
    let id = app.request("flow-kyc-basic").await;
    app.eventually(Duration::from_secs(20), "the first attempt", || async {
        !receiver.log().is_empty()
    })
    .await;
    app.crash_and_restart().await;
    receiver.set(ACCEPT);
    // The killed replica's lease lapses (the clock moves past it); the event is sent again.
    app.advance(Duration::from_secs(10)).await;
    let first = receiver.log()[0].id.clone();
    app.eventually(Duration::from_secs(20), "the event sent again", || async {
        receiver.acknowledged().contains(&first)
    })
    .await;
    let sent: Vec<_> = receiver
        .log()
        .into_iter()
        .filter(|r| r.id == first)
        .collect();
    assert!(sent.len() >= 2, "{sent:?}");
    assert!(
        sent.iter()
            .all(|r| r.body == sent[0].body && signed_with(&secret(1), r))
    );
    assert_eq!(body(&sent[0])["data"]["executionId"], id.to_string());
    app.app.take().unwrap().shutdown().await;
}

/// `GET /v1/events` on `app` (`url` builds the address).
async fn feed(app: &TestApp, base: &str, query: &str) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{base}/v1/events?{query}"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Reads the feed from `cursor` until it is empty; answers the events' ids and the last cursor.
async fn read_all(app: &TestApp, base: &str, mut cursor: String) -> (Vec<String>, String) {
    let mut ids = Vec::new();
    loop {
        let (status, page) = feed(app, base, &format!("after={cursor}&limit=2")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        if events.is_empty() {
            return (ids, cursor);
        }
        ids.extend(events.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        cursor = page["nextCursor"].as_str().unwrap().to_owned();
    }
}

#[tokio::test]
async fn the_feed_resumes_by_cursor_across_a_restart_and_long_polls() {
    use mintgate::config::{ApiKey, Scope};
    let mut app = spawn_app().await;
    app.config.service.api_keys.extend([
        ApiKey::scoped("feed-writer-key-0123456789", &[Scope::ExecutionsWrite]),
        ApiKey::scoped("feed-reader-key-0123456789", &[Scope::ExecutionsRead]),
    ]);
    app.crash_and_restart().await;
    let base = app.url("");
    // The feed tells what became of executions: `executions:read`.
    for (key, status) in [
        ("feed-writer-key-0123456789", 403),
        ("feed-reader-key-0123456789", 200),
    ] {
        let response = app
            .http
            .get(app.url("/v1/events"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status);
    }
    let (status, _) = feed(&app, &base, "after=zero").await;
    assert_eq!(status, 400);
    let (status, _) = feed(&app, &base, "wait=100000").await;
    assert_eq!(status, 400);
    let unauthorized = app.http.get(app.url("/v1/events")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    let ids = [
        app.request("flow-kyc-basic").await,
        app.request("flow-kyc-basic").await,
    ];
    app.run_until_idle().await;
    let (first, cursor) = read_all(&app, &base, "0".to_owned()).await;
    assert!(first.len() >= 2, "two starts: {first:?}");

    app.crash_and_restart().await;
    // A long poll from the cursor is answered by the next commit.
    let poll = {
        let (http, base, cursor) = (app.http.clone(), base.clone(), cursor.clone());
        tokio::spawn(async move {
            http.get(format!("{base}/v1/events?after={cursor}&wait=20"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    for id in ids {
        app.drive_to_the_end(id, 30).await;
    }
    let woken = poll.await.unwrap();
    let woken = woken["events"].as_array().unwrap();
    assert!(!woken.is_empty(), "the long poll came back empty");
    assert!(
        woken
            .iter()
            .all(|e| e["cursor"].as_str().unwrap().parse::<i64>().unwrap()
                > cursor.parse::<i64>().unwrap())
    );
    let (rest, _) = read_all(&app, &base, cursor).await;
    // Nothing skipped, nothing twice: the pages are the outbox.
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    let outbox: Vec<String> = app
        .pipeline()
        .store
        .outbox_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, outbox);
    for id in ids {
        let archived = app
            .pipeline()
            .store
            .outbox_after(0, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.execution_id == id && e.event_type == "execution.archived")
            .count();
        assert_eq!(archived, 1);
    }
}

#[tokio::test]
async fn the_feed_never_skips_an_event_whose_transaction_commits_later_on_postgres() {
    use mintgate::model::ExecutionState;
    use mintgate::store::postgres::PgStore;
    use mintgate::store::{ExecutionPatch, NewExecution, Store as _};
    let Some(server) = postgres_server("events::the_feed_never_skips_an_event_on_postgres") else {
        return;
    };
    let url = fresh_postgres_schema(&server).await;
    let store = Arc::new(PgStore::open_url(&url).await.unwrap());
    let now = chrono::Utc::now();
    let mut executions = Vec::new();
    for _ in 0..2 {
        let id = uuid::Uuid::now_v7();
        store
            .create_execution(NewExecution {
                id,
                idempotency_key: None,
                environment: "sandbox".to_owned(),
                flow_id: mint_client::FlowId::new("flow-1").unwrap(),
                input: serde_json::json!({}),
                now,
                traceparent: None,
            })
            .await
            .unwrap();
        executions.push(id);
    }
    let failed = ExecutionPatch::state(ExecutionState::Failed);
    // Transaction A writes its event first (the smaller sequence number) and stays open.
    let mut a = store.write().await.unwrap();
    assert!(
        PgStore::patch_execution(&mut a, executions[0], &failed, now)
            .await
            .unwrap()
    );
    // Transaction B writes the second event and commits, while A is still open.
    let b = {
        let (store, failed, id) = (store.clone(), failed.clone(), executions[1]);
        tokio::spawn(async move {
            let mut b = store.write().await.unwrap();
            PgStore::patch_execution(&mut b, id, &failed, now)
                .await
                .unwrap();
            b.commit().await.unwrap();
        })
    };
    // Wait until B has committed or is waiting for a lock.
    let waiting = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let blocked: i64 = sqlx::query_scalar(waiting)
            .fetch_one(store.pool())
            .await
            .unwrap();
        if blocked > 0 || b.is_finished() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B neither committed nor waits"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A reader now, then after both committed, from its cursor.
    let seen = store.outbox_after(0, 100).await.unwrap();
    let cursor = seen.last().map_or(0, |e| e.seq);
    a.commit().await.unwrap();
    b.await.unwrap();
    let later = store.outbox_after(cursor, 100).await.unwrap();
    let read: BTreeSet<_> = seen.iter().chain(&later).map(|e| e.execution_id).collect();
    assert_eq!(
        read,
        executions.iter().copied().collect(),
        "an event was skipped: first read {seen:?}, then {later:?}"
    );
    drop_postgres_schema(&url).await;
}

#[tokio::test]
async fn the_feed_resumes_by_cursor_across_two_replicas_on_postgres() {
    let Some(server) = postgres_server("events::the_feed_resumes_across_two_replicas") else {
        return;
    };
    let url = fresh_postgres_schema(&server).await;
    let mut app = spawn_app().await;
    app.config.service.database_url = url.parse().unwrap();
    app.crash_and_restart().await;
    // A second replica on the same database, its own listener, no workers.
    let other = mintgate::app::Application::build(
        app.config.clone(),
        mintgate::app::BuildOptions {
            clock: app.clock.clone(),
            owner: "replica-b".to_owned(),
            run_workers: false,
            listener: Some(std::net::TcpListener::bind("127.0.0.1:0").unwrap()),
            operator_listener: None,
            tune_mint: Some(tune_mint_for_tests),
            telemetry: None,
        },
    )
    .await
    .unwrap();
    let (here, there) = (app.url(""), format!("http://{}", other.address()));
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let (first, cursor) = read_all(&app, &here, "0".to_owned()).await;
    assert!(!first.is_empty(), "the start: {first:?}");
    // Replica B's long poll is woken by replica A's commit (NOTIFY).
    let poll = {
        let (http, there, cursor) = (app.http.clone(), there.clone(), cursor.clone());
        tokio::spawn(async move {
            http.get(format!("{there}/v1/events?after={cursor}&wait=20"))
                .bearer_auth(API_KEY)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    app.drive_to_the_end(id, 30).await;
    let woken = poll.await.unwrap();
    assert!(!woken["events"].as_array().unwrap().is_empty(), "{woken}");
    // The cursor from replica A reads on at replica B, and survives A's restart.
    app.crash_and_restart().await;
    let (rest, _) = read_all(&app, &there, cursor).await;
    let all: Vec<String> = first.into_iter().chain(rest).collect();
    let outbox: Vec<String> = app
        .pipeline()
        .store
        .outbox_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(all, outbox);
    assert!(
        app.pipeline()
            .store
            .outbox_after(0, 1000)
            .await
            .unwrap()
            .iter()
            .any(|e| e.event_type == "execution.archived")
    );
    other.kill().await;
    app.app.take().unwrap().kill().await;
    drop_postgres_schema(&url).await;
}

#[tokio::test]
async fn a_result_near_mints_deletion_is_announced_at_risk_once() {
    use mintgate::model::ExecutionState;
    use mintgate::store::sqlite::SqliteStore;
    use mintgate::store::{ExecutionPatch, NewExecution, Store as _};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("store.db"))
        .await
        .unwrap();
    let now = chrono::Utc::now();
    let id = uuid::Uuid::now_v7();
    store
        .create_execution(NewExecution {
            id,
            idempotency_key: Some("order-7".to_owned()),
            environment: "sandbox".to_owned(),
            flow_id: mint_client::FlowId::new("flow-1").unwrap(),
            input: serde_json::json!({"customer": "Ada"}),
            now,
            traceparent: None,
        })
        .await
        .unwrap();
    let mut tx = store.write().await.unwrap();
    let finished = ExecutionPatch {
        state: Some(ExecutionState::Finished),
        deadline_at: Some(now + chrono::TimeDelta::days(1)),
        ..ExecutionPatch::default()
    };
    SqliteStore::patch_execution(&mut tx, id, &finished, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Not within a 12-hour window; within a 2-day one, once.
    assert_eq!(
        store
            .flag_at_risk(now + chrono::TimeDelta::hours(12), now, 10)
            .await
            .unwrap(),
        0
    );
    let window = now + chrono::TimeDelta::days(2);
    assert_eq!(store.flag_at_risk(window, now, 10).await.unwrap(), 1);
    assert_eq!(store.flag_at_risk(window, now, 10).await.unwrap(), 0);
    let events = store.outbox_after(0, 10).await.unwrap();
    let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["execution.at_risk"]);
    let body: Value = serde_json::from_str(&events[0].payload).unwrap();
    assert_eq!(body["data"]["idempotencyKey"], "order-7");
    assert_eq!(body["data"]["state"], "finished");
    assert!(!events[0].payload.contains("Ada"));
}

#[tokio::test]
async fn a_cursor_behind_pruned_events_is_told_so_never_skipped() {
    let app = spawn_app().await;
    let base = app.url("");
    for _ in 0..2 {
        app.request("flow-kyc-basic").await;
    }
    app.run_until_idle().await;
    let (ids, cursor) = read_all(&app, &base, "0".to_owned()).await;
    assert!(ids.len() >= 2, "two starts: {ids:?}");

    // Everything is older than the retention a day from now, and no endpoint holds it back.
    let store = app.pipeline().store.clone();
    let later = app.clock.now() + chrono::TimeDelta::days(2);
    let pruned = mintgate::retention::prune_events(
        &store,
        std::time::Duration::from_secs(86_400),
        &[],
        later,
    )
    .await
    .unwrap();
    assert_eq!(pruned as usize, ids.len());
    assert_eq!(
        store.events_pruned_through().await.unwrap().to_string(),
        cursor
    );

    // A reader from the start, or from any cursor before the pruned one, is told.
    let (status, page) = feed(&app, &base, "after=0").await;
    assert_eq!(status, 410, "{page}");
    assert_eq!(page["error"], "cursor_expired");
    assert!(
        page["message"]
            .as_str()
            .unwrap()
            .contains(&format!("after={cursor}")),
        "{page}"
    );
    // A reader that had read everything goes on; a new one (no cursor) starts at the oldest kept.
    let (status, page) = feed(&app, &base, &format!("after={cursor}")).await;
    assert_eq!((status, page["events"].as_array().unwrap().len()), (200, 0));
    let (status, page) = feed(&app, &base, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["nextCursor"].as_str().unwrap(), cursor);

    app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let (after, _) = read_all(&app, &base, cursor).await;
    assert!(!after.is_empty(), "the next start's event");
}
