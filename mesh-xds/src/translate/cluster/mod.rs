//! Clusters (CDS): discovery type, load-balancing policy, circuit breakers, outlier detection,
//! upstream TLS and HTTP protocol options (gRPC A27, A32, A37, A42, A50; Envoy cluster.proto).

mod balancing;
mod http;
mod resilience;

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateConfig;
use mesh_core::model::{Cluster, Discovery, DnsLookupFamily};

use balancing::{common_lb_config, lb_policy};
use http::http_protocol;
use resilience::{circuit_breakers, outlier_detection};

use super::endpoint::{AddressKind, cluster_load_assignment};
use super::{At, Dialect, Res, bail, opt_duration, refuse_set, unpack};
use crate::resource::Rejection;

const AGGREGATE_TYPE: &str = "envoy.clusters.aggregate";
/// Envoy's default `dns_refresh_rate`.
const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

/// Decodes and validates a CDS resource, filling in unset fields as `dialect` says.
pub fn decode(bytes: &[u8], dialect: Dialect) -> Result<Arc<Cluster>, Rejection> {
    let c: pb::Cluster = super::decode_message(bytes, "envoy.config.cluster.v3.Cluster")?;
    if c.name.is_empty() {
        return Err(Rejection {
            name: None,
            reason: "cluster has an empty name".into(),
        });
    }
    cluster_in(&c, dialect)
        .map(Arc::new)
        .map_err(|e| e.reject("cluster", &c.name))
}

/// Translates a `Cluster` with Envoy's defaults.
pub fn cluster(c: &pb::Cluster) -> Res<Cluster> {
    cluster_in(c, Dialect::Envoy)
}

/// Translates a `Cluster`, filling in unset fields as `dialect` says.
pub fn cluster_in(c: &pb::Cluster, dialect: Dialect) -> Res<Cluster> {
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
    let http_protocol = http_protocol(c)?;
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
        circuit_breakers: circuit_breakers(c.circuit_breakers.as_ref(), dialect)
            .at("circuit_breakers")?,
        outlier_detection: c
            .outlier_detection
            .as_ref()
            .map(outlier_detection)
            .transpose()
            .at("outlier_detection")?,
        tls,
        http_protocol,
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
                super::ads_config_source(cfg.eds_config.as_ref())
                    .at("eds_cluster_config.eds_config")?;
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
                Ok(Discovery::LogicalDns {
                    assignment: Arc::new(cla),
                    refresh: dns_refresh(c)?,
                    jitter: opt_duration(c.dns_jitter.as_ref())
                        .at("dns_jitter")?
                        .unwrap_or_default(),
                    lookup_family: lookup_family(c)?,
                })
            }
            Ok(D::StrictDns) => {
                let Some(la) = &c.load_assignment else {
                    return bail("load_assignment is required for a STRICT_DNS cluster");
                };
                let cla =
                    cluster_load_assignment(la, AddressKind::IpOrDns).at("load_assignment")?;
                Ok(Discovery::StrictDns {
                    assignment: Arc::new(cla),
                    refresh: dns_refresh(c)?,
                    jitter: opt_duration(c.dns_jitter.as_ref())
                        .at("dns_jitter")?
                        .unwrap_or_default(),
                    lookup_family: lookup_family(c)?,
                })
            }
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

fn dns_refresh(c: &pb::Cluster) -> Res<Duration> {
    Ok(opt_duration(c.dns_refresh_rate.as_ref())
        .at("dns_refresh_rate")?
        .filter(|d| !d.is_zero())
        .unwrap_or(DEFAULT_DNS_REFRESH))
}

fn lookup_family(c: &pb::Cluster) -> Res<DnsLookupFamily> {
    use pb::cluster::DnsLookupFamily as F;
    Ok(match F::try_from(c.dns_lookup_family) {
        Ok(F::Auto) => DnsLookupFamily::Auto,
        Ok(F::V4Only) => DnsLookupFamily::V4Only,
        Ok(F::V6Only) => DnsLookupFamily::V6Only,
        Ok(F::V4Preferred) => DnsLookupFamily::V4Preferred,
        Ok(F::All) => DnsLookupFamily::All,
        Err(_) => {
            return bail(format!(
                "dns_lookup_family {} is unknown",
                c.dns_lookup_family
            ));
        }
    })
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
        return bail(
            "transport_socket_matches / transport_socket_matcher are not supported (use transport_socket)",
        );
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
    refuse_set(&[
        (
            "upstream_connection_options",
            c.upstream_connection_options.is_some(),
        ),
        (
            "close_connections_on_host_health_failure",
            c.close_connections_on_host_health_failure,
        ),
        (
            "ignore_health_on_host_removal",
            c.ignore_health_on_host_removal,
        ),
        ("lrs_server", c.lrs_server.is_some()),
        (
            "connection_pool_per_downstream_connection",
            c.connection_pool_per_downstream_connection,
        ),
        ("preconnect_policy", c.preconnect_policy.is_some()),
        ("queuing_policies", c.queuing_policies.is_some()),
        // hyper's flow control bounds what a connection buffers; istiod never sets these.
        (
            "per_connection_buffer_limit_bytes",
            c.per_connection_buffer_limit_bytes.is_some(),
        ),
        (
            "per_connection_buffer_high_watermark_timeout",
            c.per_connection_buffer_high_watermark_timeout.is_some(),
        ),
        // DNS clusters use the system resolver; istiod sets none of these.
        (
            "dns_failure_refresh_rate",
            c.dns_failure_refresh_rate.is_some(),
        ),
        ("dns_resolvers", !c.dns_resolvers.is_empty()),
        ("use_tcp_for_dns_lookups", c.use_tcp_for_dns_lookups),
        ("dns_resolution_config", c.dns_resolution_config.is_some()),
    ])?;
    if let Some(u) = &c.upstream_http_protocol_options
        && (u.auto_sni || u.auto_san_validation)
    {
        return bail(
            "upstream_http_protocol_options auto_sni / auto_san_validation are not supported",
        );
    }
    Ok(())
}
