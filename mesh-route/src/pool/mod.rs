//! Connection pools towards one cluster's endpoints, over hyper.
//!
//! One [`UpstreamPool`] per cluster holds one hyper-util pooled client keyed by endpoint
//! (`scheme://ip:port`), so each endpoint has its own set of connections: HTTP/1.1
//! connections are kept alive and reused one request at a time, an HTTP/2 connection
//! (negotiated by ALPN, or prior knowledge for plaintext HTTP/2 clusters) carries many
//! streams. Idle connections close after the cluster's idle timeout (Envoy's default, 1 h,
//! when the cluster sets none) and the pool's background task reaps them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mesh_core::model::{Cluster, UpstreamProtocol};
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ALPN_H2, ALPN_HTTP11, ClientSettings};
use mesh_tls::verify::PeerPolicy;
use tower::BoxError;

/// The request body type every pool sends (any body is boxed into it).
pub type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// Envoy's default idle timeout of upstream connections.
const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// The transport of a pool.
#[derive(Clone, Debug)]
enum Transport {
    /// mTLS through mesh-tls, with the cluster's expected server identities.
    Tls(Client<MeshConnector, RequestBody>),
    /// Plaintext (the cluster has no TLS context).
    Plain(Client<HttpConnector, RequestBody>),
}

/// Pooled connections to the endpoints of one cluster.
#[derive(Clone, Debug)]
pub struct UpstreamPool {
    transport: Transport,
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
        let transport = match &cluster.tls {
            Some(tls) => {
                let alpn = alpn_for(proto, &tls.alpn_protocols);
                let settings = ClientSettings {
                    peers: expected,
                    alpn,
                    connect_timeout: cluster.connect_timeout,
                };
                Transport::Tls(builder.build(MeshConnector::new(identity.clone(), settings)))
            }
            None => {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(cluster.connect_timeout));
                if proto == UpstreamProtocol::Http2 {
                    builder.http2_only(true);
                }
                Transport::Plain(builder.build(http))
            }
        };
        Self { transport }
    }

    /// Whether connections are mTLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// Sends `req` (its URI already names the endpoint) on a pooled connection.
    pub fn send(
        &self,
        req: http::Request<RequestBody>,
    ) -> hyper_util::client::legacy::ResponseFuture {
        match &self.transport {
            Transport::Tls(c) => c.request(req),
            Transport::Plain(c) => c.request(req),
        }
    }
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
}
