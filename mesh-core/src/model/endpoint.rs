//! Endpoints (EDS): localities, priorities, weights and health.

use std::net::SocketAddr;
use std::sync::Arc;

/// A cluster load assignment resource.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterLoadAssignment {
    /// The cluster (or EDS service) name.
    pub cluster_name: String,
    /// Endpoints grouped by locality and priority.
    pub localities: Vec<LocalityEndpoints>,
    /// Overprovisioning factor in percent (default 140): a priority takes all traffic while
    /// healthy% x factor / 100 >= 100.
    pub overprovisioning_factor: u32,
}

impl Default for ClusterLoadAssignment {
    fn default() -> Self {
        Self {
            cluster_name: String::new(),
            localities: Vec::new(),
            overprovisioning_factor: DEFAULT_OVERPROVISIONING_FACTOR,
        }
    }
}

/// Envoy's default overprovisioning factor.
pub const DEFAULT_OVERPROVISIONING_FACTOR: u32 = 140;

impl ClusterLoadAssignment {
    /// Total number of endpoints.
    pub fn endpoint_count(&self) -> usize {
        self.localities.iter().map(|l| l.endpoints.len()).sum()
    }
}

/// Where an endpoint is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// The endpoints of one locality at one priority.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalityEndpoints {
    /// The locality (shared between priorities and updates).
    pub locality: Arc<Locality>,
    /// Priority, 0 highest.
    pub priority: u32,
    /// Locality weight for locality-weighted LB; `None` when unset (gRPC drops localities
    /// without weight when locality weighting is on).
    pub load_balancing_weight: Option<u32>,
    /// Endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// An endpoint's health as reported by the control plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HealthStatus {
    /// Unknown: treated as healthy.
    #[default]
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
    /// Draining: takes no new requests.
    Draining,
    /// Health check timed out: unhealthy.
    Timeout,
    /// Degraded: used only when too few healthy hosts remain.
    Degraded,
}

impl HealthStatus {
    /// Whether new requests may be sent (UNKNOWN and HEALTHY, as gRPC and Envoy do).
    pub fn is_usable(self) -> bool {
        matches!(self, Self::Unknown | Self::Healthy)
    }
}

/// An endpoint's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP and port.
    Socket(SocketAddr),
    /// A DNS name and port (LOGICAL_DNS and STATIC-by-name clusters).
    Dns {
        /// Host name.
        host: Arc<str>,
        /// Port.
        port: u16,
    },
}

/// How Istio says an endpoint is reached: its `tlsMode` label (`istio` when the endpoint
/// accepts mTLS), or `tunnel: http` when it takes HBONE. Both come from the endpoint's
/// `filter_metadata["envoy.transport_socket_match"]`, which istiod fills with one or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// No label.
    #[default]
    Unset,
    /// `istio`: the endpoint has a mesh identity and accepts Istio mTLS.
    Istio,
    /// `disabled`: plaintext.
    Disabled,
    /// `tunnel: http`: the endpoint speaks HBONE (Istio's ambient mode; the workload is
    /// labelled `networking.istio.io/tunnel: http`). It is reached through an HTTP/2
    /// `CONNECT` tunnel over mTLS to its IP's port 15008, the `CONNECT` authority being the
    /// endpoint's `ip:port`.
    Hbone,
}

/// One endpoint. Kept small: a full state holds hundreds of thousands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Address.
    pub address: EndpointAddress,
    /// Health.
    pub health: HealthStatus,
    /// Weight within the locality (default 1, never 0).
    pub weight: u32,
    /// Hostname for `auto_host_rewrite`.
    pub hostname: Option<Arc<str>>,
    /// Istio's `tlsMode` label or HBONE `tunnel` marker from
    /// `filter_metadata["envoy.transport_socket_match"]`.
    pub tls_mode: TlsMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full state holds 100,000 endpoints; keep each one small (the budget is
    /// 0.5 KB per endpoint for the whole client state).
    #[test]
    fn endpoint_stays_small() {
        let size = std::mem::size_of::<Endpoint>();
        assert!(size <= 64, "Endpoint grew to {size} bytes");
    }

    #[test]
    fn usable_health() {
        assert!(HealthStatus::Unknown.is_usable());
        assert!(HealthStatus::Healthy.is_usable());
        for h in [
            HealthStatus::Unhealthy,
            HealthStatus::Draining,
            HealthStatus::Timeout,
            HealthStatus::Degraded,
        ] {
            assert!(!h.is_usable(), "{h:?}");
        }
    }
}
