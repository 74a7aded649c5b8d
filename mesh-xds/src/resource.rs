//! xDS resource types and the decode step: an `Any` from a discovery response becomes a
//! validated mesh-core model object, or a [`Rejection`] that names the rule broken.
//!
//! ```
//! use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster};
//! use envoy_types::pb::envoy::config::core::v3::{config_source::ConfigSourceSpecifier, ConfigSource};
//! use envoy_types::util::pack_any;
//! use mesh_xds::resource::{decode, Resource, ResourceType};
//!
//! let cluster = Cluster {
//!     name: "outbound|9080||reviews.default.svc.cluster.local".into(),
//!     cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
//!     eds_cluster_config: Some(cluster::EdsClusterConfig {
//!         eds_config: Some(ConfigSource {
//!             config_source_specifier: Some(ConfigSourceSpecifier::Ads(Default::default())),
//!             ..Default::default()
//!         }),
//!         service_name: String::new(),
//!     }),
//!     ..Default::default()
//! };
//! let decoded = decode(ResourceType::Cluster, &pack_any(cluster)).unwrap();
//! assert_eq!(decoded.name(), "outbound|9080||reviews.default.svc.cluster.local");
//! assert_eq!(
//!     decoded.dependencies(),
//!     vec![(ResourceType::ClusterLoadAssignment, "outbound|9080||reviews.default.svc.cluster.local".to_string())]
//! );
//! ```

use std::fmt;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use mesh_core::model;
use prost::Message;

use crate::translate::{self, Dialect};

/// The four xDS resource types a data plane subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    RouteConfiguration,
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    ClusterLoadAssignment,
}

const LISTENER_URL: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const ROUTE_URL: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
const CLUSTER_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const CLA_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// The wrapper some servers use in SotW responses (and always in delta responses).
const WRAPPER_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

impl ResourceType {
    /// Every type, in dependency order (LDS, RDS, CDS, EDS).
    pub const ALL: [ResourceType; 4] = [
        Self::Listener,
        Self::RouteConfiguration,
        Self::Cluster,
        Self::ClusterLoadAssignment,
    ];

    /// The v3 type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Listener => LISTENER_URL,
            Self::RouteConfiguration => ROUTE_URL,
            Self::Cluster => CLUSTER_URL,
            Self::ClusterLoadAssignment => CLA_URL,
        }
    }

    /// The type for a v3 type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// LDS and CDS are full-state in SotW (omission = removal); RDS and EDS are not.
    pub fn sotw_full_state(self) -> bool {
        matches!(self, Self::Listener | Self::Cluster)
    }

    /// Short name for logs and metrics: `LDS`, `RDS`, `CDS`, `EDS`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Listener => "LDS",
            Self::RouteConfiguration => "RDS",
            Self::Cluster => "CDS",
            Self::ClusterLoadAssignment => "EDS",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// A decoded, validated resource (the mesh-core model behind an `Arc`).
#[derive(Clone, Debug)]
pub enum Resource {
    /// A listener.
    Listener(Arc<model::Listener>),
    /// A route configuration.
    RouteConfiguration(Arc<model::RouteConfig>),
    /// A cluster.
    Cluster(Arc<model::Cluster>),
    /// A cluster load assignment.
    ClusterLoadAssignment(Arc<model::ClusterLoadAssignment>),
}

impl Resource {
    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Listener(l) => &l.name,
            Self::RouteConfiguration(r) => &r.name,
            Self::Cluster(c) => &c.name,
            Self::ClusterLoadAssignment(c) => &c.cluster_name,
        }
    }

    /// The resource's type.
    pub fn resource_type(&self) -> ResourceType {
        match self {
            Self::Listener(_) => ResourceType::Listener,
            Self::RouteConfiguration(_) => ResourceType::RouteConfiguration,
            Self::Cluster(_) => ResourceType::Cluster,
            Self::ClusterLoadAssignment(_) => ResourceType::ClusterLoadAssignment,
        }
    }

    /// What this resource makes the client subscribe to next: listener -> its RDS route
    /// config names (client listener, or every server filter chain), or the clusters of an
    /// inline route config; route config -> every
    /// cluster name its routes reference (incl. weighted and mirror clusters); cluster (EDS) ->
    /// its EDS service name (or cluster name); aggregate cluster -> its clusters. Sorted and
    /// deduplicated.
    pub fn dependencies(&self) -> Vec<(ResourceType, String)> {
        let mut deps: Vec<(ResourceType, String)> = match self {
            Self::Listener(l) => listener_dependencies(l),
            Self::RouteConfiguration(r) => route_cluster_names(r)
                .map(|n| (ResourceType::Cluster, n.to_owned()))
                .collect(),
            Self::Cluster(c) => match &c.discovery {
                model::Discovery::Eds { .. } => c
                    .discovery
                    .eds_name(&c.name)
                    .map(|n| (ResourceType::ClusterLoadAssignment, n.to_owned()))
                    .into_iter()
                    .collect(),
                model::Discovery::Aggregate(children) => children
                    .iter()
                    .map(|n| (ResourceType::Cluster, n.clone()))
                    .collect(),
                model::Discovery::Static(_)
                | model::Discovery::LogicalDns { .. }
                | model::Discovery::StrictDns { .. } => Vec::new(),
            },
            Self::ClusterLoadAssignment(_) => Vec::new(),
        };
        deps.sort();
        deps.dedup();
        deps
    }
}

