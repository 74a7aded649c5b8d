//! The HBONE server: mTLS (TLS 1.3, ALPN `h2`, a SPIFFE client certificate of an accepted
//! trust domain) and HTTP/2 `CONNECT` streams, each handed to the local handler of the port
//! in its `:authority`.
//!
//! Every stream is checked as ztunnel checks it (its `build_inbound_request` and
//! `serve_connect`), in the same order, and a refusal is answered and counted:
//!
//! | check | answer | [`Refusal`] |
//! |---|---|---|
//! | method is `CONNECT` | 405 | `method` |
//! | `:authority` is `<ip>:<port>`, port not 0 | 400 | `authority` |
//! | the IP is ours (the connection's local IP, or one of [`HboneServerBuilder::local_ips`]) | 400 | `not_local` |
//! | a handler serves the port | 503 | `no_handler` |
//! | the tunnel policies allow the caller | 401 | `denied` |
//!
//! ztunnel answers a non-`CONNECT` method with 400; this server says 405, which names the
//! problem; both are refusals before any byte is tunnelled.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body, Incoming};
use mesh_authz::AuthzPolicies;
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use mesh_core::model::RbacRequest;
use mesh_tls::server::{ConnectionLimiter, ConnectionLimits, Drain, accept_loop};
use mesh_tls::verify::{PeerPolicy, VerifyStats, handshake_error};
use mesh_tls::{IdentityStore, TlsError, handshake};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{BoxError, Service};

use crate::authority::parse_authority;
use crate::metrics::{HboneMetrics, Refusal};
use crate::observe::{Baggage, Observer, TunnelIo, TunnelObserver, forwarded_host};
use crate::stream::H2Stream;
use crate::tls::ServerTls;

/// HBONE's port.
pub const HBONE_PORT: u16 = 15008;

/// What the server knows about one tunnel.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TunnelInfo {
    /// The caller's verified SPIFFE identity.
    pub peer: PeerIdentity,
    /// The caller's address (of the outer mTLS connection).
    pub source: SocketAddr,
    /// The tunnel's destination: the `CONNECT` authority.
    pub destination: SocketAddr,
    /// The caller's workload as its `baggage` header describes it (ztunnel sends one; the
    /// caller's claim, unlike `peer`).
    pub baggage: Baggage,
    /// The service the caller meant: the `host=` of its `forwarded` header.
    pub service_host: Option<String>,
}

type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Handler = Arc<dyn Fn(TunnelIo, TunnelInfo) -> BoxFuture + Send + Sync>;

/// Builds an [`HboneServer`]; see the crate docs for an example.
pub struct HboneServerBuilder {
    store: IdentityStore,
    peers: PeerPolicy,
    handlers: HashMap<u16, Handler>,
    policies: Option<watch::Receiver<Arc<AuthzPolicies>>>,
    metrics: HboneMetrics,
    observer: Observer<TunnelInfo>,
    limits: ConnectionLimits,
    local_ips: Vec<IpAddr>,
    handshake_timeout: Duration,
    drain_timeout: Duration,
}

