//! Long-term storage of result files (KYC evidence) in an object store: a local folder by default
//! (`file://`), or S3, Google Cloud Storage or Azure Blob (`archive.url`), through `object_store`.
//!
//! Layout under the store's prefix: `<yyyy>/<mm>/<instanceId>.zip` (`.zip.enc` when encrypted on
//! the client) and, beside it, `<instanceId>.json`, the manifest. An instance id with characters
//! other than letters, digits, `-` and `_` (Mint's ids may hold `.`, `~` and `:`) gets an escaped
//! name ending in `.e` (or, when that would be too long, its SHA-256 ending in `.h`): see
//! [`file_stem`]. Why it is built this way:
//!
//! - **Verified before recorded.** The result streams from Mint into a multipart upload
//!   ([`ResultUpload`]), hashed on the way; the completed object is then checked (its size, and by
//!   default read back, decrypted and hashed again) before its manifest is written, and the
//!   manifest before the execution is recorded `archived`. A result object without a manifest is an
//!   unfinished archive, never an archived one.
//! - **Nothing partial is visible.** A multipart upload shows nothing until it completes; an upload
//!   that fails is aborted, and one left by a crash is aborted later by
//!   [`Archive::abort_orphan_uploads`] (or a bucket lifecycle rule).
//! - **Exactly once.** The object key is a function of the instance, so a retry writes the same
//!   key; an intact archive left by a crash is adopted ([`Archive::existing`]) instead of
//!   downloaded again.
//! - **A leak leaks nothing** with client-side envelope encryption ([`crypto`]); server-side
//!   encryption (SSE-S3 / SSE-KMS) is a setting of the S3 client.
//! - **Retention and erasure are decided here**, from the manifest and the store's own Object Lock
//!   answer: [`Archive::erase`] refuses while a lock holds, saying until when.
//!
//! The SHA-256 is in the manifest and, on S3, in the object's tags (`mintgate-sha256`,
//! `mintgate-bytes`): S3 fixes an object's metadata when a multipart upload begins, before the hash
//! is known, while tags can be set once it is complete. Local files carry it in the manifest only.

pub mod crypto;
pub mod migrate;
pub mod retention;
pub mod s3;
pub mod settings;
mod upload;

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Datelike as _, Utc};
use futures::StreamExt as _;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt as _, PutMode, PutOptions};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use url::Url;

pub use crypto::{Keyring, MasterKey, OpenError};
pub use settings::{ArchiveConfig, LockMode, VerifyMode};
pub use upload::{ResultUpload, Uploaded};

use s3::S3Bucket;
use settings::ServerSideEncryption;

/// What the archive records about one result file (the manifest, `<instanceId>.json`).
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
    /// Size and SHA-256 of the result as Mint served it (before any encryption).
    pub bytes: u64,
    pub sha256: String,
    /// The result object's location: a file path (local archive) or a URL (`s3://bucket/key`).
    pub location: String,
    /// The result file's `Content-Type`, as Mint answered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Size and SHA-256 of the stored object (after client-side encryption; else the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_sha256: Option<String>,
    /// Client-side encryption: the scheme and the master key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionRecord>,
    /// Server-side encryption, as the store reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_encryption: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse_kms_key_id: Option<String>,
    /// Object Lock retention, as the store reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock: Option<LockRecord>,
    /// The retention policy's date: the purge job deletes the result after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
    /// The object's version (versioned buckets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// How the stored object is encrypted on the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionRecord {
    pub scheme: String,
    pub key_id: String,
}

/// An Object Lock retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LockRecord {
    pub mode: LockMode,
    pub retain_until: DateTime<Utc>,
}

/// What stays of a manifest once its result was erased or purged: no hash, no size, nothing
/// derived from the person's data; who did it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TombstoneManifest {
    pub execution_id: String,
    pub environment: String,
    pub flow_id: String,
    pub instance_id: String,
    pub archived_at: DateTime<Utc>,
    /// `erased` (an operator, on request) or `purged` (the retention policy).
    pub removed: String,
    pub removed_at: DateTime<Utc>,
    pub removed_by: String,
}

/// A manifest as found in the store.
#[derive(Debug, Clone)]
pub enum ManifestFile {
    Intact(Box<Manifest>),
    Tombstone(TombstoneManifest),
}

/// Why a result may not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error(
        "the result is under a {mode:?} retention lock until {until}; it cannot be erased before then"
    )]
    Locked {
        mode: LockMode,
        until: DateTime<Utc>,
    },
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What the upload should carry besides the bytes.
#[derive(Debug, Clone)]
pub struct UploadMeta {
    pub execution_id: String,
    pub instance_id: String,
}

enum Backend {
    Local {
        root: PathBuf,
        file_mode: u32,
        dir_mode: u32,
    },
    S3(S3Bucket),
    Other {
        base: String,
    },
}

