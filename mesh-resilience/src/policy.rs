//! Per-request policy in request extensions, and what layers record in response
//! extensions.
//!
//! A router puts the matched route's [`RoutePolicy`] into the request's extensions as
//! `Arc<RoutePolicy>` (mesh-route's MeshClient does; any router or a plain `map_request`
//! can). Each layer looks, in order, for its
//! own override type below, then the route policy, then its statically configured policy.
//!
//! | layer | override extension | from `RoutePolicy` |
//! |---|---|---|
//! | retry | `Arc<RetryPolicy>` | `retry_policy` |
//! | timeout | [`TimeoutPolicy`] | `timeout`, `idle_timeout`, `max_stream_duration` |
//! | fault | `Arc<FaultConfig>` | `fault(filter_name)` (per-route override) |
//! | circuit breaker | [`Priority`] | (the breaker itself comes from the cluster) |
//! | rate limit | [`RateLimitBucket`](crate::rate_limit::RateLimitBucket) | – |
//! | local rate limit (xDS) | – | `local_rate_limits()` (one bucket per config `Arc`) |
//!
//! In the other direction, the service that picks an endpoint inserts
//! [`UpstreamEndpoint`] into the response's extensions (or into the error's context via
//! [`EndpointError`]) so that outlier detection knows which endpoint answered, and the
//! retry layer puts the endpoints already tried into the next attempt's request as
//! [`PreviousHosts`] for the load balancer to avoid.

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
// Shared with routers and endpoint pickers, so they live below both, in mesh-core.
pub use mesh_core::extensions::{
    EndpointError, PreviousHosts, RoutePolicy, UpstreamEndpoint, error_endpoint,
};

/// Timeouts for one request (overrides the route policy's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TimeoutPolicy {
    /// Whole-request timeout until the response headers (`None` or zero: none).
    pub timeout: Option<Duration>,
    /// `timeout` is a default, not the route's: gRPC requests do not get it.
    pub timeout_is_default: bool,
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
            timeout_is_default: p.timeout_is_default,
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

/// The route policy in these extensions, if a router put one there.
pub fn route_policy(ext: &Extensions) -> Option<&Arc<RoutePolicy>> {
    ext.get::<Arc<RoutePolicy>>()
}
