//! The archive in a real S3-compatible server (moto, `MINTGATE_TEST_S3_URL`): uploads, hashes,
//! server-side and client-side encryption, Object Lock, a kill mid-upload, erasure.

use std::sync::Arc;
use std::time::Duration;

use mint_sim::Faults;
use mintgate::archive::retention::{self, EraseError, Removal};
use mintgate::archive::settings::{LockMode, ObjectLockSettings, ServerSideEncryption};
use mintgate::archive::{Archive, Keyring, ManifestFile, MasterKey, RemoveError};
use mintgate::model::ExecutionState;
use object_store::ObjectStoreExt as _;

use crate::helpers::{Setup, TestApp, spawn_with};
use crate::support::{fresh_bucket, s3_server};

async fn app_on(archive: mintgate::archive::ArchiveConfig) -> TestApp {
    spawn_with(Setup {
        archive,
        ..Setup::default()
    })
    .await
}

/// The manifest the archive holds for an archived execution.
async fn manifest_of(app: &TestApp, location: &str) -> mintgate::archive::Manifest {
    let archive = app.archive();
    let key = archive
        .key_of(location)
        .expect("a location of this archive");
    match archive.read_manifest(&key).await.unwrap() {
        Some(ManifestFile::Intact(manifest)) => *manifest,
        other => panic!("no intact manifest beside {location}: {other:?}"),
    }
}

#[tokio::test]
async fn a_result_streams_into_s3_with_its_sha256_in_the_manifest_and_the_object_tags() {
    let Some(server) = s3_server("archive::a_result_streams_into_s3…") else {
        return;
    };
    let mut setup = Setup::default();
    // Three parts of 5 MiB and a bit: a real multipart upload.
    for flow in &mut setup.sim.flows {
        flow.result_file_bytes = 15 * 1024 * 1024 + 123;
    }
    setup.archive = fresh_bucket(&server, false).await;
    let app = spawn_with(setup).await;
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let instance = view.instance_id.clone().unwrap().to_string();
    let archived = view.archive.as_ref().unwrap();
    let (expected, bytes) = app.admin.result_sha256(&instance).await.unwrap();
    assert_eq!(
        (archived.sha256.clone(), archived.bytes as u64),
        (expected.clone(), bytes)
    );
    assert!(archived.path.starts_with("s3://t-"), "{}", archived.path);
    assert!(
        archived
            .path
            .ends_with(&format!("/mintgate/{}.zip", folder_and(&view, &instance)))
    );

    let manifest = manifest_of(&app, &archived.path).await;
    assert_eq!(manifest.sha256, expected);
    assert_eq!(manifest.bytes, bytes);
    assert_eq!(manifest.instance_id, instance);
    let archive = app.archive();
    let key = archive.key_of(&archived.path).unwrap();
    let bucket = archive.s3().unwrap();
    let tags = bucket.tags(&key).await.unwrap();
    assert!(
        tags.contains(&("mintgate-sha256".to_owned(), expected.clone())),
        "{tags:?}"
    );
    let head = bucket.head(&key).await.unwrap().unwrap();
    assert_eq!(head.bytes, bytes);
    assert!(
        head.metadata
            .contains(&("mintgate-instance-id".to_owned(), instance.clone())),
        "{:?}",
        head.metadata
    );
    // The object itself, read straight from the bucket, is the simulator's file.
    let object = archive
        .store()
        .get(&object_store::path::Path::from(key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&object)),
        expected
    );
    // Nothing left half-done, and one download only.
    assert!(bucket.pending_uploads("").await.unwrap().is_empty());
    let usage = app.admin.usage().await.unwrap();
    assert_eq!(
        usage.clients["demo"]
            .requests_by_endpoint
            .get("result_file")
            .copied(),
        Some(1)
    );
}

/// `<yyyy>/<mm>/<instance>` of an execution's archive key.
fn folder_and(view: &mintgate::view::ExecutionView, instance: &str) -> String {
    let finished = view.finished_at.expect("finished");
    format!("{}/{instance}", finished.format("%Y/%m"))
}

#[tokio::test]
async fn server_side_encryption_is_requested_and_recorded_as_the_store_reports_it() {
    let Some(server) = s3_server("archive::server_side_encryption_is_requested…") else {
        return;
    };
    let mut archive = fresh_bucket(&server, false).await;
    archive.server_side_encryption = Some(ServerSideEncryption::Aes256);
    let app = app_on(archive).await;
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let location = view.archive.unwrap().path;
    let manifest = manifest_of(&app, &location).await;
    assert_eq!(manifest.server_side_encryption.as_deref(), Some("AES256"));
    let key = app.archive().key_of(&location).unwrap();
    let head = app
        .archive()
        .s3()
        .unwrap()
        .head(&key)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.server_side_encryption.as_deref(), Some("AES256"));
}

