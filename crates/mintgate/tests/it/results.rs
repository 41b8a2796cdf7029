//! `GET /v1/executions/{id}/result` and the API keys' scopes: the archived file whole and by
//! `Range`, byte for byte the simulator's (its SHA-256 as the simulator computes it), plain and
//! encrypted; `409`/`410` before and after; each route refused to a key without its scope.

use mintgate::archive::retention::{self, Removal};
use mintgate::config::{ApiKey, Config, Scope};
use mintgate::model::ExecutionState;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::helpers::{API_KEY, Setup, TestApp, files_under, spawn_with};

const READER_KEY: &str = "reader-key-0123456789";
const WRITER_KEY: &str = "writer-key-0123456789";
const RESULTS_KEY: &str = "results-key-0123456789";

fn scoped_keys(config: &mut Config) {
    config.service.api_keys.extend([
        ApiKey::scoped(READER_KEY, &[Scope::ExecutionsRead]),
        ApiKey::scoped(WRITER_KEY, &[Scope::ExecutionsWrite]),
        ApiKey::scoped(RESULTS_KEY, &[Scope::ResultsRead]),
    ]);
}

async fn app_with(archive: mintgate::archive::ArchiveConfig, bytes: u64) -> TestApp {
    let mut setup = Setup {
        configure: scoped_keys,
        archive,
        ..Setup::default()
    };
    for flow in &mut setup.sim.flows {
        flow.result_file_bytes = bytes;
    }
    spawn_with(setup).await
}

async fn get(app: &TestApp, path: &str, key: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = app.http.get(app.operator_url(path)).bearer_auth(key);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.unwrap()
}

/// Archives one execution and checks its result over the API against the simulator's file.
async fn result_round_trip(app: &TestApp) {
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let instance = view.instance_id.clone().unwrap().to_string();
    let (expected, size) = app.admin.result_sha256(&instance).await.unwrap();
    let path = format!("/v1/executions/{id}/result");

    let whole = get(app, &path, RESULTS_KEY, None).await;
    assert_eq!(whole.status(), 200);
    let headers = whole.headers().clone();
    assert_eq!(headers["content-length"], size.to_string().as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["mintgate-result-sha256"], expected.as_str());
    assert_eq!(headers["etag"], format!("\"{expected}\"").as_str());
    let digest = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(hex::decode(&expected).unwrap())
    };
    assert_eq!(
        headers["repr-digest"],
        format!("sha-256=:{digest}:").as_str()
    );
    let body = whole.bytes().await.unwrap();
    assert_eq!(body.len() as u64, size);
    assert_eq!(hex::encode(Sha256::digest(&body)), expected);

    // One range in each form: the same bytes as the whole, the hash still the whole file's.
    let middle = (size / 3, size / 3 + 70_000);
    for (range, start, end) in [
        (
            format!("bytes={}-{}", middle.0, middle.1),
            middle.0,
            middle.1 + 1,
        ),
        ("bytes=0-0".to_owned(), 0, 1),
        (format!("bytes={}-", size - 1000), size - 1000, size),
        ("bytes=-4096".to_owned(), size - 4096, size),
        (format!("bytes=100-{}", size + 5000), 100, size),
    ] {
        let part = get(app, &path, RESULTS_KEY, Some(&range)).await;
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(
            part.headers()["content-range"],
            format!("bytes {start}-{}/{size}", end - 1).as_str(),
            "{range}"
        );
        assert_eq!(
            part.headers()["content-length"],
            (end - start).to_string().as_str()
        );
        assert_eq!(part.headers()["mintgate-result-sha256"], expected.as_str());
        let bytes = part.bytes().await.unwrap();
        assert_eq!(&bytes[..], &body[start as usize..end as usize], "{range}");
    }
    // Past the end: 416 saying the size. Several ranges: the whole file.
    let past = get(app, &path, RESULTS_KEY, Some(&format!("bytes={size}-"))).await;
    assert_eq!(past.status(), 416);
    assert_eq!(
        past.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );
    let several = get(app, &path, RESULTS_KEY, Some("bytes=0-1,5-9")).await;
    assert_eq!(several.status(), 200);
    assert_eq!(several.bytes().await.unwrap(), body);
    // An `If-Range` that is not the ETag: the file changed for that client, so the whole.
    let stale = app
        .http
        .get(app.operator_url(&path))
        .bearer_auth(RESULTS_KEY)
        .header("range", "bytes=0-9")
        .header("if-range", "\"another\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.bytes().await.unwrap().len() as u64, size);

    // One download from Mint, whatever was read over the API.
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(1)
    );
}

#[tokio::test]
async fn the_archived_result_downloads_whole_and_by_range_with_its_sha256() {
    // Over several of the archive's 64 KiB segments and the pipe's, not a multiple of either.
    let app = app_with(mintgate::archive::ArchiveConfig::default(), 700_001).await;
    result_round_trip(&app).await;
}

