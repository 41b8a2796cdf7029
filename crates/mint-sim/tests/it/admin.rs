//! Behaviours 9 and 11: the controllable clock and the admin API.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use mint_sim::{ClientConfig, FlowConfig, Simulator};

use crate::helpers::spawn_sim;

#[tokio::test]
async fn the_clock_moves_only_when_told_and_advances_exactly() {
    let t = spawn_sim().await;
    let start = t.admin.now().await.unwrap();
    assert_eq!(
        t.admin.now().await.unwrap(),
        start,
        "frozen at time scale 0"
    );
    let later = t
        .admin
        .advance_clock(Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(later - start, chrono::Duration::hours(1));
    t.admin.set_time_scale(1000.0).await.unwrap();
    let running = t.admin.now().await.unwrap();
    assert!(running >= later);
    crate::helpers::eventually(Duration::from_secs(5), "scaled time flows", || async {
        (t.admin.now().await.unwrap() - running > chrono::Duration::seconds(5)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn forced_statuses_show_through_the_api_even_unknown_ones() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-basic").await;
    t.admin.set_status(&id, "Paused").await.unwrap();
    let (_, body) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(body["status"], "Paused");
    assert_eq!(
        t.get(&token, &format!("/api/instances/{id}/result-file"))
            .await
            .status(),
        409
    );
    // The lifecycle stops: the due step no longer runs.
    t.advance(2).await;
    assert_eq!(t.admin_instance(&id).await.activities.len(), 1);

    t.admin.set_status(&id, "Finished").await.unwrap();
    let (_, body) = t.get_json(&token, &format!("/api/instances/{id}")).await;
    assert_eq!(body["status"], "Finished");
    assert!(body["finishedAt"].is_string());
    assert_eq!(
        t.get(&token, &format!("/api/instances/{id}/result-file"))
            .await
            .status(),
        200
    );
    assert!(t.admin.set_status("nope", "Finished").await.is_err());
}

#[tokio::test]
async fn clients_and_flows_are_configured_at_run_time_and_validated() {
    let t = spawn_sim().await;
    let mut flow = mint_sim::SimConfig::fixture().flows.remove(0);
    flow.id = "flow-kyc-basic-v2".to_owned();
    flow.version = 2;
    flow.name = "KYC basic v2".to_owned();
    t.admin.put_flow(flow).await.unwrap();
    t.admin
        .put_client(ClientConfig::new("ops", "ops-secret", &["Flow Viewer"]))
        .await
        .unwrap();
    let token = t.token("ops").await;
    let (_, body) = t.get_json(&token, "/api/flows?searchTerm=v2").await;
    assert_eq!(body["items"][0]["id"], "flow-kyc-basic-v2");
    assert_eq!(body["items"][0]["definitionId"], "def-kyc-basic");

    let mut bad = ClientConfig::new("bad", "bad-secret", &[]);
    bad.token_lifetime_secs = 0;
    let error = t.admin.put_client(bad).await.unwrap_err().to_string();
    assert!(error.contains("tokenLifetimeSecs"), "{error}");
    let bad_flow = FlowConfig {
        result_file_bytes: u64::MAX,
        ..mint_sim::SimConfig::fixture().flows.remove(0)
    };
    let error = t.admin.put_flow(bad_flow).await.unwrap_err().to_string();
    assert!(error.contains("resultFileBytes"), "{error}");
    assert!(t.admin.config().await.unwrap().clients.len() == 4);
}

/// A local address that is not loopback, if the machine has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    // No packet is sent: connecting a UDP socket only picks the outgoing interface.
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn the_admin_api_refuses_non_loopback_peers() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("SKIPPED: this machine has no non-loopback address to connect from");
        return;
    };
    let sim = Simulator::builder()
        .listen(SocketAddr::from(([0, 0, 0, 0], 0)))
        .start()
        .await
        .unwrap();
    let port = sim.addr().port();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let remote = http
        .get(format!("http://{ip}:{port}/_sim/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(remote.status(), 403);
    let local = http
        .get(format!("http://127.0.0.1:{port}/_sim/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    // The Mint API itself answers any peer.
    let api = http
        .get(format!("http://{ip}:{port}/mint/api/flows"))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    sim.shutdown().await;
}

/// The `mint-sim` binary as a soak harness runs it: a configuration file with faults on, an
/// ephemeral port read from its first line, the admin API, and SIGTERM to stop.
#[tokio::test]
async fn the_binary_serves_the_soak_configuration_and_stops_on_sigterm() {
    use std::io::BufRead;

    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/soak.example.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mint-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--config",
            config,
            "--time-scale",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mint-sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let addr = first
        .trim()
        .strip_prefix("mint-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    let admin = mint_sim::AdminClient::new(format!("http://{addr}/_sim"));
    let faults = admin.faults().await;
    let starts = admin.starts().await;

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let faults = faults.unwrap();
    assert_eq!(faults.seed, Some(17));
    assert!(faults.lost_start_rate > 0.0);
    assert!(starts.unwrap().by_correlation_id.is_empty());
    assert!(status.success(), "{status}");
}
