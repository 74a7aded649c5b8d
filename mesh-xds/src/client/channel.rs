//! gRPC channels to the management server: plaintext, TLS with given roots, or any
//! connector (e.g. mesh-tls's mTLS connector presenting our SVID).
//!
//! Channels are lazy: nothing connects until the ADS stream opens, and a broken connection
//! is re-established on the next stream attempt (paced by the client's backoff).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::XdsClientError;

/// A plaintext (h2c) channel to `uri`, e.g. `http://127.0.0.1:15010`.
pub fn insecure(uri: &str) -> Result<Channel, XdsClientError> {
    Ok(endpoint(uri)?.connect_lazy())
}

/// A channel to `uri` whose connections are made by `connector` (a `tower::Service<Uri>`
/// returning a hyper IO, as tonic expects): use it to plug in an mTLS connector.
pub fn with_connector<C>(uri: &str, connector: C) -> Result<Channel, XdsClientError>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
    C::Future: Send,
    tower::BoxError: From<C::Error> + Send,
{
    Ok(endpoint(uri)?.connect_with_connector_lazy(connector))
}

/// A TLS channel to `uri` (`https://host:port`) with the given rustls client config (roots,
/// and a client certificate for mTLS). ALPN is set to `h2`; the server name is the URI host
/// unless `server_name` overrides it.
pub fn tls(
    uri: &str,
    config: Arc<ClientConfig>,
    server_name: Option<&str>,
) -> Result<Channel, XdsClientError> {
    let parsed: Uri = uri.parse().map_err(|e| XdsClientError::InvalidServerUri {
        uri: uri.to_owned(),
        reason: format!("{e}"),
    })?;
    let host = server_name
        .map(str::to_owned)
        .or_else(|| parsed.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .ok_or_else(|| XdsClientError::InvalidServerUri {
            uri: uri.to_owned(),
            reason: "no host".into(),
        })?;
    let name = ServerName::try_from(host).map_err(|e| XdsClientError::InvalidServerUri {
        uri: uri.to_owned(),
        reason: format!("invalid TLS server name: {e}"),
    })?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    with_connector(
        uri,
        TlsConnector {
            config: Arc::new(config),
            name,
        },
    )
}

fn endpoint(uri: &str) -> Result<Endpoint, XdsClientError> {
    let endpoint =
        Endpoint::from_shared(uri.to_owned()).map_err(|e| XdsClientError::InvalidServerUri {
            uri: uri.to_owned(),
            reason: format!("{e}"),
        })?;
    Ok(endpoint
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_while_idle(true))
}

/// TCP + tokio-rustls client handshake.
#[derive(Clone)]
struct TlsConnector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl tower::Service<Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let name = self.name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other("server URI has no host"))?
                .trim_matches(['[', ']'])
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}
