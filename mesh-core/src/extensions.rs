//! Types that travel in request, response and error extensions between independent
//! layers: a router puts the route's policy in, a retry layer and an endpoint picker read
//! it; a server puts the peer's identity in, authorization reads it. They live here, below
//! every layer crate, so that no layer depends on another to understand them.
//!
//! | type | where | set by | read by |
//! |---|---|---|---|
//! | [`PeerIdentity`] | request | mTLS servers | authorization, telemetry, the app |
//! | [`ConnectionAddrs`] | request | servers | authorization, telemetry |
//! | [`MeshConnectInfo`] | request | tonic over mesh-tls's mTLS incoming stream | authorization, the app |
//! | `Arc<`[`RoutePolicy`]`>` | request | router (MeshClient) | timeout, retry, fault layers |
//! | [`RequestHash`] | request | router (route hash policies) | endpoint picker (ring hash, Maglev) |
//! | [`AutoHostRewrite`] | request | router (`auto_host_rewrite`) | endpoint picker |
//! | [`PreviousHosts`] | request | retry layer | endpoint picker (re-picks) |
//! | [`UpstreamEndpoint`] | response | endpoint picker | outlier detection, retry, telemetry |
//! | [`EndpointError`] | error | endpoint picker | outlier detection, retry |
//! | [`ResponseFlags`] | response | circuit breaker (`UO`), local rate limit (`RL`), proxies (`UF`) | metrics, access logs |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::SpiffeId;
use crate::error::BoxError;
use crate::model::{
    FaultConfig, FilterOverride, FilterOverrides, HashPolicy, LocalRateLimitConfig,
    MaxStreamDuration, RetryPolicy,
};

/// The peer's SPIFFE ID, verified during the mTLS handshake.
///
/// Servers insert it into every request's extensions, so axum handlers take it with
/// `Extension<PeerIdentity>` and hyper/tower services read
/// `req.extensions().get::<PeerIdentity>()`.
///
/// ```
/// use mesh_core::SpiffeId;
/// use mesh_core::extensions::PeerIdentity;
/// let peer = PeerIdentity(SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap());
/// assert_eq!(peer.to_string(), "spiffe://cluster.local/ns/default/sa/web");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity(pub SpiffeId);

impl PeerIdentity {
    /// The SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.0
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The connection's addresses, in every request's extensions (plaintext or mTLS) so that
/// authorization can match source IPs and destination ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionAddrs {
    /// The client's address.
    pub remote: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
}

/// What tonic puts into each request's extensions for a connection accepted by mesh-tls's
/// mTLS incoming stream (its `Connected::ConnectInfo`): the verified peer and the
/// connection's addresses. Readers of [`PeerIdentity`] and [`ConnectionAddrs`] fall back
/// to it (tonic servers insert this instead of those two).
#[derive(Clone, Debug)]
pub struct MeshConnectInfo {
    /// The client's verified identity.
    pub peer: PeerIdentity,
    /// The client's address.
    pub remote_addr: Option<SocketAddr>,
    /// Our address.
    pub local_addr: Option<SocketAddr>,
}

/// The per-route policies that later layers (timeouts, retries, hashing, faults) read. One
/// `Arc` per route (and per weighted cluster), built with the router.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RoutePolicy {
    /// Overall request timeout; `None`: no timeout (Envoy's 15 s default is already applied).
    pub timeout: Option<Duration>,
    /// `timeout` is Envoy's 15 s default, the route set none: gRPC requests do not get it
    /// (proxyless gRPC, gRFC A31, has no default deadline; the caller's `grpc-timeout` is
    /// the deadline).
    pub timeout_is_default: bool,
    /// Stream idle timeout.
    pub idle_timeout: Option<Duration>,
    /// The route's retry policy, or the virtual host's (shared: the retry layer takes it
    /// per request).
    pub retry_policy: Option<Arc<RetryPolicy>>,
    /// Hash policies for ring hash and Maglev.
    pub hash_policies: Vec<HashPolicy>,
    /// Per-filter overrides: weighted cluster over route over virtual host.
    pub filter_overrides: FilterOverrides,
    /// Stream duration limits and `grpc-timeout` handling.
    pub max_stream_duration: MaxStreamDuration,
    /// Set [`ATTEMPT_COUNT_HEADER`] on every attempt (the virtual host's
    /// `include_request_attempt_count`): the router sends 1, the retry layer counts on.
    pub include_attempt_count: bool,
    /// The listener's router filter says `suppress_envoy_headers`: add none of the
    /// router's `x-envoy-*` headers (see `model::RouterFilter`).
    pub suppress_envoy_headers: bool,
}

/// The request header that numbers each attempt of a request, from 1 (Envoy's). A
/// `HeaderName` constant: inserting a `&str` name that is not a standard header copies it
/// into a new allocation every time.
pub const ATTEMPT_COUNT_HEADER: http::HeaderName =
    http::HeaderName::from_static("x-envoy-attempt-count");

impl RoutePolicy {
    /// The fault filter's override for this route, if any (`None` also when disabled).
    pub fn fault(&self, filter_name: &str) -> Option<&FaultConfig> {
        match self.filter_overrides.get(filter_name) {
            Some(FilterOverride::Fault(f)) => Some(f),
            _ => None,
        }
    }

    /// The local rate limits that apply to this route, by filter name, with a bucket
    /// (a listener-level filter without one, or one disabled here, is left out).
    pub fn local_rate_limits(&self) -> impl Iterator<Item = &Arc<LocalRateLimitConfig>> {
        self.filter_overrides.values().filter_map(|o| match o {
            FilterOverride::LocalRateLimit(c) if c.token_bucket.is_some() => Some(c),
            _ => None,
        })
    }
}

/// The address of the downstream peer a request came from, in request extensions: set it
/// when forwarding a request that arrived on another connection (a proxy or gateway) through
/// the mesh client. Source-IP hashing (`useSourceIp`) and generated hash cookies use it, as
/// Envoy uses its downstream connection's address; without it a client's requests all
/// count as one source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DownstreamAddr(pub SocketAddr);

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
    pub source: BoxError,
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
    crate::error::find_cause::<EndpointError>(err).map(|e| e.endpoint.clone())
}

/// The request's hash from the route's hash policies, for ring hash and Maglev.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHash(pub u64);

/// Marks a request whose `:authority` becomes the picked endpoint's hostname
/// (`auto_host_rewrite`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoHostRewrite;

/// A response's Envoy `response_flags` (`UO`: upstream overflow, `UF`: upstream connection
/// failure, ...), set by the layer that made the response, read by metrics and access logs.
/// Envoy's names: <https://www.envoyproxy.io/docs/envoy/latest/configuration/observability/access_log/usage>.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseFlags(pub &'static str);
