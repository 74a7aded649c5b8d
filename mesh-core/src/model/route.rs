//! Route tables (RDS): virtual hosts, routes, their matches and actions, and the per-route
//! policies (timeouts, retries, mirroring, hashing, header rewrites, fault overrides).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::fault::FaultConfig;
use super::matcher::{Fraction, HeaderMatcher, QueryParameterMatcher, Regex};
use super::rate_limit::LocalRateLimitConfig;

/// A route configuration resource.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RouteConfig {
    /// Resource name.
    pub name: String,
    /// Virtual hosts, selected by the request's authority.
    pub virtual_hosts: Vec<VirtualHost>,
    /// Header edits applied to every request and response through this table.
    pub headers: HeaderOps,
}

/// A virtual host: a set of domains and their routes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct VirtualHost {
    /// Name.
    pub name: String,
    /// Domains: exact, `*.suffix`, `prefix*` or `*` (gRPC A28 selection rules).
    pub domains: Vec<String>,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Retry policy for routes that have none.
    pub retry_policy: Option<RetryPolicy>,
    /// Header edits for this host.
    pub headers: HeaderOps,
    /// Per-filter overrides keyed by HTTP filter name.
    pub filter_overrides: FilterOverrides,
    /// Send `x-envoy-attempt-count` upstream on every attempt, 1-based
    /// (`include_request_attempt_count`; istiod sets it on every sidecar route).
    pub include_request_attempt_count: bool,
}

/// Per-filter config overrides (`typed_per_filter_config`), keyed by the HTTP filter's name.
pub type FilterOverrides = BTreeMap<String, FilterOverride>;

/// An override of one HTTP filter's config for a virtual host, route or weighted cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FilterOverride {
    /// Replaces the fault filter's config.
    Fault(FaultConfig),
    /// Replaces the local rate limit filter's config, with its own bucket (the `Arc`).
    LocalRateLimit(Arc<LocalRateLimitConfig>),
    /// Disables the filter (`envoy.config.route.v3.FilterConfig{disabled: true}`).
    Disabled,
}

/// How an added header combines with an existing one (Envoy `HeaderAppendAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AppendAction {
    /// Add another value.
    #[default]
    Append,
    /// Add only if absent.
    AddIfAbsent,
    /// Replace existing values, or add.
    OverwriteIfExistsOrAdd,
    /// Replace only if present.
    OverwriteIfExists,
}

/// One header to add.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderValueOption {
    /// Header name, lowercased.
    pub name: String,
    /// Header value.
    pub value: String,
    /// How it combines with existing values.
    pub action: AppendAction,
    /// Add even when the value is empty.
    pub keep_empty_value: bool,
}

/// Header edits for requests and responses.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HeaderOps {
    /// Added to requests.
    pub request_headers_to_add: Vec<HeaderValueOption>,
    /// Removed from requests (lowercased).
    pub request_headers_to_remove: Vec<String>,
    /// Added to responses.
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// Removed from responses (lowercased).
    pub response_headers_to_remove: Vec<String>,
}

impl HeaderOps {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.request_headers_to_add.is_empty()
            && self.request_headers_to_remove.is_empty()
            && self.response_headers_to_add.is_empty()
            && self.response_headers_to_remove.is_empty()
    }
}

/// A route: match, action, and per-route edits.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Name (may be empty).
    pub name: String,
    /// When this route applies.
    pub route_match: RouteMatch,
    /// What it does.
    pub action: RouteAction,
    /// Header edits.
    pub headers: HeaderOps,
    /// Per-filter overrides keyed by HTTP filter name.
    pub filter_overrides: FilterOverrides,
}

/// How the path is matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    /// The path starts with this prefix.
    Prefix(String),
    /// The path (without query) equals this.
    Exact(String),
    /// The whole path (without query) matches.
    Regex(Regex),
    /// The path equals the prefix, or starts with it followed by `/`, `?` or `#`.
    PathSeparatedPrefix(String),
}

/// A route's match conditions; all must hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteMatch {
    /// Path condition.
    pub path: PathMatch,
    /// Whether prefix/exact path matching is case sensitive (default true).
    pub case_sensitive: bool,
    /// Header conditions.
    pub headers: Vec<HeaderMatcher>,
    /// Query parameter conditions.
    pub query_parameters: Vec<QueryParameterMatcher>,
    /// Only this fraction of matching requests take the route (`runtime_fraction`'s default
    /// value; the runtime key is ignored, there is no runtime).
    pub fraction: Option<Fraction>,
    /// Only gRPC requests (`content-type: application/grpc*`) match.
    pub grpc: bool,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix(String::new()),
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
            fraction: None,
            grpc: false,
        }
    }
}

