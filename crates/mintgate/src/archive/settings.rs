//! The `[archive]` settings: where result files are kept, how they are uploaded, encrypted, locked,
//! retained and protected on disk.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;

/// S3 needs at least 5 MiB in every part but the last.
pub const PART_BYTES_MIN: usize = 5 * 1024 * 1024;

/// `[archive]`: the long-term store of result files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// `file:///var/lib/mintgate/archive` (the embedded default: `service.archive_dir`),
    /// `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`. Credentials come from
    /// each cloud's usual environment variables (`AWS_ACCESS_KEY_ID`, `GOOGLE_APPLICATION_CREDENTIALS`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, …).
    pub url: Option<Url>,
    /// An S3-compatible endpoint (MinIO, Ceph, moto), e.g. `http://127.0.0.1:5055`; path-style
    /// requests. Unset: AWS itself (or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<Url>,
    /// The bucket's region (S3); unset: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Explicit S3 credentials (S3-compatible stores); unset: the AWS environment variables.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    /// Size of one multipart upload part. Memory held by an upload is about
    /// `part_bytes × (part_concurrency + 1)`.
    pub part_bytes: usize,
    /// Parts uploaded at the same time.
    pub part_concurrency: usize,
    /// How an upload is verified before the execution is recorded `archived`.
    pub verify: VerifyMode,
    /// Server-side encryption by the store (S3): `aes256` (SSE-S3) or `kms` (SSE-KMS).
    pub server_side_encryption: Option<ServerSideEncryption>,
    /// The KMS key of SSE-KMS; unset: the bucket's default AWS-managed key.
    pub sse_kms_key_id: Option<String>,
    /// Client-side envelope encryption: a bucket leak then leaks nothing.
    pub encryption: Option<ClientEncryption>,
    /// S3 Object Lock retention set on every archived result (the bucket must have Object Lock
    /// enabled).
    pub object_lock: Option<ObjectLockSettings>,
    /// How long results are kept; the purge job deletes them afterwards (the ledger stays).
    pub retention: Option<RetentionPolicy>,
    /// Local archive: let the owning group read files and folders (0640/0750 instead of 0600/0700).
    pub group_access: bool,
    /// Multipart uploads left behind by a crash are aborted once this old.
    #[serde(with = "humantime_serde")]
    pub orphan_upload_age: Duration,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            url: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            part_bytes: 8 * 1024 * 1024,
            part_concurrency: 4,
            verify: VerifyMode::ReadBack,
            server_side_encryption: None,
            sse_kms_key_id: None,
            encryption: None,
            object_lock: None,
            retention: None,
            group_access: false,
            orphan_upload_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// How an archived object is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Read the object back (decrypting it), hash it and compare: the default.
    ReadBack,
    /// Trust the store's answer: size and metadata from `HEAD` only (large files, slow links).
    Head,
}

/// Server-side encryption at rest (S3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerSideEncryption {
    /// SSE-S3 (`AES256`).
    Aes256,
    /// SSE-KMS (`aws:kms`), with `sse_kms_key_id` or the bucket's default key.
    Kms,
}

impl ServerSideEncryption {
    /// The value of `x-amz-server-side-encryption`.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Aes256 => "AES256",
            Self::Kms => "aws:kms",
        }
    }
}

/// Client-side envelope encryption: one random data key per object, wrapped by the master key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientEncryption {
    /// The master key's name, written in every object header and manifest (rotate by changing both
    /// the key and its id; keep old keys in `previous_keys` to read old objects).
    pub key_id: String,
    /// The master key: 32 bytes as 64 hex digits or base64 (`MINTGATE_ARCHIVE__ENCRYPTION__KEY`).
    pub key: Option<SecretString>,
    /// A file holding the master key (hex or base64), readable by the service only.
    pub key_file: Option<PathBuf>,
    /// Older master keys (by key id), to read objects encrypted before a rotation.
    #[serde(default)]
    pub previous_keys: Vec<PreviousKey>,
}

/// A master key kept for reading only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousKey {
    pub key_id: String,
    pub key: Option<SecretString>,
    pub key_file: Option<PathBuf>,
}

