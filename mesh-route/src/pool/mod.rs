//! Connection pools towards one cluster's endpoints, over hyper.
//!
//! One [`UpstreamPool`] per cluster holds, per endpoint, connections whose connector
//! always dials that endpoint whatever the request's URI says. So the request
//! keeps its own authority in the URI: HTTP/1.1 sends it as `Host`, HTTP/2 as `:authority`
//! (as Envoy does: the upstream sees the authority the caller asked for, after any host
//! rewrite, never the endpoint's address).
//!
//! - **HTTP/1.1 clusters**: per endpoint, keep-alive connections on hyper's
//!   `client::conn::http1`, each carrying one request at a time; a request takes a ready
//!   one or opens another (see `http1.rs`).
//! - **Clusters that negotiate the protocol by ALPN** (TLS with `h2` and `http/1.1`
//!   offered, or the downstream's protocol): one hyper-util pooled client per endpoint,
//!   which multiplexes when `h2` was negotiated.
//! - **HTTP/2 clusters** (prior knowledge, or ALPN `h2` only): a small set of connections
//!   per endpoint, each carrying many streams. A request goes to the connection with the
//!   fewest streams in flight; it opens another connection instead when that one is busy
//!   and either
//!   - the endpoint has fewer than [`PoolConfig::http2_connections`] connections and every
//!     one carries at least one stream (default: the runtime's worker threads; Envoy keeps
//!     one connection pool per worker thread, so an Envoy with N workers holds N
//!     connections to a busy endpoint, and one connection is served by one task on each
//!     side, so a single connection cannot use more than one core), or
//!   - the cluster sets HTTP/2 `max_concurrent_streams` and every connection carries that
//!     many streams (as Envoy's HTTP/2 pool does), up to the cluster's circuit-breaker
//!     `max_connections` per endpoint.
//!
//!   Beyond those limits streams share the least-loaded connection (hyper then holds
//!   streams over the server's own `SETTINGS_MAX_CONCURRENT_STREAMS` until one ends). A
//!   stream counts as in flight, as for the least-request balancer, until its response
//!   headers arrive. Sequential requests all use the first connection. A connection that
//!   breaks or closes is replaced by a new one to the same endpoint on its next request.
//!
//! Picking an HTTP/2 connection reads an `ArcSwap`'d list and an atomic per connection; a
//! lock is taken only to add an endpoint or a connection (HTTP/1.1 holds a short lock on
//! its endpoint's idle list per request). Idle connections close after the
//! cluster's idle timeout (Envoy's default, 1 h, when the cluster sets none), each
//! connection of a set on its own.

mod counted;
mod fixed;
mod http1;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mesh_core::model::{Cluster, EndpointAddress, UpstreamProtocol};
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ALPN_H2, ALPN_HTTP11, ClientSettings};
use mesh_tls::verify::PeerPolicy;
use tower::BoxError;

use counted::Counters;
pub use counted::{Counted, PoolCounters};
use fixed::Fixed;
use http1::H1Set;

/// The request body type every pool sends (any body is boxed into it).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's default idle timeout of upstream connections.
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// Settings of the connection pools, the same for every cluster (see the
/// [module docs](self)); part of [`MeshClientConfig`](crate::client::MeshClientConfig).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolConfig {
    /// HTTP/2 connections per endpoint that concurrent requests spread over before they
    /// share connections (a request that finds every connection busy opens another while
    /// there are fewer). `None` (the default): the number of worker threads of the Tokio
    /// runtime the pool is created on (1 on a current-thread runtime), as Envoy keeps one
    /// pool per worker thread; the number of CPUs outside a runtime. `Some(1)`: one
    /// connection per endpoint, unless the cluster's `max_concurrent_streams` asks for more.
    pub http2_connections: Option<usize>,
}

impl PoolConfig {
    fn http2_connections(&self) -> usize {
        self.http2_connections
            .unwrap_or_else(|| match tokio::runtime::Handle::try_current() {
                Ok(rt) => rt.metrics().num_workers(),
                Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            })
            .max(1)
    }
}

/// The connector every endpoint's client starts from.
#[derive(Clone, Debug)]
enum Transport {
    /// mTLS through mesh-tls, with the cluster's expected server identities.
    Tls(MeshConnector),
    /// Plaintext (the cluster has no TLS context).
    Plain(HttpConnector),
}

/// One pooled hyper-util client.
#[derive(Clone, Debug)]
enum EndpointClient {
    Tls(Client<Fixed<MeshConnector>, RequestBody>),
    Plain(Client<Fixed<HttpConnector>, RequestBody>),
}