#[tokio::test]
async fn client_side_encryption_round_trips_through_s3_and_a_wrong_key_is_named() {
    let Some(server) = s3_server("archive::client_side_encryption_round_trips…") else {
        return;
    };
    let mut settings = fresh_bucket(&server, false).await;
    let key_hex = hex::encode([9u8; 32]);
    settings.encryption = Some(mintgate::archive::settings::ClientEncryption {
        key_id: "test-2026".to_owned(),
        key: Some(secrecy::SecretString::from(key_hex)),
        key_file: None,
        previous_keys: Vec::new(),
    });
    let app = app_on(settings.clone()).await;
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let instance = view.instance_id.clone().unwrap().to_string();
    let location = view.archive.unwrap().path;
    assert!(location.ends_with(".zip.enc"), "{location}");
    let manifest = manifest_of(&app, &location).await;
    let (expected, bytes) = app.admin.result_sha256(&instance).await.unwrap();
    assert_eq!(
        (manifest.sha256.clone(), manifest.bytes),
        (expected.clone(), bytes)
    );
    assert_eq!(manifest.encryption.as_ref().unwrap().key_id, "test-2026");

    // The bucket holds ciphertext: no ZIP signature, another hash.
    let archive = app.archive();
    let key = archive.key_of(&location).unwrap();
    let object = archive
        .store()
        .get(&object_store::path::Path::from(key.as_str()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(object.starts_with(b"MGE1"));
    assert!(
        !object.windows(4).any(|w| w == b"PK\x03\x04"),
        "a ZIP header is visible"
    );
    assert_ne!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&object)),
        expected
    );

    // Decrypted, it is the simulator's file.
    let mut plain = Vec::new();
    let (sha256, len) = archive.copy_result(&manifest, &mut plain).await.unwrap();
    assert_eq!((sha256, len), (expected, bytes));
    assert!(plain.starts_with(b"PK"));

    // Another key under the same id is refused, by name.
    let wrong = Archive::open_with_keys(
        &settings,
        std::path::Path::new("unused"),
        Arc::new(Keyring::single(MasterKey::generate("test-2026"))),
    )
    .unwrap();
    let error = format!(
        "{:#}",
        wrong
            .copy_result(&manifest, &mut Vec::new())
            .await
            .unwrap_err()
    );
    assert!(
        error.contains("test-2026") && error.contains("does not open"),
        "{error}"
    );
}

#[tokio::test]
async fn object_lock_is_set_on_upload_and_removal_is_refused_until_the_date() {
    let Some(server) = s3_server("archive::object_lock_is_set_on_upload…") else {
        return;
    };
    let mut settings = fresh_bucket(&server, true).await;
    settings.object_lock = Some(ObjectLockSettings {
        mode: LockMode::Governance,
        retain_for: Duration::from_secs(3 * 24 * 3600),
    });
    let app = app_on(settings).await;
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let location = view.archive.unwrap().path;
    let manifest = manifest_of(&app, &location).await;
    let lock = manifest
        .object_lock
        .clone()
        .expect("the manifest shows the lock");
    assert_eq!(lock.mode, LockMode::Governance);
    let expected_until = manifest.archived_at + chrono::TimeDelta::days(3);
    assert!(
        (lock.retain_until - expected_until).num_seconds().abs() <= 1,
        "{lock:?}"
    );

    let archive = app.archive();
    let key = archive.key_of(&location).unwrap();
    let bucket = archive.s3().unwrap();
    let head = bucket.head(&key).await.unwrap().unwrap();
    assert_eq!(head.lock_mode, Some(LockMode::Governance));
    // The store itself refuses to delete the locked version.
    let versions = bucket.versions(&key).await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let refused = bucket.delete_version(&key, &versions[0]).await.unwrap();
    assert_eq!(refused.as_deref(), Some("AccessDenied"));

    let tombstone = mintgate::archive::TombstoneManifest {
        execution_id: manifest.execution_id.clone(),
        environment: manifest.environment.clone(),
        flow_id: manifest.flow_id.clone(),
        instance_id: manifest.instance_id.clone(),
        archived_at: manifest.archived_at,
        removed: "erased".to_owned(),
        removed_at: app.clock.now(),
        removed_by: "test".to_owned(),
    };
    match archive.remove(&key, &tombstone, app.clock.now()).await {
        Err(RemoveError::Locked { mode, until }) => {
            assert_eq!(mode, LockMode::Governance);
            assert_eq!(until, head.retain_until.unwrap());
        }
        other => panic!("expected a lock refusal, got {other:?}"),
    }
    // Still there, still intact.
    archive.verify(&manifest).await.unwrap();
}