/// The archive: an object store and how results are kept in it.
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    /// The key prefix of every object: empty, or ending with `/`.
    prefix: String,
    settings: ArchiveConfig,
    keys: Arc<Keyring>,
    display: String,
    /// When this process first saw each unfinished multipart upload (S3): an upload is aborted
    /// only once both the store's `Initiated` time and our own first sight are old enough, so a
    /// store that misreports `Initiated` (moto answers a fixed 2010 date) cannot make us abort an
    /// upload another replica is still writing.
    uploads_seen: std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("store", &self.display)
            .finish_non_exhaustive()
    }
}

/// The archive's URL: `archive.url`, else the (deprecated) `service.archive_dir` as a file URL.
pub fn effective_url(settings: &ArchiveConfig, archive_dir: &FsPath) -> anyhow::Result<Url> {
    if let Some(url) = &settings.url {
        return Ok(url.clone());
    }
    let absolute = std::path::absolute(archive_dir)
        .with_context(|| format!("resolving the archive folder {}", archive_dir.display()))?;
    Url::from_directory_path(&absolute).map_err(|()| {
        anyhow::anyhow!(
            "invalid configuration: `service.archive_dir` ({}) is not a usable folder path",
            archive_dir.display()
        )
    })
}

impl Archive {
    /// Opens the archive `settings` describe; `archive_dir` is the deprecated local folder setting,
    /// used when `archive.url` is unset. Loads the encryption keys.
    pub fn open(settings: &ArchiveConfig, archive_dir: &FsPath) -> anyhow::Result<Self> {
        settings.validate()?;
        let keys = Arc::new(Keyring::load(settings.encryption.as_ref())?);
        Self::open_with_keys(settings, archive_dir, keys)
    }