impl EndpointClient {
    fn request(
        &self,
        req: http::Request<RequestBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match self {
            Self::Tls(c) => c.request(req),
            Self::Plain(c) => c.request(req),
        }
    }
}

/// When an HTTP/2 endpoint opens another connection.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Connections opened as soon as every one carries a stream.
    spread: usize,
    /// Streams that fill a connection (the cluster's `max_concurrent_streams`).
    max_streams: Option<usize>,
    /// Connections opened at most.
    max_connections: usize,
}

/// One HTTP/2 connection: a client whose pool holds a single multiplexed connection
/// (`http2_only`), reconnecting when it breaks or idles out.
#[derive(Debug)]
struct H2Conn {
    client: EndpointClient,
    /// Streams sent and not yet answered with response headers.
    streams: AtomicUsize,
}

/// The HTTP/2 connections of one endpoint.
#[derive(Debug)]
struct H2Set {
    target: Uri,
    limits: Limits,
    /// Read lock-free per request; a new connection copies the list once.
    conns: ArcSwap<Vec<Arc<H2Conn>>>,
    grow: Mutex<()>,
}

impl H2Set {
    /// The connection for the next stream, opening one if the limits say so.
    fn pick(&self, shared: &Shared) -> Arc<H2Conn> {
        if let Some(c) = choose(&self.conns.load(), self.limits) {
            return c;
        }
        let _g = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.conns.load_full();
        if let Some(c) = choose(&current, self.limits) {
            return c;
        }
        let conn = Arc::new(H2Conn {
            client: shared.client(self.target.clone()),
            streams: AtomicUsize::new(0),
        });
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(conn.clone());
        self.conns.store(Arc::new(next));
        conn
    }
}

/// The least-loaded connection (the first of equals), or `None` when another should be
/// opened.
fn choose(conns: &[Arc<H2Conn>], limits: Limits) -> Option<Arc<H2Conn>> {
    let (best, load) = conns
        .iter()
        .map(|c| (c, c.streams.load(Ordering::Relaxed)))
        .min_by_key(|(_, load)| *load)?;
    let open = conns.len();
    let grow = load > 0
        && (open < limits.spread
            || (open < limits.max_connections && limits.max_streams.is_some_and(|m| load >= m)));
    (!grow).then(|| best.clone())
}

/// One endpoint's clients.
#[derive(Clone, Debug)]
enum Endpoint {
    /// HTTP/1.1 connections (HTTP/1.1 clusters).
    H1(Arc<H1Set>),
    /// One client for every connection (ALPN-negotiated).
    Single(Arc<EndpointClient>),
    /// HTTP/2 connections (HTTP/2 clusters).
    H2(Arc<H2Set>),
}

#[derive(Debug)]
struct Shared {
    builder: Builder,
    transport: Transport,
    /// `Some` for HTTP/2 clusters.
    h2: Option<Limits>,
    /// HTTP/1.1 on hyper's connection API (HTTP/1.1 clusters, and plaintext `Auto`).
    h1: bool,
    idle_timeout: Duration,
    /// Whether the idle-connection sweep task runs.
    sweeping: std::sync::atomic::AtomicBool,
    /// Read lock-free per request; a new endpoint copies the map once.
    endpoints: ArcSwap<HashMap<Arc<str>, Endpoint>>,
    writer: Mutex<()>,
    counters: Arc<Counters>,
}

impl Shared {
    /// The dialer of one endpoint's HTTP/1.1 connections.
    fn dial_h1(&self, target: Uri) -> http1::Dial {
        match &self.transport {
            Transport::Tls(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move || Box::pin(http1::dial(connect.clone())))
            }
            Transport::Plain(c) => {
                let connect = Fixed::new(c.clone(), target, self.counters.clone());
                Box::new(move || Box::pin(http1::dial(connect.clone())))
            }
        }
    }

    /// Starts, once per pool, the task that closes HTTP/1.1 connections idle for longer
    /// than the idle timeout (a quarter of it between sweeps); it ends with the pool.
    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Relaxed);
            return;
        };
        let pool = Arc::downgrade(self);
        let period = (self.idle_timeout / 4).max(Duration::from_millis(50));
        rt.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(shared) = pool.upgrade() else { return };
                let now = std::time::Instant::now();
                for ep in shared.endpoints.load().values() {
                    if let Endpoint::H1(set) = ep {
                        set.sweep(shared.idle_timeout, now);
                    }
                }
            }
        });
    }

    fn client(&self, target: Uri) -> EndpointClient {
        match &self.transport {
            Transport::Tls(c) => EndpointClient::Tls(self.builder.build(Fixed::new(
                c.clone(),
                target,
                self.counters.clone(),
            ))),
            Transport::Plain(c) => EndpointClient::Plain(self.builder.build(Fixed::new(
                c.clone(),
                target,
                self.counters.clone(),
            ))),
        }
    }
}

