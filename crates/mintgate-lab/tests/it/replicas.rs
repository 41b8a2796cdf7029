//! Several replicas on the machine's PostgreSQL and Redis (`MINTGATE_TEST_POSTGRES_URL`,
//! `MINTGATE_TEST_REDIS_URL`), against one in-process simulator whose ground truth decides:
//! no 429, no execution started twice, no result file downloaded twice, nothing lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mint_sim::{Faults, SimConfig};
use mintgate::config::PipelineConfig;
use mintgate::model::CORRELATION_KEY;
use mintgate::model::{ExecutionState, JobKind};
use mintgate_lab::bench::fleet::{Fleet, FleetOptions, automatic_flow};
use uuid::Uuid;

use crate::support::{
    drop_postgres_schema, fresh_postgres_schema, ping_redis, postgres_server, redis_server,
    tune_mint_for_tests,
};

/// Simulated time runs this much faster than real time: Mint's 100 units a minute become 100
/// units in 6 s, so a burst drains in seconds.
const TIME_SCALE: f64 = 10.0;

struct Servers {
    database_url: String,
    redis_url: String,
}

async fn servers(test: &str) -> Option<Servers> {
    let postgres = postgres_server(test)?;
    // A configured server that does not answer fails the test here (see `redis_server`).
    let redis_url = redis_server(test).await?;
    Some(Servers {
        database_url: fresh_postgres_schema(&postgres).await,
        redis_url,
    })
}

/// The Prometheus text of replica `i`.
async fn scrape(fleet: &Fleet, i: usize) -> String {
    let url = format!("http://{}/metrics", fleet.addresses[i]);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.text().await.unwrap()
}

/// The sum of the series of `name` in a Prometheus text (0 when there is none).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, number) = line.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| number.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// Waits (up to `deadline`) for `check` to hold, polling every 50 ms.
async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts billed in the simulator's truth.
async fn starts_billed(fleet: &Fleet) -> u64 {
    fleet
        .admin
        .usage()
        .await
        .unwrap()
        .clients
        .get("demo")
        .map_or(0, |c| c.starts_billed)
}

/// A lease of 2 min of simulated time (12 s real): long enough that a loaded machine's late lease
/// renewal never hands a job to a second replica (the tests count downloads exactly).
const LEASE: Duration = Duration::from_secs(120);
/// 2 s of real time: a killed replica's job is taken over quickly.
const SHORT_LEASE: Duration = Duration::from_secs(20);

async fn start_fleet(
    servers: &Servers,
    redis_url: &str,
    dir: &tempfile::TempDir,
    result_file_bytes: u64,
    lease: Duration,
) -> Fleet {
    start_fleet_archiving(
        servers,
        redis_url,
        dir,
        result_file_bytes,
        mintgate::archive::ArchiveConfig::default(),
        lease,
    )
    .await
}

async fn start_fleet_archiving(
    servers: &Servers,
    redis_url: &str,
    dir: &tempfile::TempDir,
    result_file_bytes: u64,
    archive: mintgate::archive::ArchiveConfig,
    lease: Duration,
) -> Fleet {
    let mut sim = SimConfig::fixture();
    sim.seed = 7;
    sim.service.list_delay_micros_per_instance = 0;
    sim.flows = vec![automatic_flow("flow-auto", result_file_bytes)];
    Fleet::start(FleetOptions {
        replicas: 3,
        database_url: servers.database_url.clone(),
        redis_url: redis_url.to_owned(),
        redis_key_prefix: format!("t-{}", Uuid::new_v4().simple()),
        sim,
        time_scale: TIME_SCALE,
        pipeline: PipelineConfig {
            idle_wait: Duration::from_millis(100),
            lease,
            poll_grace: Duration::from_secs(60),
            // The tests count result-file requests exactly; the start-up role probe (one
            // result-file call per replica) is tested in mintgate's own tests.
            role_probe_at_start: false,
            ..PipelineConfig::default()
        },
        archive_dir: dir.path().join("archive"),
        archive,
        tune_mint: Some(tune_mint_for_tests),
    })
    .await
    .unwrap()
}

