//! PeerAuthentication modes on one port: STRICT (mTLS only), PERMISSIVE (mTLS or
//! plaintext, decided by sniffing the first bytes for a TLS ClientHello), DISABLE
//! (plaintext only).

pub use mesh_core::extensions::ConnectionAddrs;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, Service};

use super::MeshAcceptor;
use super::conn::{Drain, accept_loop, serve_connection_with_limits};
use super::limits::{ConnectionLimiter, ConnectionLimits};
use crate::sniff::{Rewind, Sniffed, sniff_within};

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
    /// `mode` on every port.
    pub fn new(mode: PeerAuthMode) -> Self {
        Self {
            mode,
            port_modes: HashMap::new(),
        }
    }

    /// Overrides the mode of local port `port` (Istio's `portLevelMtls`).
    pub fn with_port(mut self, port: u16, mode: PeerAuthMode) -> Self {
        self.port_modes.insert(port, mode);
        self
    }

    /// The mode for local port `port`.
    pub fn mode_for(&self, port: u16) -> PeerAuthMode {
        self.port_modes.get(&port).copied().unwrap_or(self.mode)
    }
}

/// Serves `service` on `listener` in the mode `peer_auth` gives the listener's port, until
/// `signal` completes, with the default [`ConnectionLimits`] (see
/// [`serve_peer_auth_with_limits`]).
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
    let limits = ConnectionLimits::default();
    let limiter = ConnectionLimiter::new(limits.max_connections);
    serve_peer_auth_with_limits(
        listener, acceptor, peer_auth, limits, limiter, service, signal,
    )
    .await
}

/// Serves `service` on `listener` in the mode `peer_auth` gives the listener's port, until
/// `signal` completes. mTLS requests carry [`PeerIdentity`](crate::PeerIdentity); every
/// request carries [`ConnectionAddrs`]. In PERMISSIVE mode the first bytes decide (see
/// [`crate::sniff`]). At most `limits.max_connections` are served at once (`limiter`
/// counts them; make it with that cap), and slow clients are cut off by `limits`.
pub async fn serve_peer_auth_with_limits<S, B>(
    listener: TcpListener,
    acceptor: MeshAcceptor,
    peer_auth: PeerAuthentication,
    limits: ConnectionLimits,
    limiter: ConnectionLimiter,
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
    let limits = Arc::new(limits);
    accept_loop(listener, limiter, signal, |tcp, addrs, permit| {
        let mode = peer_auth.mode_for(addrs.local.port());
        let conn = serve_in_mode(
            mode,
            tcp,
            addrs,
            acceptor.clone(),
            service.clone(),
            limits.clone(),
        );
        tokio::spawn(async move {
            conn.await;
            drop(permit);
        });
    })
    .await
}

async fn serve_in_mode<S, B>(
    mode: PeerAuthMode,
    tcp: TcpStream,
    addrs: ConnectionAddrs,
    acceptor: MeshAcceptor,
    service: S,
    limits: Arc<ConnectionLimits>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let remote = addrs.remote;
    let io = match mode {
        PeerAuthMode::Disable => {
            let io = Rewind::unsniffed(tcp);
            return serve_connection_with_limits(io, service, addrs, None, Drain::never(), &limits)
                .await;
        }
        PeerAuthMode::Strict => Rewind::unsniffed(tcp),
        PeerAuthMode::Permissive => match sniff_within(limits.sniff_timeout, tcp).await {
            Ok((Sniffed::Tls, io)) => io,
            Ok((Sniffed::Plaintext, io)) => {
                return serve_connection_with_limits(
                    io,
                    service,
                    addrs,
                    None,
                    Drain::never(),
                    &limits,
                )
                .await;
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection lost while sniffing");
                return;
            }
        },
    };
    match acceptor.accept(io).await {
        Ok((tls, peer)) => {
            serve_connection_with_limits(tls, service, addrs, Some(peer), Drain::never(), &limits)
                .await
        }
        Err(e) => tracing::info!(%remote, ?mode, error = %e, "mTLS handshake rejected"),
    }
}
