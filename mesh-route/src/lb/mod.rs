//! Load balancing over a cluster's endpoints, with Envoy's semantics: priority levels and the
//! overprovisioning factor, locality weights, health (HEALTHY/UNKNOWN serve, DRAINING
//! endpoints are excluded), the panic threshold, and the policies round robin (EDF-weighted),
//! random, least request (power of two choices), ring hash and Maglev.
//!
//! A [`Balancer`] precomputes everything into a plan (priority loads, per-priority pools,
//! EDF cycles, rings, Maglev tables) when endpoints change or an endpoint's ejection flag
//! flips, and swaps it in with `ArcSwap`; [`Balancer::pick`] only reads the plan and bumps
//! atomics.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::model::*;
//! use mesh_route::{Balancer, PickContext};
//!
//! let ep = |port| Endpoint {
//!     address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
//!     health: HealthStatus::Healthy,
//!     weight: 1,
//!     hostname: None,
//!     tls_mode: TlsMode::Unset,
//! };
//! let cla = ClusterLoadAssignment {
//!     cluster_name: "reviews".into(),
//!     localities: vec![LocalityEndpoints {
//!         locality: Arc::new(Locality::default()),
//!         priority: 0,
//!         load_balancing_weight: None,
//!         endpoints: vec![ep(9080), ep(9081)],
//!     }],
//!     ..Default::default()
//! };
//! let lb = Balancer::new("reviews", &LbPolicy::RoundRobin, &CommonLbConfig::default(), Arc::new(cla)).unwrap();
//! let a = lb.pick(&PickContext::with_random(1)).unwrap();
//! let b = lb.pick(&PickContext::with_random(2)).unwrap();
//! assert_ne!(a.hash_key(), b.hash_key(), "round robin alternates");
//! let _in_flight = a.start_request(); // counted for least request until dropped
//! ```

mod edf;
mod endpoint;
mod hosts;
pub mod maglev;
pub mod priority;
mod ring_hash;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mesh_core::model::{
    Cluster, ClusterLoadAssignment, CommonLbConfig, Discovery, HealthStatus, LbPolicy,
};

pub use endpoint::{ActiveRequest, EndpointRef};
pub use priority::{PriorityCounts, PriorityLoad};

use crate::BuildError;
use maglev::Maglev;
use ring_hash::Ring;

/// Envoy's largest ring.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's largest Maglev table.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// What a pick may use from the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PickContext {
    /// The request hash from the route's hash policies (see [`crate::request_hash`]); ring
    /// hash and Maglev pick at random without one.
    pub hash: Option<u64>,
    /// Randomness for this pick (priority choice, random and least-request candidates).
    pub random: u64,
}

impl PickContext {
    /// A context with a fresh random value and no hash.
    pub fn new() -> Self {
        Self {
            hash: None,
            random: rand::random(),
        }
    }

    /// A context with the given random value (deterministic tests).
    pub fn with_random(random: u64) -> Self {
        Self { hash: None, random }
    }

    /// Sets the request hash.
    pub fn hash(mut self, hash: Option<u64>) -> Self {
        self.hash = hash;
        self
    }
}

/// SplitMix64: cheap, good enough to derive several draws from one random value.
struct Draws(u64);

impl Draws {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug)]
enum Picker {
    RoundRobin {
        order: Vec<u32>,
        next: AtomicUsize,
    },
    Random,
    LeastRequest {
        choices: u32,
        cumulative: Option<Vec<u64>>,
        weights: Vec<u32>,
    },
    Ring(Ring),
    Maglev(Maglev),
}

#[derive(Debug)]
struct Pool {
    hosts: Vec<EndpointRef>,
    picker: Picker,
}

