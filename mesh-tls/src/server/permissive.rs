//! PeerAuthentication modes on one port: STRICT (mTLS only), PERMISSIVE (mTLS or
//! plaintext, decided by sniffing the first bytes for a TLS ClientHello), DISABLE
//! (plaintext only).

use std::net::SocketAddr;

/// The connection's addresses, in every request's extensions (plaintext or mTLS) so that
/// authorization can match source IPs and destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAddrs {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
}

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower::{BoxError, Service, ServiceExt};

use super::MeshAcceptor;
use crate::PeerIdentity;
use crate::sniff::{Sniffed, sniff};

/// Istio's `PeerAuthentication` mTLS mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PeerAuthMode {
    /// mTLS and plaintext on the same port (Istio's default).
    #[default]
    Permissive,
    /// mTLS only: plaintext connections fail the handshake and are closed.
    Strict,
    /// Plaintext only.
    Disable,
}

/// A workload's `PeerAuthentication`: a mode and per-port overrides
/// (`portLevelMtls`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerAuthentication {
    /// The mode for ports without an override.
    pub mode: PeerAuthMode,
    /// Per-port modes.
    pub port_modes: HashMap<u16, PeerAuthMode>,
}

impl PeerAuthentication {
    /// The mode for local port `port`.
    pub fn mode_for(&self, port: u16) -> PeerAuthMode {
        self.port_modes.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Serves `service` on `listener` in the mode `peer_auth` gives the listener's port, until
/// `signal` completes. mTLS requests carry [`PeerIdentity`]; every request carries
/// [`ConnectionAddrs`]. In PERMISSIVE mode the first bytes decide (see
/// [`crate::sniff`]).
pub async fn serve_peer_auth<S, B>(
    listener: TcpListener,
    acceptor: MeshAcceptor,
    peer_auth: PeerAuthentication,
    service: S,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut signal => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        let addrs = ConnectionAddrs { remote, local };
        let mode = peer_auth.mode_for(local.port());
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            match mode {
                PeerAuthMode::Disable => serve_conn(tcp, service, addrs, None).await,
                PeerAuthMode::Strict => match acceptor.accept(tcp).await {
                    Ok((tls, peer)) => serve_conn(tls, service, addrs, Some(peer)).await,
                    Err(e) => {
                        tracing::info!(%remote, error = %e, "STRICT: mTLS handshake rejected")
                    }
                },
                PeerAuthMode::Permissive => match sniff(tcp).await {
                    Ok((Sniffed::Plaintext, io)) => serve_conn(io, service, addrs, None).await,
                    Ok((Sniffed::Tls, io)) => match acceptor.accept(io).await {
                        Ok((tls, peer)) => serve_conn(tls, service, addrs, Some(peer)).await,
                        Err(e) => tracing::info!(%remote, error = %e, "mTLS handshake rejected"),
                    },
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "connection lost while sniffing")
                    }
                },
            }
        });
    }
}

async fn serve_conn<IO, S, B>(
    io: IO,
    service: S,
    addrs: ConnectionAddrs,
    peer: Option<PeerIdentity>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let service = service.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(addrs);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        req
    });
    let conn = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = conn
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .await
    {
        tracing::debug!(remote = %addrs.remote, error = %e, "connection ended with an error");
    }
}
