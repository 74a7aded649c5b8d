//! Per-cluster state built from an xDS snapshot: the load balancer over the cluster's
//! endpoints and the connection pool with the cluster's TLS expectations.
//!
//! A [`ClusterSet`] is rebuilt when the snapshot changes; an unchanged cluster keeps its
//! state (balancer, live connections and the service its [`ClusterStack`] built), a
//! cluster whose endpoints alone changed keeps its pool and service and updates its
//! balancer in place, and a removed cluster's state is dropped, which closes its idle
//! connections.

mod dns;
pub mod hosts;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use mesh_core::SpiffeId;
use mesh_core::config::ConfigSnapshot;
use mesh_core::model::{
    Cluster, ClusterLoadAssignment, Discovery, SanType, StringMatcher, TlsMode, UpstreamTls,
};
use mesh_tls::IdentityStore;
use mesh_tls::verify::PeerPolicy;

use crate::client::{ClusterContext, ClusterService, ClusterStack, EndpointService};
use crate::lb::Balancer;
use crate::pool::{PoolConfig, UpstreamPool};

/// One cluster, ready to serve requests.
pub struct ClusterState {
    cluster: Arc<Cluster>,
    endpoints: Option<Arc<ClusterLoadAssignment>>,
    balancer: Arc<Balancer>,
    pool: Result<UpstreamPool, String>,
    service: Option<ClusterService>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("cluster", &self.cluster.name)
            .field("balancer", &self.balancer)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

impl ClusterState {
    /// Builds the state of `cluster` with `endpoints` (EDS), our `identity` and the pool
    /// settings `pool`, and its service with `stack`.
    pub fn new(
        cluster: Arc<Cluster>,
        endpoints: Option<Arc<ClusterLoadAssignment>>,
        identity: &IdentityStore,
        pool: PoolConfig,
        stack: &dyn ClusterStack,
    ) -> Result<Self, String> {
        let balancer = Arc::new(
            Balancer::for_cluster(&cluster, endpoints.clone())
                .map_err(|e| format!("cluster {}: {e}", cluster.name))?,
        );
        match &cluster.discovery {
            Discovery::StrictDns {
                assignment,
                refresh,
                jitter,
                lookup_family,
            } => dns::spawn(
                Arc::downgrade(&balancer),
                assignment.clone(),
                dns::Resolution {
                    refresh: *refresh,
                    jitter: *jitter,
                    family: *lookup_family,
                    first_only: false,
                },
            ),
            Discovery::LogicalDns {
                assignment,
                refresh,
                jitter,
                lookup_family,
            } => dns::spawn(
                Arc::downgrade(&balancer),
                assignment.clone(),
                dns::Resolution {
                    refresh: *refresh,
                    jitter: *jitter,
                    family: *lookup_family,
                    first_only: true,
                },
            ),
            _ => {}
        }
        let peers = match &cluster.tls {
            Some(tls) => expected_peers(tls),
            None => Ok(PeerPolicy::default()),
        };
        let pool = peers
            .map(|p| UpstreamPool::with_config(&cluster, identity, p, pool))
            .map_err(|e| format!("cluster {}: {e}", cluster.name));
        let service = pool.as_ref().ok().map(|pool| {
            let cx = ClusterContext {
                cluster: cluster.clone(),
                balancer: balancer.clone(),
                pool: pool.clone(),
            };
            stack.build(&cx, EndpointService::new(balancer.clone(), pool.clone()))
        });
        Ok(Self {
            cluster,
            endpoints,
            balancer,
            pool,
            service,
        })
    }

    /// The service requests to this cluster go through (its stack around the endpoint
    /// service), or why the cluster cannot be used.
    pub fn service(&self) -> Result<&ClusterService, &str> {
        match &self.service {
            Some(s) => Ok(s),
            None => Err(self.pool().err().unwrap_or("cluster has no service")),
        }
    }

