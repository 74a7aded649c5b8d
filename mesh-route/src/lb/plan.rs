//! The plan a [`Balancer`](super::Balancer) picks from, precomputed when endpoints change or an
//! endpoint's ejection flag flips: priority loads, and per priority a healthy and a panic tier
//! of pools (with their EDF cycles, rings or Maglev tables).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_core::model::{ClusterLoadAssignment, CommonLbConfig, HealthStatus, LbPolicy};

use super::edf;
use super::endpoint::{self, EndpointRef};
use super::pick::Draws;
use super::picker::Pool;
use super::priority::{self, PriorityCounts, PriorityLoad};

/// The endpoints of one priority as one pick sees them: one pool, or one pool per locality
/// chosen by an EDF cycle over the effective locality weights.
#[derive(Debug)]
pub(super) struct Tier {
    localities: Option<(Vec<u32>, AtomicUsize)>,
    pools: Vec<Pool>,
}

impl Tier {
    pub(super) fn pick(
        &self,
        hash: Option<u64>,
        draws: &mut Draws,
        skip_ejected: bool,
    ) -> Option<&EndpointRef> {
        let pool = match &self.localities {
            None => self.pools.first()?,
            Some((order, next)) => {
                if order.is_empty() {
                    return None;
                }
                &self.pools[order[next.fetch_add(1, Ordering::Relaxed) % order.len()] as usize]
            }
        };
        pool.pick(hash, draws, skip_ejected)
    }
}

#[derive(Debug)]
pub(super) struct PriorityPlan {
    pub(super) healthy: Tier,
    pub(super) all: Tier,
}

#[derive(Debug)]
pub(super) struct Plan {
    pub(super) assignment: Arc<ClusterLoadAssignment>,
    pub(super) endpoints: Vec<EndpointRef>,
    pub(super) priorities: Vec<PriorityPlan>,
    pub(super) load: PriorityLoad,
    /// Cumulative `load`.
    pub(super) load_ends: Vec<u64>,
}

struct LocalityHosts {
    weight: u32,
    hosts: Vec<EndpointRef>,
}

pub(super) fn build(
    policy: &LbPolicy,
    common: &CommonLbConfig,
    assignment: Arc<ClusterLoadAssignment>,
    reuse: &HashMap<(u32, Arc<str>), EndpointRef>,
) -> Plan {
    let mut endpoints = Vec::with_capacity(assignment.endpoint_count());
    let mut by_priority: std::collections::BTreeMap<u32, Vec<LocalityHosts>> = Default::default();
    for le in &assignment.localities {
        let mut hosts = Vec::with_capacity(le.endpoints.len());
        for ep in &le.endpoints {
            let key = (le.priority, endpoint::address_key(&ep.address));
            let e = match reuse.get(&key) {
                Some(old) => EndpointRef::renew(old, ep.clone(), le.locality.clone(), le.priority),
                None => EndpointRef::new(ep.clone(), le.locality.clone(), le.priority),
            };
            endpoints.push(e.clone());
            hosts.push(e);
        }
        by_priority
            .entry(le.priority)
            .or_default()
            .push(LocalityHosts {
                weight: le.load_balancing_weight.unwrap_or(0),
                hosts,
            });
    }
    let factor = assignment.overprovisioning_factor;
    let counts: Vec<PriorityCounts> = by_priority
        .values()
        .map(|locs| {
            let mut c = PriorityCounts::default();
            for h in locs.iter().flat_map(|l| &l.hosts) {
                if h.endpoint().health != HealthStatus::Draining {
                    c.total += 1;
                    c.healthy += u64::from(h.is_healthy());
                }
            }
            c
        })
        .collect();
    let load = priority::compute(&counts, factor, common.healthy_panic_threshold);
    let load_ends = load
        .load
        .iter()
        .scan(0u64, |acc, l| {
            *acc += u64::from(*l);
            Some(*acc)
        })
        .collect();
    let priorities = by_priority
        .values()
        .map(|locs| PriorityPlan {
            healthy: tier(locs, policy, common, factor, true),
            all: tier(locs, policy, common, factor, false),
        })
        .collect();
    Plan {
        assignment,
        endpoints,
        priorities,
        load,
        load_ends,
    }
}

/// Builds the healthy tier (`healthy_only`) or the panic tier (every non-draining host).
fn tier(
    locs: &[LocalityHosts],
    policy: &LbPolicy,
    common: &CommonLbConfig,
    factor: u32,
    healthy_only: bool,
) -> Tier {
    let eligible = |h: &EndpointRef| {
        h.endpoint().health != HealthStatus::Draining && (!healthy_only || h.is_healthy())
    };
    let hashing = matches!(policy, LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. });
    // Effective locality weight: weight * min(1, factor/100 * eligible/total) (Envoy's
    // `effectiveLocalityWeight`); localities without weight get nothing.
    let per_locality: Vec<(f64, Vec<EndpointRef>)> = locs
        .iter()
        .map(|l| {
            let total = l
                .hosts
                .iter()
                .filter(|h| h.endpoint().health != HealthStatus::Draining)
                .count();
            let hosts: Vec<EndpointRef> = l.hosts.iter().filter(|h| eligible(h)).cloned().collect();
            let ratio = if total == 0 {
                0.0
            } else {
                hosts.len() as f64 / total as f64
            };
            let eff = f64::from(l.weight) * (f64::from(factor) / 100.0 * ratio).min(1.0);
            (eff, hosts)
        })
        .collect();
    let host_weights = |hosts: &[EndpointRef]| -> Vec<f64> {
        let sum: f64 = hosts
            .iter()
            .map(|h| f64::from(h.endpoint().weight.max(1)))
            .sum();
        hosts
            .iter()
            .map(|h| f64::from(h.endpoint().weight.max(1)) / sum.max(1.0))
            .collect()
    };
    // In panic Envoy's zone-aware balancers pick from all the priority's hosts, localities
    // ignored (`hostSourceToUse` returns `AllHosts` before choosing a locality); hash
    // balancers keep the locality weights.
    if !common.locality_weighted || (!healthy_only && !hashing) {
        let hosts: Vec<EndpointRef> = per_locality.into_iter().flat_map(|(_, h)| h).collect();
        let w = host_weights(&hosts);
        return Tier {
            localities: None,
            pools: vec![Pool::new(hosts, w, policy)],
        };
    }
    let live: Vec<(f64, Vec<EndpointRef>)> = per_locality
        .into_iter()
        .filter(|(eff, hosts)| *eff > 0.0 && !hosts.is_empty())
        .collect();
    if hashing {
        // One ring over every locality: host weight share x locality weight share.
        let sum_eff: f64 = live.iter().map(|(e, _)| e).sum();
        let mut hosts = Vec::new();
        let mut weights = Vec::new();
        for (eff, hs) in &live {
            for (h, w) in hs.iter().zip(host_weights(hs)) {
                hosts.push(h.clone());
                weights.push(w * eff / sum_eff);
            }
        }
        return Tier {
            localities: None,
            pools: vec![Pool::new(hosts, weights, policy)],
        };
    }
    let order = edf::cycle_f64(&live.iter().map(|(e, _)| *e).collect::<Vec<_>>());
    let start = if order.is_empty() {
        0
    } else {
        rand::random::<u32>() as usize % order.len()
    };
    Tier {
        localities: Some((order, AtomicUsize::new(start))),
        pools: live
            .into_iter()
            .map(|(_, hosts)| {
                let w = host_weights(&hosts);
                Pool::new(hosts, w, policy)
            })
            .collect(),
    }
}
