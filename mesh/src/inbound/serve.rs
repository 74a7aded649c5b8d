//! The accept loop: listener updates, per-connection chain choice, and draining.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use mesh_authz::{AuthzLayer, AuthzMetrics, AuthzPolicies, ConnectionAddrs};
use mesh_core::model::DownstreamTls;
use mesh_core::model::{FilterChain, FilterChainMatch, Listener, ListenerKind, ServerListener};
use mesh_core::path::{PathNormalization, PathNormalize};
use mesh_tls::PeerIdentity;
use mesh_tls::config::ServerSettings;
use mesh_tls::server::{
    ConnectionLimits, ConnectionPermit, Drain, LimitedListener, MeshAcceptor,
    serve_connection_with_limits,
};
use mesh_tls::sniff::{Rewind, Sniffed, sniff_within};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tower::{BoxError, Layer, Service};

use super::chain::{self, ConnectionInfo};
use super::policy::authz_policies;
use super::{InboundError, InboundServer, ServingStatus};

/// The parts of a listener that connections are bound to; a change here drains them.
type Shape = Vec<(
    String,
    FilterChainMatch,
    Option<DownstreamTls>,
    PathNormalization,
)>;

/// One version of the chains: connections accepted under it keep it until drained.
pub(super) struct Generation {
    listener: ServerListener,
    sniff: bool,
    /// Per chain (then the default chain), the policies of its RBAC filters.
    policies: Vec<watch::Receiver<Arc<AuthzPolicies>>>,
    /// Set to `true` to drain this generation's connections.
    drain: watch::Sender<bool>,
}

/// What the accept loop holds: the current generation and the senders of its policies.
pub(super) struct Current {
    generation: Arc<Generation>,
    shape: Shape,
    policy_senders: Vec<watch::Sender<Arc<AuthzPolicies>>>,
    /// Built for this listener version: its chains' `tls_params` narrow the handshake.
    acceptor: MeshAcceptor,
}

fn chains(l: &ServerListener) -> impl Iterator<Item = &FilterChain> {
    l.filter_chains
        .iter()
        .chain(l.default_filter_chain.as_ref())
}

fn shape(l: &ServerListener) -> Shape {
    chains(l)
        .map(|c| {
            (
                c.name.clone(),
                c.filter_chain_match.clone(),
                c.tls.clone(),
                c.http_connection_manager.path_normalization,
            )
        })
        .collect()
}

