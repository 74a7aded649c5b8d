//! A cluster's load balancing: the `lb_policy` enum with its `lb_config`, and
//! `common_lb_config`.

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use mesh_core::model::{CommonLbConfig, Discovery, HashFunction, LbPolicy};

use crate::translate::lb_limits::{MAX_RING_SIZE, is_prime};
use crate::translate::{At, Res, bail};

pub(super) fn lb_policy(c: &pb::Cluster, discovery: &Discovery) -> Res<LbPolicy> {
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

pub(super) fn percent(
    v: Option<&envoy_types::pb::envoy::r#type::v3::Percent>,
    default: f64,
) -> Res<f64> {
    match v {
        None => Ok(default),
        Some(p) if (0.0..=100.0).contains(&p.value) => Ok(p.value),
        Some(p) => bail(format!("{} is not a percentage in [0, 100]", p.value)),
    }
}

pub(super) fn common_lb_config(c: Option<&pb::cluster::CommonLbConfig>) -> Res<CommonLbConfig> {
    use pb::cluster::common_lb_config::LocalityConfigSpecifier as L;
    let Some(c) = c else {
        return Ok(CommonLbConfig::default());
    };
    if c.override_host_status.is_some() {
        return bail("override_host_status is not supported");
    }
    if c.close_connections_on_host_set_change {
        return bail("close_connections_on_host_set_change is not supported");
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
