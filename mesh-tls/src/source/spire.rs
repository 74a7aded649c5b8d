//! [`SpireSource`]: identity from the SPIFFE Workload API (SPIRE agent), X.509 stream.
//!
//! The source opens the Workload API's `FetchX509SVID` stream and publishes every update:
//! the default (first) SVID's chain and key, and the X.509 bundle of its trust domain as
//! the trust anchors. When the stream fails or ends it reports the error to the store and
//! reconnects with backoff (1 s .. 150 s, +-20%); the still-valid certificate stays in use
//! meanwhile, and the store fails closed once it expires.
//!
//! The socket address is passed in by the caller; only [`SpireSource::from_env`] reads
//! `SPIFFE_ENDPOINT_SOCKET`.

use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use spiffe::{WorkloadApiClient, X509Context};

use crate::rotation::Backoff;
use crate::{CertSource, Credentials, IdentityStore, TlsError};

/// The environment variable of the SPIFFE Workload Endpoint specification.
pub const ENDPOINT_SOCKET_ENV: &str = "SPIFFE_ENDPOINT_SOCKET";

/// Where the Workload API is and how to retry.
#[derive(Debug, Clone)]
pub struct SpireSourceConfig {
    /// The endpoint: `unix:///run/spire/agent.sock` (or `unix:/path`, `tcp://host:port`).
    pub endpoint: String,
    /// First reconnect delay (default 1 s).
    pub min_backoff: Duration,
    /// Largest reconnect delay (default 150 s).
    pub max_backoff: Duration,
}

impl Default for SpireSourceConfig {
    /// SPIRE's default agent socket, `unix:///tmp/spire-agent/public/api.sock`.
    fn default() -> Self {
        Self {
            endpoint: "unix:///tmp/spire-agent/public/api.sock".into(),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(150),
        }
    }
}

/// Identity from the SPIFFE Workload API. See the [module docs](self).
///
/// ```no_run
/// # async fn f() {
/// use mesh_tls::{IdentityStore, source::SpireSource};
/// let source = SpireSource::new("unix:///run/spire/sockets/agent.sock");
/// let (store, _task) = IdentityStore::spawn(source);
/// println!("we are {}", store.ready().await.id);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SpireSource {
    config: SpireSourceConfig,
}

impl SpireSource {
    /// A source for the Workload API at `endpoint`, with default backoff.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self::with_config(SpireSourceConfig {
            endpoint: endpoint.into(),
            ..Default::default()
        })
    }

    /// A source with explicit configuration.
    pub fn with_config(config: SpireSourceConfig) -> Self {
        Self { config }
    }

    /// A source for the endpoint in `SPIFFE_ENDPOINT_SOCKET` (the SPIFFE Workload Endpoint
    /// convention). This is the only place mesh-tls reads that variable.
    pub fn from_env() -> Result<Self, TlsError> {
        let endpoint = std::env::var(ENDPOINT_SOCKET_ENV).map_err(|_| {
            TlsError::Other(format!("{ENDPOINT_SOCKET_ENV} is not set (or not UTF-8)"))
        })?;
        Ok(Self::new(endpoint))
    }

    /// The configuration.
    pub fn config(&self) -> &SpireSourceConfig {
        &self.config
    }

    async fn run_loop(self, store: IdentityStore) {
        let mut backoff = Backoff::new(self.config.min_backoff, self.config.max_backoff, 0.2);
        loop {
            match self.stream_once(&store, &mut backoff).await {
                Ok(()) => store.report_error(&TlsError::Other(format!(
                    "Workload API {}: stream ended",
                    self.config.endpoint
                ))),
                Err(e) => store.report_error(&e),
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Connects and publishes updates until the stream ends or fails.
    async fn stream_once(
        &self,
        store: &IdentityStore,
        backoff: &mut Backoff,
    ) -> Result<(), TlsError> {
        let endpoint = &self.config.endpoint;
        let api_err =
            |e: spiffe::WorkloadApiError| TlsError::Other(format!("Workload API {endpoint}: {e}"));
        let client = WorkloadApiClient::connect_to(endpoint)
            .await
            .map_err(api_err)?;
        let mut updates = client.stream_x509_contexts().await.map_err(api_err)?;
        while let Some(update) = updates.next().await {
            let creds = update.map_err(api_err).and_then(|ctx| credentials(&ctx))?;
            tracing::debug!(id = %creds.id, "Workload API update");
            // A rejected update is reported by `publish`; keep listening for the next one.
            if store.publish(creds).is_ok() {
                backoff.reset();
            }
        }
        Ok(())
    }
}

impl CertSource for SpireSource {
    fn run(self: Box<Self>, store: IdentityStore) -> BoxFuture<'static, ()> {
        Box::pin((*self).run_loop(store))
    }
}

/// The default SVID and its trust domain's bundle as [`Credentials`].
fn credentials(ctx: &X509Context) -> Result<Credentials, TlsError> {
    let svid = ctx
        .default_svid()
        .ok_or_else(|| TlsError::Other("Workload API update has no X.509-SVID".into()))?;
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let td = svid.spiffe_id().trust_domain();
    let bundle = ctx.bundle_set().get(td).ok_or_else(|| {
        TlsError::Other(format!(
            "Workload API update has no X.509 bundle for trust domain {td}"
        ))
    })?;
    let roots = bundle
        .authorities()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    super::credentials_from_parts(
        &crate::config::default_provider(),
        chain,
        key,
        roots,
        "Workload API X.509-SVID",
    )
}
