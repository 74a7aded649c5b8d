use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::MeshClientStream;
use crate::config::{ClientConfigs, ClientSettings};
use crate::handshake;
use crate::verify::{VerifyStats, handshake_error};
use crate::{IdentityStore, TlsError};

/// Connects to `host:port` of a URI over mTLS. Cheap to clone.
///
/// ```no_run
/// # async fn run(store: mesh_tls::IdentityStore) -> Result<(), Box<dyn std::error::Error>> {
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
/// use mesh_core::SpiffeId;
/// use mesh_tls::{client::MeshConnector, config::ClientSettings, verify::PeerPolicy};
///
/// let server = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews")?;
/// let settings = ClientSettings { peers: PeerPolicy::identities([server]), ..Default::default() };
/// let connector = MeshConnector::new(store, settings);
/// let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
///     Client::builder(TokioExecutor::new()).build(connector.clone());
/// let resp = client.get("http://reviews.default.svc:9080/".parse()?).await?;
///
/// // tonic
/// let channel = tonic::transport::Endpoint::from_static("http://reviews.default.svc:9080")
///     .connect_with_connector(connector)
///     .await?;
/// # drop((resp, channel)); Ok(()) }
/// ```
#[derive(Clone)]
pub struct MeshConnector {
    configs: Arc<ClientConfigs>,
}

impl MeshConnector {
    /// A connector for `store` with the default crypto provider.
    pub fn new(store: IdentityStore, settings: ClientSettings) -> Self {
        Self::from_configs(Arc::new(ClientConfigs::new(store, settings)))
    }

    /// A connector over an existing config cache.
    pub fn from_configs(configs: Arc<ClientConfigs>) -> Self {
        Self { configs }
    }

    /// The config cache.
    pub fn configs(&self) -> &Arc<ClientConfigs> {
        &self.configs
    }

    /// Verification counters (accepted, and rejected per rule).
    pub fn stats(&self) -> &Arc<VerifyStats> {
        self.configs.stats()
    }

    /// Dials `uri`'s host and port (default 443 for `https`, else 80) and runs the client
    /// handshake, all within the connect timeout.
    pub async fn connect(&self, uri: &Uri) -> Result<MeshClientStream, TlsError> {
        let config = self.configs.config()?;
        let host = uri
            .host()
            .ok_or_else(|| TlsError::Other(format!("URI {uri} has no host")))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
            Some("https") => 443,
            _ => 80,
        });
        // SNI only: SPIFFE verification ignores names, so an odd host still connects.
        let name = match &self.configs.settings().sni {
            Some(sni) => ServerName::try_from(sni.clone())
                .map_err(|_| TlsError::Other(format!("SNI {sni:?} is not a DNS name")))?,
            None => ServerName::try_from(host.clone())
                .unwrap_or_else(|_| ServerName::try_from("mesh.invalid").expect("static name")),
        };
        let timeout = self.configs.settings().connect_timeout;
        let path = format!("{host}:{port}");
        let at = path.clone();
        // Connect and handshake off the request workers (see `handshake`).
        let connect = async move {
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| TlsError::Io { path: at, source })?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(handshake_error)
        };
        let at = path.clone();
        let connect = handshake::connect(connect, |source| TlsError::Io { path: at, source });
        let tls = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| TlsError::Handshake(format!("connect to {path} timed out")))??;
        let peer = crate::peer::peer_of_connection(tls.get_ref().1)
            .ok_or_else(|| TlsError::Handshake("server presented no certificate".into()))?;
        Ok(MeshClientStream::new(tls, peer))
    }
}

impl std::fmt::Debug for MeshConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshConnector")
            .field("settings", self.configs.settings())
            .finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = MeshClientStream;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<MeshClientStream, TlsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await })
    }
}
