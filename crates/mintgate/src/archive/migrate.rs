//! `archive migrate`: copies every intact result of one archive into another (e.g. the local
//! folder into a bucket), each verified on arrival by the target's own commit (size, tags, read
//! back); a result the target already holds, verified, is skipped, so an interrupted migration
//! resumes where it stopped. The database's locations follow the copies.

use futures::TryStreamExt as _;

use super::{Archive, ManifestFile, UploadMeta};

/// What a migration did.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationReport {
    pub copied: usize,
    pub bytes: u64,
    pub already_there: usize,
    /// Tombstones (erased or purged results) are not copied.
    pub tombstones: usize,
    pub failed: Vec<(String, String)>,
}

/// Copies every intact result of `source` into `target`, verified; skips those the target holds
/// already, verified. Updates the database's locations when given one.
pub async fn migrate(
    source: &Archive,
    target: &Archive,
    store: Option<&crate::store::SharedStore>,
) -> anyhow::Result<MigrationReport> {
    let prefix = object_store::path::Path::from(source.prefix().trim_end_matches('/'));
    let listed: Vec<_> = source
        .store()
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", source.describe()))?;
    let mut report = MigrationReport::default();
    for object in listed {
        let key = object.location.to_string();
        if !(key.ends_with(".zip") || key.ends_with(".zip.enc")) {
            continue;
        }
        let manifest = match source.read_manifest(&key).await {
            Ok(Some(ManifestFile::Intact(manifest))) => manifest,
            Ok(Some(ManifestFile::Tombstone(_))) => {
                report.tombstones += 1;
                continue;
            }
            // A result without a manifest was never archived (an interrupted download).
            Ok(None) => continue,
            Err(error) => {
                report
                    .failed
                    .push((source.location(&key), format!("{error:#}")));
                continue;
            }
        };
        match copy_one(source, target, &key, &manifest).await {
            Ok(Copied::AlreadyThere(location)) => {
                report.already_there += 1;
                relocate(store, &manifest, &location).await?;
            }
            Ok(Copied::Copied(location)) => {
                report.copied += 1;
                report.bytes += manifest.bytes;
                relocate(store, &manifest, &location).await?;
            }
            Err(error) => report
                .failed
                .push((manifest.location.clone(), format!("{error:#}"))),
        }
    }
    Ok(report)
}

enum Copied {
    Copied(String),
    AlreadyThere(String),
}

async fn copy_one(
    source: &Archive,
    target: &Archive,
    key: &str,
    manifest: &super::Manifest,
) -> anyhow::Result<Copied> {
    let target_key = target.key_like(source, key)?;
    if let Ok(Some(ManifestFile::Intact(there))) = target.read_manifest(&target_key).await
        && there.sha256 == manifest.sha256
        && target.verify(&there).await.is_ok()
    {
        return Ok(Copied::AlreadyThere(there.location));
    }
    let meta = UploadMeta {
        execution_id: manifest.execution_id.clone(),
        instance_id: manifest.instance_id.clone(),
    };
    let mut upload = target.begin_key(&target_key, &meta).await?;
    let (sha256, bytes) = match source.copy_result(manifest, &mut upload).await {
        Ok(read) => read,
        Err(error) => {
            upload.abort().await;
            return Err(error);
        }
    };
    if sha256 != manifest.sha256 || bytes != manifest.bytes {
        upload.abort().await;
        anyhow::bail!(
            "the source reads as {bytes} bytes with SHA-256 {sha256}, but its manifest says {} bytes with SHA-256 {}",
            manifest.bytes,
            manifest.sha256
        );
    }
    let uploaded = upload.finish().await?;
    let copy = super::Manifest {
        location: String::new(),
        stored_bytes: None,
        stored_sha256: None,
        encryption: None,
        server_side_encryption: None,
        sse_kms_key_id: None,
        object_lock: None,
        purge_after: None,
        version_id: None,
        ..manifest.clone()
    };
    let written = target.commit(&uploaded, copy).await?;
    Ok(Copied::Copied(written.location))
}

async fn relocate(
    store: Option<&crate::store::SharedStore>,
    manifest: &super::Manifest,
    location: &str,
) -> anyhow::Result<()> {
    let Some(store) = store else { return Ok(()) };
    let Ok(id) = uuid::Uuid::parse_str(&manifest.execution_id) else {
        return Ok(());
    };
    store
        .relocate_archive(id, &manifest.location, location)
        .await?;
    Ok(())
}