/// Object Lock mode (S3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    /// Users with `s3:BypassGovernanceRetention` may still delete.
    Governance,
    /// Nobody can delete or shorten it until the date, not even the root account.
    Compliance,
}

impl LockMode {
    pub fn header_value(self) -> &'static str {
        match self {
            Self::Governance => "GOVERNANCE",
            Self::Compliance => "COMPLIANCE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "GOVERNANCE" => Some(Self::Governance),
            "COMPLIANCE" => Some(Self::Compliance),
            _ => None,
        }
    }
}

/// `[archive.object_lock]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectLockSettings {
    pub mode: LockMode,
    /// Retained until `archived_at + retain_for` (e.g. `"5years"`).
    #[serde(with = "humantime_serde")]
    pub retain_for: Duration,
}

/// `[archive.retention]`: the purge policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Results are deleted this long after they were archived (e.g. `"5years"`).
    #[serde(with = "humantime_serde")]
    pub keep_for: Duration,
    /// How often `serve` runs the purge job.
    #[serde(with = "humantime_serde", default = "default_purge_interval")]
    pub purge_interval: Duration,
}

fn default_purge_interval() -> Duration {
    Duration::from_secs(3600)
}

/// Serialized as the effective configuration shows it: secrets redacted (see [`ArchiveConfig::redacted`]).
impl Serialize for ArchiveConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.redacted().serialize(serializer)
    }
}

impl ArchiveConfig {
    /// Checks what types alone cannot; every error names the key, never a secret.
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(url) = &self.url
            && !matches!(
                url.scheme(),
                "file" | "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" | "memory"
            )
        {
            bail!(
                "invalid configuration: `archive.url` must be file://, s3://, gs:// or az://; got a {}:// URL",
                url.scheme()
            );
        }
        if let Some(endpoint) = &self.endpoint
            && !matches!(endpoint.scheme(), "http" | "https")
        {
            bail!("invalid configuration: `archive.endpoint` must be an http(s) URL");
        }
        if self.part_bytes < PART_BYTES_MIN || self.part_bytes > 512 * 1024 * 1024 {
            bail!(
                "invalid configuration: `archive.part_bytes` must be between 5 MiB ({PART_BYTES_MIN}) and 512 MiB"
            );
        }
        if self.part_concurrency == 0 || self.part_concurrency > 64 {
            bail!("invalid configuration: `archive.part_concurrency` must be between 1 and 64");
        }
        if self.sse_kms_key_id.is_some()
            && self.server_side_encryption != Some(ServerSideEncryption::Kms)
        {
            bail!(
                "invalid configuration: `archive.sse_kms_key_id` needs `archive.server_side_encryption = \"kms\"`"
            );
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            bail!(
                "invalid configuration: `archive.access_key_id` and `archive.secret_access_key` go together"
            );
        }
        if let Some(encryption) = &self.encryption {
            check_key_id("archive.encryption.key_id", &encryption.key_id)?;
            if encryption.key.is_some() == encryption.key_file.is_some() {
                bail!(
                    "invalid configuration: `archive.encryption` needs exactly one of `key` (MINTGATE_ARCHIVE__ENCRYPTION__KEY) and `key_file`"
                );
            }
            for (i, old) in encryption.previous_keys.iter().enumerate() {
                check_key_id(
                    &format!("archive.encryption.previous_keys[{i}].key_id"),
                    &old.key_id,
                )?;
                if old.key.is_some() == old.key_file.is_some() {
                    bail!(
                        "invalid configuration: `archive.encryption.previous_keys[{i}]` needs exactly one of `key` and `key_file`"
                    );
                }
            }
        }
        if let Some(lock) = &self.object_lock
            && lock.retain_for < Duration::from_secs(24 * 3600)
        {
            bail!("invalid configuration: `archive.object_lock.retain_for` must be at least 1 day");
        }
        if let Some(retention) = &self.retention {
            if retention.keep_for < Duration::from_secs(24 * 3600) {
                bail!("invalid configuration: `archive.retention.keep_for` must be at least 1 day");
            }
            if let Some(lock) = &self.object_lock
                && lock.retain_for > retention.keep_for
            {
                bail!(
                    "invalid configuration: `archive.object_lock.retain_for` is longer than `archive.retention.keep_for`; the purge job could never delete a locked result"
                );
            }
            if retention.purge_interval < Duration::from_secs(1) {
                bail!(
                    "invalid configuration: `archive.retention.purge_interval` must be at least 1s"
                );
            }
        }
        Ok(())
    }

    /// The settings as JSON with every secret replaced by `[redacted]` (for the start-up log line).
    pub fn redacted(&self) -> serde_json::Value {
        let redact = |s: &SecretString| {
            if s.expose_secret().is_empty() {
                ""
            } else {
                "[redacted]"
            }
        };
        serde_json::json!({
            "url": self.url.as_ref().map(redact_url),
            "endpoint": self.endpoint.as_ref().map(redact_url),
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key.as_ref().map(redact),
            "part_bytes": self.part_bytes,
            "part_concurrency": self.part_concurrency,
            "verify": self.verify,
            "server_side_encryption": self.server_side_encryption,
            "sse_kms_key_id": self.sse_kms_key_id,
            "encryption": self.encryption.as_ref().map(|e| serde_json::json!({
                "key_id": e.key_id,
                "key": e.key.as_ref().map(redact),
                "key_file": e.key_file,
                "previous_keys": e.previous_keys.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>(),
            })),
            "object_lock": self.object_lock,
            "retention": self.retention,
            "group_access": self.group_access,
            "orphan_upload_age": humantime::format_duration(self.orphan_upload_age).to_string(),
        })
    }
}

