//! Where routing and resilience meet: the Envoy-compatible router, the load balancers, the
//! per-endpoint connection pools, [`MeshClient`](client::MeshClient) and
//! [`ResilienceStack`](client::resilience::ResilienceStack), over the mesh-core config model.
//!
//! - [`client::MeshClient`]: the outbound `tower::Service` that routes each request over
//!   mTLS (or plaintext). It is configured by any [`mesh_core::config::ConfigSource`]: the
//!   xDS client (`mesh_xds::client::XdsClient`), the embedded control plane in-process
//!   (`mesh_control::LocalSource`) or a [`StaticSource`](mesh_core::config::StaticSource);
//!   it never asks which, and this crate depends on none of mesh-xds or mesh-control, only
//!   on mesh-core, mesh-tls and mesh-resilience.
//! - [`client::resilience::ResilienceStack`]: mesh-resilience's layers (fault injection,
//!   timeouts, retries, circuit breaking, outlier detection) wired to each cluster's config.
//! - [`pool::UpstreamPool`]: per cluster, pooled HTTP/1.1 or HTTP/2 connections to each
//!   endpoint, dialed by mesh-tls's connector.
//!
//! Below them, two pure-logic halves, both built once per config snapshot and read lock-free
//! per request:
//!
//! - [`Router`]: picks the virtual host by authority, then the first matching route, and
//!   returns a [`RouteDecision`]: the cluster (single, weighted or from a header), the path
//!   and host rewrites, the header edits in Envoy's order, the mirror clusters, or a redirect
//!   (with the `Location` built exactly as Envoy does) or a direct response. The route's
//!   policies (timeout, retries, hash policies, fault overrides, stream limits) travel by
//!   `Arc` in [`RoutePolicy`] for the later layers.
//! - [`Balancer`]: one per cluster, over a `ClusterLoadAssignment` and an `LbPolicy`: round
//!   robin (EDF-weighted), random, least request (power of two choices), ring hash and
//!   Maglev, with priorities, the overprovisioning factor, locality weights, health, the
//!   panic threshold and per-endpoint ejection flags.
//!
//! ```
//! use mesh_core::model::*;
//! use mesh_route::{Action, RequestView, Router};
//!
//! let config = RouteConfig {
//!     name: "demo".into(),
//!     virtual_hosts: vec![VirtualHost {
//!         name: "reviews".into(),
//!         domains: vec!["reviews".into(), "reviews:9080".into()],
//!         routes: vec![Route {
//!             name: "all".into(),
//!             route_match: RouteMatch { path: PathMatch::Prefix("/".into()), ..Default::default() },
//!             action: RouteAction::Forward(Box::new(ForwardAction {
//!                 cluster: ClusterSpecifier::Cluster("outbound|9080||reviews".into()),
//!                 ..Default::default()
//!             })),
//!             headers: HeaderOps::default(),
//!             filter_overrides: Default::default(),
//!         }],
//!         ..Default::default()
//!     }],
//!     ..Default::default()
//! };
//! let router = Router::new(&config).unwrap();
//! let headers = http::HeaderMap::new();
//! let decision = router.route(&RequestView::new("reviews:9080", "/reviews/1", &headers)).unwrap();
//! match &decision.action {
//!     Action::Forward(f) => assert_eq!(&*f.cluster, "outbound|9080||reviews"),
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```

pub mod client;
pub mod cluster;
pub mod error;
pub mod hash;
pub mod lb;
pub mod pool;
pub mod request;
pub mod router;

pub use error::BuildError;
pub use hash::{HashOutcome, request_hash};
pub use lb::{ActiveRequest, Balancer, EndpointRef, PickContext};
pub use request::RequestView;
pub use router::{
    Action, Forward, HeaderPlan, HostPortMode, HostRewriteDecision, Mirror, RouteDecision,
    RoutePolicy, Router, RouterOptions,
};
