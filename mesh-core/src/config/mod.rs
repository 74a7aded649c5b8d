//! The config seam: what every config source publishes and every consumer reads.
//!
//! A [`ConfigSnapshot`] holds the listeners, route configurations, clusters and endpoint
//! assignments of the protocol-free [`model`](crate::model), immutable and shared by
//! `Arc`. A [`ConfigSource`] publishes snapshots through a `tokio::sync::watch` and takes
//! requests for targets it should fetch ("I need this listener": on-demand subscription,
//! like linkerd2-proxy's `GetPolicy` and ztunnel's `Demander`). The xDS client, the
//! embedded control plane running in-process, and [`StaticSource`] (config built in code or
//! read from a file) implement it; the mesh client, the inbound server, the telemetry peer
//! directory and the config dump take any of them.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::config::{ConfigSnapshot, ConfigSource, StaticSource};
//! use mesh_core::model::ClusterLoadAssignment;
//!
//! let mut snapshot = ConfigSnapshot::default();
//! snapshot.insert_endpoints(ClusterLoadAssignment {
//!     cluster_name: "outbound|9080||reviews".into(),
//!     localities: vec![],
//!     ..ClusterLoadAssignment::default()
//! });
//! let source = StaticSource::new(snapshot);
//! assert!(source.snapshots().borrow().endpoints.contains_key("outbound|9080||reviews"));
//! assert!(*source.readiness().borrow());
//! ```

mod source;

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{
    Cluster, ClusterLoadAssignment, Listener, ListenerKind, RouteConfig, RouteSource,
};

pub use source::{ConfigSource, StaticSource};

/// Resources by name. Lookups take `&str`.
pub type ResourceMap<T> = HashMap<Arc<str>, Arc<T>>;

/// One consistent view of the mesh config, immutable. A new snapshot shares every map and
/// every resource that did not change with the previous one, so consumers compare by
/// pointer (`Arc::ptr_eq`) to skip what did not change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConfigSnapshot {
    /// Listeners by name (client listeners are named `host:port`, server listeners after
    /// Istio's inbound listener template).
    pub listeners: Arc<ResourceMap<Listener>>,
    /// Route configurations by name.
    pub route_configs: Arc<ResourceMap<RouteConfig>>,
    /// Clusters by name.
    pub clusters: Arc<ResourceMap<Cluster>>,
    /// Endpoint assignments by cluster (or EDS service) name.
    pub endpoints: Arc<ResourceMap<ClusterLoadAssignment>>,
}

impl ConfigSnapshot {
    /// Adds or replaces a listener.
    pub fn insert_listener(&mut self, listener: Listener) -> &mut Self {
        let name: Arc<str> = listener.name.as_str().into();
        Arc::make_mut(&mut self.listeners).insert(name, Arc::new(listener));
        self
    }

    /// Adds or replaces a route configuration.
    pub fn insert_route_config(&mut self, config: RouteConfig) -> &mut Self {
        let name: Arc<str> = config.name.as_str().into();
        Arc::make_mut(&mut self.route_configs).insert(name, Arc::new(config));
        self
    }

    /// Adds or replaces a cluster.
    pub fn insert_cluster(&mut self, cluster: Cluster) -> &mut Self {
        let name: Arc<str> = cluster.name.as_str().into();
        Arc::make_mut(&mut self.clusters).insert(name, Arc::new(cluster));
        self
    }

    /// Adds or replaces an endpoint assignment.
    pub fn insert_endpoints(&mut self, assignment: ClusterLoadAssignment) -> &mut Self {
        let name: Arc<str> = assignment.cluster_name.as_str().into();
        Arc::make_mut(&mut self.endpoints).insert(name, Arc::new(assignment));
        self
    }

    /// The route configuration of a client listener, when the listener and (for RDS) its
    /// route configuration are both present.
    pub fn route_config_of(&self, listener: &str) -> Option<Arc<RouteConfig>> {
        match &self.listeners.get(listener)?.kind {
            ListenerKind::Client(hcm) => match &hcm.route_source {
                RouteSource::Rds(name) => self.route_configs.get(name.as_str()).cloned(),
                RouteSource::Inline(rc) => Some(rc.clone()),
            },
            ListenerKind::Server(_) => None,
        }
    }
}
