//! Inbound authorization for mesh servers: who may call this workload.
//!
//! [`AuthzLayer`] enforces [`AuthzPolicies`] with Envoy's RBAC matchers (mesh-core's
//! [`mesh_core::model::RbacPolicy`]) in the order Istio uses for `AuthorizationPolicy`:
//!
//! 1. any matching DENY policy denies;
//! 2. if any ALLOW policy exists, the request must match one of them;
//! 3. with no ALLOW policy, the request is allowed.
//!
//! AUDIT policies never change a decision; dry-run (shadow) policies are evaluated the
//! same way but only counted in [`AuthzMetrics`] and logged. Denials answer
//! `403 RBAC: access denied`, or gRPC `PERMISSION_DENIED` (7) for `application/grpc`.
//!
//! The caller is the [`PeerIdentity`] in the request's extensions (mTLS servers put it
//! there: mesh-tls's, `mesh::Mesh::serve`, `mesh::inbound::InboundServer`); plaintext
//! requests have none and match no `Authenticated` principal. Addresses (source IP,
//! destination port) come from [`ConnectionAddrs`]. tonic servers over mesh-tls's mTLS
//! incoming stream put [`MeshConnectInfo`] there instead, which is read as both. These
//! types live in `mesh_core::extensions`: this crate depends on mesh-core, tower, http,
//! tokio's watch channel and prometheus-client only.
//!
//! # Alone, on an axum `Router`
//!
//! Any server works: put what it knows about the connection into the request's extensions
//! in front of the layer. Here a plain `axum::serve` (no TLS, so no [`PeerIdentity`]:
//! `Authenticated` principals never match) gives the client address through axum's
//! `ConnectInfo`, and a `map_request` turns it into [`ConnectionAddrs`]
//! (`tests/standalone.rs` runs this over real HTTP):
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::sync::Arc;
//! use axum::{Router, extract::ConnectInfo, routing::get};
//! use mesh_authz::{AuthzLayer, AuthzPolicies, AuthzPolicy, ConnectionAddrs, PolicyAction};
//! use mesh_core::model::{CidrRange, Permission, Principal, RbacPolicy, StringMatcher};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> std::io::Result<()> {
//! // DENY /admin/* unless the caller is on 10.0.0.0/8 (Istio: action DENY, notIpBlocks).
//! let admin_from_outside = AuthzPolicy::new(
//!     "deny-admin-from-outside",
//!     PolicyAction::Deny,
//!     RbacPolicy {
//!         name: "deny-admin-from-outside".into(),
//!         permissions: vec![Permission::UrlPath(StringMatcher::Prefix {
//!             value: "/admin/".into(),
//!             ignore_case: false,
//!         })],
//!         principals: vec![Principal::Not(Box::new(Principal::DirectRemoteIp(
//!             CidrRange::new([10, 0, 0, 0].into(), 8).unwrap(),
//!         )))],
//!     },
//! );
//! let (policies, rx) = tokio::sync::watch::channel(Arc::new(AuthzPolicies::new(vec![admin_from_outside])));
//!
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! let local = listener.local_addr()?;
//! let app = Router::new()
//!     .route("/admin/stats", get(|| async { "stats" }))
//!     .route("/hello", get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .map_request(move |mut req: http::Request<axum::body::Body>| {
//!                 if let Some(ConnectInfo(remote)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
//!                     req.extensions_mut().insert(ConnectionAddrs { remote, local });
//!                 }
//!                 req
//!             })
//!             .layer(AuthzLayer::new(rx)), // 403 "RBAC: access denied"
//!     );
//! // `policies.send(..)` applies new policies from the next request on.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # drop(policies);
//! # Ok(()) }
//! ```
//!
//! # In the mesh
//!
//! The `mesh` facade builds the layer from the control plane's config:
//! `mesh::inbound::InboundServer` (and the proxy's inbound side in `examples/proxy`) turns
//! the RBAC filters of the xDS inbound listener (Istio's `AuthorizationPolicy`) into
//! [`AuthzPolicies`] and updates the layer's watch channel on every config change, behind
//! the mTLS acceptor that sets [`PeerIdentity`]. See docs/authorization.md.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_authz::{AuthzLayer, AuthzPolicies, AuthzPolicy, PolicyAction, principal};
//! use mesh_core::model::{Permission, RbacPolicy};
//!
//! // Istio: ALLOW from principals ["cluster.local/ns/default/sa/productpage"]
//! let allow_productpage = AuthzPolicy::new(
//!     "allow-productpage",
//!     PolicyAction::Allow,
//!     RbacPolicy {
//!         name: "allow-productpage".into(),
//!         permissions: vec![Permission::Any],
//!         principals: vec![principal::istio("cluster.local/ns/default/sa/productpage")],
//!     },
//! );
//! let layer = AuthzLayer::fixed(AuthzPolicies::new(vec![allow_productpage]));
//! # let _ = layer;
//! ```

pub mod authz;
mod compiled;
mod deny;
mod metrics;
mod policy;
pub mod principal;
mod request;

pub use authz::{Authz, AuthzLayer};
pub use mesh_core::extensions::{ConnectionAddrs, MeshConnectInfo, PeerIdentity};
pub use metrics::AuthzMetrics;
pub use policy::{AuthzPolicies, AuthzPolicy, Decision, Evaluation, PolicyAction};
pub use request::rbac_request;
