//! [`IdentityStore`]: the current credentials of this workload, fed by a [`CertSource`]
//! and read by every new TLS connection.
//!
//! The store fails closed: before the first certificate and after the current one expires,
//! [`IdentityStore::current`] returns `None` and acceptors/connectors refuse to handshake.
//! A failed renewal keeps the still-valid certificate.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::{Credentials, TlsError};

/// Where credentials come from: files, the Istio CA, the SPIFFE Workload API, the dev CA.
///
/// A source runs for as long as the store needs it, publishing every new set of
/// credentials with [`IdentityStore::publish`] and every failure with
/// [`IdentityStore::report_error`]. One-shot issuers (CSR-based CAs) implement
/// [`CertProvider`] instead and are driven by [`crate::rotation::Rotation`].
pub trait CertSource: Send + 'static {
    /// Runs the source until the returned future is dropped.
    fn run(self: Box<Self>, store: IdentityStore) -> BoxFuture<'static, ()>;
}

/// A one-shot issuer: each call returns freshly issued credentials (new key, new
/// certificate). Wrapped by [`crate::rotation::Rotation`] for renewal at half life.
pub trait CertProvider: Send + Sync + 'static {
    /// Issues credentials.
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, TlsError>>;
}

/// Where the workload's identity stands, for metrics and readiness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityStatus {
    /// No certificate yet.
    Initializing,
    /// A valid certificate is in use.
    Available {
        /// The identity.
        id: String,
        /// When the certificate expires.
        not_after: SystemTime,
    },
    /// The certificate expired and no new one arrived.
    Unavailable {
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Clone, Default)]
struct Health {
    /// Count of credential sets published.
    rotations: u64,
    /// Count of failures reported by the source.
    failures: u64,
    /// The latest failure, cleared by a successful publish.
    last_error: Option<String>,
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityStats {
    /// Credential sets published so far.
    pub rotations: u64,
    /// Failures reported by the source so far.
    pub failures: u64,
    /// The latest failure since the last successful publish.
    pub last_error: Option<String>,
}

/// The workload's current credentials. Cheap to clone; all clones share state.
///
/// ```
/// use mesh_tls::{IdentityStore, IdentityStatus};
/// let store = IdentityStore::new();
/// assert!(store.current().is_none()); // fail closed before the first certificate
/// assert_eq!(store.status(), IdentityStatus::Initializing);
/// ```
#[derive(Clone)]
pub struct IdentityStore {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwapOption<Credentials>,
    /// Bumped on every publish so TLS config caches know when to rebuild.
    generation: watch::Sender<u64>,
    health: std::sync::Mutex<Health>,
}

impl Default for IdentityStore {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentityStore {
    /// An empty store (status `Initializing`).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                generation: watch::Sender::new(0),
                health: Default::default(),
            }),
        }
    }

    /// A store that runs `source` on the current Tokio runtime until every clone of the
    /// store is dropped... or the returned handle is aborted.
    pub fn spawn(source: impl CertSource) -> (Self, tokio::task::JoinHandle<()>) {
        let store = Self::new();
        let task = tokio::spawn(Box::new(source).run(store.clone()));
        (store, task)
    }

    /// A store holding fixed credentials (tests, static setups).
    pub fn from_credentials(creds: Credentials) -> Result<Self, TlsError> {
        let store = Self::new();
        store.publish(creds)?;
        Ok(store)
    }

    /// Installs new credentials after checking them against the X.509-SVID rules and the
    /// key. Invalid credentials are rejected and the previous ones are kept.
    pub fn publish(&self, creds: Credentials) -> Result<(), TlsError> {
        if let Err(e) = crate::svid::check_own_credentials(&creds) {
            self.report_error(&e);
            return Err(e);
        }
        tracing::info!(id = %creds.id, not_after = ?creds.not_after, "workload certificate installed");
        self.inner.current.store(Some(Arc::new(creds)));
        {
            let mut h = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
            h.rotations += 1;
            h.last_error = None;
        }
        self.inner.generation.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Records a failure of the source; the current credentials stay in use while valid.
    pub fn report_error(&self, err: &TlsError) {
        tracing::warn!(error = %err, "workload certificate update failed");
        let mut h = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        h.failures += 1;
        h.last_error = Some(err.to_string());
    }

    /// The credentials to use for a new connection, or `None` (fail closed) before the
    /// first certificate or after expiry.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        let creds = self.inner.current.load_full()?;
        (!creds.is_expired(SystemTime::now())).then_some(creds)
    }

    /// Like [`current`](Self::current) but with an error that says why there is none.
    pub fn require(&self) -> Result<Arc<Credentials>, TlsError> {
        self.current().ok_or_else(|| match self.status() {
            IdentityStatus::Unavailable { reason } => TlsError::NoIdentity(reason),
            _ => TlsError::NoIdentity("no certificate issued yet".into()),
        })
    }

    /// The latest credentials even if expired (for renewal decisions and diagnostics).
    pub fn latest(&self) -> Option<Arc<Credentials>> {
        self.inner.current.load_full()
    }

    /// Where the identity stands now.
    pub fn status(&self) -> IdentityStatus {
        match self.inner.current.load_full() {
            None => IdentityStatus::Initializing,
            Some(c) if c.is_expired(SystemTime::now()) => IdentityStatus::Unavailable {
                reason: format!(
                    "certificate for {} expired{}",
                    c.id,
                    self.stats()
                        .last_error
                        .map(|e| format!("; last renewal error: {e}"))
                        .unwrap_or_default()
                ),
            },
            Some(c) => IdentityStatus::Available {
                id: c.id.to_string(),
                not_after: c.not_after,
            },
        }
    }

    /// Rotation and failure counters.
    pub fn stats(&self) -> IdentityStats {
        let h = self.inner.health.lock().unwrap_or_else(|p| p.into_inner());
        IdentityStats {
            rotations: h.rotations,
            failures: h.failures,
            last_error: h.last_error.clone(),
        }
    }

    /// A counter that changes on every publish; TLS config caches compare it.
    pub fn generation(&self) -> u64 {
        *self.inner.generation.borrow()
    }

    /// A receiver notified on every publish.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Waits until valid credentials are available.
    pub async fn ready(&self) -> Arc<Credentials> {
        let mut rx = self.subscribe();
        loop {
            if let Some(c) = self.current() {
                return c;
            }
            if rx.changed().await.is_err() {
                // Sender lives in `self`, so this cannot happen; avoid a busy loop anyway.
                std::future::pending::<()>().await;
            }
        }
    }
}