/// Requests `count` executions, spread over the replicas.
async fn burst(fleet: &Fleet, count: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..count {
        let replica = i % fleet.addresses.len();
        let alive = if fleet.replicas[replica].is_some() {
            replica
        } else {
            (0..fleet.replicas.len())
                .find(|r| fleet.replicas[*r].is_some())
                .unwrap()
        };
        ids.push(
            fleet
                .request(alive, "flow-auto", serde_json::json!({"customer": i}))
                .await
                .unwrap(),
        );
    }
    ids
}

async fn wait_until_archived(fleet: &Fleet, ids: &[Uuid], deadline: Duration) {
    let store = fleet.store();
    let started = Instant::now();
    loop {
        let mut open = Vec::new();
        for id in ids {
            let execution = store.execution(*id).await.unwrap().unwrap();
            if execution.state != ExecutionState::Archived {
                open.push((execution.id, execution.state));
            }
        }
        if open.is_empty() {
            return;
        }
        assert!(
            started.elapsed() < deadline,
            "not archived after {deadline:?}: {open:?}; dead letters: {:?}",
            store.dead_letters().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulator's truth: each execution started exactly once; `downloads` result-file requests.
async fn assert_ground_truth(fleet: &Fleet, ids: &[Uuid], downloads: u64) {
    let instances = fleet.admin.instances().await.unwrap();
    let mut starts: BTreeMap<String, usize> = BTreeMap::new();
    for instance in &instances {
        let correlation = instance.input[CORRELATION_KEY]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        *starts.entry(correlation).or_default() += 1;
    }
    for id in ids {
        assert_eq!(
            starts.get(&id.to_string()).copied(),
            Some(1),
            "execution {id} must be started exactly once: {starts:?}"
        );
    }
    assert_eq!(instances.len(), ids.len());
    let usage = fleet.admin.usage().await.unwrap();
    let client = &usage.clients["demo"];
    assert_eq!(
        client.throttled, 0,
        "no 429 in the simulator's truth: {client:?}"
    );
    assert_eq!(
        client.requests_by_endpoint.get("result_file").copied(),
        Some(downloads),
        "{client:?}"
    );
    assert_eq!(client.starts_billed, ids.len() as u64);
}

#[tokio::test]
async fn three_replicas_drain_a_burst_without_429s_duplicate_starts_or_downloads() {
    let Some(servers) = servers("replicas::three_replicas_drain_a_burst").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(&servers, &servers.redis_url, &dir, 64 * 1024, LEASE).await;
    let ids = burst(&fleet, 24).await;
    wait_until_archived(&fleet, &ids, Duration::from_secs(90)).await;
    assert_ground_truth(&fleet, &ids, ids.len() as u64).await;
    let usage = fleet.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"].tokens_issued, 1,
        "the replicas share one token"
    );
    let events = fleet.store().events_for(ids[0]).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "requested"));
    // Work was spread: every replica's own metrics (a registry per replica) show jobs it ran;
    // and Redis was used throughout: no replica fell back to its local share.
    for i in 0..fleet.addresses.len() {
        let text = scrape(&fleet, i).await;
        let jobs = metric(&text, "mintgate_jobs_total");
        assert!(jobs >= 1.0, "replica {i} ran no job:\n{text}");
        assert_eq!(
            metric(&text, "mintgate_budget_fallbacks_total"),
            0.0,
            "replica {i} fell back to its local budget share"
        );
    }
    fleet.shutdown().await;
    drop_postgres_schema(&servers.database_url).await;
}

