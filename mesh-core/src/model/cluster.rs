//! Clusters (CDS): how endpoints are discovered, balanced, limited, ejected and reached.

use std::sync::Arc;
use std::time::Duration;

use super::endpoint::ClusterLoadAssignment;
use super::tls::UpstreamTls;

/// A cluster resource.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    /// Resource name (Istio: `outbound|<port>|<subset>|<fqdn>`).
    pub name: String,
    /// Where its endpoints come from.
    pub discovery: Discovery,
    /// Load-balancing policy.
    pub lb_policy: LbPolicy,
    /// Settings common to every policy.
    pub common_lb: CommonLbConfig,
    /// Connection timeout (Envoy default 5 s).
    pub connect_timeout: Duration,
    /// Circuit-breaker thresholds.
    pub circuit_breakers: CircuitBreakers,
    /// Outlier detection; `None` disables it.
    pub outlier_detection: Option<OutlierDetection>,
    /// Upstream TLS; `None` is plaintext.
    pub tls: Option<UpstreamTls>,
    /// HTTP protocol towards the endpoints.
    pub http_protocol: HttpProtocolOptions,
}

/// Which addresses of a DNS cluster's names are used (Envoy's `dns_lookup_family`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DnsLookupFamily {
    /// IPv6 addresses when the name has any, else IPv4 (Envoy's default, `AUTO`).
    #[default]
    Auto,
    /// IPv4 only.
    V4Only,
    /// IPv6 only.
    V6Only,
    /// IPv4 addresses when the name has any, else IPv6.
    V4Preferred,
    /// Every address.
    All,
}

/// How a cluster finds its endpoints.
#[derive(Clone, Debug, PartialEq)]
pub enum Discovery {
    /// Endpoints from EDS under this service name (the cluster name when unset).
    Eds {
        /// `eds_cluster_config.service_name`.
        service_name: Option<String>,
    },
    /// A fixed list of endpoints.
    Static(Arc<ClusterLoadAssignment>),
    /// One DNS name re-resolved every `refresh`: its first address (of `lookup_family`)
    /// is the endpoint (Envoy's `LOGICAL_DNS`).
    LogicalDns {
        /// The endpoint as configured (a host name or an IP).
        assignment: Arc<ClusterLoadAssignment>,
        /// `dns_refresh_rate` (Envoy's default 5 s).
        refresh: Duration,
        /// `dns_jitter`: each refresh comes up to this much later, at random (zero: none).
        jitter: Duration,
        /// `dns_lookup_family`.
        lookup_family: DnsLookupFamily,
    },
    /// Host names re-resolved every `refresh`: each address is an endpoint (Envoy's
    /// `STRICT_DNS`).
    StrictDns {
        /// The endpoints as configured (host names or IPs).
        assignment: Arc<ClusterLoadAssignment>,
        /// `dns_refresh_rate` (Envoy's default 5 s).
        refresh: Duration,
        /// `dns_jitter`: each refresh comes up to this much later, at random (zero: none).
        jitter: Duration,
        /// `dns_lookup_family`.
        lookup_family: DnsLookupFamily,
    },
    /// An aggregate cluster (`envoy.clusters.aggregate`): child clusters in priority order.
    Aggregate(Vec<String>),
}

impl Discovery {
    /// The EDS resource name a cluster subscribes to, if it uses EDS.
    pub fn eds_name<'a>(&'a self, cluster_name: &'a str) -> Option<&'a str> {
        match self {
            Self::Eds { service_name } => Some(service_name.as_deref().unwrap_or(cluster_name)),
            _ => None,
        }
    }
}

/// The hash function of a ring-hash balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HashFunction {
    /// xxHash64 (the default, and the only one gRPC supports).
    #[default]
    XxHash,
    /// MurmurHash2 (64-bit), for compatibility with libstdc++'s `std::hash`.
    MurmurHash2,
}

/// Load-balancing policies.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum LbPolicy {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// Power of `choice_count` choices on outstanding requests.
    LeastRequest {
        /// Candidates sampled per pick (default 2).
        choice_count: u32,
    },
    /// Uniformly random.
    Random,
    /// Consistent hashing on a ring (gRPC A42).
    RingHash {
        /// Minimum ring size (default 1024).
        min_ring_size: u64,
        /// Maximum ring size (default 8M).
        max_ring_size: u64,
        /// Hash function.
        hash_function: HashFunction,
    },
    /// Maglev consistent hashing.
    Maglev {
        /// Lookup table size, a prime (default 65537).
        table_size: u64,
    },
}

/// Envoy's `CommonLbConfig`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommonLbConfig {
    /// Below this percentage of healthy hosts, balance over all hosts (default 50).
    pub healthy_panic_threshold: f64,
    /// Weight localities by `load_balancing_weight` (locality-weighted LB).
    pub locality_weighted: bool,
}

impl Default for CommonLbConfig {
    fn default() -> Self {
        Self {
            healthy_panic_threshold: 50.0,
            locality_weighted: false,
        }
    }
}

