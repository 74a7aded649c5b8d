//! Connection pools towards one cluster's endpoints, over hyper.
//!
//! One [`UpstreamPool`] per cluster holds one hyper-util pooled client per endpoint, whose
//! connector always dials that endpoint whatever the request's URI says. So the request
//! keeps its own authority in the URI: HTTP/1.1 sends it as `Host`, HTTP/2 as `:authority`
//! (as Envoy does: the upstream sees the authority the caller asked for, after any host
//! rewrite, never the endpoint's address). HTTP/1.1 connections are kept alive and reused
//! one request at a time; an HTTP/2 connection (negotiated by ALPN, or prior knowledge for
//! HTTP/2 clusters) carries many streams, one connection per endpoint. Idle connections
//! close after the cluster's idle timeout (Envoy's default, 1 h, when the cluster sets none).

mod fixed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Builder, Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mesh_core::model::{Cluster, EndpointAddress, UpstreamProtocol};
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ALPN_H2, ALPN_HTTP11, ClientSettings};
use mesh_tls::verify::PeerPolicy;
use tower::BoxError;

use fixed::Fixed;

/// The request body type every pool sends (any body is boxed into it).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's default idle timeout of upstream connections.
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// The connector every endpoint's client starts from.
#[derive(Clone, Debug)]
enum Transport {
    /// mTLS through mesh-tls, with the cluster's expected server identities.
    Tls(MeshConnector),
    /// Plaintext (the cluster has no TLS context).
    Plain(HttpConnector),
}

/// One endpoint's pooled client.
#[derive(Clone, Debug)]
enum EndpointClient {
    Tls(Client<Fixed<MeshConnector>, RequestBody>),
    Plain(Client<Fixed<HttpConnector>, RequestBody>),
}

#[derive(Debug)]
struct Shared {
    builder: Builder,
    transport: Transport,
    /// Read lock-free per request; a new endpoint copies the map once.
    clients: ArcSwap<HashMap<Arc<str>, EndpointClient>>,
    writer: Mutex<()>,
}

/// Pooled connections to the endpoints of one cluster. Cheap to clone.
#[derive(Clone, Debug)]
pub struct UpstreamPool {
    shared: Arc<Shared>,
}

impl UpstreamPool {
    /// A pool for `cluster`: mTLS from `identity` when the cluster has a TLS context (the
    /// server must present one of `expected` identities, or any of our trust domain when
    /// `expected` is empty), plaintext otherwise.
    pub fn new(cluster: &Cluster, identity: &IdentityStore, expected: PeerPolicy) -> Self {
        let proto = cluster.http_protocol.protocol;
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(cluster.http_protocol.idle_timeout.unwrap_or(DEFAULT_IDLE))
            .http2_keep_alive_interval(None);
        if proto == UpstreamProtocol::Http2 {
            // Prior knowledge (plaintext) or ALPN h2 only (TLS): one multiplexed connection
            // per endpoint, also when the first requests arrive together.
            builder.http2_only(true);
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
                clients: ArcSwap::default(),
                writer: Mutex::new(()),
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
        let clients = self.shared.clients.load();
        let client = match clients.get(endpoint) {
            Some(c) => c.clone(),
            None => {
                drop(clients);
                self.client_for(endpoint, address)
            }
        };
        match client {
            EndpointClient::Tls(c) => c.request(req),
            EndpointClient::Plain(c) => c.request(req),
        }
    }

    fn client_for(&self, endpoint: &Arc<str>, address: &EndpointAddress) -> EndpointClient {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shared.clients.load_full();
        if let Some(c) = current.get(endpoint) {
            return c.clone();
        }
        let target = endpoint_uri(address);
        let s = &self.shared;
        let client = match &s.transport {
            Transport::Tls(c) => {
                EndpointClient::Tls(s.builder.build(Fixed::new(c.clone(), target)))
            }
            Transport::Plain(c) => {
                EndpointClient::Plain(s.builder.build(Fixed::new(c.clone(), target)))
            }
        };
        let mut next = HashMap::clone(&current);
        next.insert(endpoint.clone(), client.clone());
        self.shared.clients.store(Arc::new(next));
        client
    }

    /// Drops the clients (and so the idle connections) of endpoints not in `keep`.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.shared.clients.load_full();
        if current.keys().all(|k| keep(k)) {
            return;
        }
        let next = current
            .iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        self.shared.clients.store(Arc::new(next));
    }

    /// Endpoints with a client (connections open or idle).
    pub fn endpoints(&self) -> usize {
        self.shared.clients.load().len()
    }
}

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
