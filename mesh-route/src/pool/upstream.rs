//! [`UpstreamPool`], the pooled connections to one cluster's endpoints, and [`WeakPool`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use arc_swap::ArcSwap;
use hyper_util::client::legacy::connect::HttpConnector;
use mesh_core::model::{Cluster, EndpointAddress, TlsMode, UpstreamProtocol};
use mesh_hbone::HboneClient;
use mesh_resilience::circuit_breaker::CircuitBreaker;
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::ClientSettings;
use mesh_tls::verify::PeerPolicy;

use super::alpn::Route;
use super::config::{DEFAULT_IDLE, Lifetime, PoolConfig};
use super::connector::{Transport, alpn_for, endpoint_uri};
use super::counted::PoolCounters;
use super::h2::{H2Set, Limits};
use super::http1::H1Set;
use super::response::{Inner, ResponseFuture};
use super::state::{Endpoint, Shared};
use super::{ConnectError, RequestBody};

/// Pooled connections to the endpoints of one cluster. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
    /// HTTP/2 connections for gRPC requests when the cluster is not HTTP/2: gRPC needs
    /// HTTP/2 whatever the cluster says (istiod's proxyless generator sets no protocol
    /// options on gRPC clusters and leaves HTTP/2 to the gRPC library). Same breaker and
    /// counters as the cluster's other connections.
    grpc: Option<Arc<Shared>>,
    /// Connections to endpoints marked [`TlsMode::Hbone`]: tunnels through their IP's port
    /// 15008, the server verified as the cluster's (first) expected SPIFFE identity. `None`
    /// when the cluster has no TLS context or names no identity (HBONE needs one).
    hbone: Option<Arc<Shared>>,
    /// HTTP/2 inside the tunnel for gRPC requests to HBONE endpoints (as `grpc`).
    hbone_grpc: Option<Arc<Shared>>,
    /// The cluster forwards in the caller's HTTP version (Envoy's
    /// `use_downstream_protocol_config`): HTTP/2 requests take the `grpc` connections.
    use_downstream: bool,
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
        let breaker = CircuitBreaker::new(&cluster.name, &cluster.circuit_breakers);
        let counters = Arc::<super::counted::Counters>::default();
        let grpc = (cluster.http_protocol.protocol != UpstreamProtocol::Http2).then(|| {
            let mut h2 = cluster.clone();
            h2.http_protocol.protocol = UpstreamProtocol::Http2;
            let parts = (breaker.clone(), counters.clone());
            Arc::new(shared(&h2, identity, expected.clone(), &config, parts))
        });
        let tunnel = |c: &Cluster| hbone(c, identity, &expected, &config, (&breaker, &counters));
        let hbone_grpc = grpc.as_ref().and_then(|_| {
            let mut h2 = cluster.clone();
            h2.http_protocol.protocol = UpstreamProtocol::Http2;
            tunnel(&h2)
        });
        // HTTP/1 requests of a cluster that forwards in the caller's version go as HTTP/1.1
        // (HTTP/2 ones take the `grpc` connections).
        let mut main = cluster.clone();
        if main.http_protocol.protocol == UpstreamProtocol::UseDownstream {
            main.http_protocol.protocol = UpstreamProtocol::Http1;
        }
        let hbone = tunnel(&main);
        let shared = shared(&main, identity, expected, &config, (breaker, counters));
        Self {
            shared: Arc::new(shared),
            grpc,
            hbone,
            hbone_grpc,
            use_downstream: cluster.http_protocol.protocol == UpstreamProtocol::UseDownstream,
        }
    }
}

/// The connections to the cluster's HBONE endpoints: the cluster's HTTP protocol in
/// plaintext inside the tunnel (the tunnel is the mTLS), same breaker and counters.
fn hbone(
    cluster: &Cluster,
    identity: &IdentityStore,
    expected: &PeerPolicy,
    config: &PoolConfig,
    (breaker, counters): (&Arc<CircuitBreaker>, &Arc<super::counted::Counters>),
) -> Option<Arc<Shared>> {
    cluster.tls.as_ref()?;
    let server = expected.identities.first()?.clone();
    let mut inner = cluster.clone();
    inner.tls = None;
    let parts = (breaker.clone(), counters.clone());
    let mut s = shared(&inner, identity, PeerPolicy::default(), config, parts);
    let client = config
        .hbone
        .clone()
        .unwrap_or_else(|| HboneClient::new(identity.clone()));
    let mut connector = client.connector(server);
    // The tunnels name the cluster's service (`forwarded`, `destination_service`).
    if let Some(host) = crate::client::hbone_hosts::service_host(&cluster.name) {
        connector = connector.service(host);
    }
    s.transport = Transport::Hbone(connector);
    Some(Arc::new(s))
}

