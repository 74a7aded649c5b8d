//! Istio's standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes`, `istio_response_bytes`, `istio_tcp_*`) from either side of a call,
//! and scrape-time collectors ([`library`]). Per-cluster upstream, identity and xDS metrics are
//! mesh-admin's.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, WorkloadInfo};
//!
//! let mut registry = Registry::default();
//! let metrics = IstioMetrics::new();
//! metrics.register(&mut registry);
//! let layer = IstioMetricsLayer::source(&metrics, WorkloadInfo::default());
//! # let _ = layer;
//! ```

mod body;
pub mod directory;
mod future;
mod labels;
mod layer;
pub mod library;
mod peers;
mod recording;
mod service;
mod source;
pub mod tcp;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub use body::MeteredBody;
pub use future::ResponseFuture;
pub use labels::{
    ISTIO_LABELS, IstioLabels, PeerLabels, Protocol, Reporter, SecurityPolicy, ServiceInfo,
    TcpLabels, UNKNOWN, WorkloadInfo,
};
pub use layer::IstioMetricsLayer;
pub use peers::{PeerDirectory, PeerResolver};
pub use service::IstioMetricsService;
pub use source::SourceWorkload;

/// Istio's histogram bucket bounds (Envoy's default buckets, which Istio's
/// `istio_request_duration_milliseconds`, `istio_request_bytes` and
/// `istio_response_bytes` use unless overridden by `sidecar.istio.io/statsHistogramBuckets`).
pub const ISTIO_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// A response's `response_flags` (set by inner layers: circuit breaker `UO`, ...); it
/// lives in mesh-core so that layers set it without depending on telemetry.
pub use mesh_core::extensions::ResponseFlags;

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn istio_histogram() -> Histogram {
    Histogram::new(ISTIO_BUCKETS)
}

/// The metric families. Cheap to clone (every clone shares the same series).
#[derive(Clone, Debug)]
pub struct IstioMetrics {
    pub(crate) requests: Family<IstioLabels, Counter>,
    pub(crate) duration: HistogramFamily<IstioLabels>,
    pub(crate) request_bytes: HistogramFamily<IstioLabels>,
    pub(crate) response_bytes: HistogramFamily<IstioLabels>,
    pub(crate) tcp_sent: Family<TcpLabels, Counter>,
    pub(crate) tcp_received: Family<TcpLabels, Counter>,
    pub(crate) tcp_opened: Family<TcpLabels, Counter>,
    pub(crate) tcp_closed: Family<TcpLabels, Counter>,
}

impl Default for IstioMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IstioMetrics {
    /// Empty families; [`register`](Self::register) them to expose them.
    pub fn new() -> Self {
        let h = || Family::new_with_constructor(istio_histogram as fn() -> Histogram);
        Self {
            requests: Family::default(),
            duration: h(),
            request_bytes: h(),
            response_bytes: h(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
        }
    }

    /// Registers the families under Istio's names (at the registry's top level: Istio's
    /// dashboards expect no prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_requests",
            "Requests, by reporter, source, destination and response",
            self.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body size in bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body size in bytes",
            self.response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the peer over TCP connections",
            self.tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the peer over TCP connections",
            self.tcp_received.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.tcp_closed.clone(),
        );
    }
}
