//! Listeners: the client side (an API listener whose HTTP connection manager points at a route
//! table) and the server side (an address with filter chains, gRPC A36).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::fault::FaultConfig;
use super::matcher::CidrRange;
use super::rate_limit::LocalRateLimitConfig;
use super::rbac::RbacFilter;
use super::route::RouteConfig;
use super::tls::DownstreamTls;
use crate::path::PathNormalization;

/// A listener resource (LDS).
#[derive(Clone, Debug, PartialEq)]
pub struct Listener {
    /// Resource name: `host:port` for client listeners, or for Istio server listeners
    /// `xds.istio.io/grpc/lds/inbound/<ip>:<port>`.
    pub name: String,
    /// Client or server listener.
    pub kind: ListenerKind,
}

/// The two shapes of listener a proxyless data plane understands.
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerKind {
    /// An `api_listener`: outbound HTTP for a target name.
    Client(HttpConnectionManager),
    /// A socket listener: inbound connections on an address.
    Server(Box<ServerListener>),
}

/// Where an HTTP connection manager takes its routes from.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteSource {
    /// A route configuration fetched by name over RDS.
    Rds(String),
    /// A route configuration carried inline.
    Inline(Arc<RouteConfig>),
}

/// Envoy's `HttpConnectionManager`, reduced to what changes behaviour here.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpConnectionManager {
    /// The routes.
    pub route_source: RouteSource,
    /// HTTP filters in order; the last one is the router.
    pub http_filters: Vec<HttpFilter>,
    /// Upper bound on a stream's life (`common_http_protocol_options.max_stream_duration`).
    pub max_stream_duration: Option<Duration>,
    /// Idle timeout for the connection (`common_http_protocol_options.idle_timeout`).
    pub idle_timeout: Option<Duration>,
    /// Whether to honour `x-forwarded-for` style trusted hops (`xff_num_trusted_hops`).
    pub xff_num_trusted_hops: u32,
    /// Request-path normalization before the filters and the router (`normalize_path`,
    /// `merge_slashes`, `path_with_escaped_slashes_action`). The xDS translation reads an
    /// unset `normalize_path` as on: [`PathNormalization::BASE`], Istio's default, unlike
    /// Envoy's runtime default of off.
    pub path_normalization: PathNormalization,
}

/// One HTTP filter of the chain.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpFilter {
    /// The filter's instance name (used as the key of `typed_per_filter_config`).
    pub name: String,
    /// Its decoded config.
    pub config: HttpFilterConfig,
}

/// The router filter's settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterFilter {
    /// `suppress_envoy_headers`: the router adds none of its `x-envoy-*` headers
    /// (`x-envoy-expected-rq-timeout-ms` and `x-envoy-original-path` upstream,
    /// `x-envoy-upstream-service-time` and `x-envoy-overloaded` downstream), as Envoy.
    /// `x-envoy-attempt-count` is the virtual host's choice, not this one.
    pub suppress_envoy_headers: bool,
}

/// The HTTP filters we implement.
#[derive(Clone, Debug, PartialEq)]
pub enum HttpFilterConfig {
    /// `envoy.filters.http.router`: the terminal filter.
    Router(RouterFilter),
    /// `envoy.filters.http.fault`.
    Fault(FaultConfig),
    /// `envoy.filters.http.rbac`.
    Rbac(RbacFilter),
    /// `envoy.filters.http.local_ratelimit` (client side: routes through this listener).
    LocalRateLimit(Arc<LocalRateLimitConfig>),
}

/// A server listener (gRPC A36): address plus filter chains.
#[derive(Clone, Debug, PartialEq)]
pub struct ServerListener {
    /// Address and port to listen on.
    pub address: SocketAddr,
    /// Filter chains, matched per connection by [`FilterChainMatch`].
    pub filter_chains: Vec<FilterChain>,
    /// Used when no filter chain matches; `None` means such connections are closed.
    pub default_filter_chain: Option<FilterChain>,
}

/// One filter chain: a match, optional TLS, and the HTTP connection manager.
#[derive(Clone, Debug, PartialEq)]
pub struct FilterChain {
    /// The chain's name (Istio encodes the mTLS mode in it).
    pub name: String,
    /// Which connections use this chain.
    pub filter_chain_match: FilterChainMatch,
    /// Downstream TLS; `None` for plaintext.
    pub tls: Option<DownstreamTls>,
    /// The HTTP connection manager terminating the chain.
    pub http_connection_manager: HttpConnectionManager,
}

/// Which connection source a filter chain applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SourceType {
    /// Any source.
    #[default]
    Any,
    /// The source IP equals the destination IP, or is loopback.
    SameIpOrLoopback,
    /// Any other source.
    External,
}

/// Envoy's `FilterChainMatch`. Empty lists match everything.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FilterChainMatch {
    /// Destination port.
    pub destination_port: Option<u16>,
    /// Destination IP ranges.
    pub prefix_ranges: Vec<CidrRange>,
    /// Source kind.
    pub source_type: SourceType,
    /// Source IP ranges.
    pub source_prefix_ranges: Vec<CidrRange>,
    /// Source ports.
    pub source_ports: Vec<u16>,
    /// `raw_buffer` or `tls`; `None` matches both.
    pub transport_protocol: Option<String>,
    /// ALPN values.
    pub application_protocols: Vec<String>,
    /// SNI server names.
    pub server_names: Vec<String>,
}
