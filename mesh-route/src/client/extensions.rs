//! What travels in request and response extensions between [`MeshClient`](super::MeshClient),
//! the per-cluster layers around it (retries, outlier detection in mesh-resilience) and
//! the [`EndpointService`](super::EndpointService) that picks an endpoint.
//!
//! These types live here, not in mesh-resilience, because the endpoint service (in this
//! crate) produces and reads them and mesh-resilience depends on this crate; mesh-resilience
//! re-exports them from its `policy` module.
//!
//! | type | where | set by | read by |
//! |---|---|---|---|
//! | `Arc<RoutePolicy>` | request | MeshClient | timeout, retry, fault layers |
//! | [`RequestHash`] | request | MeshClient (route hash policies) | endpoint service (ring hash, Maglev) |
//! | [`AutoHostRewrite`] | request | MeshClient (`auto_host_rewrite`) | endpoint service |
//! | [`PreviousHosts`] | request | retry layer | endpoint service (re-picks) |
//! | [`UpstreamEndpoint`] | response | endpoint service | outlier detection, retry |
//! | [`EndpointError`] | error | endpoint service | outlier detection, retry |

use std::sync::Arc;

/// The endpoint (`ip:port`) that served an attempt, in response extensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamEndpoint(pub Arc<str>);

/// Endpoints already tried by earlier attempts of this request, in the request's
/// extensions (Envoy's `previous_hosts` retry predicate). Only present when the retry
/// policy sets `retry_previous_hosts`; a load balancer re-picks (up to
/// `host_selection_retry_max_attempts`) when its pick is in the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreviousHosts {
    /// The endpoints, oldest first.
    pub hosts: Vec<Arc<str>>,
    /// How many re-picks the balancer may make to avoid them.
    pub max_attempts: u32,
}

impl PreviousHosts {
    /// Whether `endpoint` was already tried.
    pub fn contains(&self, endpoint: &str) -> bool {
        self.hosts.iter().any(|h| &**h == endpoint)
    }
}

/// An error that knows which endpoint it came from (for outlier detection of local-origin
/// failures such as connect failures and resets).
#[derive(Debug)]
pub struct EndpointError {
    /// The endpoint.
    pub endpoint: Arc<str>,
    /// The failure.
    pub source: tower::BoxError,
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "endpoint {}: {}", self.endpoint, self.source)
    }
}

impl std::error::Error for EndpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Finds the endpoint named in an error's cause chain.
pub fn error_endpoint(err: &(dyn std::error::Error + 'static)) -> Option<Arc<str>> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(ee) = e.downcast_ref::<EndpointError>() {
            return Some(ee.endpoint.clone());
        }
        cur = e.source();
    }
    None
}

/// The request's hash from the route's hash policies, for ring hash and Maglev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHash(pub u64);

/// Marks a request whose `:authority` becomes the picked endpoint's hostname
/// (`auto_host_rewrite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoHostRewrite;
