//! `DestinationRule` (networking.istio.io): policies applied after routing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{ProtoDuration, Unsupported};

/// `DestinationRule.spec`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRule {
    /// The `ServiceEntry` host this rule applies to.
    #[serde(default)]
    pub host: String,
    /// Policy for the whole service (subsets inherit and override it).
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named groups of workloads, selected by label.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces that may use this rule.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Not supported.
    #[serde(default)]
    pub workload_selector: Option<Unsupported>,
}

/// `TrafficPolicy`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load-balancing algorithm.
    #[serde(default)]
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection limits (circuit breaking).
    #[serde(default)]
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Passive health checking.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS towards the workloads.
    #[serde(default)]
    pub tls: Option<ClientTlsSettings>,
    /// Not supported.
    #[serde(default)]
    pub port_level_settings: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub tunnel: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub proxy_protocol: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub retry_budget: Option<Unsupported>,
}

/// `Subset`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name, referenced by `VirtualService` destinations.
    #[serde(default)]
    pub name: String,
    /// Labels the subset's workloads carry.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides the rule's policy for this subset.
    #[serde(default)]
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `LoadBalancerSettings`: either `simple` or `consistentHash`, plus locality settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoadBalancerSettings {
    /// A standard algorithm.
    #[serde(default)]
    pub simple: Option<SimpleLb>,
    /// Ring hash or Maglev on a request property.
    #[serde(default)]
    pub consistent_hash: Option<ConsistentHash>,
    /// Locality-aware load balancing.
    #[serde(default)]
    pub locality_lb_setting: Option<LocalityLbSetting>,
    /// Not supported.
    #[serde(default)]
    pub warmup_duration_secs: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub warmup: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub zone_aware_lb_setting: Option<Unsupported>,
}

/// `LoadBalancerSettings.SimpleLB`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SimpleLb {
    /// The default (least request).
    #[default]
    Unspecified,
    /// Deprecated alias of `LEAST_REQUEST`.
    LeastConn,
    /// Random choice.
    Random,
    /// Forward to the original destination: not supported.
    Passthrough,
    /// Round robin.
    RoundRobin,
    /// Power of two choices, least outstanding requests.
    LeastRequest,
}

/// `LoadBalancerSettings.ConsistentHashLB`: exactly one hash key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistentHash {
    /// Hash on this request header.
    #[serde(default)]
    pub http_header_name: Option<String>,
    /// Hash on this cookie.
    #[serde(default)]
    pub http_cookie: Option<HttpCookie>,
    /// Hash on the source IP.
    #[serde(default)]
    pub use_source_ip: Option<bool>,
    /// Hash on this query parameter.
    #[serde(default)]
    pub http_query_parameter_name: Option<String>,
    /// Ring hash settings.
    #[serde(default)]
    pub ring_hash: Option<RingHash>,
    /// Maglev settings.
    #[serde(default)]
    pub maglev: Option<Maglev>,
    /// Deprecated form of `ringHash.minimumRingSize`.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.HTTPCookie`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpCookie {
    /// Cookie name.
    #[serde(default)]
    pub name: String,
    /// Cookie path.
    #[serde(default)]
    pub path: Option<String>,
    /// Lifetime of a generated cookie.
    #[serde(default)]
    pub ttl: Option<ProtoDuration>,
    /// Not supported.
    #[serde(default)]
    pub attributes: Option<Unsupported>,
}

/// `ConsistentHashLB.RingHash`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RingHash {
    /// Minimum ring size.
    #[serde(default)]
    pub minimum_ring_size: Option<u64>,
}

/// `ConsistentHashLB.MagLev`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Maglev {
    /// Table size (a prime).
    #[serde(default)]
    pub table_size: Option<u64>,
}

/// `LocalityLoadBalancerSetting`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityLbSetting {
    /// Weighted distribution from a source locality to destination localities.
    #[serde(default)]
    pub distribute: Vec<LocalityDistribute>,
    /// Failover from one region to another.
    #[serde(default)]
    pub failover: Vec<LocalityFailover>,
    /// Ordered labels used to prefer endpoints.
    #[serde(default)]
    pub failover_priority: Vec<String>,
    /// Turns locality load balancing on or off.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// `LocalityLoadBalancerSetting.Distribute`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityDistribute {
    /// Source locality (`region/zone/subzone`, `*` allowed).
    #[serde(default)]
    pub from: String,
    /// Destination locality -> weight (weights add up to 100).
    #[serde(default)]
    pub to: BTreeMap<String, u32>,
}