impl HboneServerBuilder {
    /// Serves `service` (an axum `Router`, any tower HTTP service) for tunnels to `port`:
    /// HTTP/1.1 or HTTP/2 inside the tunnel, with the caller's [`PeerIdentity`] and
    /// [`ConnectionAddrs`] (remote: the caller, local: the tunnel's destination) in every
    /// request's extensions, so that `mesh_authz::AuthzLayer` on `service` authorizes each
    /// request.
    pub fn http<S, B>(mut self, port: u16, service: S) -> Self
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        // A Mutex makes the handler Sync for services that are only Send (clone per tunnel).
        let service = Mutex::new(service);
        let limits = self.limits.clone();
        let handler: Handler = Arc::new(move |io: TunnelIo, info: TunnelInfo| {
            let service = service.lock().unwrap_or_else(|e| e.into_inner()).clone();
            // The meter adds what the tunnel tells (baggage labels) to each request.
            let meter = io.meter();
            let service =
                tower::util::MapRequest::new(service, move |mut req: Request<Incoming>| {
                    if let Some(m) = &meter {
                        m.extend_request(req.extensions_mut());
                    }
                    req
                });
            let limits = limits.clone();
            Box::pin(async move {
                let addrs = ConnectionAddrs {
                    remote: info.source,
                    local: info.destination,
                };
                mesh_tls::server::serve_connection_with_limits(
                    io,
                    service,
                    addrs,
                    Some(info.peer),
                    Drain::never(),
                    &limits,
                )
                .await;
            })
        });
        self.handlers.insert(port, handler);
        self
    }

    /// Hands tunnels to `port` to `handler` as byte streams (a TCP service).
    pub fn tcp<F, Fut>(mut self, port: u16, handler: F) -> Self
    where
        F: Fn(TunnelIo, TunnelInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.handlers
            .insert(port, Arc::new(move |io, info| Box::pin(handler(io, info))));
        self
    }

    /// Authorization of each tunnel: the caller's principal, source IP, destination IP and
    /// port, no HTTP attributes (the L4 form of an AuthorizationPolicy, as istiod puts it
    /// in a network RBAC filter). Default: every caller that passed mTLS. HTTP rules belong
    /// on the HTTP service (`mesh_authz::AuthzLayer`), which sees each request.
    pub fn tunnel_policies(mut self, policies: watch::Receiver<Arc<AuthzPolicies>>) -> Self {
        self.policies = Some(policies);
        self
    }

    /// Which client trust domains or identities pass the handshake (default: our own trust
    /// domain).
    pub fn peers(mut self, peers: PeerPolicy) -> Self {
        self.peers = peers;
        self
    }

    /// Counters to use (e.g. registered with [`HboneMetrics::register`]).
    pub fn metrics(mut self, metrics: HboneMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Told about every accepted tunnel; its meter counts the tunnel's bytes (the `mesh`
    /// facade's `hbone_server()` reports Istio's `istio_tcp_*` through it).
    pub fn observe(mut self, observer: impl TunnelObserver<TunnelInfo>) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Connection cap and timeouts (mesh-tls's defaults).
    pub fn limits(mut self, limits: ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The IPs a `CONNECT` may name. Default: the IP the connection arrived on, as
    /// ztunnel requires for a workload without an application tunnel.
    pub fn local_ips(mut self, ips: impl IntoIterator<Item = IpAddr>) -> Self {
        self.local_ips = ips.into_iter().collect();
        self
    }

    /// A TLS handshake not done within this time is dropped (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// After shutdown, open connections get a GOAWAY and this long to finish (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The server.
    pub fn build(self) -> HboneServer {
        HboneServer {
            inner: Arc::new(Inner {
                tls: ServerTls::new(self.store, self.peers),
                handlers: self.handlers,
                policies: self.policies,
                metrics: self.metrics,
                observer: self.observer,
                limits: self.limits,
                local_ips: self.local_ips,
                handshake_timeout: self.handshake_timeout,
                drain_timeout: self.drain_timeout,
            }),
        }
    }
}

struct Inner {
    tls: ServerTls,
    handlers: HashMap<u16, Handler>,
    policies: Option<watch::Receiver<Arc<AuthzPolicies>>>,
    metrics: HboneMetrics,
    observer: Observer<TunnelInfo>,
    limits: ConnectionLimits,
    local_ips: Vec<IpAddr>,
    handshake_timeout: Duration,
    drain_timeout: Duration,
}

/// An HBONE listener's server. Cheap to clone.
#[derive(Clone)]
pub struct HboneServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HboneServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ports: Vec<_> = self.inner.handlers.keys().collect();
        ports.sort();
        f.debug_struct("HboneServer")
            .field("ports", &ports)
            .finish_non_exhaustive()
    }
}

/// One accepted mTLS connection.
struct Conn {
    peer: PeerIdentity,
    addrs: ConnectionAddrs,
}

impl HboneServer {
    /// A server presenting the SVID in `store`, with no handlers yet.
    pub fn builder(store: IdentityStore) -> HboneServerBuilder {
        HboneServerBuilder {
            store,
            peers: PeerPolicy::default(),
            handlers: HashMap::new(),
            policies: None,
            metrics: HboneMetrics::default(),
            observer: None,
            limits: ConnectionLimits::default(),
            local_ips: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }

    /// The server's counters.
    pub fn metrics(&self) -> &HboneMetrics {
        &self.inner.metrics
    }

    /// Client certificate verification counters (accepted, rejected per SPIFFE rule).
    pub fn verify_stats(&self) -> &Arc<VerifyStats> {
        self.inner.tls.stats()
    }

    /// Accepts HBONE connections on `listener` until `shutdown` completes, then drains
    /// open connections (GOAWAY, then closed after the drain timeout).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let (drain_tx, drain_rx) = watch::channel(false);
        let limiter = ConnectionLimiter::new(self.inner.limits.max_connections);
        let inner = self.inner.clone();
        let result = accept_loop(listener, limiter, shutdown, move |tcp, addrs, permit| {
            let inner = inner.clone();
            let drain = drain_rx.clone();
            tokio::spawn(async move {
                serve_connection(inner, tcp, addrs, drain).await;
                drop(permit);
            });
        })
        .await;
        let _ = drain_tx.send(true);
        result
    }
}