/// What a route does.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteAction {
    /// Forward to a cluster.
    Forward(Box<ForwardAction>),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer directly.
    DirectResponse(DirectResponse),
    /// `non_forwarding_action`: used by server listeners (gRPC A36) to hand the request to
    /// the local application.
    NonForwarding,
}

/// Which cluster(s) a forwarding route sends to.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterSpecifier {
    /// One named cluster.
    Cluster(String),
    /// Several clusters picked by weight.
    Weighted(Vec<WeightedCluster>),
    /// The cluster named by this request header.
    Header(String),
}

/// One cluster of a weighted split.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightedCluster {
    /// Cluster name.
    pub name: String,
    /// Weight (the weights of a split sum to more than 0).
    pub weight: u32,
    /// Header edits when this cluster is picked.
    pub headers: HeaderOps,
    /// Per-filter overrides when this cluster is picked.
    pub filter_overrides: FilterOverrides,
}

/// How the Host/:authority header is rewritten before forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostRewrite {
    /// Set to this value.
    Literal(String),
    /// Set to the chosen endpoint's hostname.
    Auto,
    /// Set to the value of this request header.
    Header(String),
}

/// A regex substitution, as Envoy's `RegexMatchAndSubstitute`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegexRewrite {
    /// Pattern (searched anywhere; every match is replaced).
    pub pattern: Regex,
    /// Replacement, with `\1`-style groups.
    pub substitution: String,
}

impl RegexRewrite {
    /// Applies the substitution.
    pub fn apply(&self, input: &str) -> String {
        self.pattern.replace_all(input, &self.substitution)
    }
}

/// Limits on a stream's duration.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MaxStreamDuration {
    /// Upper bound on the stream's life.
    pub max_stream_duration: Option<Duration>,
    /// If set, the gRPC `grpc-timeout` header is honoured, capped at this value (zero means
    /// no cap) (gRPC A31).
    pub grpc_timeout_header_max: Option<Duration>,
    /// Subtracted from `grpc-timeout` before applying it.
    pub grpc_timeout_header_offset: Option<Duration>,
}

/// The forwarding action (Envoy `RouteAction`).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ForwardAction {
    /// Target cluster(s).
    pub cluster: ClusterSpecifier,
    /// Replace the matched prefix (or exact path) with this.
    pub prefix_rewrite: Option<String>,
    /// Rewrite the path with a regex.
    pub regex_rewrite: Option<RegexRewrite>,
    /// Rewrite the authority.
    pub host_rewrite: Option<HostRewrite>,
    /// Overall request timeout; `None` is Envoy's default of 15 s, `Some(ZERO)` disables it.
    pub timeout: Option<Duration>,
    /// Stream idle timeout.
    pub idle_timeout: Option<Duration>,
    /// Retry policy (overrides the virtual host's).
    pub retry_policy: Option<RetryPolicy>,
    /// Shadow traffic.
    pub mirror_policies: Vec<MirrorPolicy>,
    /// Hash policies for ring hash / maglev.
    pub hash_policies: Vec<HashPolicy>,
    /// Stream duration limits (gRPC A31).
    pub max_stream_duration: MaxStreamDuration,
}

impl Default for ClusterSpecifier {
    fn default() -> Self {
        Self::Cluster(String::new())
    }
}

/// A condition that makes a request retriable (Envoy's `retry_on` values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RetryOn {
    /// `5xx`.
    Http5xx,
    /// `gateway-error`: 502, 503, 504.
    GatewayError,
    /// `reset`.
    Reset,
    /// `reset-before-request`.
    ResetBeforeRequest,
    /// `connect-failure`.
    ConnectFailure,
    /// `envoy-ratelimited`.
    EnvoyRateLimited,
    /// `retriable-4xx` (409).
    Retriable4xx,
    /// `refused-stream`.
    RefusedStream,
    /// `retriable-status-codes`.
    RetriableStatusCodes,
    /// `retriable-headers`.
    RetriableHeaders,
    /// `http3-post-connect-failure`.
    Http3PostConnectFailure,
    /// gRPC `cancelled`.
    GrpcCancelled,
    /// gRPC `deadline-exceeded`.
    GrpcDeadlineExceeded,
    /// gRPC `internal`.
    GrpcInternal,
    /// gRPC `resource-exhausted`.
    GrpcResourceExhausted,
    /// gRPC `unavailable`.
    GrpcUnavailable,
}