#[tokio::test]
async fn a_download_abandoned_by_a_killed_replica_is_finished_by_another_after_its_lease() {
    let Some(servers) = servers("replicas::a_download_abandoned_by_a_killed_replica").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = start_fleet(
        &servers,
        &servers.redis_url,
        &dir,
        2 * 1024 * 1024,
        SHORT_LEASE,
    )
    .await;
    // Every result file trickles (2 MiB at 64 KiB/s: 32 s), so the download is surely in flight
    // when the replica is killed; the faults are cleared then, so the second transfer is quick.
    let size = 2 * 1024 * 1024;
    fleet
        .admin
        .set_faults(Faults {
            slow_body_rate: 1.0,
            slow_body_bytes_per_sec: 64 * 1024,
            ..Faults::default()
        })
        .await
        .unwrap();
    let ids = burst(&fleet, 1).await;
    let id = ids[0];
    let store = fleet.store();
    let started = Instant::now();
    let owner = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never downloading"
        );
        let execution = store.execution(id).await.unwrap().unwrap();
        if execution.state == ExecutionState::Downloading
            && let Some(job) = store
                .jobs_for(id)
                .await
                .unwrap()
                .into_iter()
                .find(|j| j.kind == JobKind::Download && j.lease_owner.is_some())
        {
            break job.lease_owner.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let victim: usize = owner.trim_start_matches("replica-").parse().unwrap();
    // The simulator's truth that the body is flowing: bytes handed to the connection.
    let admin = fleet.admin.clone();
    wait_for(Duration::from_secs(30), "the download has begun", || {
        let admin = admin.clone();
        async move { admin.usage().await.unwrap().clients["demo"].bytes_served > 0 }
    })
    .await;
    fleet.kill(victim).await;
    let served = fleet.admin.usage().await.unwrap().clients["demo"].bytes_served;
    assert!(
        served < size,
        "the first transfer must be cut by the kill, {served} of {size} bytes were served"
    );
    fleet.admin.set_faults(Faults::default()).await.unwrap();
    let store = fleet.store();
    wait_until_archived(&fleet, &ids, Duration::from_secs(60)).await;
    let execution = store.execution(id).await.unwrap().unwrap();
    let instance = execution.instance_id.clone().unwrap();
    let (expected, bytes) = fleet.admin.result_sha256(instance.as_str()).await.unwrap();
    assert_eq!(execution.sha256.as_deref(), Some(expected.as_str()));
    assert_eq!(execution.bytes, Some(bytes as i64));
    let download = store
        .jobs_for(id)
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.kind == JobKind::Download)
        .unwrap();
    assert!(
        download.lease_token >= 2,
        "the job was claimed again after the lease lapsed: {download:?}"
    );
    // The abandoned transfer and the one that finished it.
    assert_ground_truth(&fleet, &ids, 2).await;
    fleet.shutdown().await;
    drop_postgres_schema(&servers.database_url).await;
}

