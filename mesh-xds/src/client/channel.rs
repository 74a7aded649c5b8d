//! gRPC channels to the management server: TLS with given roots, any connector (e.g.
//! mesh-tls's mTLS connector presenting our SVID), or plaintext.
//!
//! xDS decides the mTLS mode, RBAC and whether upstream connections use TLS, so plaintext
//! is allowed only where nobody can sit in between: [`insecure`] refuses any host but a
//! loopback address or `localhost`; [`insecure_any_host`] is the explicit opt-in. Each
//! [`XdsChannel`] knows whether it is secure, and the client refuses to send a bearer token
//! on one that is not (gRPC A97: call credentials only on secure channels).
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

/// The rule a plaintext channel to another host breaks, named in errors.
pub const PLAINTEXT_RULE: &str = "plaintext xDS is allowed only to a loopback address; use TLS, or opt in explicitly with channel::insecure_any_host (bootstrap: channel_creds [{\"type\": \"insecure\"}])";

/// A gRPC channel to a management server, and whether it is secure (TLS). Build one with
/// the functions of this module; a bare tonic [`Channel`] converts into a plaintext one
/// (nothing says it is encrypted).
#[derive(Clone, Debug)]
pub struct XdsChannel {
    pub(crate) channel: Channel,
    pub(crate) secure: bool,
}

impl XdsChannel {
    /// Whether connections are TLS (only then does the client send call credentials).
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// The tonic channel.
    pub fn into_inner(self) -> Channel {
        self.channel
    }
}

impl From<Channel> for XdsChannel {
    fn from(channel: Channel) -> Self {
        XdsChannel {
            channel,
            secure: false,
        }
    }
}

/// A plaintext (h2c) channel to `uri` on this machine, e.g. `http://127.0.0.1:15010` or a
/// `unix:` socket. Any other host is refused with [`PLAINTEXT_RULE`]: see
/// [`insecure_any_host`].
pub fn insecure(uri: &str) -> Result<XdsChannel, XdsClientError> {
    let endpoint = endpoint(uri)?;
    if !uri.starts_with("unix:") && !is_loopback(endpoint.uri()) {
        return Err(XdsClientError::InvalidServerUri {
            uri: uri.to_owned(),
            reason: PLAINTEXT_RULE.into(),
        });
    }
    Ok(endpoint.connect_lazy().into())
}

/// A plaintext (h2c) channel to `uri` on any host: the explicit opt-in for a network the
/// operator trusts. Anyone on the path can read and change the mesh's config.
pub fn insecure_any_host(uri: &str) -> Result<XdsChannel, XdsClientError> {
    Ok(endpoint(uri)?.connect_lazy().into())
}

/// Whether `uri`'s host is a loopback address or `localhost`.
pub fn is_loopback(uri: &Uri) -> bool {
    let Some(host) = uri.host() else {
        return false;
    };
    let host = host.trim_matches(['[', ']']);
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A channel to `uri` whose connections are made by `connector` (a `tower::Service<Uri>`
/// returning a hyper IO, as tonic expects). The channel counts as plaintext; when the
/// connector does TLS (e.g. mesh-tls's mTLS connector), use [`with_tls_connector`].
pub fn with_connector<C>(uri: &str, connector: C) -> Result<XdsChannel, XdsClientError>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
    C::Future: Send,
    tower::BoxError: From<C::Error> + Send,
{
    Ok(endpoint(uri)?.connect_with_connector_lazy(connector).into())
}

/// [`with_connector`] for a connector that does TLS and verifies the server: the caller
/// vouches for that, and the channel counts as secure (call credentials are sent on it).
pub fn with_tls_connector<C>(uri: &str, connector: C) -> Result<XdsChannel, XdsClientError>
where
    C: tower::Service<Uri> + Send + 'static,
    C::Response: hyper::rt::Read + hyper::rt::Write + Send + Unpin,
    C::Future: Send,
    tower::BoxError: From<C::Error> + Send,
{
    let mut channel = with_connector(uri, connector)?;
    channel.secure = true;
    Ok(channel)
}

/// A TLS channel to `uri` (`https://host:port`) with the given rustls client config (roots,
/// and a client certificate for mTLS). ALPN is set to `h2`; the server name is the URI host
/// unless `server_name` overrides it.
pub fn tls(
    uri: &str,
    config: Arc<ClientConfig>,
    server_name: Option<&str>,
) -> Result<XdsChannel, XdsClientError> {
    let name = server_name_for(uri, server_name)?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    with_tls_connector(
        uri,
        TlsConnector {
            config: TlsSource::Fixed(Arc::new(config)),
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

/// Makes the rustls client config for each new connection, e.g. from a rotating identity
/// (its trust bundle as roots, its certificate as the client certificate).
pub type TlsConfigFn = Arc<dyn Fn() -> Result<Arc<ClientConfig>, String> + Send + Sync>;

/// [`tls`] with the config made anew for each connection by `make` (ALPN is set to `h2`),
/// so a rotated certificate or trust bundle is used on the next reconnect.
pub fn tls_dynamic(
    uri: &str,
    make: TlsConfigFn,
    server_name: Option<&str>,
) -> Result<XdsChannel, XdsClientError> {
    let name = server_name_for(uri, server_name)?;
    with_tls_connector(
        uri,
        TlsConnector {
            config: TlsSource::Dynamic(make),
            name,
        },
    )
}

fn server_name_for(
    uri: &str,
    server_name: Option<&str>,
) -> Result<ServerName<'static>, XdsClientError> {
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
    ServerName::try_from(host).map_err(|e| XdsClientError::InvalidServerUri {
        uri: uri.to_owned(),
        reason: format!("invalid TLS server name: {e}"),
    })
}

#[derive(Clone)]
enum TlsSource {
    Fixed(Arc<ClientConfig>),
    Dynamic(TlsConfigFn),
}

impl TlsSource {
    fn get(&self) -> std::io::Result<Arc<ClientConfig>> {
        match self {
            TlsSource::Fixed(c) => Ok(c.clone()),
            TlsSource::Dynamic(make) => {
                let mut config = (*make().map_err(std::io::Error::other)?).clone();
                config.alpn_protocols = vec![b"h2".to_vec()];
                Ok(Arc::new(config))
            }
        }
    }
}

/// TCP + tokio-rustls client handshake.
#[derive(Clone)]
struct TlsConnector {
    config: TlsSource,
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
        let config = self.config.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(config.get()?);
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
