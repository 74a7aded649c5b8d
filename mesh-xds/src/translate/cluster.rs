//! Clusters (CDS): discovery type, load-balancing policy, circuit breakers, outlier detection,
//! upstream TLS and HTTP protocol options (gRPC A27, A32, A37, A42, A50; Envoy cluster.proto).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::model::{
    CircuitBreakers, Cluster, CommonLbConfig, Discovery, FailurePercentageEjection, HashFunction,
    HttpProtocolOptions, LbPolicy, OutlierDetection, RetryBudget, SuccessRateEjection, Thresholds,
    UpstreamProtocol,
};

use super::endpoint::{AddressKind, cluster_load_assignment};
use super::lb_limits::{MAX_RING_SIZE, is_prime};
use super::{At, Res, any_type_name, bail, duration, opt_duration, unpack};
use crate::resource::Rejection;

const AGGREGATE_TYPE: &str = "envoy.clusters.aggregate";
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Decodes and validates a CDS resource.
pub fn decode(bytes: &[u8]) -> Result<Arc<Cluster>, Rejection> {
    let c: pb::Cluster = super::decode_message(bytes, "envoy.config.cluster.v3.Cluster")?;
    if c.name.is_empty() {
        return Err(Rejection {
            name: None,
            reason: "cluster has an empty name".into(),
        });
    }
    cluster(&c)
        .map(Arc::new)
        .map_err(|e| e.reject("cluster", &c.name))
}

/// Translates a `Cluster`.
pub fn cluster(c: &pb::Cluster) -> Res<Cluster> {
    let discovery = discovery(c)?;
    reject_unsupported(c)?;
    // A typed load_balancing_policy takes precedence over lb_policy (Envoy, gRPC A52).
    let (lb_policy, typed_locality_weighted) = match &c.load_balancing_policy {
        Some(p) => super::lb_policy::typed_policy(p).at("load_balancing_policy")?,
        None => (lb_policy(c, &discovery)?, false),
    };
    let connect_timeout = match opt_duration(c.connect_timeout.as_ref()).at("connect_timeout")? {
        None => Duration::from_secs(5),
        Some(d) if d.is_zero() => return bail("connect_timeout must be greater than 0"),
        Some(d) => d,
    };
    let tls = match &c.transport_socket {
        Some(ts) => super::tls::upstream(ts).at("transport_socket")?,
        None => None,
    };
    Ok(Cluster {
        name: c.name.clone(),
        discovery,
        lb_policy,
        common_lb: {
            let mut common =
                common_lb_config(c.common_lb_config.as_ref()).at("common_lb_config")?;
            common.locality_weighted |= typed_locality_weighted;
            common
        },
        connect_timeout,
        circuit_breakers: circuit_breakers(c.circuit_breakers.as_ref()).at("circuit_breakers")?,
        outlier_detection: c
            .outlier_detection
            .as_ref()
            .map(outlier_detection)
            .transpose()
            .at("outlier_detection")?,
        tls,
        http_protocol: http_protocol(c)?,
    })
}

