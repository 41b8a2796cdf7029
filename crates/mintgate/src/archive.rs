//! Long-term storage of result files, behind one trait; the embedded default is a local folder.
//!
//! Layout: `<archive>/<yyyy>/<mm>/<instanceId>.zip` and, beside it, `<instanceId>.json`, the manifest
//! (flow, instance, times, bytes, SHA-256). The manifest is written last, atomically: a result file
//! without a manifest is an unfinished download, never an archived one.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use chrono::{DateTime, Datelike as _, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

/// What the archive records about one result file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub execution_id: String,
    pub environment: String,
    pub flow_id: String,
    pub instance_id: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When Mint deletes its copy.
    pub deadline_at: Option<DateTime<Utc>>,
    pub archived_at: DateTime<Utc>,
    pub bytes: u64,
    pub sha256: String,
    /// The result file's location in the archive.
    pub location: String,
}

/// Where result files are kept for the long term.
#[async_trait]
pub trait Archive: Send + Sync + 'static {
    /// A local file path the downloader streams the result into (written as `.part`, then renamed).
    async fn staging_path(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<PathBuf>;

    /// Verifies the staged file against the download's byte count and SHA-256 (by reading it back),
    /// stores it for good, and writes its manifest last. Answers the stored location.
    async fn commit(&self, staged: &Path, manifest: Manifest) -> anyhow::Result<String>;

    /// The manifest of an instance already archived and still intact, if any: a download that
    /// finished before a crash is adopted instead of downloaded again.
    async fn existing(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Manifest>>;

    /// A short description for logs and the status page.
    fn describe(&self) -> String;
}

/// The local-folder archive.
pub struct LocalArchive {
    root: PathBuf,
}

impl LocalArchive {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn folder(&self, finished_at: DateTime<Utc>) -> PathBuf {
        self.root
            .join(format!("{:04}", finished_at.year()))
            .join(format!("{:02}", finished_at.month()))
    }

    fn zip_path(&self, instance_id: &str, finished_at: DateTime<Utc>) -> anyhow::Result<PathBuf> {
        check_file_name(instance_id)?;
        Ok(self.folder(finished_at).join(format!("{instance_id}.zip")))
    }
}

/// An instance id becomes a file name: refuse anything that could leave the folder.
fn check_file_name(instance_id: &str) -> anyhow::Result<()> {
    let ok = !instance_id.is_empty()
        && instance_id.len() <= 128
        && instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !instance_id.starts_with('.');
    if !ok {
        bail!("instance id {instance_id:?} cannot be used as an archive file name");
    }
    Ok(())
}

/// The SHA-256 (hex) and length of a file, read in 1 MiB blocks.
pub async fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), total))
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let part = path.with_extension("json.part");
    {
        let mut file = tokio::fs::File::create(&part)
            .await
            .with_context(|| format!("creating {}", part.display()))?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
    }
    tokio::fs::rename(&part, path)
        .await
        .with_context(|| format!("renaming {} into place", part.display()))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = tokio::fs::File::open(parent).await
    {
        dir.sync_all().await.ok();
    }
    Ok(())
}

#[async_trait]
impl Archive for LocalArchive {
    async fn staging_path(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<PathBuf> {
        let path = self.zip_path(instance_id, finished_at)?;
        let folder = self.folder(finished_at);
        tokio::fs::create_dir_all(&folder)
            .await
            .with_context(|| format!("creating the archive folder {}", folder.display()))?;
        Ok(path)
    }

    async fn commit(&self, staged: &Path, mut manifest: Manifest) -> anyhow::Result<String> {
        let (sha256, bytes) = hash_file(staged).await?;
        if sha256 != manifest.sha256 || bytes != manifest.bytes {
            bail!(
                "verification failed: {} holds {bytes} bytes with SHA-256 {sha256}, but {} bytes with SHA-256 {} were downloaded",
                staged.display(),
                manifest.bytes,
                manifest.sha256
            );
        }
        // The downloader wrote straight to the final path; only the manifest remains.
        let location = staged.display().to_string();
        manifest.location = location.clone();
        let json = serde_json::to_vec_pretty(&manifest)?;
        write_atomically(&staged.with_extension("json"), &json).await?;
        Ok(location)
    }

    async fn existing(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Manifest>> {
        let zip = self.zip_path(instance_id, finished_at)?;
        let manifest_path = zip.with_extension("json");
        let Ok(text) = tokio::fs::read(&manifest_path).await else {
            return Ok(None);
        };
        let Ok(manifest) = serde_json::from_slice::<Manifest>(&text) else {
            return Ok(None);
        };
        match hash_file(&zip).await {
            Ok((sha256, bytes)) if sha256 == manifest.sha256 && bytes == manifest.bytes => {
                Ok(Some(manifest))
            }
            _ => Ok(None),
        }
    }

    fn describe(&self) -> String {
        format!("local folder {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_that_would_escape_the_folder_are_refused() {
        for bad in ["", "../etc", "a/b", ".hidden", "x\0y"] {
            assert!(check_file_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_file_name("0b7c2f6e-1d2a-4e5f-9a8b-1234567890ab").is_ok());
    }

    #[tokio::test]
    async fn a_file_that_does_not_match_its_download_is_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let archive = LocalArchive::new(dir.path());
        let at = Utc::now();
        let path = archive.staging_path("inst-1", at).await.unwrap();
        tokio::fs::write(&path, b"hello").await.unwrap();
        let manifest = Manifest {
            execution_id: "e".into(),
            environment: "sandbox".into(),
            flow_id: "f".into(),
            instance_id: "inst-1".into(),
            started_at: None,
            finished_at: Some(at),
            deadline_at: None,
            archived_at: at,
            bytes: 5,
            sha256: "00".repeat(32),
            location: String::new(),
        };
        assert!(archive.commit(&path, manifest.clone()).await.is_err());
        assert!(archive.existing("inst-1", at).await.unwrap().is_none());
        let (sha, _) = hash_file(&path).await.unwrap();
        let good = Manifest {
            sha256: sha,
            ..manifest
        };
        archive.commit(&path, good.clone()).await.unwrap();
        let found = archive.existing("inst-1", at).await.unwrap().unwrap();
        assert_eq!(found.sha256, good.sha256);
        assert!(path.with_extension("json").exists());
    }
}