/// Pooled connections to the endpoints of one cluster. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

impl UpstreamPool {
    /// A pool for `cluster`: mTLS from `identity` when the cluster has a TLS context (the
    /// server must present one of `expected` identities, or any of our trust domain when
    /// `expected` is empty), plaintext otherwise; default [`PoolConfig`].
    pub fn new(cluster: &Cluster, identity: &IdentityStore, expected: PeerPolicy) -> Self {
        Self::with_config(cluster, identity, expected, PoolConfig::default())
    }

    /// Like [`UpstreamPool::new`], with `config`.
    pub fn with_config(
        cluster: &Cluster,
        identity: &IdentityStore,
        expected: PeerPolicy,
        config: PoolConfig,
    ) -> Self {
        let proto = cluster.http_protocol.protocol;
        let idle_timeout = cluster.http_protocol.idle_timeout.unwrap_or(DEFAULT_IDLE);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(idle_timeout)
            .http2_keep_alive_interval(None);
        let h1 = proto == UpstreamProtocol::Http1
            || (proto == UpstreamProtocol::Auto && cluster.tls.is_none());
        let mut h2 = None;
        if proto == UpstreamProtocol::Http2 {
            // Prior knowledge (plaintext) or ALPN h2 only (TLS): each client holds one
            // multiplexed connection, also when the first requests arrive together.
            builder.http2_only(true);
            let max_connections = cluster.circuit_breakers.default.max_connections.max(1) as usize;
            h2 = Some(Limits {
                spread: config.http2_connections().min(max_connections),
                max_streams: cluster
                    .http_protocol
                    .max_concurrent_streams
                    .map(|n| n.max(1) as usize),
                max_connections,
            });
        }
        let transport = match &cluster.tls {
            Some(tls) => {
                let alpn = alpn_for(proto, &tls.alpn_protocols);
                let settings = ClientSettings {
                    peers: expected,
                    alpn,
                    connect_timeout: cluster.connect_timeout,
                };
                Transport::Tls(MeshConnector::new(identity.clone(), settings))
            }
            None => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(cluster.connect_timeout));
                Transport::Plain(http)
            }
        };
        Self {
            shared: Arc::new(Shared {
                builder,
                transport,
                h2,
                h1,
                idle_timeout,
                sweeping: Default::default(),
                endpoints: ArcSwap::default(),
                writer: Mutex::new(()),
                counters: Arc::default(),
            }),
        }
    }

    /// Whether connections are mTLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.shared.transport, Transport::Tls(_))
    }

    /// Sends `req` to `endpoint` (its `ip:port`, as [`EndpointRef::key`](crate::EndpointRef::key))
    /// on a pooled connection. The request's URI must be absolute (`http://authority/path`):
    /// its authority is what the server sees, the connection goes to `endpoint`.
    pub fn send(
        &self,
        endpoint: &Arc<str>,
        address: &EndpointAddress,
        req: http::Request<RequestBody>,
    ) -> ResponseFuture {
        let endpoints = self.shared.endpoints.load();
        match endpoints.get(endpoint) {
            Some(ep) => self.send_on(ep, req),
            None => {
                drop(endpoints);
                self.send_on(&self.endpoint(endpoint, address), req)
            }
        }
    }

    fn send_on(&self, ep: &Endpoint, req: http::Request<RequestBody>) -> ResponseFuture {
        match ep {
            Endpoint::H1(set) => {
                let set = set.clone();
                ResponseFuture {
                    inner: Inner::H1(Box::pin(set.send(req))),
                    stream: None,
                }
            }
            Endpoint::H2(set) => {
                let conn = set.pick(&self.shared);
                conn.streams.fetch_add(1, Ordering::Relaxed);
                ResponseFuture {
                    inner: Inner::Legacy(conn.client.request(req)),
                    stream: Some(Stream(conn)),
                }
            }
            Endpoint::Single(c) => ResponseFuture {
                inner: Inner::Legacy(c.request(req)),
                stream: None,
            },
        }
    }

    fn endpoint(&self, endpoint: &Arc<str>, address: &EndpointAddress) -> Endpoint {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shared.endpoints.load_full();
        if let Some(e) = current.get(endpoint) {
            return e.clone();
        }
        let target = endpoint_uri(address);
        let ep = match self.shared.h2 {
            Some(limits) => Endpoint::H2(Arc::new(H2Set {
                target,
                limits,
                conns: ArcSwap::default(),
                grow: Mutex::new(()),
            })),
            None if self.shared.h1 => {
                self.shared.start_sweeping();
                Endpoint::H1(Arc::new(H1Set::new(self.shared.dial_h1(target))))
            }
            None => Endpoint::Single(Arc::new(self.shared.client(target))),
        };
        let mut next = HashMap::clone(&current);
        next.insert(endpoint.clone(), ep.clone());
        self.shared.endpoints.store(Arc::new(next));
        ep
    }

    /// Drops the clients (and so the idle connections) of endpoints not in `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shared.endpoints.load_full();
        if current.keys().all(|k| keep(k)) {
            return;
        }
        let next = current
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.shared.endpoints.store(Arc::new(next));
    }

    /// Endpoints with a client (connections open or idle).
    pub fn endpoints(&self) -> usize {
        self.shared.endpoints.load().len()
    }

    /// The pool's connection counters (Envoy's `upstream_cx_*`) now.
    pub fn counters(&self) -> PoolCounters {
        self.shared.counters.snapshot(self.endpoints() as u64)
    }

    /// A handle that reads the counters without keeping the pool, and so its connections,
    /// alive (for metrics that outlive a removed cluster).
    pub fn downgrade(&self) -> WeakPool {
        WeakPool(Arc::downgrade(&self.shared))
    }
}