fn discovery(c: &pb::Cluster) -> Res<Discovery> {
    use pb::cluster::ClusterDiscoveryType as T;
    use pb::cluster::DiscoveryType as D;
    match &c.cluster_discovery_type {
        // The proto default is STATIC.
        None => static_cluster(c),
        Some(T::Type(t)) => match D::try_from(*t) {
            Ok(D::Eds) => {
                let cfg = c.eds_cluster_config.clone().unwrap_or_default();
                match cfg
                    .eds_config
                    .as_ref()
                    .and_then(|s| s.config_source_specifier.as_ref())
                {
                    Some(core::config_source::ConfigSourceSpecifier::Ads(_))
                    | Some(core::config_source::ConfigSourceSpecifier::Self_(_)) => {}
                    None => {
                        return bail("ads or self is required").at("eds_cluster_config.eds_config");
                    }
                    Some(_) => {
                        return bail("only ads or self config sources are supported")
                            .at("eds_cluster_config.eds_config");
                    }
                }
                Ok(Discovery::Eds {
                    service_name: (!cfg.service_name.is_empty()).then_some(cfg.service_name),
                })
            }
            Ok(D::Static) => static_cluster(c),
            Ok(D::LogicalDns) => {
                let Some(la) = &c.load_assignment else {
                    return bail("load_assignment is required for a LOGICAL_DNS cluster");
                };
                // gRPC A37: exactly one locality with exactly one endpoint.
                if la.endpoints.len() != 1 || la.endpoints[0].lb_endpoints.len() != 1 {
                    return bail("a LOGICAL_DNS cluster needs exactly one locality with exactly one endpoint")
                        .at("load_assignment");
                }
                let cla =
                    cluster_load_assignment(la, AddressKind::IpOrDns).at("load_assignment")?;
                Ok(Discovery::LogicalDns(Arc::new(cla)))
            }
            Ok(D::StrictDns) => bail("type STRICT_DNS is not supported (use LOGICAL_DNS or EDS)"),
            Ok(D::OriginalDst) => bail("type ORIGINAL_DST is not supported"),
            Err(_) => bail(format!("type {t} is unknown")),
        },
        Some(T::ClusterType(ct)) => {
            if ct.name != AGGREGATE_TYPE {
                return bail(format!(
                    "cluster_type {:?} is not supported (only {AGGREGATE_TYPE})",
                    ct.name
                ));
            }
            let Some(any) = &ct.typed_config else {
                return bail("typed_config is required").at("cluster_type");
            };
            let cfg: AggregateConfig = unpack(any).at("cluster_type.typed_config")?;
            if cfg.clusters.is_empty() {
                return bail("clusters must not be empty").at("cluster_type.typed_config");
            }
            if cfg.clusters.iter().any(|n| n == &c.name) {
                return bail("an aggregate cluster must not contain itself")
                    .at("cluster_type.typed_config");
            }
            Ok(Discovery::Aggregate(cfg.clusters))
        }
    }
}

fn static_cluster(c: &pb::Cluster) -> Res<Discovery> {
    let Some(la) = &c.load_assignment else {
        return bail("load_assignment is required for a STATIC cluster");
    };
    let cla = cluster_load_assignment(la, AddressKind::IpOrDns).at("load_assignment")?;
    Ok(Discovery::Static(Arc::new(cla)))
}

fn reject_unsupported(c: &pb::Cluster) -> Res<()> {
    if !c.transport_socket_matches.is_empty() || c.transport_socket_matcher.is_some() {
        return bail("transport_socket_matches are not supported (use transport_socket)");
    }
    if !c.health_checks.is_empty() {
        return bail("health_checks (active health checking) are not supported");
    }
    if c.lb_subset_config
        .as_ref()
        .is_some_and(|s| !s.subset_selectors.is_empty())
    {
        return bail("lb_subset_config (subset load balancing) is not supported");
    }
    if !c.filters.is_empty() {
        return bail("filters (upstream network filters) are not supported");
    }
    if c.upstream_config.is_some() {
        return bail("upstream_config is not supported");
    }
    if c.upstream_bind_config.is_some() {
        return bail("upstream_bind_config is not supported");
    }
    if let Some(u) = &c.upstream_http_protocol_options
        && (u.auto_sni || u.auto_san_validation)
    {
        return bail(
            "upstream_http_protocol_options auto_sni / auto_san_validation are not supported",
        );
    }
    Ok(())
}