impl InboundServer {
    /// Serves `service` (an axum `Router`, tonic `Routes`, any tower HTTP service) as the
    /// inbound listener says, until the process ends.
    pub async fn serve<S, B>(self, service: S) -> Result<(), InboundError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(service, std::future::pending())
            .await
    }

    /// Like [`InboundServer::serve`], until `signal` completes: then it stops accepting
    /// and drains open connections (at most the drain timeout).
    pub async fn serve_with_shutdown<S, B>(
        self,
        service: S,
        signal: impl Future<Output = ()>,
    ) -> Result<(), InboundError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (tcp, bound) = self.bind().await?;
        let limits = Arc::new(self.limits.clone());
        // Each connection task holds a clone; all are gone once every connection ended.
        let (alive, mut all_closed) = mpsc::channel::<()>(1);
        let mut current = self
            .accept_loop(
                tcp,
                bound,
                signal,
                |generation, acceptor, stream, remote, permit| {
                    let conn = Connection {
                        generation,
                        acceptor,
                        metrics: self.metrics.clone(),
                        drain_timeout: self.drain_timeout,
                        limits: limits.clone(),
                        _permit: permit,
                        _alive: alive.clone(),
                    };
                    tokio::spawn(conn.run(stream, remote, service.clone()));
                },
            )
            .await;
        // Shutdown: accepting stopped; drain and wait.
        if let Some(cur) = current.take() {
            cur.generation.drain.send_replace(true);
        }
        self.status
            .send_replace(ServingStatus::NotServing("shut down".into()));
        drop(alive);
        let _ = tokio::time::timeout(
            self.drain_timeout + Duration::from_secs(1),
            all_closed.recv(),
        )
        .await;
        Ok(())
    }

    /// Binds the server's address.
    pub(super) async fn bind(&self) -> Result<(LimitedListener, SocketAddr), InboundError> {
        let tcp = TcpListener::bind(self.addr)
            .await
            .map_err(|source| InboundError::Bind {
                addr: self.addr,
                source,
            })?;
        let bound = tcp.local_addr().unwrap_or(self.addr);
        Ok((LimitedListener::new(tcp, self.limiter.clone()), bound))
    }

    /// Follows the listener and hands each admitted connection, with the generation of
    /// chains it is bound to and that version's acceptor, to `on_accept`, until `signal`; then stops accepting and
    /// returns the current generation (to drain). Connections arriving while not serving
    /// are closed (A36's NOT_SERVING).
    pub(super) async fn accept_loop(
        &self,
        mut tcp: LimitedListener,
        bound: SocketAddr,
        signal: impl Future<Output = ()>,
        mut on_accept: impl FnMut(
            Arc<Generation>,
            MeshAcceptor,
            TcpStream,
            SocketAddr,
            ConnectionPermit,
        ),
    ) -> Option<Current> {
        self.source.demand(&self.listener_name);
        let mut snapshots = self.source.snapshots();
        snapshots.mark_changed();
        let mut current: Option<Current> = None;
        let mut last_listener: Option<Arc<Listener>> = None;
        let mut signal = std::pin::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => return current,
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        tracing::warn!(listener = %self.listener_name, "the config source stopped; keeping the last listener");
                        // Keep serving what we have; never poll a closed watch again.
                        snapshots = watch::channel(Arc::default()).1;
                        continue;
                    }
                    let snap = snapshots.borrow_and_update().clone();
                    let listener = snap.listeners.get(self.listener_name.as_str()).cloned();
                    if listener.as_ref().map(Arc::as_ptr) == last_listener.as_ref().map(Arc::as_ptr) {
                        continue;
                    }
                    last_listener = listener.clone();
                    self.update(&mut current, listener, bound, &self.metrics);
                }
                (stream, remote, permit) = tcp.accept() => {
                    match &current {
                        Some(cur) => on_accept(cur.generation.clone(), cur.acceptor.clone(), stream, remote, permit),
                        // NOT_SERVING: accept and close.
                        None => drop((stream, permit)),
                    }
                }
            }
        }
    }

    /// Applies a new version of the listener (or its removal).
    fn update(
        &self,
        current: &mut Option<Current>,
        listener: Option<Arc<Listener>>,
        bound: SocketAddr,
        _metrics: &AuthzMetrics,
    ) {
        let server = match listener.as_deref().map(|l| &l.kind) {
            None => {
                // Removed (or not yet received): stop serving and drain.
                if let Some(cur) = current.take() {
                    tracing::warn!(listener = %self.listener_name, "listener removed: not serving");
                    cur.generation.drain.send_replace(true);
                }
                self.status.send_replace(ServingStatus::NotServing(format!(
                    "listener {} does not exist",
                    self.listener_name
                )));
                return;
            }
            Some(ListenerKind::Client(_)) => {
                Err("is a client (API) listener, not a server listener".to_owned())
            }
            Some(ListenerKind::Server(s)) => check(s, bound).map(|()| s.as_ref()),
        };
        let server = match server {
            Ok(s) => s,
            Err(reason) => {
                // Like a NACK: keep what we serve with, if anything.
                tracing::error!(listener = %self.listener_name, %reason, "unusable listener");
                if current.is_none() {
                    self.status.send_replace(ServingStatus::NotServing(format!(
                        "listener {} {reason}",
                        self.listener_name
                    )));
                }
                return;
            }
        };
        let new_shape = shape(server);
        let policies: Vec<Arc<AuthzPolicies>> = chains(server)
            .map(|c| Arc::new(authz_policies(&c.http_connection_manager)))
            .collect();
        if let Some(cur) = current
            && cur.shape == new_shape
        {
            // Same chains: new policies reach open connections on their next request.
            for (tx, p) in cur.policy_senders.iter().zip(policies) {
                tx.send_if_modified(|old| {
                    let changed = **old != *p;
                    if changed {
                        *old = p.clone();
                    }
                    changed
                });
            }
            if let Some(l) = listener {
                self.status.send_replace(ServingStatus::Serving(l));
            }
            tracing::info!(listener = %self.listener_name, "authorization policies updated");
            return;
        }
        let (policy_senders, receivers): (Vec<_>, Vec<_>) =
            policies.into_iter().map(watch::channel).unzip();
        let generation = Arc::new(Generation {
            sniff: chain::needs_sniff(server),
            listener: server.clone(),
            policies: receivers,
            drain: watch::channel(false).0,
        });
        // The TLS chains agree on their params (chain::unsupported).
        let params = chains(server)
            .find_map(|c| c.tls.as_ref())
            .map(|t| t.params.clone())
            .unwrap_or_default();
        let settings = ServerSettings {
            params,
            ..self.settings.clone()
        };
        if let Some(old) = current.replace(Current {
            generation,
            shape: new_shape,
            policy_senders,
            acceptor: MeshAcceptor::new(self.identity.clone(), settings),
        }) {
            tracing::info!(listener = %self.listener_name, "filter chains changed: draining old connections");
            old.generation.drain.send_replace(true);
        } else {
            tracing::info!(listener = %self.listener_name, %bound, "serving");
        }
        if let Some(l) = listener {
            self.status.send_replace(ServingStatus::Serving(l));
        }
    }
}