/// A pool's counters, readable while the pool exists. See [`UpstreamPool::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakPool(Weak<Shared>);

impl WeakPool {
    /// The counters now, or `None` once the pool is gone.
    pub fn counters(&self) -> Option<PoolCounters> {
        self.0
            .upgrade()
            .map(|shared| UpstreamPool { shared }.counters())
    }
}

/// A stream in flight on an HTTP/2 connection, until its response headers arrive.
#[derive(Debug)]
struct Stream(Arc<H2Conn>);

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The response future of [`UpstreamPool::send`]. A failed connection attempt is a
/// [`ConnectError`] (or hyper-util's error with `is_connect()` on ALPN-negotiated
/// clusters).
pub struct ResponseFuture {
    inner: Inner,
    stream: Option<Stream>,
}

type BoxedResponse = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

enum Inner {
    H1(BoxedResponse),
    Legacy(hyper_util::client::legacy::ResponseFuture),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unpin: both kinds are boxed.
        let out = match &mut self.inner {
            Inner::H1(f) => f.as_mut().poll(cx),
            Inner::Legacy(f) => Pin::new(f).poll(cx).map_err(Into::into),
        };
        if out.is_ready() {
            self.stream = None;
        }
        out
    }
}

pub use mesh_core::ConnectError;

/// The URI the connector dials for an endpoint.
fn endpoint_uri(address: &EndpointAddress) -> Uri {
    let authority = match address {
        EndpointAddress::Socket(a) => a.to_string(),
        EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
    };
    // An address that is no valid authority (cannot come from a parsed EDS address) dials
    // nothing and fails as a connect error.
    format!("http://{authority}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid:1"))
}

/// ALPN offered to a TLS endpoint: the cluster's list when it names HTTP protocols, else
/// what the protocol option allows (HTTP/2 preferred where both are allowed).
fn alpn_for(proto: UpstreamProtocol, cluster_alpn: &[String]) -> Vec<Vec<u8>> {
    let from_cluster: Vec<Vec<u8>> = cluster_alpn
        .iter()
        .filter(|p| p.as_bytes() == ALPN_H2 || p.as_bytes() == ALPN_HTTP11)
        .map(|p| p.as_bytes().to_vec())
        .collect();
    match proto {
        UpstreamProtocol::Http1 => vec![ALPN_HTTP11.to_vec()],
        UpstreamProtocol::Http2 => vec![ALPN_H2.to_vec()],
        _ if !from_cluster.is_empty() => from_cluster,
        _ => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_follows_protocol_options() {
        assert_eq!(
            alpn_for(UpstreamProtocol::Http1, &[]),
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(alpn_for(UpstreamProtocol::Http2, &[]), vec![b"h2".to_vec()]);
        assert_eq!(
            alpn_for(UpstreamProtocol::Auto, &["istio".into(), "h2".into()]),
            vec![b"h2".to_vec()]
        );
        assert_eq!(alpn_for(UpstreamProtocol::Auto, &[]).len(), 2);
    }

    #[test]
    fn endpoint_uri_names_the_address() {
        let a = EndpointAddress::Socket(([10, 0, 0, 1], 9080).into());
        assert_eq!(endpoint_uri(&a).to_string(), "http://10.0.0.1:9080/");
        let d = EndpointAddress::Dns {
            host: "reviews".into(),
            port: 80,
        };
        assert_eq!(endpoint_uri(&d).to_string(), "http://reviews:80/");
    }
}
