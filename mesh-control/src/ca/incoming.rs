//! The CA port's TLS connections: [`CaIncoming`] accepts and handshakes (client
//! certificate optional) and tags each [`CaConnection`] with what is known of its caller,
//! the [`CaPeer`] that the gRPC service finds in every request's extensions.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mesh_core::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// A stream of TLS connections to the CA port; dropping it stops accepting.
pub struct CaIncoming {
    conns: mpsc::Receiver<CaConnection>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for CaIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaIncoming").finish_non_exhaustive()
    }
}

impl futures::Stream for CaIncoming {
    type Item = Result<CaConnection, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.conns.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl CaIncoming {
    /// Accepts on `listener` in a background task; callers in `trust_domain` may present a
    /// client certificate.
    pub(super) fn start(
        listener: TcpListener,
        acceptor: TlsAcceptor,
        trust_domain: mesh_core::TrustDomain,
    ) -> Self {
        let (conn_tx, conns) = mpsc::channel::<CaConnection>(64);
        let accept = tokio::spawn(accept_loop(listener, acceptor, conn_tx, trust_domain));
        Self { conns, accept }
    }
}

impl Drop for CaIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Handshakes run concurrently, so a slow or silent client cannot hold up others.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<CaConnection>,
    trust_domain: mesh_core::TrustDomain,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "CA server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The gRPC reply's frames go out as written: with Nagle's algorithm the last small
        // write waits for the caller's delayed ACK (40 ms on Linux) on every certificate.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%remote, error = %e, "CA server: TCP_NODELAY not set");
        }
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let td = trust_domain.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "CA server TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "CA server TLS handshake timed out");
                    return;
                }
            };
            let peer = peer_identity(&stream, &td);
            let _ = conns
                .send(CaConnection {
                    stream,
                    info: CaPeer { remote, peer },
                })
                .await;
        });
    }
}

/// The SPIFFE ID of a verified client certificate, if any and if it is in our trust domain.
fn peer_identity(
    stream: &TlsStream<TcpStream>,
    td: &mesh_core::TrustDomain,
) -> Result<Option<SpiffeId>, String> {
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Ok(None);
    };
    let svid = mesh_tls::svid::parse_leaf(leaf).map_err(|e| e.to_string())?;
    if svid.id.trust_domain_str() != td.as_str() {
        return Err(format!(
            "client certificate identity {} is not in trust domain {}",
            svid.id,
            td.as_str()
        ));
    }
    Ok(Some(svid.id))
}

/// What the CA port knows about a connection's peer; in every request's extensions
/// (`request.extensions().get::<CaPeer>()`).
#[derive(Clone, Debug)]
pub struct CaPeer {
    pub(super) remote: SocketAddr,
    /// `Ok(Some(id))`: a verified client certificate; `Err`: a certificate we refuse.
    pub(super) peer: Result<Option<SpiffeId>, String>,
}

impl CaPeer {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The SPIFFE ID of the client's certificate, when it presented one that chains to the
    /// CA and names an identity of the CA's trust domain.
    pub fn identity(&self) -> Option<&SpiffeId> {
        self.peer.as_ref().ok().and_then(Option::as_ref)
    }
}

/// One TLS connection to the CA port (see [`CaIncoming`]).
pub struct CaConnection {
    stream: TlsStream<TcpStream>,
    info: CaPeer,
}

impl Connected for CaConnection {
    type ConnectInfo = CaPeer;
    fn connect_info(&self) -> CaPeer {
        self.info.clone()
    }
}

impl AsyncRead for CaConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CaConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::StreamExt;
    use mesh_tls::dev_ca::DevCa;
    use rustls_pki_types::ServerName;

    use super::*;
    use crate::ca::IstioCaServer;

    /// Every accepted connection has Nagle's algorithm off, so a reply's frames are not held
    /// back waiting for the caller's ACK.
    #[tokio::test]
    async fn accepted_connections_send_without_nagle_delay() {
        let ca =
            Arc::new(DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap()).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut parts = IstioCaServer::new(ca)
            .allow_unauthenticated()
            .into_parts(listener)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(parts.root.clone()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::IpAddress(addr.ip().into());
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .unwrap()
        });
        let conn = parts.incoming.next().await.unwrap().unwrap();
        assert!(conn.stream.get_ref().0.nodelay().unwrap());
        drop(client.await.unwrap());
    }
}