fn lb_policy(c: &pb::Cluster, discovery: &Discovery) -> Res<LbPolicy> {
    use pb::cluster::LbConfig as C;
    use pb::cluster::LbPolicy as P;
    let policy = match P::try_from(c.lb_policy) {
        Ok(P::RoundRobin) => LbPolicy::RoundRobin,
        Ok(P::Random) => LbPolicy::Random,
        Ok(P::LeastRequest) => {
            let mut choice_count = 2;
            if let Some(C::LeastRequestLbConfig(l)) = &c.lb_config {
                if l.active_request_bias.is_some() {
                    return bail("active_request_bias is not supported")
                        .at("least_request_lb_config");
                }
                if l.slow_start_config.is_some() {
                    return bail("slow_start_config is not supported")
                        .at("least_request_lb_config");
                }
                if let Some(n) = &l.choice_count {
                    if n.value < 2 {
                        return bail("choice_count must be at least 2")
                            .at("least_request_lb_config");
                    }
                    choice_count = n.value;
                }
            }
            LbPolicy::LeastRequest { choice_count }
        }
        Ok(P::RingHash) => {
            let (mut min, mut max, mut hash_function) =
                (1024u64, MAX_RING_SIZE, HashFunction::XxHash);
            if let Some(C::RingHashLbConfig(r)) = &c.lb_config {
                use pb::cluster::ring_hash_lb_config::HashFunction as H;
                min = r.minimum_ring_size.as_ref().map_or(min, |v| v.value);
                max = r.maximum_ring_size.as_ref().map_or(max, |v| v.value);
                hash_function = match H::try_from(r.hash_function) {
                    Ok(H::XxHash) => HashFunction::XxHash,
                    Ok(H::MurmurHash2) => HashFunction::MurmurHash2,
                    Err(_) => {
                        return bail(format!("hash_function {} is unknown", r.hash_function))
                            .at("ring_hash_lb_config");
                    }
                };
            }
            if min == 0 || min > max || max > MAX_RING_SIZE {
                return bail(format!(
                    "ring sizes must satisfy 0 < minimum_ring_size ({min}) <= maximum_ring_size ({max}) <= {MAX_RING_SIZE}"
                ))
                .at("ring_hash_lb_config");
            }
            LbPolicy::RingHash {
                min_ring_size: min,
                max_ring_size: max,
                hash_function,
            }
        }
        Ok(P::Maglev) => {
            let mut table_size = 65537;
            if let Some(C::MaglevLbConfig(m)) = &c.lb_config
                && let Some(t) = &m.table_size
            {
                table_size = t.value;
            }
            if !is_prime(table_size) || table_size > 5_000_011 {
                return bail(format!(
                    "table_size {table_size} must be a prime no larger than 5000011"
                ))
                .at("maglev_lb_config");
            }
            LbPolicy::Maglev { table_size }
        }
        Ok(P::ClusterProvided) if matches!(discovery, Discovery::Aggregate(_)) => {
            LbPolicy::RoundRobin
        }
        Ok(P::ClusterProvided) => {
            return bail("lb_policy CLUSTER_PROVIDED is only valid for aggregate clusters");
        }
        Ok(P::LoadBalancingPolicyConfig) => {
            return bail("lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported");
        }
        Err(_) => return bail(format!("lb_policy {} is unknown", c.lb_policy)),
    };
    match (&c.lb_config, &policy) {
        (Some(C::OriginalDstLbConfig(_)), _) => bail("original_dst_lb_config is not supported"),
        (Some(C::RoundRobinLbConfig(r)), _) if r.slow_start_config.is_some() => {
            bail("slow_start_config is not supported").at("round_robin_lb_config")
        }
        _ => Ok(policy),
    }
}

fn percent(v: Option<&envoy_types::pb::envoy::r#type::v3::Percent>, default: f64) -> Res<f64> {
    match v {
        None => Ok(default),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok(p.value),
        Some(p) => bail(format!("{} is not a percentage in [0, 100]", p.value)),
    }
}

fn common_lb_config(c: Option<&pb::cluster::CommonLbConfig>) -> Res<CommonLbConfig> {
    use pb::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let Some(c) = c else {
        return Ok(CommonLbConfig::default());
    };
    if c.override_host_status.is_some() {
        return bail("override_host_status is not supported");
    }
    if let Some(h) = &c.consistent_hashing_lb_config
        && (h.use_hostname_for_hashing || h.hash_balance_factor.is_some())
    {
        return bail("consistent_hashing_lb_config is not supported");
    }
    Ok(CommonLbConfig {
        healthy_panic_threshold: percent(c.healthy_panic_threshold.as_ref(), 50.0)
            .at(".healthy_panic_threshold")?,
        // Zone-aware routing needs a local cluster, which a library data plane does not have,
        // so Envoy would not apply it either: accepted and off.
        locality_weighted: matches!(
            c.locality_config_specifier,
            Some(L::LocalityWeightedLbConfig(_))
        ),
    })
}

fn circuit_breakers(c: Option<&pb::CircuitBreakers>) -> Res<CircuitBreakers> {
    let Some(c) = c else {
        return Ok(CircuitBreakers::default());
    };
    if !c.per_host_thresholds.is_empty() {
        return bail("per_host_thresholds are not supported");
    }
    let mut out = CircuitBreakers::default();
    let mut seen = [false; 2];
    for (i, t) in c.thresholds.iter().enumerate() {
        let at = || format!(".thresholds[{i}]");
        let slot = match core::RoutingPriority::try_from(t.priority) {
            Ok(core::RoutingPriority::Default) => 0,
            Ok(core::RoutingPriority::High) => 1,
            Err(_) => return bail(format!("priority {} is unknown", t.priority)).at_with(at),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return bail("a second thresholds entry for the same priority").at_with(at);
        }
        if t.max_connection_pools.is_some() {
            return bail("max_connection_pools is not supported").at_with(at);
        }
        let v = |w: &Option<UInt32Value>, d: u32| w.as_ref().map_or(d, |w| w.value);
        let retry_budget = match &t.retry_budget {
            None => None,
            Some(b) => Some(RetryBudget {
                budget_percent: percent(b.budget_percent.as_ref(), 20.0)
                    .at_with(|| format!(".thresholds[{i}].retry_budget.budget_percent"))?,
                min_retry_concurrency: v(&b.min_retry_concurrency, 3),
            }),
        };
        let th = Thresholds {
            max_connections: v(&t.max_connections, 1024),
            max_pending_requests: v(&t.max_pending_requests, 1024),
            max_requests: v(&t.max_requests, 1024),
            max_retries: v(&t.max_retries, 3),
            retry_budget,
        };
        if slot == 0 {
            out.default = th;
        } else {
            out.high = th;
        }
    }
    Ok(out)
}