/// A `redis-server` of this test's own, so stopping it disturbs no other test.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    /// On a port found free (another one if that one is taken before `redis-server` binds it).
    async fn start_anywhere() -> Self {
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(redis) = Self::try_start(port).await {
                return redis;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// On `port` again (after a stop): fails the test if it cannot.
    async fn restart(port: u16) -> Self {
        for _ in 0..5 {
            if let Some(redis) = Self::try_start(port).await {
                return redis;
            }
        }
        panic!("redis-server did not start again on port {port}");
    }

    /// `None` when `redis-server` exits (the port was taken) or never answers.
    async fn try_start(port: u16) -> Option<Self> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let mut redis = Self {
            port,
            child: Some(child),
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if redis
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
            {
                redis.child = None;
                return None;
            }
            if ping_redis(&redis.url()).await.is_ok() {
                return Some(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sums a metric over the replicas still running.
async fn fleet_metric(fleet: &Fleet, name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for i in 0..fleet.addresses.len() {
        if fleet.replicas[i].is_some() {
            values.push(metric(&scrape(fleet, i).await, name));
        }
    }
    values
}

#[tokio::test]
async fn redis_stopped_and_restarted_during_the_run_loses_nothing() {
    let Some(servers) = servers("replicas::redis_stopped_and_restarted").await else {
        return;
    };
    let mut redis = OwnRedis::start_anywhere().await;
    let port = redis.port;
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet(&servers, &redis.url(), &dir, 64 * 1024, LEASE).await;
    let mut ids = burst(&fleet, 8).await;
    // Work is under way on the shared budget before Redis goes away.
    wait_for(Duration::from_secs(60), "a start billed", || async {
        starts_billed(&fleet).await >= 1
    })
    .await;
    redis.stop();
    let before = starts_billed(&fleet).await;
    // Requests keep being accepted and worked on while Redis is away: the replicas fall back to
    // their local shares and Mint still sees starts.
    ids.extend(burst(&fleet, 8).await);
    wait_for(
        Duration::from_secs(60),
        "a fallback to the local share, and starts billed meanwhile",
        || async {
            let fallbacks: f64 = fleet_metric(&fleet, "mintgate_budget_fallbacks_total")
                .await
                .iter()
                .sum();
            fallbacks >= 1.0 && starts_billed(&fleet).await > before
        },
    )
    .await;
    let mut redis = OwnRedis::restart(port).await;
    // Back on the shared budget: every replica that fell back leaves its local share at its next
    // request for units. Work is given one execution at a time until then: while some replicas
    // are back and others still spend their local shares, a heavy load could overspend the
    // window (their local spending is repaid only when they return).
    wait_until_archived(&fleet, &ids, Duration::from_secs(120)).await;
    let started = Instant::now();
    loop {
        let active: f64 = fleet_metric(&fleet, "mintgate_budget_fallback_active")
            .await
            .iter()
            .sum();
        if active == 0.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "replicas still on their local share a minute after Redis returned"
        );
        let one = burst(&fleet, 1).await;
        wait_until_archived(&fleet, &one, Duration::from_secs(60)).await;
        ids.extend(one);
    }
    ids.extend(burst(&fleet, 4).await);
    wait_until_archived(&fleet, &ids, Duration::from_secs(120)).await;
    // No 429 in the simulator's truth: what was spent locally during the outage was repaid to the
    // shared limiter, or the fleet would have overspent the window on recovery.
    assert_ground_truth(&fleet, &ids, ids.len() as u64).await;
    fleet.shutdown().await;
    redis.stop();
    drop_postgres_schema(&servers.database_url).await;
}

#[tokio::test]
async fn three_replicas_share_one_bucket_and_archive_each_result_exactly_once() {
    let Some(s3) = crate::support::s3_server("replicas::three_replicas_share_one_bucket") else {
        return;
    };
    let Some(servers) = servers("replicas::three_replicas_share_one_bucket").await else {
        return;
    };
    let bucket = crate::support::fresh_bucket(&s3, false).await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = start_fleet_archiving(
        &servers,
        &servers.redis_url,
        &dir,
        6 * 1024 * 1024,
        bucket.clone(),
        LEASE,
    )
    .await;
    let ids = burst(&fleet, 9).await;
    wait_until_archived(&fleet, &ids, Duration::from_secs(120)).await;
    // One download per execution, in the simulator's truth.
    assert_ground_truth(&fleet, &ids, ids.len() as u64).await;
    let archive =
        mintgate::archive::Archive::open(&bucket, std::path::Path::new("unused")).unwrap();
    let store = fleet.store();
    for id in &ids {
        let execution = store.execution(*id).await.unwrap().unwrap();
        let location = execution.archive_path.clone().unwrap();
        assert!(
            location.starts_with(&format!("s3://{}/", archive.s3().unwrap().bucket())),
            "{location}"
        );
        let key = archive.key_of(&location).unwrap();
        let Some(mintgate::archive::ManifestFile::Intact(manifest)) =
            archive.read_manifest(&key).await.unwrap()
        else {
            panic!("no manifest beside {location}");
        };
        let (expected, _) = fleet
            .admin
            .result_sha256(execution.instance_id.as_ref().unwrap().as_str())
            .await
            .unwrap();
        assert_eq!(manifest.sha256, expected);
        archive.verify(&manifest).await.unwrap();
    }
    // Exactly one result and one manifest per execution; no upload left open.
    let listed: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(archive.store().list(None))
        .await
        .unwrap();
    assert_eq!(listed.len(), 2 * ids.len(), "{listed:?}");
    assert!(
        archive
            .s3()
            .unwrap()
            .pending_uploads("")
            .await
            .unwrap()
            .is_empty()
    );
    fleet.shutdown().await;
    drop_postgres_schema(&servers.database_url).await;
}
