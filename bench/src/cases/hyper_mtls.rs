//! Cases 2 and 8, the in-process baselines: hyper HTTP/2 (case 2) or HTTP/1.1 (case 8) over
//! rustls mTLS (client certificates, WebPKI verifiers on both sides), one connection per
//! lane, certificates from the dev CA. Each in-process mesh case is compared with the one of
//! its own protocol.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_tls::config::default_provider;
use mesh_tls::dev_ca::DevCa;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::lanes::{AbortOnDrop, H1Lane, H2Lane};
use super::{Case, CaseId};
use crate::loadgen::Lane;
use crate::{Error, certs, payload};

/// Case 2 (HTTP/2) or 8 (HTTP/1.1).
pub struct HyperMtls {
    addr: SocketAddr,
    connector: TlsConnector,
    h2: bool,
    _server: AbortOnDrop,
}

impl HyperMtls {
    /// Issues a server and a client certificate from `ca` and starts the server, speaking
    /// HTTP/2 when `h2`, else HTTP/1.1 (each side offers only that protocol in ALPN).
    pub async fn start(ca: &DevCa, h2: bool) -> Result<Self, Error> {
        let alpn = if h2 {
            b"h2".to_vec()
        } else {
            b"http/1.1".to_vec()
        };
        let server_creds = certs::issue(ca, "echo")?;
        let client_creds = certs::issue(ca, "bench-client")?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.root_der())?;
        let roots = Arc::new(roots);
        let provider = default_provider();

        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()?,
            )
            .with_single_cert(server_creds.chain.clone(), server_creds.key.clone_key())?;
        server.alpn_protocols = vec![alpn.clone()];
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(
                WebPkiServerVerifier::builder_with_provider(roots, provider).build()?,
            )
            .with_client_auth_cert(client_creds.chain.clone(), client_creds.key.clone_key())?;
        client.alpn_protocols = vec![alpn];

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let task = tokio::spawn(accept_loop(listener, acceptor, h2));
        Ok(Self {
            addr,
            connector: TlsConnector::from(Arc::new(client)),
            h2,
            _server: AbortOnDrop(task),
        })
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, h2: bool) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let (io, app) = (TokioIo::new(tls), hyper::service::service_fn(payload::app));
            let _ = if h2 {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, app)
                    .await
            } else {
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, app)
                    .await
            };
        });
    }
}

impl Case for HyperMtls {
    fn id(&self) -> CaseId {
        if self.h2 {
            CaseId::HyperMtls
        } else {
            CaseId::HyperMtlsH1
        }
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(certs::SERVER_DNS)?;
            let tls = self.connector.connect(name, tcp).await?;
            if !self.h2 {
                return Ok(Box::new(H1Lane::new(tls, certs::SERVER_DNS).await?) as Box<dyn Lane>);
            }
            let uri = format!("https://{}{}", certs::SERVER_DNS, payload::PATH).parse()?;
            let lane = H2Lane::new(tls, uri).await?;
            Ok(Box::new(lane) as Box<dyn Lane>)
        })
    }

    fn describe(&self) -> String {
        let v = if self.h2 { "http2" } else { "http1" };
        format!(
            "hyper 1 `client::conn::{v}` over tokio-rustls (TLS 1.3, client certificate, \
             WebPKI verifiers, *ring*) -> hyper `server::conn::{v}`, one connection per lane"
        )
    }
}
