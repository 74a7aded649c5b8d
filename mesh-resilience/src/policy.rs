//! Per-request policy in request extensions, and what layers record in response
//! extensions.
//!
//! A router puts the matched route's [`RoutePolicy`] (mesh-route) into the request's
//! extensions as `Arc<RoutePolicy>`; MeshClient does. Each layer looks, in order, for its
//! own override type below, then the route policy, then its statically configured policy.
//!
//! | layer | override extension | from `RoutePolicy` |
//! |---|---|---|
//! | retry | `Arc<RetryPolicy>` | `retry_policy` |
//! | timeout | [`TimeoutPolicy`] | `timeout`, `idle_timeout`, `max_stream_duration` |
//! | fault | `Arc<FaultConfig>` | `fault(filter_name)` (per-route override) |
//! | circuit breaker | [`Priority`] | (the breaker itself comes from the cluster) |
//! | rate limit | [`RateLimitBucket`](crate::rate_limit::RateLimitBucket) | – |
//!
//! In the other direction, the service that picks an endpoint inserts
//! [`UpstreamEndpoint`] into the response's extensions (or into the error's context via
//! [`EndpointError`]) so that outlier detection knows which endpoint answered, and the
//! retry layer puts the endpoints already tried into the next attempt's request as
//! [`PreviousHosts`] for the load balancer to avoid.

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
pub use mesh_route::router::RoutePolicy;

/// Timeouts for one request (overrides the route policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// Whole-request timeout until the response headers (`None` or zero: none).
    pub timeout: Option<Duration>,
    /// Stream idle timeout: longest gap between response body frames.
    pub idle_timeout: Option<Duration>,
    /// Upper bound of the stream's whole life, body included.
    pub max_stream_duration: Option<Duration>,
    /// Honour the `grpc-timeout` header, capped at this (zero: no cap).
    pub grpc_timeout_header_max: Option<Duration>,
    /// Subtracted from `grpc-timeout`.
    pub grpc_timeout_header_offset: Option<Duration>,
}

impl TimeoutPolicy {
    /// The timeouts of a route policy.
    pub fn from_route(p: &RoutePolicy) -> Self {
        Self {
            timeout: p.timeout,
            idle_timeout: p.idle_timeout,
            max_stream_duration: p.max_stream_duration.max_stream_duration,
            grpc_timeout_header_max: p.max_stream_duration.grpc_timeout_header_max,
            grpc_timeout_header_offset: p.max_stream_duration.grpc_timeout_header_offset,
        }
    }
}

/// The routing priority of a request, choosing the circuit breaker's thresholds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Priority {
    /// DEFAULT.
    #[default]
    Default,
    /// HIGH.
    High,
}

/// The endpoint (`ip:port`) that served an attempt, in response extensions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamEndpoint(pub Arc<str>);

/// Endpoints already tried by earlier attempts of this request, in the request's
/// extensions (Envoy's `previous_hosts` retry predicate). Only present when the retry
/// policy sets `retry_previous_hosts`; a load balancer should re-pick (up to
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

/// The route policy in these extensions, if a router put one there.
pub fn route_policy(ext: &Extensions) -> Option<&Arc<RoutePolicy>> {
    ext.get::<Arc<RoutePolicy>>()
}