fn outlier_detection(o: &pb::OutlierDetection) -> Res<OutlierDetection> {
    if !o.monitors.is_empty() {
        return bail("monitors are not supported");
    }
    if o.always_eject_one_host.as_ref().is_some_and(|b| b.value) {
        return bail("always_eject_one_host is not supported");
    }
    if o.detect_degraded_hosts.as_ref().is_some_and(|b| b.value) {
        return bail("detect_degraded_hosts is not supported");
    }
    let d = OutlierDetection::default();
    let u = |w: &Option<UInt32Value>, d: u32| w.as_ref().map_or(d, |w| w.value);
    let pct = |w: &Option<UInt32Value>, d: u32, field: &str| -> Res<u32> {
        let v = u(w, d);
        if v > 100 {
            return bail(format!("{field} {v} is greater than 100"));
        }
        Ok(v)
    };
    let dur =
        |w: Option<&envoy_types::pb::google::protobuf::Duration>, d: Duration, field: &str| {
            w.map(duration)
                .transpose()
                .at(format!(".{field}"))
                .map(|v| v.unwrap_or(d))
        };
    let interval = dur(o.interval.as_ref(), d.interval, "interval")?;
    if interval.is_zero() {
        return bail("interval must be greater than 0");
    }
    let base_ejection_time = dur(
        o.base_ejection_time.as_ref(),
        d.base_ejection_time,
        "base_ejection_time",
    )?;
    // Envoy: max_ejection_time defaults to 300 s or base_ejection_time, whichever is larger.
    let max_default = d.max_ejection_time.max(base_ejection_time);
    let max_ejection_time = dur(
        o.max_ejection_time.as_ref(),
        max_default,
        "max_ejection_time",
    )?;
    if max_ejection_time < base_ejection_time {
        return bail("max_ejection_time must not be less than base_ejection_time");
    }
    Ok(OutlierDetection {
        consecutive_5xx: u(&o.consecutive_5xx, d.consecutive_5xx),
        enforcing_consecutive_5xx: pct(
            &o.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
        )?,
        consecutive_gateway_failure: u(
            &o.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        enforcing_consecutive_gateway_failure: pct(
            &o.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
        )?,
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        consecutive_local_origin_failure: u(
            &o.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        enforcing_consecutive_local_origin_failure: pct(
            &o.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
        )?,
        enforcing_local_origin_success_rate: pct(
            &o.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        )?,
        enforcing_failure_percentage_local_origin: pct(
            &o.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        )?,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: dur(
            o.max_ejection_time_jitter.as_ref(),
            d.max_ejection_time_jitter,
            "max_ejection_time_jitter",
        )?,
        max_ejection_percent: pct(
            &o.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
        )?,
        success_rate: SuccessRateEjection {
            enforcing_percentage: pct(
                &o.enforcing_success_rate,
                d.success_rate.enforcing_percentage,
                "enforcing_success_rate",
            )?,
            minimum_hosts: u(&o.success_rate_minimum_hosts, d.success_rate.minimum_hosts),
            request_volume: u(
                &o.success_rate_request_volume,
                d.success_rate.request_volume,
            ),
            stdev_factor: u(&o.success_rate_stdev_factor, d.success_rate.stdev_factor),
        },
        failure_percentage: FailurePercentageEjection {
            threshold: pct(
                &o.failure_percentage_threshold,
                d.failure_percentage.threshold,
                "failure_percentage_threshold",
            )?,
            enforcing_percentage: pct(
                &o.enforcing_failure_percentage,
                d.failure_percentage.enforcing_percentage,
                "enforcing_failure_percentage",
            )?,
            minimum_hosts: u(
                &o.failure_percentage_minimum_hosts,
                d.failure_percentage.minimum_hosts,
            ),
            request_volume: u(
                &o.failure_percentage_request_volume,
                d.failure_percentage.request_volume,
            ),
        },
    })
}

fn http_protocol(c: &pb::Cluster) -> Res<HttpProtocolOptions> {
    let mut out = HttpProtocolOptions::default();
    // Deprecated cluster-level fields first; the typed extension options override them.
    if let Some(h2) = &c.http2_protocol_options {
        out.protocol = UpstreamProtocol::Http2;
        out.max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
    }
    if c.protocol_selection == pb::cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        out.protocol = UpstreamProtocol::UseDownstream;
    }
    if let Some(common) = &c.common_http_protocol_options {
        common_http(common, &mut out).at("common_http_protocol_options")?;
    }
    if let Some(n) = &c.max_requests_per_connection {
        out.max_requests_per_connection = Some(n.value);
    }
    for (key, any) in &c.typed_extension_protocol_options {
        let at = || format!("typed_extension_protocol_options[{key:?}]");
        if key != HTTP_OPTIONS_KEY && any_type_name(any) != HTTP_OPTIONS_KEY {
            return bail(format!(
                "protocol options {:?} are not supported",
                any.type_url
            ))
            .at_with(at);
        }
        let opts: uphttp::HttpProtocolOptions = unpack(any).at_with(at)?;
        upstream_http_options(&opts, &mut out).at_with(at)?;
    }
    Ok(out)
}

fn common_http(c: &core::HttpProtocolOptions, out: &mut HttpProtocolOptions) -> Res<()> {
    out.idle_timeout = opt_duration(c.idle_timeout.as_ref())
        .at(".idle_timeout")?
        .or(out.idle_timeout);
    if let Some(n) = &c.max_requests_per_connection {
        out.max_requests_per_connection = Some(n.value);
    }
    Ok(())
}

fn upstream_http_options(
    o: &uphttp::HttpProtocolOptions,
    out: &mut HttpProtocolOptions,
) -> Res<()> {
    use uphttp::http_protocol_options::UpstreamProtocolOptions as U;
    use uphttp::http_protocol_options::explicit_http_config::ProtocolConfig as P;
    if !o.http_filters.is_empty() {
        return bail("http_filters (upstream HTTP filters) are not supported");
    }
    if o.outlier_detection.is_some() {
        return bail("outlier_detection (upstream error matcher) is not supported");
    }
    if !o.request_mirror_policies.is_empty()
        || !o.hash_policy.is_empty()
        || o.retry_policy.is_some()
    {
        return bail(
            "cluster-level request_mirror_policies / hash_policy / retry_policy are not supported",
        );
    }
    if let Some(u) = &o.upstream_http_protocol_options
        && (u.auto_sni || u.auto_san_validation)
    {
        return bail(
            "upstream_http_protocol_options auto_sni / auto_san_validation are not supported",
        );
    }
    if let Some(common) = &o.common_http_protocol_options {
        common_http(common, out).at(".common_http_protocol_options")?;
    }
    match &o.upstream_protocol_options {
        None => {}
        Some(U::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(P::HttpProtocolOptions(_)) | None => out.protocol = UpstreamProtocol::Http1,
            Some(P::Http2ProtocolOptions(h2)) => {
                out.protocol = UpstreamProtocol::Http2;
                out.max_concurrent_streams = h2.max_concurrent_streams.as_ref().map(|v| v.value);
            }
            Some(P::Http3ProtocolOptions(_)) => return bail("HTTP/3 upstreams are not supported"),
        },
        Some(U::UseDownstreamProtocolConfig(d)) => {
            if d.http3_protocol_options.is_some() {
                return bail("HTTP/3 upstreams are not supported");
            }
            out.protocol = UpstreamProtocol::UseDownstream;
            out.max_concurrent_streams = d
                .http2_protocol_options
                .as_ref()
                .and_then(|h| h.max_concurrent_streams.as_ref().map(|v| v.value));
        }
        Some(U::AutoConfig(a)) => {
            if a.http3_protocol_options.is_some() {
                return bail("HTTP/3 upstreams are not supported");
            }
            out.protocol = UpstreamProtocol::Auto;
            out.max_concurrent_streams = a
                .http2_protocol_options
                .as_ref()
                .and_then(|h| h.max_concurrent_streams.as_ref().map(|v| v.value));
        }
    }
    Ok(())
}