#[tokio::test]
async fn an_encrypted_archive_serves_the_result_decrypted_whole_and_by_range() {
    let mut archive = mintgate::archive::ArchiveConfig::default();
    archive.encryption = Some(mintgate::archive::settings::ClientEncryption {
        key_id: "test-results".to_owned(),
        key: Some(secrecy::SecretString::from(hex::encode([7u8; 32]))),
        key_file: None,
        previous_keys: Vec::new(),
    });
    let app = app_with(archive, 700_001).await;
    result_round_trip(&app).await;
    let listing = files_under(&app.archive_dir());
    assert!(
        listing.iter().any(|p| p.ends_with(".zip.enc")),
        "the archive holds ciphertext: {listing:?}"
    );
}

#[tokio::test]
async fn a_result_not_archived_yet_is_409_and_an_erased_one_410_with_json_errors() {
    let app = app_with(mintgate::archive::ArchiveConfig::default(), 64 * 1024).await;
    let id = app.request("flow-kyc-basic").await;
    let path = format!("/v1/executions/{id}/result");
    let early = get(&app, &path, RESULTS_KEY, None).await;
    assert_eq!(early.status(), 409);
    let body: serde_json::Value = early.json().await.unwrap();
    assert_eq!(body["error"], "not_archived");
    assert_eq!(body["state"], "queued");

    let unknown = get(
        &app,
        &format!("/v1/executions/{}/result", uuid::Uuid::now_v7()),
        RESULTS_KEY,
        None,
    )
    .await;
    assert_eq!(unknown.status(), 404);

    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    assert_eq!(get(&app, &path, RESULTS_KEY, None).await.status(), 200);
    let store = app.pipeline().store.clone();
    let execution = store.execution(id).await.unwrap().unwrap();
    let removal = Removal {
        kind: "erased",
        operator: "dana".to_owned(),
        reason: None,
        now: app.clock.now(),
    };
    retention::erase(&store, app.archive(), &execution, &removal)
        .await
        .unwrap();
    let gone = get(&app, &path, RESULTS_KEY, None).await;
    assert_eq!(gone.status(), 410);
    let body: serde_json::Value = gone.json().await.unwrap();
    assert_eq!(body["error"], "result_erased");
    assert!(
        body["message"].as_str().unwrap().contains("erased"),
        "{body}"
    );
}

#[tokio::test]
async fn each_route_requires_its_scope_and_an_unknown_key_is_401() {
    let app = app_with(mintgate::archive::ArchiveConfig::default(), 64 * 1024).await;
    let request = json!({"flowId": "flow-kyc-basic", "input": {"customer": "c"}});
    let post = |key: &'static str| {
        app.http
            .post(app.operator_url("/v1/executions"))
            .bearer_auth(key)
            .json(&request)
            .send()
    };
    // A read-only key may not start (403 naming the scope), and starts nothing.
    let refused = post(READER_KEY).await.unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error"], "missing_scope");
    assert_eq!(body["scope"], "executions:write");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`executions:write`"),
        "{body}"
    );
    assert_eq!(post(RESULTS_KEY).await.unwrap().status(), 403);
    // The write-only key starts; the read-only key reads it.
    let accepted = post(WRITER_KEY).await.unwrap();
    assert_eq!(accepted.status(), 202);
    let id = accepted.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.run_until_idle().await;
    assert_eq!(
        app.admin.usage().await.unwrap().clients["demo"].starts_billed,
        1,
        "only the write key's request was started"
    );
    let execution = format!("/v1/executions/{id}");
    let result = format!("/v1/executions/{id}/result");
    for (path, key, status) in [
        (execution.as_str(), READER_KEY, 200),
        ("/v1/executions", READER_KEY, 200),
        (execution.as_str(), WRITER_KEY, 403),
        (execution.as_str(), RESULTS_KEY, 403),
        // A write-only or read-only key may not read results (personal data).
        (result.as_str(), WRITER_KEY, 403),
        (result.as_str(), READER_KEY, 403),
        // Not archived yet, but allowed: the scope is checked first.
        (result.as_str(), RESULTS_KEY, 409),
        (result.as_str(), API_KEY, 409),
        // The operator's routes need `admin`.
        ("/v1/dead-letters", READER_KEY, 403),
        ("/v1/budget", READER_KEY, 403),
        ("/v1/dead-letters", API_KEY, 200),
        ("/v1/budget", API_KEY, 200),
        // An unknown key is 401 on every route, known or not.
        (execution.as_str(), "not-a-key-0123456789", 401),
        (result.as_str(), "not-a-key-0123456789", 401),
        ("/v1/no-such-route", "not-a-key-0123456789", 401),
    ] {
        let response = get(&app, path, key, None).await;
        assert_eq!(response.status(), status, "GET {path} with {key}");
    }
    let cap = |key: &'static str| {
        app.http
            .put(app.operator_url("/v1/budget/cap"))
            .bearer_auth(key)
            .json(&json!({"cents": 1000}))
            .send()
    };
    assert_eq!(cap(READER_KEY).await.unwrap().status(), 403);
    assert_eq!(cap(WRITER_KEY).await.unwrap().status(), 403);
    assert_eq!(cap(API_KEY).await.unwrap().status(), 200);
}
