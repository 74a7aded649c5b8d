use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ServerConfigs, ServerSettings};
use crate::handshake;
use crate::svid::{Rule, SvidError};
use crate::verify::{VerifyStats, handshake_error};
use crate::{IdentityStore, PeerIdentity, TlsError};

/// Terminates mTLS with the store's current credentials. Cheap to clone.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use mesh_tls::{IdentityStore, config::ServerSettings, server::MeshAcceptor};
/// let store = IdentityStore::new(); // fed by a CertSource
/// let acceptor = MeshAcceptor::new(store, ServerSettings::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let (tcp, _) = listener.accept().await?;
/// let (tls, peer) = acceptor.accept(tcp).await?;
/// println!("client is {peer}");
/// # drop(tls); Ok(()) }
/// ```
#[derive(Clone)]
pub struct MeshAcceptor {
    configs: Arc<ServerConfigs>,
}

impl MeshAcceptor {
    /// An acceptor for `store` with the default crypto provider.
    pub fn new(store: IdentityStore, settings: ServerSettings) -> Self {
        Self::from_configs(Arc::new(ServerConfigs::new(store, settings)))
    }

    /// An acceptor over an existing config cache (e.g. one with another provider).
    pub fn from_configs(configs: Arc<ServerConfigs>) -> Self {
        Self { configs }
    }

    /// The config cache.
    pub fn configs(&self) -> &Arc<ServerConfigs> {
        &self.configs
    }

    /// Verification counters (accepted, and rejected per rule).
    pub fn stats(&self) -> &Arc<VerifyStats> {
        self.configs.stats()
    }

    /// Runs the server handshake on `io` within the handshake timeout. The error names the
    /// broken rule when the client's certificate was rejected. A `TcpStream` (or the
    /// sniffer's `Rewind<TcpStream>`) is handshaken off the request workers (see
    /// [`handshake`](crate::handshake)); other I/O here.
    pub async fn accept<IO>(&self, io: IO) -> Result<(TlsStream<IO>, PeerIdentity), TlsError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let config = self.configs.config()?;
        let timeout = self.configs.settings().handshake_timeout;
        let accept = handshake::accept(io, |io| TlsAcceptor::from(config).accept(io));
        let stream = tokio::time::timeout(timeout, accept)
            .await
            .map_err(|_| TlsError::Handshake(format!("timed out after {timeout:?}")))?
            .map_err(|e| match handshake_error(e) {
                // rustls refuses a client without a certificate before our verifier runs.
                TlsError::Rustls(rustls::Error::NoCertificatesPresented) => {
                    self.stats().record_rejection(Rule::NoCertificate);
                    TlsError::Rejected(SvidError::NoCertificate)
                }
                other => other,
            })?;
        let peer = crate::peer::peer_of_connection(stream.get_ref().1)
            .ok_or_else(|| TlsError::Handshake("client presented no certificate".into()))?;
        Ok((stream, peer))
    }
}

impl std::fmt::Debug for MeshAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshAcceptor")
            .field("settings", self.configs.settings())
            .finish_non_exhaustive()
    }
}