/// `LocalityLoadBalancerSetting.Failover`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalityFailover {
    /// Source region.
    #[serde(default)]
    pub from: String,
    /// Region to fail over to.
    #[serde(default)]
    pub to: String,
}

/// `ConnectionPoolSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    #[serde(default)]
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    #[serde(default)]
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum connections to all workloads of the service.
    #[serde(default)]
    pub max_connections: Option<i32>,
    /// Connect timeout.
    #[serde(default)]
    pub connect_timeout: Option<ProtoDuration>,
    /// Not supported.
    #[serde(default)]
    pub tcp_keepalive: Option<Unsupported>,
    /// Maximum lifetime of a connection.
    #[serde(default)]
    pub max_connection_duration: Option<ProtoDuration>,
    /// Idle timeout of a connection.
    #[serde(default)]
    pub idle_timeout: Option<ProtoDuration>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Maximum queued requests.
    #[serde(default)]
    pub http1_max_pending_requests: Option<i32>,
    /// Maximum active requests.
    #[serde(default)]
    pub http2_max_requests: Option<i32>,
    /// Requests per connection before it is closed (0 = unlimited).
    #[serde(default)]
    pub max_requests_per_connection: Option<i32>,
    /// Maximum concurrent retries.
    #[serde(default)]
    pub max_retries: Option<i32>,
    /// Idle timeout of a connection.
    #[serde(default)]
    pub idle_timeout: Option<ProtoDuration>,
    /// `DEFAULT`, `DO_NOT_UPGRADE` or `UPGRADE`.
    #[serde(default)]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's HTTP version upstream.
    #[serde(default)]
    pub use_client_protocol: Option<bool>,
    /// Maximum concurrent streams per HTTP/2 connection.
    #[serde(default)]
    pub max_concurrent_streams: Option<i32>,
    /// Not supported.
    #[serde(default)]
    pub http2_keep_alive: Option<Unsupported>,
}

/// `ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// The mesh default.
    #[default]
    Default,
    /// Keep HTTP/1.1.
    DoNotUpgrade,
    /// Upgrade HTTP/1.1 to HTTP/2.
    Upgrade,
}

/// `OutlierDetection`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Deprecated alias of `consecutive5xxErrors`: not supported.
    #[serde(default)]
    pub consecutive_errors: Option<Unsupported>,
    /// Count local-origin failures separately.
    #[serde(default)]
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    #[serde(default)]
    pub consecutive_local_origin_failures: Option<u32>,
    /// 502/503/504 responses before ejection.
    #[serde(default)]
    pub consecutive_gateway_errors: Option<u32>,
    /// 5xx responses before ejection.
    #[serde(default)]
    pub consecutive_5xx_errors: Option<u32>,
    /// Time between ejection sweeps.
    #[serde(default)]
    pub interval: Option<ProtoDuration>,
    /// Minimum ejection duration.
    #[serde(default)]
    pub base_ejection_time: Option<ProtoDuration>,
    /// Maximum share of workloads ejected.
    #[serde(default)]
    pub max_ejection_percent: Option<i32>,
    /// Below this share of healthy workloads, ejection stops.
    #[serde(default)]
    pub min_health_percent: Option<i32>,
    /// Not supported.
    #[serde(default)]
    pub outlier_detection_http_error_codes: Option<Unsupported>,
}

/// `ClientTLSSettings`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTlsSettings {
    /// The TLS mode.
    #[serde(default)]
    pub mode: TlsMode,
    /// Not supported (only `ISTIO_MUTUAL` and `DISABLE` are).
    #[serde(default)]
    pub client_certificate: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub private_key: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub ca_certificates: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub credential_name: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub subject_alt_names: Option<Unsupported>,
    /// SNI sent to the workloads.
    #[serde(default)]
    pub sni: Option<String>,
    /// Not supported.
    #[serde(default)]
    pub insecure_skip_verify: Option<Unsupported>,
    /// Not supported.
    #[serde(default)]
    pub ca_crl: Option<Unsupported>,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text.
    #[default]
    Disable,
    /// TLS with server verification from files: not supported.
    Simple,
    /// mTLS with certificates from files: not supported.
    Mutual,
    /// mTLS with the mesh's SPIFFE certificates.
    IstioMutual,
}