#[tokio::test]
async fn a_kill_mid_upload_leaves_no_visible_object_and_the_restart_archives_exactly_once() {
    let Some(server) = s3_server("archive::a_kill_mid_upload…") else {
        return;
    };
    let mut setup = Setup::default();
    for flow in &mut setup.sim.flows {
        flow.result_file_bytes = 24 * 1024 * 1024;
    }
    setup.archive = fresh_bucket(&server, false).await;
    let mut app = spawn_with(setup).await;
    let id = app.request("flow-kyc-basic").await;
    app.run_until_idle().await;
    let instance = app.instance_of(id).await;
    app.complete_user_steps(&instance).await;
    // The result comes slowly (4 MiB/s): the upload is mid-way for seconds.
    app.set_faults(Faults {
        slow_body_rate: 1.0,
        slow_body_bytes_per_sec: 4 * 1024 * 1024,
        ..Faults::default()
    })
    .await;
    app.advance(Duration::from_secs(600)).await;
    let pipeline = app.pipeline().clone();
    let download = tokio::spawn(async move {
        while pipeline
            .run_once(&[
                mintgate::model::JobKind::Check,
                mintgate::model::JobKind::Download,
            ])
            .await
            .unwrap()
        {}
    });
    let bucket = app.archive().s3().unwrap().clone();
    app.eventually(
        Duration::from_secs(30),
        "a multipart upload is under way",
        || {
            let bucket = bucket.clone();
            async move { !bucket.pending_uploads("").await.unwrap().is_empty() }
        },
    )
    .await;
    // kill -9: the worker's task is dropped mid-stream; nothing gets to abort the upload.
    download.abort();
    let _ = download.await;
    app.crash_and_restart().await;
    let key_prefix = format!("mintgate/{}", folder_and_prefix(&app, id).await);
    assert!(
        bucket
            .head(&format!("{key_prefix}{instance}.zip"))
            .await
            .unwrap()
            .is_none(),
        "a partial object is visible"
    );
    let orphans = bucket.pending_uploads("").await.unwrap();
    assert_eq!(orphans.len(), 1, "{orphans:?}");

    app.set_faults(Faults::default()).await;
    // After the lease lapses the download is taken over and completes.
    app.advance(Duration::from_secs(600)).await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let (expected, _) = app.admin.result_sha256(&instance).await.unwrap();
    assert_eq!(view.archive.as_ref().unwrap().sha256, expected);
    // Exactly one result object and one manifest under the prefix.
    let listed: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(
        app.archive()
            .store()
            .list(Some(&object_store::path::Path::from("mintgate"))),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|m| m.location.to_string())
    .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|k| k.ends_with(&format!("{instance}.zip")))
    );
    assert!(
        listed
            .iter()
            .any(|k| k.ends_with(&format!("{instance}.json")))
    );
    // The orphan of the killed attempt is aborted once old enough: by the store's time and by
    // our own first sight of it (moto answers a fixed 2010 `Initiated`, so the first look at it
    // must not abort it: it could be another replica's upload in progress).
    let archive = app.archive();
    let now = chrono::Utc::now();
    assert_eq!(archive.abort_orphan_uploads(now, false).await.unwrap(), 0);
    assert_eq!(bucket.pending_uploads("").await.unwrap().len(), 1);
    let later = now + chrono::TimeDelta::days(2);
    assert_eq!(archive.abort_orphan_uploads(later, false).await.unwrap(), 1);
    assert!(bucket.pending_uploads("").await.unwrap().is_empty());
}

/// `<yyyy>/<mm>/` of an execution's (future) archive key.
async fn folder_and_prefix(app: &TestApp, id: uuid::Uuid) -> String {
    let view = app.execution(id).await;
    format!("{}/", view.finished_at.expect("finished").format("%Y/%m"))
}

#[tokio::test]
async fn erasure_under_an_object_lock_is_refused_saying_until_when_and_audited() {
    let Some(server) = s3_server("archive::erasure_under_an_object_lock…") else {
        return;
    };
    let mut settings = fresh_bucket(&server, true).await;
    settings.object_lock = Some(ObjectLockSettings {
        mode: LockMode::Compliance,
        retain_for: Duration::from_secs(2 * 24 * 3600),
    });
    let app = app_on(settings).await;
    let id = app.request("flow-kyc-basic").await;
    let view = app.drive_to_the_end(id, 20).await;
    assert_eq!(view.state, ExecutionState::Archived, "{view:?}");
    let store = app.pipeline().store.clone();
    let execution = store.execution(id).await.unwrap().unwrap();
    let removal = Removal {
        kind: "erased",
        operator: "carol".to_owned(),
        reason: None,
        now: app.clock.now(),
    };
    match retention::erase(&store, app.archive(), &execution, &removal).await {
        Err(EraseError::Locked { until, mode, .. }) => {
            assert_eq!(mode, LockMode::Compliance);
            assert!(
                until > app.clock.now() + chrono::TimeDelta::days(1),
                "{until}"
            );
            let message = EraseError::Locked {
                execution_id: id,
                mode,
                until,
            }
            .to_string();
            assert!(message.contains(&until.to_string()), "{message}");
        }
        other => panic!("expected a lock refusal, got {other:?}"),
    }
    let after = store.execution(id).await.unwrap().unwrap();
    assert_eq!(after.state, ExecutionState::Archived);
    assert!(after.sha256.is_some() && after.input != serde_json::json!({}));
    let audit = store.audit_for(&id.to_string()).await.unwrap();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (audit[0].operator.as_str(), audit[0].outcome.as_str()),
        ("carol", "refused")
    );
    assert!(
        audit[0].detail["retainUntil"].is_string(),
        "{:?}",
        audit[0].detail
    );
}