async fn serve_connection(
    inner: Arc<Inner>,
    tcp: TcpStream,
    addrs: ConnectionAddrs,
    mut drain: watch::Receiver<bool>,
) {
    let config = match inner.tls.config() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "HBONE: no credentials, closing the connection");
            return;
        }
    };
    // The handshake runs off the request workers (mesh_tls::handshake).
    let accept = handshake::accept(tcp, |tcp| {
        tokio_rustls::TlsAcceptor::from(config).accept(tcp)
    });
    let accepted = tokio::time::timeout(inner.handshake_timeout, accept).await;
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let err = handshake_error(e);
            let reason = match err {
                TlsError::Rejected(_)
                | TlsError::Rustls(rustls::Error::NoCertificatesPresented) => {
                    Refusal::peer_rejected
                }
                _ => Refusal::tls_handshake,
            };
            tracing::debug!(remote = %addrs.remote, error = %err, "HBONE handshake refused");
            inner.metrics.refuse(reason);
            return;
        }
        Err(_) => {
            inner.metrics.refuse(Refusal::tls_handshake);
            return;
        }
    };
    let (_, session) = tls.get_ref();
    if session.alpn_protocol() != Some(mesh_tls::config::ALPN_H2) {
        inner.metrics.refuse(Refusal::alpn);
        return;
    }
    let Some(peer) = mesh_tls::peer::peer_of_connection(session) else {
        inner.metrics.refuse(Refusal::peer_rejected);
        return;
    };
    inner.metrics.connection();
    let conn = Conn { peer, addrs };
    // ztunnel's server settings: 200 streams, 64 KiB of headers, its windows (4 MiB per
    // tunnel, 16 MiB per connection: a tunnel is a long byte stream, h2's 64 KiB default
    // would stall a bulk upload at one window per round trip) and 1 MiB frames.
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(200)
        .max_header_list_size(64 * 1024)
        .initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20);
    let handshake = tokio::time::timeout(inner.handshake_timeout, builder.handshake(tls));
    let mut h2 = match handshake.await {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => {
            tracing::debug!(remote = %addrs.remote, error = %e, "HBONE HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(remote = %addrs.remote, "HBONE HTTP/2 handshake timed out");
            return;
        }
    };
    let limits = &inner.limits;
    let keepalive = crate::stream::keepalive(
        h2.ping_pong(),
        limits.http2_keepalive_interval,
        limits.http2_keepalive_timeout,
    );
    let mut keepalive = std::pin::pin!(keepalive);
    loop {
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((req, respond))) => handle(&inner, &conn, req, respond),
                Some(Err(e)) => {
                    tracing::debug!(remote = %addrs.remote, error = %e, "HBONE connection ended");
                    return;
                }
                None => return,
            },
            () = &mut keepalive => return,
            () = async { let _ = drain.wait_for(|d| *d).await; } => {
                h2.graceful_shutdown();
                // Open tunnels get the drain timeout to finish; accept() drives them.
                let drained = async { while let Some(Ok(_)) = h2.accept().await {} };
                let _ = tokio::time::timeout(inner.drain_timeout, drained).await;
                return;
            }
        }
    }
}

/// Checks one stream; on success answers 200 and hands the stream to its handler.
fn handle(
    inner: &Arc<Inner>,
    conn: &Conn,
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let (destination, handler) = match admit(inner, conn, &req) {
        Ok(ok) => ok,
        Err((reason, status)) => {
            tracing::debug!(peer = %conn.peer, ?reason, %status, "HBONE CONNECT refused");
            inner.metrics.refuse(reason);
            let _ = respond.send_response(status_response(status), true);
            return;
        }
    };
    let send = match respond.send_response(status_response(StatusCode::OK), false) {
        Ok(send) => send,
        Err(e) => {
            tracing::debug!(error = %e, "HBONE stream closed before it opened");
            return;
        }
    };
    let info = TunnelInfo {
        peer: conn.peer.clone(),
        source: conn.addrs.remote,
        destination,
        baggage: Baggage::parse(req.headers().get_all("baggage")),
        service_host: req
            .headers()
            .get(http::header::FORWARDED)
            .and_then(forwarded_host),
    };
    inner.metrics.tunnel();
    let meter = inner.observer.as_ref().map(|o| o.opened(&info));
    let io = TunnelIo::new(H2Stream::new(send, req.into_body()), meter);
    tokio::spawn(handler(io, info));
}

fn admit<B>(
    inner: &Inner,
    conn: &Conn,
    req: &Request<B>,
) -> Result<(SocketAddr, Handler), (Refusal, StatusCode)> {
    if req.method() != Method::CONNECT {
        return Err((Refusal::method, StatusCode::METHOD_NOT_ALLOWED));
    }
    let destination = parse_authority(req.uri().authority().map(|a| a.as_str()))
        .map_err(|_| (Refusal::authority, StatusCode::BAD_REQUEST))?;
    let ip = destination.ip().to_canonical();
    let ours = if inner.local_ips.is_empty() {
        ip == conn.addrs.local.ip().to_canonical()
    } else {
        inner.local_ips.iter().any(|l| l.to_canonical() == ip)
    };
    if !ours {
        return Err((Refusal::not_local, StatusCode::BAD_REQUEST));
    }
    let handler = inner
        .handlers
        .get(&destination.port())
        .cloned()
        .ok_or((Refusal::no_handler, StatusCode::SERVICE_UNAVAILABLE))?;
    if let Some(policies) = &inner.policies {
        let policies = policies.borrow().clone();
        let rbac = RbacRequest {
            headers: Vec::new(),
            authenticated: true,
            peer_names: vec![conn.peer.id().as_str()],
            peer_ip: Some(conn.addrs.remote.ip()),
            remote_ip: None,
            destination: Some((destination.ip(), destination.port())),
            server_name: None,
        };
        if !policies.evaluate(&rbac).is_allowed() {
            return Err((Refusal::denied, StatusCode::UNAUTHORIZED));
        }
    }
    Ok((destination, handler))
}

fn status_response(status: StatusCode) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    resp
}
