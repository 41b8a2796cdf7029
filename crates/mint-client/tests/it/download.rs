//! Item 9: streaming downloads with SHA-256, restarts, resumes and stall detection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mint_client::{
    DownloadErrorKind, DownloadOptions, Error, InstanceId, MintClient, StartInstance,
};
use mint_sim::{Faults, ServiceSettings, SimConfig, Simulator};

use crate::helpers;

const SIZE: u64 = 8 * 1024 * 1024;

async fn setup(accept_ranges: bool) -> (Simulator, MintClient, InstanceId) {
    let mut cfg: SimConfig = helpers::config_with_result_size(SIZE);
    cfg.service = ServiceSettings {
        accept_ranges,
        ..ServiceSettings::default()
    };
    let sim = helpers::sim_with(cfg).await;
    let client = helpers::client(&sim, "demo");
    let id = helpers::finished_instance(&sim, &client, "flow-big").await;
    (sim, client, id)
}

fn expected(id: &InstanceId) -> (String, u64) {
    mint_sim::result_file_sha256(0, id.as_str(), SIZE)
}

/// Cuts the next result-file body at 50 %, and clears the fault as soon as that body is under way,
/// so exactly one attempt is cut (no timing involved: the cut was decided when the body started).
async fn cut_first_body_at_half(
    sim: &Simulator,
) -> Arc<dyn Fn(mint_client::DownloadProgress) + Send + Sync> {
    sim.admin()
        .set_faults(Faults {
            cut_body_rate: 1.0,
            cut_body_at_fraction: 0.5,
            ..Faults::default()
        })
        .await
        .unwrap();
    let admin = sim.admin();
    let cleared = Arc::new(Mutex::new(false));
    Arc::new(move |p: mint_client::DownloadProgress| {
        let mut done = cleared.lock().unwrap();
        if !*done && p.bytes > 0 {
            *done = true;
            let admin = admin.clone();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(admin.set_faults(Faults::default()))
                    .unwrap()
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_to_a_path_is_verified_and_atomic() {
    let (sim, client, id) = setup(false).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.zip");
    let seen = Arc::new(AtomicU64::new(0));
    let opts = DownloadOptions {
        progress: Some({
            let seen = seen.clone();
            Arc::new(move |p| seen.store(p.bytes, Ordering::SeqCst))
        }),
        ..DownloadOptions::default()
    };
    let d = client
        .download_result_to_path(&id, &path, &opts)
        .await
        .unwrap();
    let (sha, len) = expected(&id);
    assert_eq!((d.sha256.as_str(), d.bytes), (sha.as_str(), len));
    assert_eq!((d.restarts, d.resumes), (0, 0));
    assert_eq!(std::fs::metadata(&path).unwrap().len(), SIZE);
    assert!(!dir.path().join("result.zip.part").exists());
    assert_eq!(
        seen.load(Ordering::SeqCst),
        SIZE,
        "the last progress call has every byte"
    );
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.units_by_endpoint["result_file"], 5);
    assert_eq!(usage.bytes_served, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_at_half_restarts_from_zero_with_a_correct_hash() {
    let (sim, client, id) = setup(false).await;
    let progress = cut_first_body_at_half(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.zip");
    let opts = DownloadOptions {
        progress: Some(progress),
        progress_interval: Duration::ZERO,
        ..DownloadOptions::default()
    };
    let d = client
        .download_result_to_path(&id, &path, &opts)
        .await
        .unwrap();
    assert_eq!((d.restarts, d.resumes), (1, 0));
    assert_eq!((d.sha256, d.bytes), expected(&id));
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        SIZE,
        "the cut half was truncated away"
    );
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.requests_by_endpoint["result_file"], 2);
    assert_eq!(
        usage.units_by_endpoint["result_file"], 10,
        "5 units per attempt"
    );
    assert_eq!(usage.bytes_served, SIZE + SIZE / 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_at_half_resumes_with_range_when_the_server_offers_it() {
    let (sim, client, id) = setup(true).await;
    let progress = cut_first_body_at_half(&sim).await;
    let opts = DownloadOptions {
        progress: Some(progress),
        progress_interval: Duration::ZERO,
        ..DownloadOptions::default()
    };
    // A generic writer suffices when resuming: nothing has to be thrown away.
    let mut sink: Vec<u8> = Vec::new();
    let d = client.download_result(&id, &mut sink, &opts).await.unwrap();
    assert_eq!((d.restarts, d.resumes), (0, 1));
    assert_eq!((d.sha256, d.bytes), expected(&id));
    assert_eq!(sink.len() as u64, SIZE);
    let usage = helpers::usage(&sim, "demo").await;
    assert_eq!(usage.requests_by_endpoint["result_file"], 2);
    assert_eq!(
        usage.bytes_served, SIZE,
        "only the missing half was sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_writer_cannot_restart_but_a_restartable_one_can() {
    let (sim, client, id) = setup(false).await;
    let opts = DownloadOptions {
        progress: Some(cut_first_body_at_half(&sim).await),
        progress_interval: Duration::ZERO,
        ..DownloadOptions::default()
    };
    let mut plain = tokio::io::sink();
    let err = client
        .download_result(&id, &mut plain, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Download {
                kind: DownloadErrorKind::CannotRestart,
                ..
            }
        ),
        "{err:?}"
    );

    let opts = DownloadOptions {
        progress: Some(cut_first_body_at_half(&sim).await),
        progress_interval: Duration::ZERO,
        ..DownloadOptions::default()
    };
    let mut restartable: Vec<u8> = Vec::new();
    let d = client
        .download_result_restartable(&id, &mut restartable, &opts)
        .await
        .unwrap();
    assert_eq!(d.restarts, 1);
    assert_eq!((d.sha256, d.bytes), expected(&id));
    assert_eq!(restartable.len() as u64, SIZE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_transfer_is_detected_without_a_total_timeout() {
    let (sim, client, id) = setup(false).await;
    sim.admin()
        .set_faults(Faults {
            slow_body_rate: 1.0,
            slow_body_bytes_per_sec: 4 * 1024,
            ..Faults::default()
        })
        .await
        .unwrap();
    let opts = DownloadOptions {
        min_rate_bytes_per_sec: 256 * 1024,
        rate_window: Duration::from_millis(200),
        max_restarts: 1,
        ..DownloadOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("result.zip");
    let err = client
        .download_result_to_path(&id, &path, &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Download {
                kind: DownloadErrorKind::Stalled { restarts: 1, .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !path.exists() && !dir.path().join("result.zip.part").exists(),
        "nothing left behind"
    );
    assert_eq!(
        helpers::usage(&sim, "demo").await.requests_by_endpoint["result_file"],
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_not_ready_yet_is_not_ready() {
    let sim = helpers::sim().await;
    let client = helpers::client(&sim, "demo");
    let id = client
        .start_instance(
            &helpers::flow(helpers::BASIC_FLOW),
            &StartInstance::default(),
        )
        .await
        .unwrap()
        .instance
        .id;
    let mut sink = Vec::new();
    let err = client
        .download_result(&id, &mut sink, &DownloadOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotReady { .. }), "{err:?}");
    assert!(err.is_retryable());
}