/// The shared state of one pool's connections for `cluster`'s protocol.
fn shared(
    cluster: &Cluster,
    identity: &IdentityStore,
    expected: PeerPolicy,
    config: &PoolConfig,
    (breaker, counters): (Arc<CircuitBreaker>, Arc<super::counted::Counters>),
) -> Shared {
    let proto = cluster.http_protocol.protocol;
    let idle_timeout = cluster.http_protocol.idle_timeout.unwrap_or(DEFAULT_IDLE);
    let h1 = proto == UpstreamProtocol::Http1
        || (proto == UpstreamProtocol::Auto && cluster.tls.is_none());
    let max_connections = cluster.circuit_breakers.default.max_connections.max(1) as usize;
    let limits = Limits {
        spread: config.http2_connections().min(max_connections),
        max_streams: cluster
            .http_protocol
            .max_concurrent_streams
            .map_or(super::h2::DEFAULT_MAX_STREAMS, |n| n.max(1) as usize),
        max_connections,
        life: Lifetime::of(cluster),
    };
    // HTTP/2: prior knowledge (plaintext) or ALPN h2 only (TLS).
    let h2 = (proto == UpstreamProtocol::Http2).then_some(limits);
    // TLS offering h2 and http/1.1 (`Auto` over TLS).
    let alpn = (!h1 && h2.is_none()).then_some(limits);
    let transport = match &cluster.tls {
        Some(tls) => {
            let alpn = alpn_for(proto, &tls.alpn_protocols);
            let settings = ClientSettings {
                peers: expected,
                alpn,
                connect_timeout: cluster.connect_timeout,
                params: tls.params.clone(),
                sni: tls.sni.clone(),
                // No identity instance named: TLS without a client certificate (gRPC A29).
                client_certificate: tls.identity_certificate.is_some(),
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
    Shared {
        transport,
        h2,
        alpn,
        idle_timeout,
        sweeping: Default::default(),
        endpoints: ArcSwap::default(),
        writer: Mutex::new(()),
        counters,
        breaker,
        life: Lifetime::of(cluster),
    }
}

impl UpstreamPool {
    /// The cluster's circuit breaker, built from its thresholds: HTTP/1.1 connections hold
    /// its `max_connections` slots and requests waiting for one its `max_pending_requests`
    /// slots. Give it to the [`CircuitBreakerLayer`] of the cluster's stack so that one
    /// breaker counts both (as [`ResilienceStack`](crate::client::ResilienceStack) does).
    ///
    /// [`CircuitBreakerLayer`]: mesh_resilience::circuit_breaker::CircuitBreakerLayer
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.shared.breaker
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
        self.send_with(endpoint, address, TlsMode::Unset, req)
    }

    /// Like [`UpstreamPool::send`], for an endpoint with `tls_mode`: a
    /// [`TlsMode::Hbone`] endpoint is reached through an HBONE tunnel when the cluster has
    /// mTLS with an expected identity (else as any other endpoint of the cluster).
    pub fn send_with(
        &self,
        endpoint: &Arc<str>,
        address: &EndpointAddress,
        tls_mode: TlsMode,
        req: http::Request<RequestBody>,
    ) -> ResponseFuture {
        let grpc = mesh_resilience::body::is_grpc(&req)
            || (self.use_downstream && req.version() == http::Version::HTTP_2);
        let hbone = self.hbone.as_ref();
        let tunnel = match (tls_mode, grpc) {
            (TlsMode::Hbone, true) => self.hbone_grpc.as_ref().or(hbone),
            (TlsMode::Hbone, false) => hbone,
            _ => None,
        };
        let shared = match (tunnel, &self.grpc) {
            (Some(t), _) => t,
            (None, Some(h2)) if grpc => h2,
            _ => &self.shared,
        };
        let endpoints = shared.endpoints.load();
        match endpoints.get(endpoint) {
            Some(ep) => send_on(ep, req),
            None => {
                drop(endpoints);
                send_on(&endpoint_of(shared, endpoint, address), req)
            }
        }
    }

    /// Opens a connection to `endpoint` ahead of its first request and waits until it is
    /// up, so that no request waits for its handshake (the client does it for endpoints an
    /// EDS update adds). For HTTP/2 clusters, whose requests share connections; elsewhere,
    /// and for an endpoint with a connection already, it does nothing.
    pub async fn warm(
        &self,
        endpoint: &Arc<str>,
        address: &EndpointAddress,
    ) -> Result<(), ConnectError> {
        if self.shared.h2.is_none() {
            return Ok(());
        }
        match endpoint_of(&self.shared, endpoint, address) {
            Endpoint::H2(set) => set.warm().await,
            _ => Ok(()),
        }
    }

    /// Drops the clients (and so the idle connections) of endpoints not in `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        retain(&self.shared, &keep);
        for other in [&self.grpc, &self.hbone, &self.hbone_grpc]
            .into_iter()
            .flatten()
        {
            retain(other, &keep);
        }
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

fn send_on(ep: &Endpoint, req: http::Request<RequestBody>) -> ResponseFuture {
    match ep {
        Endpoint::H1(set) => {
            let set = set.clone();
            ResponseFuture {
                inner: Inner::H1(Box::pin(set.send(req))),
                stream: None,
            }
        }
        Endpoint::H2(set) => {
            // The place is taken now, so requests sent together spread as they are made.
            let stream = set.pick();
            ResponseFuture {
                inner: Inner::H2(Box::pin(set.clone().send(stream, req))),
                stream: None,
            }
        }
        Endpoint::Alpn(set) => match set.route() {
            // The server's choice is known: straight to that set.
            Some(Route::H1(set)) => send_on(&Endpoint::H1(set), req),
            Some(Route::H2(set)) => send_on(&Endpoint::H2(set), req),
            None => ResponseFuture {
                inner: Inner::Alpn(Box::pin(set.clone().send(req))),
                stream: None,
            },
        },
    }
}

fn endpoint_of(shared: &Arc<Shared>, endpoint: &Arc<str>, address: &EndpointAddress) -> Endpoint {
    let _w = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
    let current = shared.endpoints.load_full();
    if let Some(e) = current.get(endpoint) {
        return e.clone();
    }
    let target = endpoint_uri(address);
    shared.start_sweeping();
    let alpn = shared.alpn.and_then(|l| shared.alpn_set(target.clone(), l));
    let ep = match (shared.h2, alpn) {
        (Some(limits), _) => Endpoint::H2(Arc::new(H2Set::new(limits, shared.dial_h2(target)))),
        (None, Some(set)) => Endpoint::Alpn(Arc::new(set)),
        // HTTP/1.1 (an ALPN cluster has TLS, so it has its set above).
        (None, None) => Endpoint::H1(Arc::new(H1Set::new(
            shared.dial_h1(target),
            shared.breaker.clone(),
            shared.life,
        ))),
    };
    let mut next = HashMap::clone(&current);
    next.insert(endpoint.clone(), ep.clone());
    shared.endpoints.store(Arc::new(next));
    ep
}

fn retain(shared: &Shared, keep: &impl Fn(&str) -> bool) {
    let _w = shared.writer.lock().unwrap_or_else(|p| p.into_inner());
    let current = shared.endpoints.load_full();
    if current.keys().all(|k| keep(k)) {
        return;
    }
    let next = current
        .iter()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    shared.endpoints.store(Arc::new(next));
}

/// A pool's counters, readable while the pool exists. See [`UpstreamPool::downgrade`].
#[derive(Clone, Debug)]
pub struct WeakPool(Weak<Shared>);

impl WeakPool {
    /// The counters now, or `None` once the pool is gone.
    pub fn counters(&self) -> Option<PoolCounters> {
        self.0.upgrade().map(|shared| {
            let pool = UpstreamPool {
                shared,
                grpc: None,
                hbone: None,
                hbone_grpc: None,
                use_downstream: false,
            };
            pool.counters()
        })
    }
}
