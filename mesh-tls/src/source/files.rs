//! [`FileSource`]: PEM files with hot reload.
//!
//! The layout is the one istio-agent writes and gRPC's `file_watcher` certificate provider
//! reads: a directory holding `cert-chain.pem` (leaf first), `key.pem` and `root-cert.pem`.
//! Explicit paths work too.
//!
//! The files are polled (default every second) and compared by content, which is robust to
//! Kubernetes' atomic symlink swaps (`..data` -> `..<timestamp>`), where modification times
//! say nothing useful. Each poll reads the set twice and only acts when both reads agree, so
//! a set caught mid-write is simply looked at again on the next poll. A new set is published
//! only when it is consistent (the key matches the leaf); otherwise the error names the file
//! at fault and the previous identity stays in use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{CertSource, Credentials, IdentityStore, TlsError};

/// File name of the certificate chain in an istio-agent style directory.
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// File name of the private key in an istio-agent style directory.
pub const KEY_FILE: &str = "key.pem";
/// File name of the trust bundle in an istio-agent style directory.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// Where the PEM files are and how often to look at them.
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// The certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// The leaf's private key: PKCS#8, SEC1 (EC) or PKCS#1 (RSA) PEM.
    pub key: PathBuf,
    /// The trust bundle (one or more root certificates).
    pub roots: PathBuf,
    /// How often the files are read (default 1 s).
    pub poll_interval: Duration,
}

impl Default for FileSourceConfig {
    /// The istio-agent file names in the current directory, polled every second.
    fn default() -> Self {
        Self::dir(".")
    }
}

impl FileSourceConfig {
    /// `cert-chain.pem`, `key.pem` and `root-cert.pem` inside `dir`, polled every second.
    pub fn dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        Self {
            cert_chain: dir.join(CERT_CHAIN_FILE),
            key: dir.join(KEY_FILE),
            roots: dir.join(ROOT_CERT_FILE),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Identity from PEM files, reloaded when they change. See the [module docs](self).
///
/// ```no_run
/// # async fn f() {
/// use mesh_tls::IdentityStore;
/// use mesh_tls::source::FileSource;
/// let (store, _task) = IdentityStore::spawn(FileSource::dir("/etc/certs"));
/// let creds = store.ready().await;
/// println!("serving as {}", creds.id);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    config: FileSourceConfig,
    provider: Arc<CryptoProvider>,
}

/// The raw contents of the three files, compared to detect changes.
#[derive(PartialEq, Eq)]
struct Contents {
    chain: Vec<u8>,
    /// Wiped when dropped, as every copy of a key we hold.
    key: zeroize::Zeroizing<Vec<u8>>,
    roots: Vec<u8>,
}

impl FileSource {
    /// A source reading the files named in `config`.
    pub fn new(config: FileSourceConfig) -> Self {
        Self {
            config,
            provider: crate::config::default_provider(),
        }
    }

    /// A source reading the istio-agent layout in `dir`.
    pub fn dir(dir: impl AsRef<Path>) -> Self {
        Self::new(FileSourceConfig::dir(dir))
    }

    /// Uses `provider` to check that the key matches the certificate (default: the crate's
    /// default provider).
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &FileSourceConfig {
        &self.config
    }

    /// Reads and checks the files once.
    pub async fn load(&self) -> Result<Credentials, TlsError> {
        let contents = self.read().await?;
        self.parse(&contents)
    }

    async fn read(&self) -> Result<Contents, TlsError> {
        Ok(Contents {
            chain: read_file(&self.config.cert_chain).await?,
            key: read_file(&self.config.key).await?.into(),
            roots: read_file(&self.config.roots).await?,
        })
    }

    /// Reads the set twice; `None` when the files changed in between (a write in progress).
    async fn read_stable(&self) -> Result<Option<Contents>, TlsError> {
        let first = self.read().await?;
        let second = self.read().await?;
        Ok((first == second).then_some(first))
    }

    fn parse(&self, c: &Contents) -> Result<Credentials, TlsError> {
        let cfg = &self.config;
        let chain = parse_certs(&c.chain, &cfg.cert_chain)?;
        let roots = parse_certs(&c.roots, &cfg.roots)?;
        warn_if_shared(&cfg.key);
        let key = PrivateKeyDer::from_pem_slice(&c.key).map_err(|e| {
            TlsError::decode(
                cfg.key.display().to_string(),
                format!("no PKCS#8, SEC1 or PKCS#1 private key: {e}"),
            )
        })?;
        let what = cfg.cert_chain.display().to_string();
        super::credentials_from_parts(&self.provider, chain, key, roots, &what).map_err(|e| {
            match e {
                // Say which files disagree.
                TlsError::KeyMismatch => TlsError::decode(
                    cfg.key.display().to_string(),
                    format!(
                        "private key does not match the leaf certificate in {}",
                        cfg.cert_chain.display()
                    ),
                ),
                other => other,
            }
        })
    }

    async fn run_loop(self, store: IdentityStore) {
        // The last set looked at, installed or rejected: each set is judged once.
        let mut seen: Option<Contents> = None;
        // The last read error, so a missing file is reported once, not on every poll.
        let mut read_failure: Option<String> = None;
        loop {
            match self.read_stable().await {
                Ok(None) => {} // mid-write: look again next time
                Ok(Some(c)) if seen.as_ref() == Some(&c) => read_failure = None,
                Ok(Some(c)) => {
                    read_failure = None;
                    match self.parse(&c) {
                        // `publish` reports its own rejections to the store.
                        Ok(creds) => {
                            if store.publish(creds).is_ok() {
                                tracing::info!(path = %self.config.cert_chain.display(), "identity files loaded");
                            }
                        }
                        Err(e) => store.report_error(&e),
                    }
                    seen = Some(c);
                }
                Err(e) => {
                    let msg = e.to_string();
                    if read_failure.as_ref() != Some(&msg) {
                        store.report_error(&e);
                        read_failure = Some(msg);
                    }
                }
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}

/// The permission bits of a key file that its group or others may use (`None` when there
/// are none, off Unix, or the file cannot be read). The dev CA refuses such a key.
pub(crate) fn shared_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Warns when others than the owner may read the key file. Not refused: Kubernetes mounts
/// secrets 0644 by default, inside the pod's own filesystem. (The CA's key is refused.)
fn warn_if_shared(key: &Path) {
    if let Some(mode) = shared_mode(key) {
        tracing::warn!(path = %key.display(), mode = format!("{mode:o}"), "private key file is accessible to group or others; chmod 600");
    }
}

impl CertSource for FileSource {
    fn run(self: Box<Self>, store: IdentityStore) -> BoxFuture<'static, ()> {
        Box::pin((*self).run_loop(store))
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path).await.map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::decode(path.display().to_string(), e))?;
    if certs.is_empty() {
        return Err(TlsError::decode(
            path.display().to_string(),
            "no PEM certificate found",
        ));
    }
    Ok(certs)
}
