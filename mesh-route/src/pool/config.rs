//! The pools' settings, the same for every cluster.

use std::time::{Duration, Instant};

use mesh_core::model::Cluster;

/// Envoy's default idle timeout of upstream connections.
pub(super) const DEFAULT_IDLE: Duration = Duration::from_secs(3600);

/// Settings of the connection pools, the same for every cluster (see the
/// [module docs](super)); part of [`MeshClientConfig`](crate::client::MeshClientConfig).
#[derive(Clone, Debug, Default)]
pub struct PoolConfig {
    /// HTTP/2 connections per endpoint that concurrent requests spread over before they
    /// share connections (a request that finds every connection busy opens another while
    /// there are fewer). `None` (the default): the number of worker threads of the Tokio
    /// runtime the pool is created on (1 on a current-thread runtime), as Envoy keeps one
    /// pool per worker thread; the number of CPUs outside a runtime. `Some(1)`: one
    /// connection per endpoint, unless the cluster's `max_concurrent_streams` asks for more.
    pub http2_connections: Option<usize>,
    /// The client that opens the tunnels to endpoints marked `TlsMode::Hbone` (its
    /// connection pool, its observer and the `baggage` it sends), shared by every cluster.
    /// It must present the pools' identity. `None` (the default): each cluster gets a plain
    /// `HboneClient` of that identity, which counts nothing and sends no baggage; the `mesh`
    /// facade sets its `Mesh::hbone_client()`, so the tunnels count in `istio_tcp_*`.
    pub hbone: Option<mesh_hbone::HboneClient>,
}

impl PoolConfig {
    pub(super) fn http2_connections(&self) -> usize {
        self.http2_connections
            .unwrap_or_else(|| match tokio::runtime::Handle::try_current() {
                Ok(rt) => rt.metrics().num_workers(),
                Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
            })
            .max(1)
    }
}

/// When a pooled connection retires (the cluster's `max_requests_per_connection` and
/// `max_connection_duration`): it takes no new request, and closes once its last ends.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Lifetime {
    pub(super) max_requests: Option<u32>,
    pub(super) max_duration: Option<Duration>,
}

impl Lifetime {
    pub(super) fn of(cluster: &Cluster) -> Self {
        Self {
            max_requests: cluster.http_protocol.max_requests_per_connection,
            max_duration: cluster.http_protocol.max_connection_duration,
        }
    }

    /// Whether a connection opened at `born` is too old for another request.
    pub(super) fn expired(&self, born: Instant) -> bool {
        self.max_duration.is_some_and(|d| born.elapsed() >= d)
    }

    /// Whether a connection that carried `served` requests since `born` is done.
    pub(super) fn spent(&self, served: u32, born: Instant) -> bool {
        self.max_requests.is_some_and(|m| served >= m) || self.expired(born)
    }
}
