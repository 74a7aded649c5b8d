//! Typed load-balancing policies (`Cluster.load_balancing_policy`, gRPC A52): the first policy
//! of a supported type wins; unknown types are skipped; none supported is a rejection.

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
use mesh_core::model::{HashFunction, LbPolicy};

use super::lb_limits::{MAX_RING_SIZE, is_prime};
use super::{At, Res, any_type_name, bail, unpack};

/// gRPC A52 limits nesting (wrr_locality -> child policy).
const MAX_DEPTH: usize = 16;

/// The chosen policy and whether localities are weighted (`wrr_locality` or a
/// `locality_weighted_lb_config`).
pub fn typed_policy(p: &pb::LoadBalancingPolicy) -> Res<(LbPolicy, bool)> {
    select(p, 0)
}

fn select(p: &pb::LoadBalancingPolicy, depth: usize) -> Res<(LbPolicy, bool)> {
    if depth >= MAX_DEPTH {
        return bail(format!("policies nest deeper than {MAX_DEPTH} levels"));
    }
    let mut seen = Vec::new();
    for (i, policy) in p.policies.iter().enumerate() {
        let Some(any) = policy
            .typed_extension_config
            .as_ref()
            .and_then(|t| t.typed_config.as_ref())
        else {
            continue;
        };
        let at = || format!(".policies[{i}]");
        let chosen = match any_type_name(any) {
            "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin" => {
                let r: lbp::round_robin::v3::RoundRobin = unpack(any).at_with(at)?;
                if r.slow_start_config.is_some() {
                    return bail("slow_start_config is not supported").at_with(at);
                }
                (
                    LbPolicy::RoundRobin,
                    locality_weighted(r.locality_lb_config.as_ref()),
                )
            }
            "envoy.extensions.load_balancing_policies.random.v3.Random" => {
                let r: lbp::random::v3::Random = unpack(any).at_with(at)?;
                (
                    LbPolicy::Random,
                    locality_weighted(r.locality_lb_config.as_ref()),
                )
            }
            "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest" => {
                let l: lbp::least_request::v3::LeastRequest = unpack(any).at_with(at)?;
                if l.active_request_bias.is_some() || l.slow_start_config.is_some() {
                    return bail("active_request_bias / slow_start_config are not supported")
                        .at_with(at);
                }
                if l.enable_full_scan.as_ref().is_some_and(|b| b.value)
                    || l.selection_method
                        == lbp::least_request::v3::least_request::SelectionMethod::FullScan as i32
                {
                    return bail("enable_full_scan / selection_method FULL_SCAN (full-scan selection) is not supported").at_with(at);
                }
                let choice_count = l.choice_count.as_ref().map_or(2, |v| v.value);
                if choice_count < 2 {
                    return bail("choice_count must be at least 2").at_with(at);
                }
                (
                    LbPolicy::LeastRequest { choice_count },
                    locality_weighted(l.locality_lb_config.as_ref()),
                )
            }
            "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash" => {
                use lbp::ring_hash::v3::ring_hash::HashFunction as H;
                let r: lbp::ring_hash::v3::RingHash = unpack(any).at_with(at)?;
                if r.use_hostname_for_hashing
                    || r.hash_balance_factor.is_some()
                    || r.consistent_hashing_lb_config.is_some()
                {
                    return bail(
                        "use_hostname_for_hashing / hash_balance_factor / consistent_hashing_lb_config are not supported",
                    )
                        .at_with(at);
                }
                let min = r.minimum_ring_size.as_ref().map_or(1024, |v| v.value);
                let max = r
                    .maximum_ring_size
                    .as_ref()
                    .map_or(MAX_RING_SIZE, |v| v.value);
                if min == 0 || min > max || max > MAX_RING_SIZE {
                    return bail(format!(
                        "ring sizes must satisfy 0 < minimum_ring_size ({min}) <= maximum_ring_size ({max}) <= {MAX_RING_SIZE}"
                    ))
                    .at_with(at);
                }
                let hash_function = match H::try_from(r.hash_function) {
                    Ok(H::DefaultHash) | Ok(H::XxHash) => HashFunction::XxHash,
                    Ok(H::MurmurHash2) => HashFunction::MurmurHash2,
                    Err(_) => {
                        return bail(format!("hash_function {} is unknown", r.hash_function))
                            .at_with(at);
                    }
                };
                (
                    LbPolicy::RingHash {
                        min_ring_size: min,
                        max_ring_size: max,
                        hash_function,
                    },
                    r.locality_weighted_lb_config.is_some(),
                )
            }
            "envoy.extensions.load_balancing_policies.maglev.v3.Maglev" => {
                let m: lbp::maglev::v3::Maglev = unpack(any).at_with(at)?;
                if m.consistent_hashing_lb_config.is_some() {
                    return bail("consistent_hashing_lb_config is not supported").at_with(at);
                }
                let table_size = m.table_size.as_ref().map_or(65537, |v| v.value);
                if !is_prime(table_size) || table_size > 5_000_011 {
                    return bail(format!(
                        "table_size {table_size} must be a prime no larger than 5000011"
                    ))
                    .at_with(at);
                }
                (
                    LbPolicy::Maglev { table_size },
                    m.locality_weighted_lb_config.is_some(),
                )
            }
            "envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality" => {
                let w: lbp::wrr_locality::v3::WrrLocality = unpack(any).at_with(at)?;
                let Some(child) = &w.endpoint_picking_policy else {
                    return bail("endpoint_picking_policy is required").at_with(at);
                };
                let (policy, _) = select(child, depth + 1)
                    .at_with(|| format!("{}.endpoint_picking_policy", at()))?;
                (policy, true)
            }
            other => {
                seen.push(other.to_owned());
                continue;
            }
        };
        return Ok(chosen);
    }
    bail(format!("no supported policy among {seen:?}"))
}

fn locality_weighted(c: Option<&lbp::common::v3::LocalityLbConfig>) -> bool {
    use lbp::common::v3::locality_lb_config::LocalityConfigSpecifier as L;
    matches!(
        c.and_then(|c| c.locality_config_specifier.as_ref()),
        Some(L::LocalityWeightedLbConfig(_))
    )
}