#[tokio::test]
async fn the_retention_purge_removes_old_results_and_keeps_the_ledger_and_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let settings = mintgate::archive::ArchiveConfig {
        url: Some(url::Url::from_directory_path(dir.path().join("evidence")).unwrap()),
        retention: Some(mintgate::archive::settings::RetentionPolicy {
            keep_for: Duration::from_secs(7 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
        }),
        ..mintgate::archive::ArchiveConfig::default()
    };
    let app = app_on(settings).await;
    let old = app.request("flow-kyc-basic").await;
    let old_view = app.drive_to_the_end(old, 20).await;
    app.advance(Duration::from_secs(5 * 24 * 3600)).await;
    let young = app.request("flow-kyc-basic").await;
    let young_view = app.drive_to_the_end(young, 20).await;
    assert_eq!(young_view.state, ExecutionState::Archived);
    app.advance(Duration::from_secs(3 * 24 * 3600)).await;

    let store = app.pipeline().store.clone();
    let report = retention::purge_due(&store, app.archive(), app.clock.now(), 100)
        .await
        .unwrap();
    assert_eq!((report.purged, report.locked, report.failed), (1, 0, 0));
    let old_path = old_view.archive.unwrap().path;
    assert!(!std::path::Path::new(&old_path).exists());
    assert!(std::path::Path::new(&young_view.archive.unwrap().path).exists());
    let purged = store.execution(old).await.unwrap().unwrap();
    assert_eq!(purged.state, ExecutionState::Erased);
    let tombstone = store.erasure(old).await.unwrap().unwrap();
    assert_eq!(
        (tombstone.kind.as_str(), tombstone.operator.as_str()),
        ("purged", "retention policy")
    );
    assert_eq!(purged.billed_count, 1);
    let month = old_view.created_at.format("%Y-%m").to_string();
    assert!(
        store
            .spend(&month)
            .await
            .unwrap()
            .iter()
            .any(|r| r.cents > 0)
    );
    // Nothing more is due.
    let again = retention::purge_due(&store, app.archive(), app.clock.now(), 100)
        .await
        .unwrap();
    assert_eq!(again.purged, 0);
}

#[tokio::test]
async fn a_local_archive_migrates_into_s3_verified_and_a_rerun_skips_what_is_there() {
    let Some(server) = s3_server("archive::a_local_archive_migrates_into_s3…") else {
        return;
    };
    let app = app_on(mintgate::archive::ArchiveConfig::default()).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = app.request("flow-kyc-basic").await;
        assert_eq!(
            app.drive_to_the_end(id, 20).await.state,
            ExecutionState::Archived
        );
        ids.push(id);
    }
    let target_settings = fresh_bucket(&server, false).await;
    let target = Archive::open(&target_settings, std::path::Path::new("unused")).unwrap();
    let store = app.pipeline().store.clone();
    let report = mintgate::archive::migrate::migrate(app.archive(), &target, Some(&store))
        .await
        .unwrap();
    assert_eq!(
        (report.copied, report.already_there, report.failed.len()),
        (2, 0, 0),
        "{report:?}"
    );
    for id in &ids {
        let execution = store.execution(*id).await.unwrap().unwrap();
        let location = execution.archive_path.unwrap();
        assert!(location.starts_with("s3://"), "{location}");
        let key = target.key_of(&location).unwrap();
        let Some(ManifestFile::Intact(manifest)) = target.read_manifest(&key).await.unwrap() else {
            panic!("no manifest in the target for {location}");
        };
        let (expected, _) = app
            .admin
            .result_sha256(execution.instance_id.as_ref().unwrap().as_str())
            .await
            .unwrap();
        assert_eq!(manifest.sha256, expected);
        target.verify(&manifest).await.unwrap();
    }
    let again = mintgate::archive::migrate::migrate(app.archive(), &target, Some(&store))
        .await
        .unwrap();
    assert_eq!(
        (again.copied, again.already_there, again.failed.len()),
        (0, 2, 0),
        "{again:?}"
    );
}
