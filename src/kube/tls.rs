//! The webhook's serving certificate: read from PEM files (a Secret that cert-manager or the chart writes), read
//! again when either file changes, so that a rotated certificate is served without a restart. A file that does not
//! parse is refused at start (with the file named) and, later, keeps the certificate already loaded (logged and
//! counted): a bad rotation never takes the webhook down.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Pem { file: PathBuf, message: String },
    #[error("the key in {key} does not fit rustls ({message})")]
    Key { key: PathBuf, message: String },
}

/// The certificate being served, replaced when its files change.
#[derive(Debug)]
pub struct Reloading {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Reloading {
    /// Loads the pair once; an error here stops the webhook before it serves.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, Error> {
        let key = certified_key(cert_file, key_file)?;
        Ok(Arc::new(Reloading {
            cert_file: cert_file.to_path_buf(),
            key_file: key_file.to_path_buf(),
            current: RwLock::new((Arc::new(key), changed_at(cert_file, key_file))),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }))
    }

    /// The rustls configuration that serves the current certificate (HTTP/1.1: what the API server speaks to
    /// webhooks).
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut c = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        c
    }

    /// Reads the files again if either changed since the last load.
    pub fn reload_if_changed(&self) {
        let stamp = changed_at(&self.cert_file, &self.key_file);
        let loaded = self.current.read().map(|c| c.1).unwrap_or(None);
        if stamp == loaded {
            return;
        }
        match certified_key(&self.cert_file, &self.key_file) {
            Ok(k) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(k), stamp);
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(cert = %self.cert_file.display(), "Serving the changed TLS certificate");
            }
            Err(e) => {
                // Count each change once: remember the stamp, keep the old certificate.
                if let Ok(mut c) = self.current.write() {
                    c.1 = stamp;
                }
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "The TLS files changed but do not load; still serving the previous certificate");
            }
        }
    }

    /// Checks the files every `every` until shutdown.
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => self.reload_if_changed(),
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

fn changed_at(cert: &Path, key: &Path) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // Kubernetes updates a mounted Secret by swapping a symlink: the newer of the two files is the stamp.
    m(cert).max(m(key))
}

fn certified_key(cert_file: &Path, key_file: &Path) -> Result<CertifiedKey, Error> {
    let read = |f: &Path| {
        std::fs::read(f).map_err(|source| Error::Read {
            file: f.to_path_buf(),
            source,
        })
    };
    let pem = |f: &Path, message: String| Error::Pem {
        file: f.to_path_buf(),
        message,
    };
    let cert_pem = read(cert_file)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert_file, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(pem(cert_file, "holds no CERTIFICATE block".into()));
    }
    let key_pem = read(key_file)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| pem(key_file, format!("not a PEM private key: {e}")))?
        .ok_or_else(|| pem(key_file, "holds no PRIVATE KEY block".into()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| Error::Key {
        key: key_file.to_path_buf(),
        message: e.to_string(),
    })?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match().map_err(|e| Error::Key {
        key: key_file.to_path_buf(),
        message: format!("it is not the certificate's key: {e}"),
    })?;
    Ok(ck)
}