impl Pool {
    fn new(hosts: Vec<EndpointRef>, weights: Vec<f64>, policy: &LbPolicy) -> Self {
        let int_weights: Vec<u64> = hosts
            .iter()
            .map(|h| u64::from(h.endpoint().weight.max(1)))
            .collect();
        let picker = match policy {
            LbPolicy::RoundRobin => {
                let equal = int_weights.windows(2).all(|w| w[0] == w[1]);
                let order = if equal {
                    (0..hosts.len() as u32).collect()
                } else {
                    edf::cycle(&int_weights)
                };
                // Envoy starts each worker at a random offset so workers do not move in step.
                let start = if order.is_empty() {
                    0
                } else {
                    rand::random::<u32>() as usize % order.len()
                };
                Picker::RoundRobin {
                    order,
                    next: AtomicUsize::new(start),
                }
            }
            LbPolicy::Random => Picker::Random,
            LbPolicy::LeastRequest { choice_count } => {
                let equal = int_weights.windows(2).all(|w| w[0] == w[1]);
                let cumulative = (!equal).then(|| {
                    int_weights
                        .iter()
                        .scan(0u64, |acc, w| {
                            *acc += w;
                            Some(*acc)
                        })
                        .collect()
                });
                Picker::LeastRequest {
                    choices: (*choice_count).max(1),
                    cumulative,
                    weights: int_weights.iter().map(|w| *w as u32).collect(),
                }
            }
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
                hash_function,
            } => {
                let keyed: Vec<(&str, f64)> = hosts
                    .iter()
                    .map(|h| h.hash_key())
                    .zip(weights.iter().copied())
                    .collect();
                Picker::Ring(Ring::build(
                    &keyed,
                    *min_ring_size,
                    *max_ring_size,
                    *hash_function,
                ))
            }
            LbPolicy::Maglev { table_size } => {
                let keyed: Vec<(&str, f64)> = hosts
                    .iter()
                    .map(|h| h.hash_key())
                    .zip(weights.iter().copied())
                    .collect();
                Picker::Maglev(Maglev::build(&keyed, *table_size))
            }
        };
        Self { hosts, picker }
    }

    fn pick(
        &self,
        hash: Option<u64>,
        draws: &mut Draws,
        skip_ejected: bool,
    ) -> Option<&EndpointRef> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let ok = |i: usize| !skip_ejected || !self.hosts[i].is_ejected();
        let idx = match &self.picker {
            Picker::RoundRobin { order, next } => {
                if order.is_empty() {
                    return None;
                }
                let mut found = None;
                for _ in 0..order.len().min(n * 2) {
                    let i = order[next.fetch_add(1, Ordering::Relaxed) % order.len()] as usize;
                    if ok(i) {
                        found = Some(i);
                        break;
                    }
                }
                // A heavy ejected endpoint can fill the window; any other will do then.
                match found {
                    Some(i) => i,
                    None => (0..n).find(|&i| ok(i))?,
                }
            }
            Picker::Random => {
                let first = (draws.next() % n as u64) as usize;
                (0..n).map(|k| (first + k) % n).find(|&i| ok(i))?
            }
            Picker::LeastRequest {
                choices,
                cumulative,
                weights,
            } => {
                let mut best: Option<usize> = None;
                for _ in 0..*choices {
                    let i = match cumulative {
                        None => (draws.next() % n as u64) as usize,
                        Some(c) => {
                            let total = c.last().copied().unwrap_or(1).max(1);
                            let r = draws.next() % total;
                            c.partition_point(|&end| end <= r).min(n - 1)
                        }
                    };
                    if !ok(i) {
                        continue;
                    }
                    // Fewest requests in flight per unit of weight; ties keep the first.
                    let load = |j: usize| {
                        self.hosts[j].active_requests() as f64 / f64::from(weights[j].max(1))
                    };
                    if best.is_none_or(|b| load(i) < load(b)) {
                        best = Some(i);
                    }
                }
                match best {
                    Some(b) => b,
                    None => (0..n).find(|&i| ok(i))?,
                }
            }
            Picker::Ring(ring) => {
                let h = hash.unwrap_or_else(|| draws.next());
                let start = ring.position(h)?;
                (0..ring.len())
                    .map(|k| ring.host_at(start + k) as usize)
                    .find(|&i| ok(i))?
            }
            Picker::Maglev(table) => {
                let h = hash.unwrap_or_else(|| draws.next());
                let len = table.len().max(1);
                let start = (h % len as u64) as usize;
                (0..len)
                    .filter_map(|k| table.host_at(start + k))
                    .map(|i| i as usize)
                    .find(|&i| ok(i))?
            }
        };
        self.hosts.get(idx)
    }
}

/// The endpoints of one priority as one pick sees them: one pool, or one pool per locality
/// chosen by an EDF cycle over the effective locality weights.
#[derive(Debug)]
struct Tier {
    localities: Option<(Vec<u32>, AtomicUsize)>,
    pools: Vec<Pool>,
}