fn check_key_id(key: &str, id: &str) -> anyhow::Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'));
    if !ok {
        bail!(
            "invalid configuration: `{key}` must be 1 to 64 letters, digits, '-', '_', '.' or ':'"
        );
    }
    Ok(())
}

/// A URL without its password (or query, which may carry a SAS token).
pub fn redact_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("redacted"));
    }
    if url.query().is_some() {
        url.set_query(Some("redacted"));
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_settings_are_valid() {
        ArchiveConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_settings_name_their_key_and_never_a_secret() {
        let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases: Vec<(ArchiveConfig, &str)> = vec![
            (
                ArchiveConfig {
                    url: Some(Url::parse("ftp://x/y").unwrap()),
                    ..ArchiveConfig::default()
                },
                "archive.url",
            ),
            (
                ArchiveConfig {
                    part_bytes: 1024,
                    ..ArchiveConfig::default()
                },
                "archive.part_bytes",
            ),
            (
                ArchiveConfig {
                    sse_kms_key_id: Some("k".into()),
                    ..ArchiveConfig::default()
                },
                "archive.sse_kms_key_id",
            ),
            (
                ArchiveConfig {
                    encryption: Some(ClientEncryption {
                        key_id: "bad id!".into(),
                        key: Some(SecretString::from(secret)),
                        key_file: None,
                        previous_keys: vec![],
                    }),
                    ..ArchiveConfig::default()
                },
                "archive.encryption.key_id",
            ),
            (
                ArchiveConfig {
                    object_lock: Some(ObjectLockSettings {
                        mode: LockMode::Compliance,
                        retain_for: Duration::from_secs(10 * 24 * 3600),
                    }),
                    retention: Some(RetentionPolicy {
                        keep_for: Duration::from_secs(2 * 24 * 3600),
                        purge_interval: Duration::from_secs(60),
                    }),
                    ..ArchiveConfig::default()
                },
                "archive.object_lock.retain_for",
            ),
        ];
        for (config, key) in cases {
            let error = config.validate().unwrap_err().to_string();
            assert!(error.contains(key), "{key}: {error}");
            assert!(!error.contains(secret), "{error}");
        }
    }

    #[test]
    fn the_redacted_settings_hold_no_secret() {
        let config = ArchiveConfig {
            secret_access_key: Some(SecretString::from("s3-secret-value")),
            access_key_id: Some("AKIA".into()),
            encryption: Some(ClientEncryption {
                key_id: "k1".into(),
                key: Some(SecretString::from("master-key-value")),
                key_file: None,
                previous_keys: vec![],
            }),
            ..ArchiveConfig::default()
        };
        let text = config.redacted().to_string();
        assert!(!text.contains("s3-secret-value"), "{text}");
        assert!(!text.contains("master-key-value"), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