/// The listener must be for the address we listen on and use only what we can honour.
fn check(s: &ServerListener, bound: SocketAddr) -> Result<(), String> {
    let ip_ok = s.address.ip() == bound.ip() || bound.ip().is_unspecified();
    if !ip_ok || s.address.port() != bound.port() {
        return Err(format!(
            "is for {}, but this server listens on {bound}",
            s.address
        ));
    }
    match chain::unsupported(s) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

struct Connection {
    generation: Arc<Generation>,
    acceptor: MeshAcceptor,
    metrics: AuthzMetrics,
    drain_timeout: Duration,
    limits: Arc<ConnectionLimits>,
    /// The connection's slot under the listener's cap.
    _permit: ConnectionPermit,
    _alive: mpsc::Sender<()>,
}

/// A connection past its chain choice and handshake: what serving it needs.
pub(super) struct Accepted {
    pub(super) io: InboundIo,
    pub(super) addrs: ConnectionAddrs,
    /// The verified client identity (mTLS chains).
    pub(super) peer: Option<PeerIdentity>,
    /// The chain's authorization policies, updated in place.
    pub(super) policies: watch::Receiver<Arc<AuthzPolicies>>,
    pub(super) path_normalization: PathNormalization,
}

/// Picks the connection's filter chain (sniffing for TLS when the chains ask) and runs its
/// transport socket: the mTLS handshake, or none. `None` when the connection was closed:
/// lost, no chain matches, or the handshake was rejected (logged).
pub(super) async fn handshake(
    generation: &Generation,
    acceptor: &MeshAcceptor,
    limits: &ConnectionLimits,
    tcp: TcpStream,
    remote: SocketAddr,
) -> Option<Accepted> {
    let local = tcp.local_addr().ok()?;
    let (tls, io) = if generation.sniff {
        match sniff_within(limits.sniff_timeout, tcp).await {
            Ok((kind, io)) => (Some(kind == Sniffed::Tls), io),
            Err(e) => {
                tracing::debug!(%remote, error = %e, "connection lost while sniffing");
                return None;
            }
        }
    } else {
        (None, Rewind::unsniffed(tcp))
    };
    let info = ConnectionInfo { local, remote, tls };
    let listener = &generation.listener;
    let index = match chain::select(listener, &info) {
        Some(i) => i,
        None if listener.default_filter_chain.is_some() => listener.filter_chains.len(),
        None => {
            tracing::info!(%remote, ?tls, "no filter chain matches the connection; closing");
            return None;
        }
    };
    let chain = chains(listener).nth(index)?;
    let policies = generation.policies.get(index)?.clone();
    let (io, peer) = if chain.tls.is_some() {
        match acceptor.accept(io).await {
            Ok((stream, peer)) => (InboundIo::Tls(Box::new(stream)), Some(peer)),
            Err(e) => {
                tracing::info!(%remote, chain = %chain.name, error = %e, "mTLS handshake rejected");
                return None;
            }
        }
    } else {
        (InboundIo::Plain(io), None)
    };
    Some(Accepted {
        io,
        addrs: ConnectionAddrs { remote, local },
        peer,
        policies,
        path_normalization: chain.http_connection_manager.path_normalization,
    })
}

/// An accepted inbound connection's byte stream: mTLS or plaintext, as its chain says.
pub(super) enum InboundIo {
    Plain(Rewind<TcpStream>),
    Tls(Box<TlsStream<Rewind<TcpStream>>>),
}

impl AsyncRead for InboundIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for InboundIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => io.is_write_vectored(),
            Self::Tls(io) => io.is_write_vectored(),
        }
    }
}

impl Connection {
    async fn run<S, B>(self, tcp: TcpStream, remote: SocketAddr, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let Some(accepted) =
            handshake(&self.generation, &self.acceptor, &self.limits, tcp, remote).await
        else {
            return;
        };
        // As Envoy's HCM: the path is normalized once, before RBAC, and forwarded so.
        let service = PathNormalize::new(
            AuthzLayer::new(accepted.policies)
                .with_metrics(self.metrics.clone())
                .layer(service),
            accepted.path_normalization,
        );
        self.serve(accepted.io, service, accepted.addrs, accepted.peer)
            .await
    }

    async fn serve<IO, S, B>(
        &self,
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
        let mut drain = self.generation.drain.subscribe();
        let drain = Drain {
            signal: async move { drop(drain.wait_for(|d| *d).await) },
            timeout: self.drain_timeout,
        };
        serve_connection_with_limits(io, service, addrs, peer, drain, &self.limits).await
    }
}
