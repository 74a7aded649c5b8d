//! The load balancer of one cluster: validation of its policy, picks from the current plan,
//! and the updates (EDS, ejections) that rebuild and swap the plan.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use mesh_core::model::{Cluster, ClusterLoadAssignment, CommonLbConfig, Discovery, LbPolicy};

use super::endpoint::EndpointRef;
use super::maglev;
use super::pick::{Draws, PickContext};
use super::plan::{Plan, build};
use super::priority::PriorityLoad;
use crate::BuildError;

/// Envoy's largest ring.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;
/// Envoy's largest Maglev table.
pub const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

/// The load balancer of one cluster. Picks are lock-free; updates rebuild the plan and swap it.
#[derive(Debug)]
pub struct Balancer {
    name: String,
    policy: LbPolicy,
    common: CommonLbConfig,
    pub(super) plan: ArcSwap<Plan>,
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
            (
                Discovery::Static(a)
                | Discovery::LogicalDns { assignment: a, .. }
                | Discovery::StrictDns { assignment: a, .. },
                _,
            ) => a.clone(),
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

    /// Whether some endpoint may take new requests (healthy or unknown, not ejected).
    pub fn has_healthy(&self) -> bool {
        self.plan
            .load()
            .endpoints
            .iter()
            .any(EndpointRef::is_healthy)
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