/// A retry budget: retries allowed as a percentage of active requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryBudget {
    /// Percentage of active requests (default 20).
    pub budget_percent: f64,
    /// Retries always allowed regardless of the budget (default 3).
    pub min_retry_concurrency: u32,
}

/// Circuit-breaker thresholds for one priority.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    /// Maximum connections (default 1024).
    pub max_connections: u32,
    /// Maximum requests waiting for a connection (default 1024).
    pub max_pending_requests: u32,
    /// Maximum concurrent requests (default 1024; gRPC A32 honours only this one).
    pub max_requests: u32,
    /// Maximum concurrent retries (default 3).
    pub max_retries: u32,
    /// When set, replaces `max_retries`.
    pub retry_budget: Option<RetryBudget>,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

/// Thresholds per routing priority.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CircuitBreakers {
    /// DEFAULT priority.
    pub default: Thresholds,
    /// HIGH priority.
    pub high: Thresholds,
}

/// Success-rate ejection parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SuccessRateEjection {
    /// Percentage chance to eject when detected (`enforcing_success_rate`, default 100).
    pub enforcing_percentage: u32,
    /// Hosts with enough volume needed (default 5).
    pub minimum_hosts: u32,
    /// Requests per interval for a host to count (default 100).
    pub request_volume: u32,
    /// Ejection below mean - stdev * factor / 1000 (default 1900).
    pub stdev_factor: u32,
}

/// Failure-percentage ejection parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailurePercentageEjection {
    /// Failure percentage that triggers ejection (default 85).
    pub threshold: u32,
    /// Percentage chance to eject when detected (`enforcing_failure_percentage`, default 0).
    pub enforcing_percentage: u32,
    /// Hosts needed (default 5).
    pub minimum_hosts: u32,
    /// Requests per interval for a host to count (default 50).
    pub request_volume: u32,
}

/// Envoy's `OutlierDetection`, every field (gRPC A50 implements a subset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection (default 5).
    pub consecutive_5xx: u32,
    /// Percentage chance to eject on consecutive 5xx (default 100).
    pub enforcing_consecutive_5xx: u32,
    /// Consecutive gateway failures (502/503/504) before ejection (default 5).
    pub consecutive_gateway_failure: u32,
    /// Percentage chance to eject on consecutive gateway failures (default 0).
    pub enforcing_consecutive_gateway_failure: u32,
    /// Separate locally originated errors (connect failures, timeouts, resets) from
    /// upstream responses.
    pub split_external_local_origin_errors: bool,
    /// Consecutive local-origin failures before ejection (default 5).
    pub consecutive_local_origin_failure: u32,
    /// Percentage chance to eject on local-origin failures (default 100).
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Percentage chance to eject on local-origin success rate (default 100).
    pub enforcing_local_origin_success_rate: u32,
    /// Percentage chance to eject on local-origin failure percentage (default 0).
    pub enforcing_failure_percentage_local_origin: u32,
    /// Time between analysis sweeps (default 10 s).
    pub interval: Duration,
    /// Base ejection time, multiplied by the number of ejections (default 30 s).
    pub base_ejection_time: Duration,
    /// Cap on the ejection time (default 300 s).
    pub max_ejection_time: Duration,
    /// Random jitter added to ejection time (default 0).
    pub max_ejection_time_jitter: Duration,
    /// Maximum percentage of hosts ejected at once (default 10).
    pub max_ejection_percent: u32,
    /// Success-rate ejection.
    pub success_rate: SuccessRateEjection,
    /// Failure-percentage ejection.
    pub failure_percentage: FailurePercentageEjection,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            enforcing_consecutive_5xx: 100,
            consecutive_gateway_failure: 5,
            enforcing_consecutive_gateway_failure: 0,
            split_external_local_origin_errors: false,
            consecutive_local_origin_failure: 5,
            enforcing_consecutive_local_origin_failure: 100,
            enforcing_local_origin_success_rate: 100,
            enforcing_failure_percentage_local_origin: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_time_jitter: Duration::ZERO,
            max_ejection_percent: 10,
            success_rate: SuccessRateEjection {
                enforcing_percentage: 100,
                minimum_hosts: 5,
                request_volume: 100,
                stdev_factor: 1900,
            },
            failure_percentage: FailurePercentageEjection {
                threshold: 85,
                enforcing_percentage: 0,
                minimum_hosts: 5,
                request_volume: 50,
            },
        }
    }
}

/// The HTTP version used towards endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge, or ALPN over TLS).
    Http2,
    /// Same as the downstream request.
    UseDownstream,
    /// Negotiated with ALPN (HTTP/2 preferred), HTTP/1.1 without TLS.
    Auto,
}

/// HTTP protocol options towards a cluster's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HttpProtocolOptions {
    /// Protocol.
    pub protocol: UpstreamProtocol,
    /// HTTP/2 `max_concurrent_streams` per connection.
    pub max_concurrent_streams: Option<u32>,
    /// Close connections idle this long (Envoy default 1 h).
    pub idle_timeout: Option<Duration>,
    /// Requests per connection before it is closed.
    pub max_requests_per_connection: Option<u32>,
    /// A connection's longest life: it takes no new request after this.
    pub max_connection_duration: Option<Duration>,
}
