//! The S3 calls `object_store` does not make: object tags, Object Lock retention, object versions,
//! listing and aborting multipart uploads, and creating a bucket (tests and benchmarks).
//!
//! Each request is signed with `object_store`'s own SigV4 signer ([`AwsAuthorizer`]) and the
//! credentials of the store it accompanies, so both speak to the bucket as the same principal.
//! Every `x-amz-…` header is present when the request is signed (S3 refuses unsigned ones).

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::HttpRequest;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use url::Url;

use super::settings::LockMode;

/// A bucket, addressed path-style at an endpoint or virtual-hosted at AWS.
#[derive(Clone)]
pub struct S3Bucket {
    http: reqwest::Client,
    credentials: AwsCredentialProvider,
    region: String,
    bucket: String,
    /// `…/bucket/` (path style) or `https://bucket.s3.region.amazonaws.com/`.
    base: Url,
}

impl std::fmt::Debug for S3Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Bucket")
            .field("bucket", &self.bucket)
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// An answer: status, headers, body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// S3's error code (`NoSuchKey`, `AccessDenied`, …), if the body is an error document.
    pub fn error_code(&self) -> Option<String> {
        let text = std::str::from_utf8(&self.body).ok()?;
        let start = text.find("<Code>")? + "<Code>".len();
        let end = text[start..].find("</Code>")? + start;
        Some(text[start..end].to_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A multipart upload in progress (or abandoned by a crash).
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub key: String,
    pub upload_id: String,
    pub initiated: Option<DateTime<Utc>>,
}

/// What `HEAD` says about an object.
#[derive(Debug, Clone, Default)]
pub struct ObjectHead {
    pub bytes: u64,
    pub server_side_encryption: Option<String>,
    pub sse_kms_key_id: Option<String>,
    pub lock_mode: Option<LockMode>,
    pub retain_until: Option<DateTime<Utc>>,
    pub version_id: Option<String>,
    /// `x-amz-meta-…` headers, names without the prefix.
    pub metadata: Vec<(String, String)>,
}

impl S3Bucket {
    pub fn new(
        credentials: AwsCredentialProvider,
        region: &str,
        bucket: &str,
        endpoint: Option<&Url>,
    ) -> anyhow::Result<Self> {
        let base = match endpoint {
            Some(endpoint) => {
                let mut base = endpoint.clone();
                let path = format!("{}/{bucket}/", endpoint.path().trim_end_matches('/'));
                base.set_path(&path);
                base
            }
            None => Url::parse(&format!("https://{bucket}.s3.{region}.amazonaws.com/"))
                .context("the bucket name does not make a valid host name")?,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client for S3")?;
        Ok(Self {
            http,
            credentials,
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            base,
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    fn url(&self, key: &str, query: &[(&str, &str)]) -> anyhow::Result<Url> {
        let mut url = self
            .base
            .join(key)
            .context("an object key that is not a URL path")?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// Sends one signed request.
    pub async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Bytes,
    ) -> anyhow::Result<Answer> {
        let url = self.url(key, query)?;
        let mut request = HttpRequest::new(body.clone().into());
        *request.method_mut() = method.clone();
        *request.uri_mut() = url.as_str().parse().context("an S3 URL")?;
        for (name, value) in headers {
            request.headers_mut().insert(
                HeaderName::from_bytes(name.as_bytes()).context("a header name")?,
                HeaderValue::from_str(value).context("a header value")?,
            );
        }
        let credential = self
            .credentials
            .get_credential()
            .await
            .context("getting S3 credentials")?;
        AwsAuthorizer::new(&credential, "s3", &self.region)
            .try_authorize(&mut request, None)
            .context("signing an S3 request")?;
        let mut builder = self.http.request(method.clone(), url.as_str());
        for (name, value) in request.headers() {
            builder = builder.header(name, value);
        }
        let response = builder
            .body(body)
            .send()
            .await
            .with_context(|| format!("{method} {} (S3)", redact_query(&url)))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.context("reading an S3 answer")?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn expect_ok(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, String)],
        body: Bytes,
        what: &str,
    ) -> anyhow::Result<Answer> {
        let answer = self.send(method, key, query, headers, body).await?;
        if !answer.status.is_success() {
            bail!(
                "{what} on s3://{}/{key} failed: HTTP {} {}",
                self.bucket,
                answer.status.as_u16(),
                answer.error_code().unwrap_or_default()
            );
        }
        Ok(answer)
    }

    /// `HEAD`: `None` if there is no such object.
    pub async fn head(&self, key: &str) -> anyhow::Result<Option<ObjectHead>> {
        let answer = self.send(Method::HEAD, key, &[], &[], Bytes::new()).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            bail!(
                "HEAD s3://{}/{key} failed: HTTP {}",
                self.bucket,
                answer.status.as_u16()
            );
        }
        let metadata = answer
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        Ok(Some(ObjectHead {
            bytes: answer
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            server_side_encryption: answer
                .header("x-amz-server-side-encryption")
                .map(str::to_owned),
            sse_kms_key_id: answer
                .header("x-amz-server-side-encryption-aws-kms-key-id")
                .map(str::to_owned),
            lock_mode: answer
                .header("x-amz-object-lock-mode")
                .and_then(LockMode::parse),
            retain_until: answer
                .header("x-amz-object-lock-retain-until-date")
                .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                .map(|d| d.with_timezone(&Utc)),
            version_id: answer.header("x-amz-version-id").map(str::to_owned),
            metadata,
        }))
    }

    /// Replaces the object's tags.
    pub async fn put_tags(&self, key: &str, tags: &[(&str, &str)]) -> anyhow::Result<()> {
        let mut xml = String::from("<Tagging><TagSet>");
        for (k, v) in tags {
            xml.push_str(&format!(
                "<Tag><Key>{}</Key><Value>{}</Value></Tag>",
                escape(k),
                escape(v)
            ));
        }
        xml.push_str("</TagSet></Tagging>");
        let body = Bytes::from(xml);
        let headers = [("x-amz-checksum-sha256", checksum(&body))];
        self.expect_ok(
            Method::PUT,
            key,
            &[("tagging", "")],
            &headers,
            body,
            "PutObjectTagging",
        )
        .await?;
        Ok(())
    }

    /// The object's tags.
    pub async fn tags(&self, key: &str) -> anyhow::Result<Vec<(String, String)>> {
        #[derive(Deserialize)]
        struct Tagging {
            #[serde(rename = "TagSet")]
            tag_set: TagSet,
        }
        #[derive(Deserialize)]
        struct TagSet {
            #[serde(rename = "Tag", default)]
            tags: Vec<Tag>,
        }
        #[derive(Deserialize)]
        struct Tag {
            #[serde(rename = "Key")]
            key: String,
            #[serde(rename = "Value")]
            value: String,
        }
        let answer = self
            .expect_ok(
                Method::GET,
                key,
                &[("tagging", "")],
                &[],
                Bytes::new(),
                "GetObjectTagging",
            )
            .await?;
        let tagging: Tagging = quick_xml::de::from_reader(answer.body.as_ref())
            .context("reading the tags S3 answered")?;
        Ok(tagging
            .tag_set
            .tags
            .into_iter()
            .map(|t| (t.key, t.value))
            .collect())
    }

    /// Sets Object Lock retention on the object's current version.
    pub async fn put_retention(
        &self,
        key: &str,
        mode: LockMode,
        until: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let xml = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.header_value(),
            until.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let body = Bytes::from(xml);
        let headers = [("x-amz-checksum-sha256", checksum(&body))];
        self.expect_ok(
            Method::PUT,
            key,
            &[("retention", "")],
            &headers,
            body,
            "PutObjectRetention",
        )
        .await?;
        Ok(())
    }

    /// Every version (and delete marker) of exactly this key.
    pub async fn versions(&self, key: &str) -> anyhow::Result<Vec<String>> {
        #[derive(Deserialize)]
        struct ListVersionsResult {
            #[serde(rename = "$value", default)]
            entries: Vec<Entry>,
        }
        #[derive(Deserialize)]
        enum Entry {
            Version(VersionEntry),
            DeleteMarker(VersionEntry),
            #[serde(other)]
            Other,
        }
        #[derive(Deserialize)]
        struct VersionEntry {
            #[serde(rename = "Key")]
            key: String,
            #[serde(rename = "VersionId")]
            version_id: String,
        }
        let mut out = Vec::new();
        let answer = self
            .expect_ok(
                Method::GET,
                "",
                &[("versions", ""), ("prefix", key)],
                &[],
                Bytes::new(),
                "ListObjectVersions",
            )
            .await?;
        let list: ListVersionsResult = quick_xml::de::from_reader(answer.body.as_ref())
            .context("reading the versions S3 answered")?;
        for entry in list.entries {
            if let Entry::Version(v) | Entry::DeleteMarker(v) = entry
                && v.key == key
            {
                out.push(v.version_id);
            }
        }
        Ok(out)
    }

    /// Deletes one version for good. Answers the S3 error code if S3 refused (e.g. `AccessDenied`
    /// under a retention lock).
    pub async fn delete_version(
        &self,
        key: &str,
        version_id: &str,
    ) -> anyhow::Result<Option<String>> {
        let answer = self
            .send(
                Method::DELETE,
                key,
                &[("versionId", version_id)],
                &[],
                Bytes::new(),
            )
            .await?;
        if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(answer.error_code().unwrap_or_else(|| {
            format!("HTTP {}", answer.status.as_u16())
        })))
    }

    /// Deletes the key (a delete marker in a versioned bucket).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        let answer = self
            .send(Method::DELETE, key, &[], &[], Bytes::new())
            .await?;
        if !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
            bail!(
                "DELETE s3://{}/{key} failed: HTTP {} {}",
                self.bucket,
                answer.status.as_u16(),
                answer.error_code().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Multipart uploads in progress under a prefix.
    pub async fn pending_uploads(&self, prefix: &str) -> anyhow::Result<Vec<PendingUpload>> {
        #[derive(Deserialize)]
        struct ListMultipartUploadsResult {
            #[serde(rename = "Upload", default)]
            uploads: Vec<Upload>,
        }
        #[derive(Deserialize)]
        struct Upload {
            #[serde(rename = "Key")]
            key: String,
            #[serde(rename = "UploadId")]
            upload_id: String,
            #[serde(rename = "Initiated")]
            initiated: Option<String>,
        }
        let answer = self
            .expect_ok(
                Method::GET,
                "",
                &[("uploads", ""), ("prefix", prefix)],
                &[],
                Bytes::new(),
                "ListMultipartUploads",
            )
            .await?;
        let list: ListMultipartUploadsResult = quick_xml::de::from_reader(answer.body.as_ref())
            .context("reading the multipart uploads S3 answered")?;
        Ok(list
            .uploads
            .into_iter()
            .map(|u| PendingUpload {
                key: u.key,
                upload_id: u.upload_id,
                initiated: u
                    .initiated
                    .and_then(|t: String| DateTime::parse_from_rfc3339(&t).ok())
                    .map(|d| d.with_timezone(&Utc)),
            })
            .collect())
    }

    /// Aborts a multipart upload (its parts are freed).
    pub async fn abort_upload(&self, key: &str, upload_id: &str) -> anyhow::Result<()> {
        let answer = self
            .send(
                Method::DELETE,
                key,
                &[("uploadId", upload_id)],
                &[],
                Bytes::new(),
            )
            .await?;
        if !(answer.status.is_success() || answer.status == StatusCode::NOT_FOUND) {
            bail!(
                "AbortMultipartUpload on s3://{}/{key} failed: HTTP {}",
                self.bucket,
                answer.status.as_u16()
            );
        }
        Ok(())
    }

    /// Creates the bucket (tests, benchmarks), with Object Lock (and so versioning) if asked.
    pub async fn create(&self, object_lock: bool) -> anyhow::Result<()> {
        let mut headers = Vec::new();
        if object_lock {
            headers.push(("x-amz-bucket-object-lock-enabled", "true".to_owned()));
        }
        let body = if self.region == "us-east-1" {
            Bytes::new()
        } else {
            Bytes::from(format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            ))
        };
        self.expect_ok(Method::PUT, "", &[], &headers, body, "CreateBucket")
            .await?;
        Ok(())
    }
}

/// `x-amz-checksum-sha256` of a body (S3 wants a checksum on retention and tagging requests).
fn checksum(body: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn redact_query(url: &Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.to_string()
}
