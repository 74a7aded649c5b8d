//! The protocol-free mesh config model: listeners, route tables, clusters and endpoints.
//!
//! mesh-xds translates Envoy's xDS resources into these types after validating them; the
//! embedded control plane and static files build them directly. Nothing here depends on
//! protobuf. Types are plain `Clone + Debug` data, shared through `Arc` in snapshots.
//!
//! ```
//! use mesh_core::model::*;
//!
//! let route = Route {
//!     name: "default".into(),
//!     route_match: RouteMatch { path: PathMatch::Prefix("/".into()), ..Default::default() },
//!     action: RouteAction::Forward(Box::new(ForwardAction {
//!         cluster: ClusterSpecifier::Cluster("outbound|9080||reviews.default.svc.cluster.local".into()),
//!         ..Default::default()
//!     })),
//!     headers: HeaderOps::default(),
//!     filter_overrides: Default::default(),
//! };
//! let table = RouteConfig {
//!     name: "reviews.default.svc.cluster.local:9080".into(),
//!     virtual_hosts: vec![VirtualHost {
//!         name: "reviews".into(),
//!         domains: vec!["*".into()],
//!         routes: vec![route],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! assert_eq!(table.virtual_hosts[0].routes.len(), 1);
//! ```

pub mod cluster;
pub mod endpoint;
pub mod fault;
pub mod listener;
pub mod matcher;
pub mod rate_limit;
pub mod rbac;
pub mod route;
pub mod tls;

pub use cluster::*;
pub use endpoint::*;
pub use fault::*;
pub use listener::*;
pub use matcher::*;
pub use rate_limit::*;
pub use rbac::*;
pub use route::*;
pub use tls::*;