impl Tier {
    fn pick(
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
struct PriorityPlan {
    healthy: Tier,
    all: Tier,
}

#[derive(Debug)]
struct Plan {
    assignment: Arc<ClusterLoadAssignment>,
    endpoints: Vec<EndpointRef>,
    priorities: Vec<PriorityPlan>,
    load: PriorityLoad,
    /// Cumulative `load`.
    load_ends: Vec<u64>,
}

/// The load balancer of one cluster. Picks are lock-free; updates rebuild the plan and swap it.
#[derive(Debug)]
pub struct Balancer {
    name: String,
    policy: LbPolicy,
    common: CommonLbConfig,
    plan: ArcSwap<Plan>,
    writer: Mutex<()>,
}

impl Balancer {
    /// A balancer for a cluster and its endpoints.
    pub fn new(
        name: &str,
        policy: &LbPolicy,
        common: &CommonLbConfig,
        assignment: Arc<ClusterLoadAssignment>,
    ) -> Result<Self, BuildError> {
        validate(name, policy)?;
        let plan = build(policy, common, assignment, &HashMap::new());
        Ok(Self {
            name: name.to_owned(),
            policy: policy.clone(),
            common: common.clone(),
            plan: ArcSwap::from_pointee(plan),
            writer: Mutex::new(()),
        })
    }

    /// A balancer for a cluster: its static endpoints, or `assignment` for EDS clusters.
    pub fn for_cluster(
        cluster: &Cluster,
        eds: Option<Arc<ClusterLoadAssignment>>,
    ) -> Result<Self, BuildError> {
        let assignment = match (&cluster.discovery, eds) {
            (Discovery::Static(a) | Discovery::LogicalDns(a), _) => a.clone(),
            (_, Some(a)) => a,
            (_, None) => Arc::new(ClusterLoadAssignment {
                cluster_name: cluster.name.clone(),
                ..Default::default()
            }),
        };
        Self::new(
            &cluster.name,
            &cluster.lb_policy,
            &cluster.common_lb,
            assignment,
        )
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Replaces the endpoints (an EDS update). Endpoints whose priority and address did
    /// not change keep their counters and ejection flags.
    pub fn update(&self, assignment: Arc<ClusterLoadAssignment>) {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.plan.load();
        let reuse: HashMap<(u32, Arc<str>), EndpointRef> = old
            .endpoints
            .iter()
            .map(|e| ((e.priority(), e.key().clone()), e.clone()))
            .collect();
        self.plan.store(Arc::new(build(
            &self.policy,
            &self.common,
            assignment,
            &reuse,
        )));
    }

    /// Sets an endpoint's ejection flag (outlier detection) and, if it changed, rebuilds the
    /// plan so that priority loads and panic see the ejected endpoint as unhealthy, as Envoy
    /// does. Picks skip ejected endpoints from the moment the flag is set.
    pub fn set_ejected(&self, endpoint: &EndpointRef, ejected: bool) {
        if endpoint.store_ejected(ejected) == ejected {
            return;
        }
        let assignment = self.plan.load().assignment.clone();
        self.update(assignment);
    }

    /// Picks an endpoint, or `None` when the cluster has none that may serve.
    pub fn pick(&self, ctx: &PickContext) -> Option<EndpointRef> {
        let plan = self.plan.load();
        let mut draws = Draws(ctx.random);
        let hashing = matches!(
            self.policy,
            LbPolicy::RingHash { .. } | LbPolicy::Maglev { .. }
        );
        let total = plan.load_ends.last().copied().unwrap_or(0);
        if total == 0 {
            return None;
        }
        // Hash-based policies choose the priority from the hash too (Envoy's thread-aware LB).
        let draw = match (hashing, ctx.hash) {
            (true, Some(h)) => h % 100,
            _ => draws.next() % 100,
        };
        let p = plan.load_ends.partition_point(|&end| end <= draw);
        let pp = plan.priorities.get(p)?;
        if plan.load.panic[p] {
            pp.all.pick(ctx.hash, &mut draws, false).cloned()
        } else {
            pp.healthy.pick(ctx.hash, &mut draws, true).cloned()
        }
    }

    /// Every endpoint of the current plan (DRAINING ones included), in EDS order.
    pub fn endpoints(&self) -> Vec<EndpointRef> {
        self.plan.load().endpoints.clone()
    }

    /// The current per-priority load (percent) and panic flags.
    pub fn priority_load(&self) -> PriorityLoad {
        self.plan.load().load.clone()
    }
}

fn validate(name: &str, policy: &LbPolicy) -> Result<(), BuildError> {
    let bad = |reason: String| BuildError::InvalidLbConfig {
        cluster: name.to_owned(),
        reason,
    };
    match policy {
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
            ..
        } if *min_ring_size == 0
            || min_ring_size > max_ring_size
            || *max_ring_size > MAX_RING_SIZE =>
        {
            Err(bad(format!(
                "ring hash sizes must satisfy 0 < min_ring_size ({min_ring_size}) <= max_ring_size ({max_ring_size}) <= {MAX_RING_SIZE}"
            )))
        }
        LbPolicy::Maglev { table_size }
            if !maglev::is_prime(*table_size) || *table_size > MAX_MAGLEV_TABLE_SIZE =>
        {
            Err(bad(format!(
                "maglev table_size {table_size} must be a prime no larger than {MAX_MAGLEV_TABLE_SIZE}"
            )))
        }
        LbPolicy::LeastRequest { choice_count } if *choice_count < 2 => Err(bad(format!(
            "least request choice_count {choice_count} must be at least 2"
        ))),
        _ => Ok(()),
    }
}

struct LocalityHosts {
    weight: u32,
    hosts: Vec<EndpointRef>,
}

fn build(
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
    if !common.locality_weighted {
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