    /// Like [`Archive::open`], with the keys given (tests, benchmarks, `archive migrate`).
    pub fn open_with_keys(
        settings: &ArchiveConfig,
        archive_dir: &FsPath,
        keys: Arc<Keyring>,
    ) -> anyhow::Result<Self> {
        let url = effective_url(settings, archive_dir)?;
        let display = settings::redact_url(&url);
        let prefix = |path: &str| {
            let trimmed = path.trim_matches('/');
            if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}/")
            }
        };
        let (store, backend, key_prefix): (Arc<dyn ObjectStore>, Backend, String) = match url
            .scheme()
        {
            "file" => {
                let root = url.to_file_path().map_err(|()| {
                    anyhow::anyhow!("invalid configuration: `archive.url` is not a local path")
                })?;
                let (file_mode, dir_mode) = if settings.group_access {
                    (0o640, 0o750)
                } else {
                    (0o600, 0o700)
                };
                create_private_dirs(&root, dir_mode)?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&root)
                    .with_context(|| format!("opening the archive folder {}", root.display()))?
                    .with_fsync(true);
                let root = std::fs::canonicalize(&root)
                    .with_context(|| format!("resolving {}", root.display()))?;
                (
                    Arc::new(store),
                    Backend::Local {
                        root,
                        file_mode,
                        dir_mode,
                    },
                    String::new(),
                )
            }
            "s3" | "s3a" => {
                let (store, bucket) = open_s3(&url, settings)?;
                (Arc::new(store), Backend::S3(bucket), prefix(url.path()))
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .context("opening the Google Cloud Storage archive (`archive.url`)")?;
                let base = format!("gs://{}/", url.host_str().unwrap_or_default());
                (Arc::new(store), Backend::Other { base }, prefix(url.path()))
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .context("opening the Azure Blob archive (`archive.url`)")?;
                let base = format!("{}://{}/", url.scheme(), url.host_str().unwrap_or_default());
                (Arc::new(store), Backend::Other { base }, prefix(url.path()))
            }
            "memory" => (
                Arc::new(object_store::memory::InMemory::new()),
                Backend::Other {
                    base: "memory:///".to_owned(),
                },
                String::new(),
            ),
            other => {
                bail!("invalid configuration: `archive.url` has the unsupported scheme {other:?}")
            }
        };
        Ok(Self {
            store,
            backend,
            prefix: key_prefix,
            settings: settings.clone(),
            keys,
            display,
            uploads_seen: std::sync::Mutex::default(),
        })
    }

    /// A short description for logs and the status page (no credentials).
    pub fn describe(&self) -> String {
        let encryption = match self.keys.current() {
            Some(key) => format!(", client-side encryption with key {}", key.id()),
            None => String::new(),
        };
        format!("{}{encryption}", self.display)
    }

    /// The S3 bucket behind the archive, if it is one (tests, benchmarks, operator commands).
    pub fn s3(&self) -> Option<&S3Bucket> {
        match &self.backend {
            Backend::S3(bucket) => Some(bucket),
            _ => None,
        }
    }

    /// The underlying object store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn settings(&self) -> &ArchiveConfig {
        &self.settings
    }

    fn folder_key(&self, finished_at: DateTime<Utc>) -> String {
        format!(
            "{}{:04}/{:02}/",
            self.prefix,
            finished_at.year(),
            finished_at.month()
        )
    }

    /// The result object's key.
    pub fn result_key(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let stem = file_stem(instance_id)?;
        let extension = if self.keys.current().is_some() {
            "zip.enc"
        } else {
            "zip"
        };
        Ok(format!(
            "{}{stem}.{extension}",
            self.folder_key(finished_at)
        ))
    }

    /// The manifest's key beside a result key.
    pub fn manifest_key(result_key: &str) -> String {
        let stem = result_key
            .strip_suffix(".zip.enc")
            .or_else(|| result_key.strip_suffix(".zip"))
            .unwrap_or(result_key);
        format!("{stem}.json")
    }

    /// Where a key is, as recorded in manifests and the database.
    pub fn location(&self, key: &str) -> String {
        match &self.backend {
            Backend::Local { root, .. } => root.join(key).display().to_string(),
            Backend::S3(bucket) => format!("s3://{}/{key}", bucket.bucket()),
            Backend::Other { base } => format!("{base}{key}"),
        }
    }

    /// The key of a location recorded by [`Archive::location`] (or by an older local archive).
    pub fn key_of(&self, location: &str) -> Option<String> {
        let key = match &self.backend {
            Backend::Local { root, .. } => FsPath::new(location)
                .strip_prefix(root)
                .ok()?
                .to_str()?
                .to_owned(),
            Backend::S3(bucket) => location
                .strip_prefix(&format!("s3://{}/", bucket.bucket()))?
                .to_owned(),
            Backend::Other { base } => location.strip_prefix(base.as_str())?.to_owned(),
        };
        Some(key)
    }

    /// The key a result of another archive gets in this one: the same `<yyyy>/<mm>/` folder under
    /// this archive's prefix, this archive's extension (`archive migrate`).
    pub fn key_like(&self, other: &Archive, other_key: &str) -> anyhow::Result<String> {
        let relative = other_key
            .strip_prefix(other.prefix.as_str())
            .unwrap_or(other_key);
        let (folder, file) = relative.rsplit_once('/').unwrap_or(("", relative));
        // The other archive's file name already encodes the instance id ([`file_stem`]): keep it.
        let instance = file
            .strip_suffix(".zip.enc")
            .or_else(|| file.strip_suffix(".zip"))
            .filter(|stem| is_stem(stem))
            .with_context(|| format!("{other_key:?} is not the key of an archived result"))?;
        let extension = if self.keys.current().is_some() {
            "zip.enc"
        } else {
            "zip"
        };
        let folder = if folder.is_empty() {
            String::new()
        } else {
            format!("{folder}/")
        };
        Ok(format!("{}{folder}{instance}.{extension}", self.prefix))
    }

    /// The key prefix of every object of this archive (empty, or ending with `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Begins the upload of one result.
    pub async fn begin(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
        meta: &UploadMeta,
    ) -> anyhow::Result<ResultUpload> {
        let key = self.result_key(instance_id, finished_at)?;
        self.begin_key(&key, meta).await
    }

    /// Begins the upload of one result at a given key.
    pub async fn begin_key(&self, key: &str, meta: &UploadMeta) -> anyhow::Result<ResultUpload> {
        let key = key.to_owned();
        let mut attributes = Attributes::new();
        match &self.backend {
            Backend::Local { root, dir_mode, .. } => {
                if let Some(folder) = root.join(&key).parent() {
                    create_private_dirs(folder, *dir_mode)?;
                }
            }
            Backend::S3(_) | Backend::Other { .. } => {
                let content_type = if self.keys.current().is_some() {
                    "application/octet-stream"
                } else {
                    "application/zip"
                };
                attributes.insert(Attribute::ContentType, content_type.into());
                attributes.insert(
                    Attribute::Metadata("mintgate-execution-id".into()),
                    meta.execution_id.clone().into(),
                );
                attributes.insert(
                    Attribute::Metadata("mintgate-instance-id".into()),
                    meta.instance_id.clone().into(),
                );
                if let Some(key) = self.keys.current() {
                    attributes.insert(
                        Attribute::Metadata("mintgate-encryption".into()),
                        format!("{}; key={}", crypto::SCHEME, key.id()).into(),
                    );
                }
            }
        }
        ResultUpload::begin(
            self.store.clone(),
            Path::from(key),
            attributes,
            self.settings.part_bytes,
            self.settings.part_concurrency,
            self.keys.clone(),
        )
        .await
    }

    /// Checks a completed upload, records its hash on the object, locks it, and writes its
    /// manifest last. Answers the manifest as written.
    pub async fn commit(
        &self,
        uploaded: &Uploaded,
        mut manifest: Manifest,
    ) -> anyhow::Result<Manifest> {
        if uploaded.sha256 != manifest.sha256 || uploaded.bytes != manifest.bytes {
            bail!(
                "verification failed: the upload saw {} bytes with SHA-256 {}, the download {} bytes with SHA-256 {}",
                uploaded.bytes,
                uploaded.sha256,
                manifest.bytes,
                manifest.sha256
            );
        }
        manifest.location = self.location(&uploaded.key);
        manifest.stored_bytes = Some(uploaded.stored_bytes);
        manifest.stored_sha256 = Some(uploaded.stored_sha256.clone());
        manifest.version_id = uploaded.version.clone();
        manifest.encryption = self.keys.current().map(|key| EncryptionRecord {
            scheme: crypto::SCHEME.to_owned(),
            key_id: key.id().to_owned(),
        });
        manifest.purge_after = self
            .settings
            .retention
            .as_ref()
            .map(|r| manifest.archived_at + clock_delta(r.keep_for));
        if let Backend::Local {
            root, file_mode, ..
        } = &self.backend
        {
            set_mode(&root.join(&uploaded.key), *file_mode)?;
        }
        // Object Lock (S3): from the archiving time; a migrated result whose date has passed gets none.
        let lock = self
            .settings
            .object_lock
            .as_ref()
            .map(|lock| {
                (
                    lock.mode,
                    manifest.archived_at + clock_delta(lock.retain_for),
                )
            })
            .filter(|(_, until)| *until > Utc::now());
        if let Backend::S3(bucket) = &self.backend {
            let bytes = uploaded.bytes.to_string();
            bucket
                .put_tags(
                    &uploaded.key,
                    &[
                        ("mintgate-sha256", uploaded.sha256.as_str()),
                        ("mintgate-bytes", bytes.as_str()),
                    ],
                )
                .await?;
            if let Some((mode, until)) = lock {
                bucket.put_retention(&uploaded.key, mode, until).await?;
            }
        }
        self.check_object(&uploaded.key, &mut manifest, lock.map(|(mode, _)| mode))
            .await?;
        self.write_manifest(&uploaded.key, &serde_json::to_vec_pretty(&manifest)?)
            .await?;
        Ok(manifest)
    }

    /// Checks the stored object against a manifest: size always; the store's metadata, tags, SSE
    /// and lock on S3; and, with `verify = "read_back"`, the content itself. Fills in what the
    /// store reports (SSE, lock) into `manifest`.
    async fn check_object(
        &self,
        key: &str,
        manifest: &mut Manifest,
        expect_lock: Option<LockMode>,
    ) -> anyhow::Result<()> {
        let expected_stored = manifest.stored_bytes.unwrap_or(manifest.bytes);
        let meta = self
            .store
            .head(&Path::from(key))
            .await
            .with_context(|| format!("reading back {}", self.location(key)))?;
        if meta.size != expected_stored {
            bail!(
                "verification failed: {} holds {} bytes, {} were uploaded",
                self.location(key),
                meta.size,
                expected_stored
            );
        }
        if let Backend::S3(bucket) = &self.backend {
            let head = bucket.head(key).await?.with_context(|| {
                format!("{} vanished while it was verified", self.location(key))
            })?;
            if let Some(sse) = self.settings.server_side_encryption {
                let reported = head.server_side_encryption.as_deref().unwrap_or("none");
                if reported != sse.header_value() {
                    bail!(
                        "verification failed: {} is stored with server-side encryption {reported:?}, not {:?} (`archive.server_side_encryption`)",
                        self.location(key),
                        sse.header_value()
                    );
                }
                if sse == ServerSideEncryption::Kms
                    && let Some(wanted) = &self.settings.sse_kms_key_id
                    && head
                        .sse_kms_key_id
                        .as_deref()
                        .is_some_and(|k| !k.ends_with(wanted.as_str()))
                {
                    bail!(
                        "verification failed: {} is encrypted with another KMS key than `archive.sse_kms_key_id`",
                        self.location(key)
                    );
                }
            }
            manifest.server_side_encryption = head.server_side_encryption.clone();
            manifest.sse_kms_key_id = head.sse_kms_key_id.clone();
            manifest.object_lock = match (head.lock_mode, head.retain_until) {
                (Some(mode), Some(until)) => Some(LockRecord {
                    mode,
                    retain_until: until,
                }),
                _ => None,
            };
            if let Some(wanted) = expect_lock
                && manifest
                    .object_lock
                    .as_ref()
                    .is_none_or(|l| l.mode != wanted)
            {
                bail!(
                    "verification failed: {} has no {wanted:?} retention lock although `archive.object_lock` asks for one (is Object Lock enabled on the bucket?)",
                    self.location(key)
                );
            }
            let tags = bucket.tags(key).await?;
            let tag = |name: &str| {
                tags.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if tag("mintgate-sha256") != Some(manifest.sha256.as_str()) {
                bail!(
                    "verification failed: {} does not carry its SHA-256 tag",
                    self.location(key)
                );
            }
            if manifest.version_id.is_none() {
                manifest.version_id = head.version_id.clone();
            }
        }
        if self.settings.verify == VerifyMode::ReadBack {
            let (sha256, bytes) = self
                .copy_key(key, manifest.encryption.is_some(), &mut tokio::io::sink())
                .await?;
            if sha256 != manifest.sha256 || bytes != manifest.bytes {
                bail!(
                    "verification failed: {} reads back as {bytes} bytes with SHA-256 {sha256}, but {} bytes with SHA-256 {} were archived",
                    self.location(key),
                    manifest.bytes,
                    manifest.sha256
                );
            }
        }
        Ok(())
    }

    async fn write_manifest(&self, result_key: &str, json: &[u8]) -> anyhow::Result<()> {
        let key = Self::manifest_key(result_key);
        let mut attributes = Attributes::new();
        if !matches!(self.backend, Backend::Local { .. }) {
            attributes.insert(Attribute::ContentType, "application/json".into());
        }
        self.store
            .put_opts(
                &Path::from(key.as_str()),
                json.to_vec().into(),
                PutOptions {
                    mode: PutMode::Overwrite,
                    attributes,
                    ..PutOptions::default()
                },
            )
            .await
            .with_context(|| format!("writing the manifest {}", self.location(&key)))?;
        if let Backend::Local {
            root, file_mode, ..
        } = &self.backend
        {
            set_mode(&root.join(&key), *file_mode)?;
        }
        Ok(())
    }

    /// Reads the manifest beside a result key; `None` if there is none.
    pub async fn read_manifest(&self, result_key: &str) -> anyhow::Result<Option<ManifestFile>> {
        let key = Self::manifest_key(result_key);
        let bytes = match self.store.get(&Path::from(key.as_str())).await {
            Ok(result) => result.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", self.location(&key)));
            }
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", self.location(&key)))?;
        if value.get("removedAt").is_some() {
            return Ok(Some(ManifestFile::Tombstone(serde_json::from_value(
                value,
            )?)));
        }
        Ok(Some(ManifestFile::Intact(Box::new(
            serde_json::from_value(value)
                .with_context(|| format!("{} is not a manifest", self.location(&key)))?,
        ))))
    }

    /// The manifest of an instance already archived and still intact, if any: a download that
    /// finished before a crash is adopted instead of downloaded again. Looks under both the plain
    /// and the encrypted name (the setting may have changed since).
    pub async fn existing(
        &self,
        instance_id: &str,
        finished_at: DateTime<Utc>,
    ) -> anyhow::Result<Option<Manifest>> {
        let key = self.result_key(instance_id, finished_at)?;
        let manifest = match self.read_manifest(&key).await {
            Ok(Some(ManifestFile::Intact(manifest))) => *manifest,
            Ok(Some(ManifestFile::Tombstone(t))) => bail!(
                "the result of instance {instance_id} was {} on {} by {}; it is not archived again",
                t.removed,
                t.removed_at,
                t.removed_by
            ),
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "an unreadable manifest is not adopted"
                );
                return Ok(None);
            }
        };
        match self.verify(&manifest).await {
            Ok(()) => Ok(Some(manifest)),
            Err(error) => {
                tracing::warn!(
                    location = manifest.location,
                    error = format!("{error:#}"),
                    "an archived result that does not verify is not adopted"
                );
                Ok(None)
            }
        }
    }

    /// Checks an archived result against its manifest (see `archive.verify`).
    pub async fn verify(&self, manifest: &Manifest) -> anyhow::Result<()> {
        let key = self
            .key_of(&manifest.location)
            .with_context(|| format!("{} is not in this archive", manifest.location))?;
        let mut checked = manifest.clone();
        let lock = manifest.object_lock.as_ref().map(|l| l.mode);
        self.check_object(&key, &mut checked, lock).await
    }

    /// Streams an archived result, decrypted, into `writer`; answers its SHA-256 and size, which
    /// the caller compares with the manifest's.
    pub async fn copy_result<W: AsyncWrite + Unpin + Send>(
        &self,
        manifest: &Manifest,
        writer: &mut W,
    ) -> anyhow::Result<(String, u64)> {
        let key = self
            .key_of(&manifest.location)
            .with_context(|| format!("{} is not in this archive", manifest.location))?;
        self.copy_key(&key, manifest.encryption.is_some(), writer)
            .await
    }

    /// Streams the bytes `range` of an archived result (as Mint served it: decrypted) into
    /// `writer`. The whole file is hashed on the way and an error ends it if it does not match
    /// the manifest; a part is read without that check (the manifest's SHA-256 lets the reader
    /// check the whole). A part of a plain object is a ranged read of the store; a part of an
    /// encrypted one is decrypted from the start (each segment is authenticated, so damage is an
    /// error either way) and cut to the range, and the read stops once the range is written.
    pub async fn copy_result_range<W: AsyncWrite + Unpin + Send>(
        &self,
        manifest: &Manifest,
        range: std::ops::Range<u64>,
        writer: &mut W,
    ) -> anyhow::Result<()> {
        if range == (0..manifest.bytes) {
            let (sha256, bytes) = self.copy_result(manifest, writer).await?;
            anyhow::ensure!(
                sha256 == manifest.sha256 && bytes == manifest.bytes,
                "the archived copy of {} reads as {bytes} bytes with SHA-256 {sha256}, but {} bytes with SHA-256 {} were archived: it is damaged",
                manifest.location,
                manifest.bytes,
                manifest.sha256
            );
            return Ok(());
        }
        anyhow::ensure!(
            range.start < range.end && range.end <= manifest.bytes,
            "bytes {range:?} are not in a result of {} bytes",
            manifest.bytes
        );
        let key = self
            .key_of(&manifest.location)
            .with_context(|| format!("{} is not in this archive", manifest.location))?;
        let mut window = Window {
            inner: writer,
            skip: 0,
            left: range.end - range.start,
        };
        if manifest.encryption.is_none() {
            let options = object_store::GetOptions {
                range: Some(object_store::GetRange::Bounded(range.clone())),
                ..Default::default()
            };
            let result = self
                .store
                .get_opts(&Path::from(key.as_str()), options)
                .await
                .with_context(|| format!("reading {}", self.location(&key)))?;
            let mut stream = result.into_stream();
            while window.left > 0
                && let Some(chunk) = stream.next().await
            {
                let chunk = chunk.with_context(|| format!("reading {}", self.location(&key)))?;
                window.write_all(&chunk).await?;
            }
        } else {
            window.skip = range.start;
            if let Err(error) = self.copy_key(&key, true, &mut window).await
                && window.left > 0
            {
                return Err(error);
            }
        }
        anyhow::ensure!(
            window.left == 0,
            "{} ended {} bytes before the range {range:?}",
            self.location(&key),
            window.left
        );
        window.inner.flush().await?;
        Ok(())
    }

    async fn copy_key<W: AsyncWrite + Unpin + Send>(
        &self,
        key: &str,
        encrypted: bool,
        writer: &mut W,
    ) -> anyhow::Result<(String, u64)> {
        let result = self
            .store
            .get(&Path::from(key))
            .await
            .with_context(|| format!("reading {}", self.location(key)))?;
        let mut stream = result.into_stream();
        let mut hasher = Sha256::new();
        let mut bytes = 0u64;
        let mut opener = encrypted.then(|| crypto::Opener::new(&self.keys));
        let mut plain = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(|| format!("reading {}", self.location(key)))?;
            match &mut opener {
                Some(opener) => {
                    plain.clear();
                    opener.push(&chunk, &mut |p| plain.extend_from_slice(p))?;
                    hasher.update(&plain);
                    bytes += plain.len() as u64;
                    writer.write_all(&plain).await?;
                }
                None => {
                    hasher.update(&chunk);
                    bytes += chunk.len() as u64;
                    writer.write_all(&chunk).await?;
                }
            }
        }
        if let Some(opener) = opener {
            plain.clear();
            opener.finish(&mut |p| plain.extend_from_slice(p))?;
            hasher.update(&plain);
            bytes += plain.len() as u64;
            writer.write_all(&plain).await?;
        }
        writer.flush().await?;
        Ok((hex::encode(hasher.finalize()), bytes))
    }

    /// The retention lock that holds a result now, if any: the manifest's, or the store's own
    /// answer (S3), whichever ends later.
    pub async fn lock_holding(
        &self,
        manifest: Option<&Manifest>,
        result_key: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Option<LockRecord>> {
        let mut lock = manifest.and_then(|m| m.object_lock.clone());
        if let Backend::S3(bucket) = &self.backend
            && let Some(head) = bucket.head(result_key).await?
            && let (Some(mode), Some(until)) = (head.lock_mode, head.retain_until)
            && lock.as_ref().is_none_or(|l| l.retain_until < until)
        {
            lock = Some(LockRecord {
                mode,
                retain_until: until,
            });
        }
        Ok(lock.filter(|l| l.retain_until > now))
    }

    /// Removes a result for good (every version of it) and replaces its manifest with a
    /// tombstone. Refuses while a retention lock holds it.
    pub async fn remove(
        &self,
        result_key: &str,
        tombstone: &TombstoneManifest,
        now: DateTime<Utc>,
    ) -> Result<(), RemoveError> {
        let manifest = match self.read_manifest(result_key).await? {
            Some(ManifestFile::Intact(manifest)) => Some(*manifest),
            _ => None,
        };
        if let Some(lock) = self
            .lock_holding(manifest.as_ref(), result_key, now)
            .await?
        {
            return Err(RemoveError::Locked {
                mode: lock.mode,
                until: lock.retain_until,
            });
        }
        let manifest_key = Self::manifest_key(result_key);
        match &self.backend {
            Backend::S3(bucket) => {
                for key in [result_key, manifest_key.as_str()] {
                    for version in bucket.versions(key).await? {
                        if let Some(code) = bucket.delete_version(key, &version).await? {
                            return Err(RemoveError::Other(anyhow::anyhow!(
                                "S3 refused to delete version {version} of s3://{}/{key}: {code}",
                                bucket.bucket()
                            )));
                        }
                    }
                }
            }
            _ => match self.store.delete(&Path::from(result_key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => {
                    return Err(RemoveError::Other(
                        anyhow::Error::new(error)
                            .context(format!("deleting {}", self.location(result_key))),
                    ));
                }
            },
        }
        self.write_manifest(
            result_key,
            &serde_json::to_vec_pretty(tombstone).map_err(anyhow::Error::from)?,
        )
        .await?;
        Ok(())
    }

    /// Aborts multipart uploads older than `archive.orphan_upload_age` (left by a crash or a kill):
    /// S3 lists them (an upload counts as old once the store's `Initiated` time and this process's
    /// first sight of it both are, unless `trust_store_times`); the local store's are its
    /// `<name>#<n>` staging files (by modification time). Answers how many. Other stores need a
    /// lifecycle rule (see the README).
    pub async fn abort_orphan_uploads(
        &self,
        now: DateTime<Utc>,
        trust_store_times: bool,
    ) -> anyhow::Result<usize> {
        let cutoff = now - clock_delta(self.settings.orphan_upload_age);
        match &self.backend {
            Backend::S3(bucket) => {
                let pending = bucket.pending_uploads(&self.prefix).await?;
                let old_enough: Vec<_> = {
                    let mut seen = self.uploads_seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.retain(|id, _| pending.iter().any(|u| &u.upload_id == id));
                    pending
                        .into_iter()
                        .filter(|upload| {
                            let first_seen = *seen.entry(upload.upload_id.clone()).or_insert(now);
                            (trust_store_times || first_seen <= cutoff)
                                && upload.initiated.is_some_and(|at| at <= cutoff)
                        })
                        .collect()
                };
                let mut aborted = 0;
                for upload in old_enough {
                    {
                        bucket.abort_upload(&upload.key, &upload.upload_id).await?;
                        tracing::info!(key = upload.key, "aborted an orphaned multipart upload");
                        aborted += 1;
                    }
                }
                Ok(aborted)
            }
            Backend::Local { root, .. } => {
                let root = root.clone();
                let cutoff = std::time::SystemTime::from(cutoff);
                tokio::task::spawn_blocking(move || remove_staging_files(&root, cutoff))
                    .await
                    .context("the orphan clean-up task failed")?
            }
            Backend::Other { .. } => Ok(0),
        }
    }
}

fn clock_delta(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

fn open_s3(
    url: &Url,
    settings: &ArchiveConfig,
) -> anyhow::Result<(object_store::aws::AmazonS3, S3Bucket)> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let sse_key = || {
        "aws_server_side_encryption"
            .parse::<AmazonS3ConfigKey>()
            .expect("object_store knows its SSE key")
    };
    let bucket = url
        .host_str()
        .filter(|b| !b.is_empty())
        .context("invalid configuration: `archive.url` names no bucket (s3://bucket/prefix)")?;
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    if let Some(region) = &settings.region {
        builder = builder.with_region(region);
    }
    if let Some(endpoint) = &settings.endpoint {
        builder = builder
            .with_endpoint(endpoint.as_str().trim_end_matches('/'))
            .with_allow_http(endpoint.scheme() == "http")
            .with_virtual_hosted_style_request(false);
    }
    if let (Some(id), Some(secret)) = (&settings.access_key_id, &settings.secret_access_key) {
        use secrecy::ExposeSecret as _;
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret.expose_secret());
    }
    match settings.server_side_encryption {
        None => {}
        Some(ServerSideEncryption::Aes256) => {
            builder = builder.with_config(sse_key(), "AES256");
        }
        Some(ServerSideEncryption::Kms) => {
            builder = match &settings.sse_kms_key_id {
                Some(key) => builder.with_sse_kms_encryption(key),
                None => builder.with_config(sse_key(), "aws:kms"),
            };
        }
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .map(|e| Url::parse(&e))
        .transpose()
        .context("invalid configuration: the S3 endpoint (`archive.endpoint` or AWS_ENDPOINT) is not a URL")?;
    let store = builder
        .build()
        .context("opening the S3 archive (`archive.url`)")?;
    let bucket = S3Bucket::new(
        store.credentials().clone(),
        &region,
        bucket,
        endpoint.as_ref(),
    )?;
    Ok((store, bucket))
}

/// An instance id becomes a file name: refuse anything that could leave the folder.
/// The longest file name stem [`file_stem`] makes (file systems allow 255 bytes per name).
const STEM_MAX: usize = 200;

/// The file name stem of an instance's result and manifest: the id itself when it holds only
/// ASCII letters, digits, `-` and `_` (every id Mint has been seen to give); otherwise the id with
/// each other character escaped as `_XX` (hex; `_` itself too), ending in `.e`; or, when that
/// would be longer than [`STEM_MAX`], the id's SHA-256 ending in `.h`. Plain names hold no `.`, so
/// no two ids share a name, and no name can leave its folder. Ids that are no instance id at all
/// (empty, `/`, `..`, control characters) are refused.
pub fn file_stem(instance_id: &str) -> anyhow::Result<String> {
    if let Err(error) = mint_client::InstanceId::new(instance_id) {
        bail!("instance id cannot be used as an archive file name: {error}");
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-';
    if instance_id.len() <= STEM_MAX && instance_id.chars().all(|c| plain(c) || c == '_') {
        return Ok(instance_id.to_owned());
    }
    let mut escaped = String::with_capacity(instance_id.len() * 3 + 2);
    for c in instance_id.chars() {
        if plain(c) {
            escaped.push(c);
        } else {
            // Instance ids are ASCII (checked above): one byte each.
            escaped.push_str(&format!("_{:02X}", c as u32));
        }
    }
    escaped.push_str(".e");
    if escaped.len() <= STEM_MAX {
        return Ok(escaped);
    }
    Ok(format!("{}.h", hex::encode(Sha256::digest(instance_id))))
}

/// Whether `stem` is a name [`file_stem`] can make.
fn is_stem(stem: &str) -> bool {
    let (body, suffix) = match stem.rsplit_once('.') {
        Some((body, suffix)) => (body, Some(suffix)),
        None => (stem, None),
    };
    !body.is_empty()
        && stem.len() <= STEM_MAX
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && matches!(suffix, None | Some("e") | Some("h"))
}

/// Creates a folder (and its missing parents) readable by the owner only (or its group).
fn create_private_dirs(path: &FsPath, mode: u32) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, mode);
    #[cfg(not(unix))]
    let _ = mode;
    builder
        .create(path)
        .with_context(|| format!("creating the archive folder {}", path.display()))
}

