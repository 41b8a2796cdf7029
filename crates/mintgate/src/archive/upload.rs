//! One result file on its way into the archive: a writer that mint-client's downloader streams
//! into, hashing the result (SHA-256) and, with client-side encryption, sealing it as it goes, and
//! feeding a multipart upload whose memory is bounded by `part_bytes × (part_concurrency + 1)`.
//!
//! Nothing is visible in the store until [`ResultUpload::finish`] completes the upload: a crash
//! before that leaves at most an unfinished multipart upload (aborted on error; left by a kill -9
//! until [`super::Archive::abort_orphan_uploads`] or a lifecycle rule removes it).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use anyhow::Context as _;
use object_store::path::Path;
use object_store::{ObjectStore, PutMultipartOptions, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWrite;

use super::crypto::{Keyring, Sealer};

/// What was uploaded, as the upload itself measured it.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub key: String,
    /// SHA-256 (hex) and length of the result as received (before encryption).
    pub sha256: String,
    pub bytes: u64,
    /// SHA-256 (hex) and length of the stored object (after encryption; the same without it).
    pub stored_sha256: String,
    pub stored_bytes: u64,
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// A streaming upload; see the module documentation.
pub struct ResultUpload {
    store: Arc<dyn ObjectStore>,
    key: Path,
    pub(super) attributes: object_store::Attributes,
    part_bytes: usize,
    part_concurrency: usize,
    keys: Arc<Keyring>,
    writer: Option<WriteMultipart>,
    sealer: Option<Sealer>,
    plain: Sha256,
    plain_bytes: u64,
    stored: Sha256,
    stored_bytes: u64,
}

impl std::fmt::Debug for ResultUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultUpload")
            .field("key", &self.key.as_ref())
            .field("plain_bytes", &self.plain_bytes)
            .finish_non_exhaustive()
    }
}

impl ResultUpload {
    pub(super) async fn begin(
        store: Arc<dyn ObjectStore>,
        key: Path,
        attributes: object_store::Attributes,
        part_bytes: usize,
        part_concurrency: usize,
        keys: Arc<Keyring>,
    ) -> anyhow::Result<Self> {
        let mut upload = Self {
            store,
            key,
            attributes,
            part_bytes,
            part_concurrency,
            keys,
            writer: None,
            sealer: None,
            plain: Sha256::new(),
            plain_bytes: 0,
            stored: Sha256::new(),
            stored_bytes: 0,
        };
        upload.open().await?;
        Ok(upload)
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        let multipart = self
            .store
            .put_multipart_opts(
                &self.key,
                PutMultipartOptions {
                    attributes: self.attributes.clone(),
                    ..PutMultipartOptions::default()
                },
            )
            .await
            .with_context(|| format!("starting the upload of {}", self.key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(multipart, self.part_bytes);
        self.plain = Sha256::new();
        self.plain_bytes = 0;
        self.stored = Sha256::new();
        self.stored_bytes = 0;
        self.sealer = self.keys.current().map(Sealer::new);
        if let Some(sealer) = &self.sealer {
            let header = sealer.header().to_vec();
            self.stored.update(&header);
            self.stored_bytes += header.len() as u64;
            writer.write(&header);
        }
        self.writer = Some(writer);
        Ok(())
    }

    /// Bytes of the result received so far.
    pub fn bytes(&self) -> u64 {
        self.plain_bytes
    }

    /// Completes the upload: the object becomes visible, whole, at once.
    pub async fn finish(mut self) -> anyhow::Result<Uploaded> {
        let mut writer = self
            .writer
            .take()
            .context("the upload was already closed")?;
        if let Some(sealer) = self.sealer.take() {
            let (stored, stored_bytes) = (&mut self.stored, &mut self.stored_bytes);
            sealer.finish(&mut |sealed| {
                stored.update(sealed);
                *stored_bytes += sealed.len() as u64;
                writer.write(sealed);
            });
        }
        let result = writer
            .finish()
            .await
            .with_context(|| format!("completing the upload of {}", self.key))?;
        let sha256 = hex::encode(self.plain.finalize_reset());
        let stored_sha256 = if self.keys.current().is_some() {
            hex::encode(self.stored.finalize_reset())
        } else {
            sha256.clone()
        };
        Ok(Uploaded {
            key: self.key.to_string(),
            sha256,
            bytes: self.plain_bytes,
            stored_sha256,
            stored_bytes: self.stored_bytes,
            e_tag: result.e_tag,
            version: result.version,
        })
    }

    /// Gives up: the parts uploaded so far are freed (best effort; a crash leaves them to the
    /// orphan clean-up).
    pub async fn abort(mut self) {
        if let Some(writer) = self.writer.take()
            && let Err(error) = writer.abort().await
        {
            tracing::warn!(key = %self.key, %error, "could not abort an unfinished upload; the orphan clean-up will");
        }
    }
}

impl AsyncWrite for ResultUpload {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(writer) = this.writer.as_mut() else {
            return Poll::Ready(Err(io::Error::other("the upload is closed")));
        };
        // Back-pressure: at most `part_concurrency` parts in flight, one more filling.
        ready!(writer.poll_for_capacity(cx, this.part_concurrency)).map_err(io::Error::other)?;
        this.plain.update(buf);
        this.plain_bytes += buf.len() as u64;
        match &mut this.sealer {
            Some(sealer) => {
                let (stored, stored_bytes) = (&mut this.stored, &mut this.stored_bytes);
                sealer.push(buf, &mut |sealed| {
                    stored.update(sealed);
                    *stored_bytes += sealed.len() as u64;
                    writer.write(sealed);
                });
            }
            None => {
                this.stored_bytes += buf.len() as u64;
                writer.write(buf);
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parts go out as they fill; completing the upload is `finish`.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl mint_client::RestartableWrite for ResultUpload {
    /// A download that must start over from byte zero: abort this multipart upload, begin another.
    async fn restart(&mut self) -> io::Result<()> {
        if let Some(writer) = self.writer.take() {
            writer.abort().await.map_err(io::Error::other)?;
        }
        self.open().await.map_err(io::Error::other)
    }
}