    /// The cluster resource.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The load balancer.
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The connection pool, or why the cluster cannot be used (e.g. an unsupported SAN
    /// matcher: we fail closed rather than accept any server).
    pub fn pool(&self) -> Result<&UpstreamPool, &str> {
        self.pool.as_ref().map_err(String::as_str)
    }
}

/// The server identities a cluster's TLS context accepts: exact URI (or any-type) SAN
/// matchers naming a SPIFFE ID are identities (their trust domains are accepted); every
/// other matcher (prefix, regex, DNS, IP...) is checked on the certificate's SANs as Envoy
/// does; no matcher accepts any identity of our trust domain.
pub fn expected_peers(tls: &UpstreamTls) -> Result<PeerPolicy, String> {
    let mut ids = Vec::new();
    let mut others = Vec::new();
    for m in &tls.validation.san_matchers {
        match (&m.san_type, &m.matcher) {
            (
                SanType::Uri | SanType::Any,
                StringMatcher::Exact {
                    value,
                    ignore_case: false,
                },
            ) if value.starts_with("spiffe://") => ids.push(
                SpiffeId::new(value)
                    .map_err(|e| format!("SAN matcher {value:?} is not a SPIFFE ID: {e}"))?,
            ),
            _ => others.push(m.clone()),
        }
    }
    Ok(PeerPolicy::identities(ids).with_san_matchers(others))
}

/// Every cluster of a snapshot with its state.
#[derive(Debug, Default)]
pub struct ClusterSet {
    clusters: HashMap<Arc<str>, Arc<ClusterState>>,
    errors: HashMap<Arc<str>, String>,
}

impl ClusterSet {
    /// Builds the clusters of `snapshot`, reusing the states of `previous` whose cluster
    /// resource did not change.
    pub fn build(
        snapshot: &ConfigSnapshot,
        previous: &ClusterSet,
        identity: &IdentityStore,
        pool: PoolConfig,
        stack: &dyn ClusterStack,
    ) -> Self {
        let mut out = ClusterSet::default();
        for (name, cluster) in snapshot.clusters.iter() {
            let eds = cluster
                .discovery
                .eds_name(&cluster.name)
                .and_then(|n| snapshot.endpoints.get(n).cloned());
            if let Some(old) = previous.clusters.get(name)
                && (Arc::ptr_eq(&old.cluster, cluster) || *old.cluster == **cluster)
            {
                let same_endpoints = match (&old.endpoints, &eds) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    (None, None) => true,
                    _ => false,
                };
                if same_endpoints {
                    out.clusters.insert(name.clone(), old.clone());
                    continue;
                }
                if let Some(eds) = &eds {
                    // Same cluster, new endpoints: keep the pool and the balancer's
                    // per-endpoint state (active requests, ejections).
                    old.balancer.update(eds.clone());
                    if let Ok(pool) = &old.pool {
                        let live = old.balancer.endpoints();
                        pool.retain(|k| live.iter().any(|e| e.hash_key() == k));
                    }
                    let state = ClusterState {
                        cluster: old.cluster.clone(),
                        endpoints: Some(eds.clone()),
                        balancer: old.balancer.clone(),
                        pool: old.pool.clone(),
                        service: old.service.clone(),
                    };
                    out.clusters.insert(name.clone(), Arc::new(state));
                    continue;
                }
            }
            match ClusterState::new(cluster.clone(), eds, identity, pool.clone(), stack) {
                Ok(state) => {
                    out.clusters.insert(name.clone(), Arc::new(state));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cluster unusable");
                    out.errors.insert(name.clone(), e);
                }
            }
        }
        out
    }

    /// Opens a connection to each usable endpoint that `snapshot` adds to a cluster of this
    /// set (same cluster resource, new EDS), in parallel, and completes when all are up or
    /// have failed. Applied before the update, it keeps every TLS handshake an endpoint
    /// change causes off the request path: the balancer can only pick an added endpoint
    /// once its connection is ready. See [`UpstreamPool::warm`] for which pools warm.
    pub fn warm(&self, snapshot: &ConfigSnapshot) -> impl Future<Output = ()> + use<> {
        let mut warming = tokio::task::JoinSet::new();
        for (name, cluster) in snapshot.clusters.iter() {
            let Some(old) = self.clusters.get(name) else {
                continue;
            };
            let Ok(pool) = &old.pool else { continue };
            let Some(eds) = cluster
                .discovery
                .eds_name(&cluster.name)
                .and_then(|n| snapshot.endpoints.get(n))
            else {
                continue;
            };
            let unchanged = old.endpoints.as_ref().is_some_and(|e| Arc::ptr_eq(e, eds));
            if unchanged || *old.cluster != **cluster {
                continue;
            }
            let known: HashSet<Arc<str>> = old
                .balancer
                .endpoints()
                .iter()
                .map(|e| e.key().clone())
                .collect();
            for ep in eds.localities.iter().flat_map(|l| &l.endpoints) {
                let key = crate::lb::address_key(&ep.address);
                // HBONE endpoints go through a tunnel of their own pool.
                if ep.health.is_usable() && ep.tls_mode != TlsMode::Hbone && !known.contains(&key) {
                    let (pool, address) = (pool.clone(), ep.address.clone());
                    warming.spawn(async move {
                        if let Err(e) = pool.warm(&key, &address).await {
                            tracing::debug!(endpoint = %key, error = %e, "warming a new endpoint");
                        }
                    });
                }
            }
        }
        async move { while warming.join_next().await.is_some() {} }
    }

    /// The state of a cluster.
    pub fn get(&self, name: &str) -> Option<&Arc<ClusterState>> {
        self.clusters.get(name)
    }

    /// Why a cluster of the snapshot has no state.
    pub fn error(&self, name: &str) -> Option<&str> {
        self.errors.get(name).map(String::as_str)
    }

    /// Number of usable clusters.
    pub fn len(&self) -> usize {
        self.clusters.len()
    }

    /// Whether there is no usable cluster.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }
}