fn set_mode(path: &FsPath, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting access to {}", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Removes `name#<digits>` files (the local store's unfinished uploads) older than `cutoff`.
fn remove_staging_files(root: &FsPath, cutoff: std::time::SystemTime) -> anyhow::Result<usize> {
    let mut removed = 0;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            if kind.is_dir() {
                folders.push(path);
                continue;
            }
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let staging = name
                .rsplit_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|at| at <= cutoff);
            if kind.is_file() && staging && old {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
                tracing::info!(path = %path.display(), "removed an orphaned upload");
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// The SHA-256 (hex) and length of a file, read in 1 MiB blocks.
pub async fn hash_file(path: &FsPath) -> anyhow::Result<(String, u64)> {
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

/// Passes on the bytes of a window of what is written through it: skips `skip` bytes, then passes
/// `left`, then refuses more (an error that ends the copy early, once the window is full).
struct Window<'w, W> {
    inner: &'w mut W,
    skip: u64,
    left: u64,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Window<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        let skipped = this.skip.min(buf.len() as u64) as usize;
        if skipped == buf.len() {
            this.skip -= skipped as u64;
            return Poll::Ready(Ok(buf.len()));
        }
        if this.left == 0 {
            return Poll::Ready(Err(std::io::Error::other("the range is complete")));
        }
        let passed = (buf.len() - skipped).min(usize::try_from(this.left).unwrap_or(usize::MAX));
        match std::pin::Pin::new(&mut *this.inner).poll_write(cx, &buf[skipped..skipped + passed]) {
            Poll::Ready(Ok(written)) => {
                this.skip -= skipped as u64;
                this.left -= written as u64;
                Poll::Ready(Ok(skipped + written))
            }
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
