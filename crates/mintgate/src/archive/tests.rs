//! The archive on the local filesystem store (the embedded default); the S3 paths are tested
//! against a real S3-compatible server in the integration tests.

use std::sync::Arc;

use chrono::{TimeZone as _, Utc};
use mint_client::RestartableWrite as _;
use tokio::io::AsyncWriteExt as _;

use super::*;

fn settings(dir: &FsPath) -> ArchiveConfig {
    ArchiveConfig {
        url: Some(Url::from_directory_path(dir.join("archive")).unwrap()),
        part_bytes: settings::PART_BYTES_MIN,
        ..ArchiveConfig::default()
    }
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
}

fn manifest_for(uploaded: &Uploaded, instance: &str) -> Manifest {
    Manifest {
        execution_id: "0190e6d4-0000-7000-8000-000000000001".into(),
        environment: "sandbox".into(),
        flow_id: "flow-kyc".into(),
        instance_id: instance.into(),
        started_at: None,
        finished_at: Some(at()),
        deadline_at: None,
        archived_at: at(),
        bytes: uploaded.bytes,
        sha256: uploaded.sha256.clone(),
        location: String::new(),
        content_type: Some("application/zip".into()),
        stored_bytes: None,
        stored_sha256: None,
        encryption: None,
        server_side_encryption: None,
        sse_kms_key_id: None,
        object_lock: None,
        purge_after: None,
        version_id: None,
    }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn meta(instance: &str) -> UploadMeta {
    UploadMeta {
        execution_id: "e".into(),
        instance_id: instance.into(),
    }
}

async fn upload(archive: &Archive, instance: &str, data: &[u8]) -> Uploaded {
    let mut upload = archive
        .begin(instance, at(), &meta(instance))
        .await
        .unwrap();
    for piece in data.chunks(100_000) {
        upload.write_all(piece).await.unwrap();
    }
    upload.finish().await.unwrap()
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(unix)]
fn mode(path: &FsPath) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_result_streams_into_the_local_archive_verified_and_private() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let data = content(12 * 1024 * 1024 + 17);
    let uploaded = upload(&archive, "inst-1", &data).await;
    assert_eq!(
        (uploaded.sha256.clone(), uploaded.bytes),
        (sha(&data), data.len() as u64)
    );
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-1"))
        .await
        .unwrap();
    let path = FsPath::new(&manifest.location);
    assert!(
        manifest.location.ends_with("2026/11/inst-1.zip"),
        "{}",
        manifest.location
    );
    assert_eq!(std::fs::read(path).unwrap(), data);
    let on_disk: Manifest =
        serde_json::from_slice(&std::fs::read(path.with_extension("json")).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    #[cfg(unix)]
    {
        assert_eq!(mode(path), 0o600);
        assert_eq!(mode(&path.with_extension("json")), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(mode(path.parent().unwrap().parent().unwrap()), 0o700);
    }
    // A crash after the manifest: the archive is adopted, not downloaded again.
    let adopted = archive.existing("inst-1", at()).await.unwrap().unwrap();
    assert_eq!(adopted, manifest);
    let mut copy = Vec::new();
    let (sha256, bytes) = archive.copy_result(&manifest, &mut copy).await.unwrap();
    assert_eq!((sha256, bytes), (sha(&data), data.len() as u64));
    assert_eq!(copy, data);
}

#[tokio::test]
async fn group_access_widens_modes_to_the_group_only() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(
        &ArchiveConfig {
            group_access: true,
            ..settings(dir.path())
        },
        dir.path(),
    )
    .unwrap();
    let uploaded = upload(&archive, "inst-g", b"PK\x05\x06").await;
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-g"))
        .await
        .unwrap();
    #[cfg(unix)]
    {
        let path = FsPath::new(&manifest.location);
        assert_eq!(mode(path), 0o640);
        assert_eq!(mode(path.parent().unwrap()), 0o750);
    }
    let _ = manifest;
}

#[tokio::test]
async fn an_upload_that_does_not_match_its_download_is_not_committed() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let uploaded = upload(&archive, "inst-2", b"hello").await;
    let mut manifest = manifest_for(&uploaded, "inst-2");
    manifest.sha256 = "00".repeat(32);
    assert!(archive.commit(&uploaded, manifest).await.is_err());
    assert!(archive.existing("inst-2", at()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_tampered_file_is_not_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let uploaded = upload(&archive, "inst-3", &content(1000)).await;
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-3"))
        .await
        .unwrap();
    let mut bytes = std::fs::read(&manifest.location).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&manifest.location, bytes).unwrap();
    assert!(archive.verify(&manifest).await.is_err());
    assert!(archive.existing("inst-3", at()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_restarted_download_keeps_only_the_bytes_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let mut upload = archive
        .begin("inst-4", at(), &meta("inst-4"))
        .await
        .unwrap();
    upload.write_all(&content(7 * 1024 * 1024)).await.unwrap();
    upload.restart().await.unwrap();
    let data = content(3000);
    upload.write_all(&data).await.unwrap();
    let uploaded = upload.finish().await.unwrap();
    assert_eq!(
        (uploaded.sha256.clone(), uploaded.bytes),
        (sha(&data), 3000)
    );
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-4"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&manifest.location).unwrap(), data);
    assert_eq!(
        staging_files(&dir.path().join("archive")),
        Vec::<String>::new()
    );
}

fn staging_files(root: &FsPath) -> Vec<String> {
    let mut out = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                folders.push(entry.path());
            } else if entry.file_name().to_string_lossy().contains('#') {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn an_aborted_upload_leaves_nothing_and_old_orphans_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let mut upload = archive
        .begin("inst-5", at(), &meta("inst-5"))
        .await
        .unwrap();
    upload.write_all(&content(6 * 1024 * 1024)).await.unwrap();
    upload.abort().await;
    let root = dir.path().join("archive");
    assert_eq!(staging_files(&root), Vec::<String>::new());
    assert!(archive.existing("inst-5", at()).await.unwrap().is_none());

    // A kill -9 leaves the staging file of an upload behind: it is removed once old enough.
    let mut upload = archive
        .begin("inst-6", at(), &meta("inst-6"))
        .await
        .unwrap();
    upload.write_all(&content(6 * 1024 * 1024)).await.unwrap();
    tokio::task::yield_now().await;
    std::mem::forget(upload);
    let orphans = staging_files(&root);
    assert_eq!(orphans.len(), 1, "{orphans:?}");
    assert!(!FsPath::new(&archive.location(&archive.result_key("inst-6", at()).unwrap())).exists());
    let now = Utc::now();
    assert_eq!(
        archive.abort_orphan_uploads(now, false).await.unwrap(),
        0,
        "too young"
    );
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&orphans[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(archive.abort_orphan_uploads(now, false).await.unwrap(), 1);
    assert_eq!(staging_files(&root), Vec::<String>::new());
}

#[tokio::test]
async fn client_side_encryption_round_trips_and_a_wrong_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let keys = Arc::new(Keyring::single(MasterKey::generate("2026-11")));
    let archive = Archive::open_with_keys(&settings(dir.path()), dir.path(), keys).unwrap();
    let data = content(5 * 1024 * 1024 + 3);
    let uploaded = upload(&archive, "inst-7", &data).await;
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-7"))
        .await
        .unwrap();
    assert!(
        manifest.location.ends_with("inst-7.zip.enc"),
        "{}",
        manifest.location
    );
    assert_eq!(
        manifest.encryption,
        Some(EncryptionRecord {
            scheme: crypto::SCHEME.into(),
            key_id: "2026-11".into()
        })
    );
    let stored = std::fs::read(&manifest.location).unwrap();
    assert_eq!(
        stored.len() as u64,
        crypto::sealed_bytes("2026-11", data.len() as u64)
    );
    assert_eq!(manifest.stored_bytes, Some(stored.len() as u64));
    assert_eq!(
        manifest.stored_sha256.as_deref(),
        Some(sha(&stored).as_str())
    );
    assert!(
        !stored.windows(4096).any(|w| w == &data[..4096]),
        "plaintext visible"
    );
    let mut copy = Vec::new();
    archive.copy_result(&manifest, &mut copy).await.unwrap();
    assert_eq!(copy, data);

    let wrong = Archive::open_with_keys(
        &settings(dir.path()),
        dir.path(),
        Arc::new(Keyring::single(MasterKey::generate("2026-11"))),
    )
    .unwrap();
    let error = format!("{:#}", wrong.verify(&manifest).await.unwrap_err());
    assert!(error.contains("does not open this object"), "{error}");
    assert!(error.contains("2026-11"), "{error}");
}

#[tokio::test]
async fn a_removed_result_leaves_a_tombstone_and_is_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let uploaded = upload(&archive, "inst-8", &content(1000)).await;
    let manifest = archive
        .commit(&uploaded, manifest_for(&uploaded, "inst-8"))
        .await
        .unwrap();
    let tombstone = TombstoneManifest {
        execution_id: manifest.execution_id.clone(),
        environment: manifest.environment.clone(),
        flow_id: manifest.flow_id.clone(),
        instance_id: manifest.instance_id.clone(),
        archived_at: manifest.archived_at,
        removed: "erased".into(),
        removed_at: at(),
        removed_by: "alice".into(),
    };
    archive
        .remove(&uploaded.key, &tombstone, at())
        .await
        .unwrap();
    assert!(!FsPath::new(&manifest.location).exists());
    let text =
        std::fs::read_to_string(FsPath::new(&manifest.location).with_extension("json")).unwrap();
    assert!(!text.contains(&manifest.sha256), "{text}");
    assert!(text.contains("alice"), "{text}");
    let error = archive
        .existing("inst-8", at())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("erased"), "{error}");
}

#[tokio::test]
async fn a_locked_manifest_refuses_removal_saying_until_when() {
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    let uploaded = upload(&archive, "inst-9", &content(10)).await;
    let mut manifest = manifest_for(&uploaded, "inst-9");
    manifest.location = archive.location(&uploaded.key);
    manifest.object_lock = Some(LockRecord {
        mode: LockMode::Compliance,
        retain_until: at() + chrono::TimeDelta::days(365),
    });
    archive
        .write_manifest(&uploaded.key, &serde_json::to_vec(&manifest).unwrap())
        .await
        .unwrap();
    let tombstone = TombstoneManifest {
        execution_id: "e".into(),
        environment: "sandbox".into(),
        flow_id: "f".into(),
        instance_id: "inst-9".into(),
        archived_at: at(),
        removed: "erased".into(),
        removed_at: at(),
        removed_by: "bob".into(),
    };
    match archive.remove(&uploaded.key, &tombstone, at()).await {
        Err(RemoveError::Locked { until, .. }) => {
            assert_eq!(until, at() + chrono::TimeDelta::days(365));
        }
        other => panic!("expected a lock refusal, got {other:?}"),
    }
    assert!(FsPath::new(&manifest.location).exists());
    // After the date it goes.
    archive
        .remove(
            &uploaded.key,
            &tombstone,
            at() + chrono::TimeDelta::days(366),
        )
        .await
        .unwrap();
    assert!(!FsPath::new(&manifest.location).exists());
}

#[test]
fn instance_ids_that_would_escape_the_folder_are_refused() {
    for bad in ["", "../etc", "a/b", "..", "x\0y", "a#1", "a b"] {
        assert!(file_stem(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(
        file_stem("0b7c2f6e-1d2a-4e5f-9a8b-1234567890ab").unwrap(),
        "0b7c2f6e-1d2a-4e5f-9a8b-1234567890ab"
    );
}

/// Every id Mint may give (letters, digits, `-_.~:`) gets a name of its own that stays in its
/// folder, plain ids keep theirs (archives written before escaping are still found), and
/// different ids never share a name.
#[test]
fn every_valid_instance_id_gets_a_distinct_safe_file_name() {
    let ids = [
        "inst_1",
        "inst_5F1",
        "inst.1",
        "inst_2E1",
        "urn:mint:instance:42",
        ".hidden",
        "a~b",
        "_",
        "x.e",
        "x_2Ee",
    ];
    let long = "a:".repeat(100);
    let mut names = std::collections::BTreeSet::new();
    for id in ids.iter().copied().chain([long.as_str()]) {
        let stem = file_stem(id).unwrap();
        assert!(is_stem(&stem), "{id:?} -> {stem:?}");
        assert!(!stem.starts_with('.') && !stem.contains('/') && stem.len() <= STEM_MAX);
        assert!(
            names.insert(stem.clone()),
            "{id:?} shares the name {stem:?}"
        );
    }
    assert_eq!(file_stem("inst_1").unwrap(), "inst_1");
    assert_eq!(file_stem("inst.1").unwrap(), "inst_2E1.e");
    assert!(file_stem(&long).unwrap().ends_with(".h"));
    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(&settings(dir.path()), dir.path()).unwrap();
    assert_eq!(
        archive.result_key("urn:x.1", at()).unwrap(),
        "2026/11/urn_3Ax_2E1.e.zip"
    );
    assert_eq!(
        Archive::manifest_key("2026/11/urn_3Ax_2E1.e.zip"),
        "2026/11/urn_3Ax_2E1.e.json"
    );
}

#[test]
fn the_archive_dir_is_the_default_url_and_keys_map_back_to_locations() {
    let dir = tempfile::tempdir().unwrap();
    let url = effective_url(&ArchiveConfig::default(), &dir.path().join("a")).unwrap();
    assert_eq!(url.scheme(), "file");
    let archive = Archive::open(&ArchiveConfig::default(), &dir.path().join("a")).unwrap();
    let key = archive.result_key("inst", at()).unwrap();
    assert_eq!(key, "2026/11/inst.zip");
    assert_eq!(
        archive.key_of(&archive.location(&key)).as_deref(),
        Some(key.as_str())
    );
    assert_eq!(
        Archive::manifest_key("p/2026/11/inst.zip.enc"),
        "p/2026/11/inst.json"
    );
}
