//! `VirtualService` (networking.istio.io): HTTP routing rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Percent, ProtoDuration, StringMatch, Unsupported};

/// `VirtualService.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualService {
    /// Hosts these routes apply to; each must be a `ServiceEntry` host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Only `mesh` (the default) is supported.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Ordered HTTP routes: the first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS routes: not supported.
    #[serde(default)]
    pub tls: Option<Unsupported>,
    /// TCP routes: not supported.
    #[serde(default)]
    pub tcp: Option<Unsupported>,
    /// Namespaces that may use these routes.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `HTTPRoute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRoute {
    /// Route name (for logs and stats).
    #[serde(default)]
    pub name: String,
    /// Any of these matches selects the route; none means match all.
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default)]
    pub redirect: Option<HttpRedirect>,
    /// Not supported.
    #[serde(default)]
    pub direct_response: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub delegate: Option<Unsupported>,
    /// Rewrite the path or authority before forwarding.
    #[serde(default)]
    pub rewrite: Option<HttpRewrite>,
    /// Whole-request timeout.
    #[serde(default)]
    pub timeout: Option<ProtoDuration>,
    /// Retry policy.
    #[serde(default)]
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    #[serde(default)]
    pub fault: Option<HttpFaultInjection>,
    /// Shadow traffic to another destination.
    #[serde(default)]
    pub mirror: Option<Destination>,
    /// Share of requests mirrored (default 100).
    #[serde(default)]
    pub mirror_percentage: Option<Percent>,
    /// Deprecated integer form of `mirrorPercentage`: not supported.
    #[serde(default)]
    pub mirror_percent: Option<Unsupported>,
    /// Several mirrors: not supported (use `mirror`).
    #[serde(default)]
    pub mirrors: Option<Unsupported>,
    /// CORS: not supported.
    #[serde(default)]
    pub cors_policy: Option<Unsupported>,
    /// Header edits on requests and responses.
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// `HTTPMatchRequest`: all set conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatchRequest {
    /// Match name (for logs).
    #[serde(default)]
    pub name: String,
    /// Path match.
    #[serde(default)]
    pub uri: Option<StringMatch>,
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: Option<StringMatch>,
    /// HTTP method.
    #[serde(default)]
    pub method: Option<StringMatch>,
    /// `:authority` / `Host`.
    #[serde(default)]
    pub authority: Option<StringMatch>,
    /// Header name (lowercase) -> match.
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Query parameter -> match.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// The port the request was addressed to.
    #[serde(default)]
    pub port: Option<u32>,
    /// Labels of the calling workload.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Namespace of the calling workload.
    #[serde(default)]
    pub source_namespace: Option<String>,
    /// Case-insensitive `uri` match.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Not supported.
    #[serde(default)]
    pub gateways: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub stat_prefix: Option<Unsupported>,
}

/// `HTTPRouteDestination`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteDestination {
    /// Where to send the request.
    #[serde(default)]
    pub destination: Destination,
    /// Share of traffic, out of 100 across the route's destinations.
    #[serde(default)]
    pub weight: i32,
    /// Header edits for this destination only.
    #[serde(default)]
    pub headers: Option<Headers>,
}

/// `Destination`: a service host, optional subset and port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// A `ServiceEntry` host (short names are qualified with the resource's namespace).
    #[serde(default)]
    pub host: String,
    /// A subset defined by the host's `DestinationRule`.
    #[serde(default)]
    pub subset: String,
    /// The service port; required when the service has more than one.
    #[serde(default)]
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    #[serde(default)]
    pub number: u32,
}

/// `HTTPRedirect`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRedirect {
    /// Replacement path.
    #[serde(default)]
    pub uri: Option<String>,
    /// Replacement authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Replacement port.
    #[serde(default)]
    pub port: Option<u32>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    #[serde(default)]
    pub derive_port: Option<DerivePort>,
    /// Replacement scheme (`http` or `https`).
    #[serde(default)]
    pub scheme: Option<String>,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default)]
    pub redirect_code: Option<u32>,
    /// Not supported (use `uri`).
    #[serde(default)]
    pub prefix_rewrite: Option<Unsupported>,
}

/// `HTTPRedirect.RedirectPortSelection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DerivePort {
    /// 80 for http, 443 for https.
    FromProtocolDefault,
    /// The port of the request.
    FromRequestPort,
}

/// `HTTPRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex matches).
    #[serde(default)]
    pub uri: Option<String>,
    /// Replaces the authority.
    #[serde(default)]
    pub authority: Option<String>,
    /// Regex path rewrite.
    #[serde(default)]
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(rename = "match", default)]
    pub pattern: String,
    /// Replacement, with `\1` style group references.
    #[serde(default)]
    pub rewrite: String,
}

/// `HTTPRetry`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Number of retries (not counting the first try).
    #[serde(default)]
    pub attempts: i32,
    /// Timeout of each try.
    #[serde(default)]
    pub per_try_timeout: Option<ProtoDuration>,
    /// Comma-separated Envoy retry conditions or HTTP status codes.
    #[serde(default)]
    pub retry_on: Option<String>,
    /// Not supported.
    #[serde(default)]
    pub retry_remote_localities: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub retry_ignore_previous_hosts: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub backoff: Option<Unsupported>,
}

/// `HTTPFaultInjection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpFaultInjection {
    /// Delay before forwarding.
    #[serde(default)]
    pub delay: Option<Delay>,
    /// Abort with an error.
    #[serde(default)]
    pub abort: Option<Abort>,
}

/// `HTTPFaultInjection.Delay`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Delay {
    /// The delay.
    #[serde(default)]
    pub fixed_delay: Option<ProtoDuration>,
    /// Share of requests delayed (default 100).
    #[serde(default)]
    pub percentage: Option<Percent>,
    /// Deprecated integer percentage: not supported (use `percentage`).
    #[serde(default)]
    pub percent: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub exponential_delay: Option<Unsupported>,
}

/// `HTTPFaultInjection.Abort`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Abort {
    /// HTTP status returned (200..=599).
    #[serde(default)]
    pub http_status: Option<u32>,
    /// gRPC status name returned (`UNAVAILABLE`, ...).
    #[serde(default)]
    pub grpc_status: Option<String>,
    /// Not supported.
    #[serde(default)]
    pub http2_error: Option<Unsupported>,
    /// Share of requests aborted (default 100).
    #[serde(default)]
    pub percentage: Option<Percent>,
}

/// `Headers`: edits on requests and responses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Request header edits.
    #[serde(default)]
    pub request: Option<HeaderOperations>,
    /// Response header edits.
    #[serde(default)]
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite these headers.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append these headers.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default)]
    pub remove: Vec<String>,
}