fn listener_dependencies(l: &model::Listener) -> Vec<(ResourceType, String)> {
    let hcms: Vec<&model::HttpConnectionManager> = match &l.kind {
        model::ListenerKind::Client(hcm) => vec![hcm],
        model::ListenerKind::Server(s) => s
            .filter_chains
            .iter()
            .chain(s.default_filter_chain.as_ref())
            .map(|fc| &fc.http_connection_manager)
            .collect(),
    };
    let mut deps = Vec::new();
    for h in hcms {
        match &h.route_source {
            model::RouteSource::Rds(name) => {
                deps.push((ResourceType::RouteConfiguration, name.clone()))
            }
            // An inline route table names its clusters directly.
            model::RouteSource::Inline(rc) => {
                deps.extend(route_cluster_names(rc).map(|n| (ResourceType::Cluster, n.to_owned())))
            }
        }
    }
    deps
}

fn route_cluster_names(r: &model::RouteConfig) -> impl Iterator<Item = &str> {
    r.virtual_hosts
        .iter()
        .flat_map(|vh| vh.routes.iter())
        .flat_map(|route| {
            let mut names = Vec::new();
            if let model::RouteAction::Forward(fwd) = &route.action {
                match &fwd.cluster {
                    model::ClusterSpecifier::Cluster(c) => names.push(c.as_str()),
                    model::ClusterSpecifier::Weighted(ws) => {
                        names.extend(ws.iter().map(|w| w.name.as_str()))
                    }
                    model::ClusterSpecifier::Header(_) => {}
                }
                names.extend(fwd.mirror_policies.iter().map(|m| m.cluster.as_str()));
            }
            names
        })
}

/// Why a resource was rejected (goes into the NACK's `error_detail`, one line per resource).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The resource's name, when it could be read.
    pub name: Option<String>,
    /// The rule broken, naming the field path.
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name:?}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Rejection {}

/// Decodes and validates one resource of type `ty`.
///
/// Accepts the resource itself or wrapped in `envoy.service.discovery.v3.Resource`.
/// Unset fields take Envoy's defaults (see [`decode_as`]).
pub fn decode(ty: ResourceType, raw: &Any) -> Result<Resource, Rejection> {
    decode_as(ty, raw, Dialect::Envoy)
}

/// [`decode`], with unset fields filled in as the control plane's `dialect` means them.
pub fn decode_as(ty: ResourceType, raw: &Any, dialect: Dialect) -> Result<Resource, Rejection> {
    if raw.type_url == WRAPPER_URL {
        let wrapper =
            envoy_types::pb::envoy::service::discovery::v3::Resource::decode(raw.value.as_slice())
                .map_err(|e| Rejection {
                    name: None,
                    reason: format!("cannot decode envoy.service.discovery.v3.Resource: {e}"),
                })?;
        let name = (!wrapper.name.is_empty()).then(|| wrapper.name.clone());
        let inner = wrapper.resource.ok_or_else(|| Rejection {
            name: name.clone(),
            reason: "envoy.service.discovery.v3.Resource has no resource".into(),
        })?;
        if inner.type_url == WRAPPER_URL {
            return Err(Rejection {
                name,
                reason: "nested envoy.service.discovery.v3.Resource".into(),
            });
        }
        // A resource that cannot even be decoded is still named by its wrapper.
        return decode_as(ty, &inner, dialect).map_err(|mut r| {
            if r.name.is_none() {
                r.name = name;
            }
            r
        });
    }
    if raw.type_url != ty.type_url() {
        return Err(Rejection {
            name: None,
            reason: format!(
                "type_url {:?} in a {} response (expected {})",
                raw.type_url,
                ty,
                ty.type_url()
            ),
        });
    }
    let bytes = raw.value.as_slice();
    match ty {
        ResourceType::Listener => translate::listener::decode(bytes).map(Resource::Listener),
        ResourceType::RouteConfiguration => {
            translate::route::decode(bytes).map(Resource::RouteConfiguration)
        }
        ResourceType::Cluster => translate::cluster::decode(bytes, dialect).map(Resource::Cluster),
        ResourceType::ClusterLoadAssignment => {
            translate::endpoint::decode(bytes).map(Resource::ClusterLoadAssignment)
        }
    }
}