impl RetryOn {
    /// Parses one comma-separated token of Envoy's `retry_on`.
    pub fn parse(token: &str) -> Option<Self> {
        Some(match token {
            "5xx" => Self::Http5xx,
            "gateway-error" => Self::GatewayError,
            "reset" => Self::Reset,
            "reset-before-request" => Self::ResetBeforeRequest,
            "connect-failure" => Self::ConnectFailure,
            "envoy-ratelimited" => Self::EnvoyRateLimited,
            "retriable-4xx" => Self::Retriable4xx,
            "refused-stream" => Self::RefusedStream,
            "retriable-status-codes" => Self::RetriableStatusCodes,
            "retriable-headers" => Self::RetriableHeaders,
            "http3-post-connect-failure" => Self::Http3PostConnectFailure,
            "cancelled" => Self::GrpcCancelled,
            "deadline-exceeded" => Self::GrpcDeadlineExceeded,
            "internal" => Self::GrpcInternal,
            "resource-exhausted" => Self::GrpcResourceExhausted,
            "unavailable" => Self::GrpcUnavailable,
            _ => return None,
        })
    }
}

/// Exponential back-off between retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBackOff {
    /// Base interval (Envoy default 25 ms).
    pub base_interval: Duration,
    /// Maximum interval (default 10 x base).
    pub max_interval: Duration,
}

impl Default for RetryBackOff {
    fn default() -> Self {
        Self {
            base_interval: Duration::from_millis(25),
            max_interval: Duration::from_millis(250),
        }
    }
}

/// A retry policy (Envoy `RetryPolicy`, gRPC A44).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Conditions that trigger a retry.
    pub retry_on: Vec<RetryOn>,
    /// Maximum retries (default 1).
    pub num_retries: u32,
    /// Timeout per attempt.
    pub per_try_timeout: Option<Duration>,
    /// Idle timeout per attempt.
    pub per_try_idle_timeout: Option<Duration>,
    /// Back-off between attempts.
    pub back_off: RetryBackOff,
    /// Status codes retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Response headers that make a response retriable under `retriable-headers`.
    pub retriable_headers: Vec<HeaderMatcher>,
    /// Avoid hosts already tried (`envoy.retry_host_predicates.previous_hosts`).
    pub retry_previous_hosts: bool,
    /// How many times host selection is retried to satisfy the predicate.
    pub host_selection_retry_max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retry_on: Vec::new(),
            num_retries: 1,
            per_try_timeout: None,
            per_try_idle_timeout: None,
            back_off: RetryBackOff::default(),
            retriable_status_codes: Vec::new(),
            retriable_headers: Vec::new(),
            retry_previous_hosts: false,
            host_selection_retry_max_attempts: 1,
        }
    }
}

/// Shadow traffic to another cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorPolicy {
    /// Cluster receiving the copies.
    pub cluster: String,
    /// Fraction mirrored (`None`: all).
    pub fraction: Option<Fraction>,
    /// Send the copy with the request's own host (Envoy's
    /// `disable_shadow_host_suffix_append`, which istiod sets) instead of `<host>-shadow`.
    pub keep_host: bool,
}

/// What a hash policy hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashPolicyKind {
    /// A request header's value (optionally rewritten first).
    Header {
        /// Header name, lowercased.
        name: String,
        /// Applied to the value before hashing.
        regex_rewrite: Option<RegexRewrite>,
    },
    /// A cookie; generated with `ttl` when absent and `ttl` is set.
    Cookie {
        /// Cookie name.
        name: String,
        /// Lifetime of a generated cookie.
        ttl: Option<Duration>,
        /// Path of a generated cookie.
        path: String,
    },
    /// The connection's source IP.
    SourceIp,
    /// A query parameter's value.
    QueryParameter {
        /// Parameter name.
        name: String,
    },
    /// gRPC's channel id (`filter_state` key `io.grpc.channel_id`).
    ChannelId,
}

/// A hash policy; policies are tried in order and combined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashPolicy {
    /// What is hashed.
    pub kind: HashPolicyKind,
    /// Stop at this policy if it produced a hash.
    pub terminal: bool,
}

/// Where a redirect's path comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathRedirect {
    /// Replace the whole path.
    Path(String),
    /// Replace the matched prefix.
    PrefixRewrite(String),
    /// Rewrite with a regex.
    RegexRewrite(RegexRewrite),
}

/// A redirect response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// New scheme (`https_redirect` sets `https`).
    pub scheme: Option<String>,
    /// New host.
    pub host: Option<String>,
    /// New port.
    pub port: Option<u16>,
    /// New path.
    pub path: Option<PathRedirect>,
    /// 301, 302, 303, 307 or 308.
    pub response_code: u16,
    /// Drop the query string.
    pub strip_query: bool,
}

/// A direct response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body (inline bytes or string).
    pub body: Option<Vec<u8>>,
}
