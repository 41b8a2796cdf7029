//! Behaviour 5: Result files: real ZIPs, deterministic, exact length, 409 before finished, Range only when
//! enabled.

use std::io::{Cursor, Read};

use mint_sim::{FlowConfig, ServiceSettings, SimConfig, StepConfig};
use sha2::{Digest, Sha256};

use crate::helpers::{SEED, TestSim, spawn_sim, spawn_sim_with};

/// A flow that finishes at once with a 300 KB result file.
fn quick_flow() -> FlowConfig {
    FlowConfig {
        id: "flow-quick".to_owned(),
        definition_id: "def-quick".to_owned(),
        name: "Quick".to_owned(),
        description: String::new(),
        version: 1,
        is_latest: true,
        is_published: true,
        result_file_bytes: 300_000,
        steps: vec![StepConfig::webhook()],
    }
}

async fn quick_sim(accept_ranges: bool) -> TestSim {
    let mut config = SimConfig::fixture();
    config.flows.push(quick_flow());
    config.service.accept_ranges = accept_ranges;
    spawn_sim_with(config).await
}

#[tokio::test]
async fn result_file_is_409_until_finished_then_a_valid_zip_with_the_expected_sha256() {
    let t = spawn_sim().await;
    let token = t.token("demo").await;
    let id = t.start_ok(&token, "flow-kyc-basic").await;
    let path = format!("/api/instances/{id}/result-file");
    let (status, body) = t.get_json(&token, &path).await;
    assert_eq!(status, 409);
    assert_eq!(body["status"], 409);

    t.finish_basic(&id).await;
    let response = t.get(&token, &path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    assert_eq!(response.headers()["content-length"], "5242880");
    assert!(response.headers().get("accept-ranges").is_none());
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len(), 5 * 1024 * 1024);

    let (expected, len) = mint_sim::result_file_sha256(SEED, &id, 5 * 1024 * 1024);
    assert_eq!(len, 5 * 1024 * 1024);
    assert_eq!(hex::encode(Sha256::digest(&bytes)), expected);
    assert_eq!(t.admin.result_sha256(&id).await.unwrap(), (expected, len));

    // A real archive: the zip crate reads every entry and checks every CRC.
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes.to_vec())).unwrap();
    let names: Vec<String> = archive.file_names().map(str::to_owned).collect();
    assert!(names.contains(&"report.json".to_owned()), "{names:?}");
    assert!(
        names.iter().any(|n| n.starts_with("evidence/")),
        "{names:?}"
    );
    let mut total = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Stored);
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        total += data.len();
        if entry.name() == "report.json" {
            let report: serde_json::Value = serde_json::from_slice(&data).unwrap();
            assert_eq!(report["instanceId"], id.as_str());
        }
    }
    assert!(total > 5_000_000);

    let usage = t.usage_of("demo").await;
    assert_eq!(usage.downloads_billed, 1);
    assert_eq!(usage.bytes_served, 5 * 1024 * 1024);
    assert_eq!(
        usage.units_by_endpoint["result_file"], 10,
        "5 units each, the 409 included"
    );
}

#[tokio::test]
async fn different_instances_and_seeds_give_different_files() {
    let (a, _) = mint_sim::result_file_sha256(1, "a", 100_000);
    let (b, _) = mint_sim::result_file_sha256(1, "b", 100_000);
    let (c, _) = mint_sim::result_file_sha256(2, "a", 100_000);
    assert!(a != b && a != c && b != c);
    assert_eq!(mint_sim::result_file_sha256(1, "a", 100_000).0, a);
}

#[tokio::test]
async fn range_is_ignored_by_default() {
    let t = quick_sim(false).await;
    let id = t
        .admin
        .create_instances("flow-quick", 1, Some("Finished"))
        .await
        .unwrap()[0]
        .clone();
    let token = t.token("demo").await;
    let response = t
        .http
        .get(t.api(&format!("/api/instances/{id}/result-file")))
        .bearer_auth(&token)
        .header("range", "bytes=1000-")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("accept-ranges").is_none());
    assert!(response.headers().get("content-range").is_none());
    assert_eq!(response.bytes().await.unwrap().len(), 300_000);
}

#[tokio::test]
async fn range_from_an_offset_is_honoured_when_enabled() {
    let t = quick_sim(true).await;
    let id = t
        .admin
        .create_instances("flow-quick", 1, Some("Finished"))
        .await
        .unwrap()[0]
        .clone();
    let token = t.token("demo").await;
    let url = t.api(&format!("/api/instances/{id}/result-file"));
    let full = t
        .get(&token, &format!("/api/instances/{id}/result-file"))
        .await;
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    let full = full.bytes().await.unwrap();

    let ranged = |range: &'static str| {
        t.http
            .get(&url)
            .bearer_auth(&token)
            .header("range", range)
            .send()
    };
    let response = ranged("bytes=123456-").await.unwrap();
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.headers()["content-range"],
        "bytes 123456-299999/300000"
    );
    assert_eq!(response.headers()["content-length"], "176544");
    assert_eq!(response.bytes().await.unwrap(), full.slice(123_456..));

    assert_eq!(ranged("bytes=300000-").await.unwrap().status(), 416);
    // Only the open-ended form is supported; others get the whole file.
    let response = ranged("bytes=0-99").await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 300_000);

    // Turned off again at run time (a second later: 4 downloads already used the burst budget).
    t.advance(1).await;
    t.admin
        .set_service(ServiceSettings::default())
        .await
        .unwrap();
    assert_eq!(ranged("bytes=10-").await.unwrap().status(), 200);
}

/// Reads a result file lazily, so the zip crate can inspect a multi-GB archive without it ever
/// being materialised.
struct Lazy {
    file: mint_sim::result_file::ResultFile,
    position: u64,
}

impl std::io::Read for Lazy {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some(piece) = self.file.pieces_from(self.position).next() else {
            return Ok(0);
        };
        let n = piece.len().min(buf.len());
        buf[..n].copy_from_slice(&piece[..n]);
        self.position += n as u64;
        Ok(n)
    }
}

impl std::io::Seek for Lazy {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let len = self.file.len() as i64;
        let target = match to {
            std::io::SeekFrom::Start(n) => n as i64,
            std::io::SeekFrom::End(d) => len + d,
            std::io::SeekFrom::Current(d) => self.position as i64 + d,
        };
        if target < 0 {
            return Err(std::io::Error::other("seek before start"));
        }
        self.position = target as u64;
        Ok(self.position)
    }
}

#[tokio::test]
async fn a_file_past_four_gib_is_a_valid_zip64_archive() {
    let size = 5 * 1024 * 1024 * 1024 + 12_345;
    let file = mint_sim::result_file::ResultFile::new(SEED, "big-instance", size);
    assert_eq!(file.len(), size);
    let mut archive = zip::ZipArchive::new(Lazy { file, position: 0 }).unwrap();
    let mut data_bytes = 0;
    let mut last_start = 0;
    for i in 0..archive.len() {
        let entry = archive.by_index_raw(i).unwrap();
        data_bytes += entry.size();
        last_start = entry.data_start();
    }
    assert!(
        last_start > u32::MAX as u64,
        "offsets past 4 GiB: {last_start}"
    );
    assert!(data_bytes > size - 2_000, "{data_bytes}");
    let mut report = String::new();
    archive
        .by_name("report.json")
        .unwrap()
        .read_to_string(&mut report)
        .unwrap();
    assert!(report.contains("big-instance"));
}
