//! TLS on a listener (native rustls), with a certificate that is replaced without a restart.
//!
//! Certificates are renewed every few weeks (ACME, an internal CA); a restart for each renewal
//! would drop in-flight webhooks. [`ReloadingCertificate`] is rustls's certificate resolver: every
//! handshake takes the pair in service, and a watcher reads both files again every
//! `tls_reload_interval` (and on `SIGHUP`), swapping in a pair that changed only once it has loaded
//! and its key matches its certificate. A half-written or wrong pair is logged and counted, and
//! the previous pair stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

/// The certificate and key files of a listener, and the pair loaded from them.
pub struct ReloadingCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The bytes the pair in service was loaded from, to notice a change.
    loaded_from: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ReloadingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Loads the pair; fails (naming the file, never its content) if it does not load.
    pub fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<Self>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (cert_bytes, key_bytes) = read_pair(cert_file, key_file)?;
        let key = certified_key(&provider, &cert_bytes, &key_bytes, cert_file, key_file)?;
        Ok(Arc::new(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            provider,
            current: RwLock::new(Arc::new(key)),
            loaded_from: Mutex::new((cert_bytes, key_bytes)),
        }))
    }

    /// Reads both files again and puts the pair in service if it changed and loads. Answers
    /// whether it was replaced; on an error the previous pair stays in service.
    pub fn reload(&self) -> anyhow::Result<bool> {
        let (cert_bytes, key_bytes) = read_pair(&self.cert_file, &self.key_file)?;
        {
            let loaded = self.loaded_from.lock().expect("not poisoned");
            if loaded.0 == cert_bytes && loaded.1 == key_bytes {
                return Ok(false);
            }
        }
        let key = certified_key(
            &self.provider,
            &cert_bytes,
            &key_bytes,
            &self.cert_file,
            &self.key_file,
        )?;
        *self.current.write().expect("not poisoned") = Arc::new(key);
        *self.loaded_from.lock().expect("not poisoned") = (cert_bytes, key_bytes);
        Ok(true)
    }

    /// A TLS acceptor that serves the pair in service at each handshake (HTTP/1.1 only).
    pub fn acceptor(self: &Arc<Self>) -> anyhow::Result<TlsAcceptor> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .context("choosing TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Reloads every `interval` and on `SIGHUP`, until `shutdown`.
    pub fn spawn_watcher(
        self: Arc<Self>,
        interval: Duration,
        listener: &'static str,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                #[cfg(unix)]
                let signal = async {
                    match hangup.as_mut() {
                        Some(signal) => {
                            signal.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                #[cfg(not(unix))]
                let signal = std::future::pending::<()>();
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = signal => {}
                    () = shutdown.cancelled() => return,
                }
                match self.reload() {
                    Ok(false) => {}
                    Ok(true) => {
                        crate::metrics::tls_reloaded(listener, "replaced");
                        tracing::info!(
                            listener,
                            cert_file = %self.cert_file.display(),
                            "TLS certificate replaced"
                        );
                    }
                    Err(error) => {
                        crate::metrics::tls_reloaded(listener, "failed");
                        tracing::error!(
                            listener,
                            error = format!("{error:#}"),
                            "TLS certificate not replaced; the previous one stays in service"
                        );
                    }
                }
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("not poisoned").clone())
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let cert = std::fs::read(cert_file)
        .with_context(|| format!("reading the TLS certificate {}", cert_file.display()))?;
    let key = std::fs::read(key_file)
        .with_context(|| format!("reading the TLS key {}", key_file.display()))?;
    Ok((cert, key))
}

fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    cert_bytes: &[u8],
    key_bytes: &[u8],
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{} is not a PEM certificate chain", cert_file.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no PEM certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_slice(key_bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{} is not a PEM private key", key_file.display()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{} is not a usable private key", key_file.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "the key {} does not belong to the certificate {}",
            key_file.display(),
            cert_file.display()
        )
    })?;
    Ok(certified)
}
