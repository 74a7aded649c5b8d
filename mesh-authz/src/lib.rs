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
//! The caller is the [`mesh_tls::PeerIdentity`] in the request's extensions (set by
//! mesh-tls's servers); plaintext requests have none and match no `Authenticated`
//! principal. Addresses come from [`ConnectionAddrs`] or tonic's
//! [`mesh_tls::server::MeshConnectInfo`].
//!
//! ```
//! use std::sync::Arc;
//! use mesh_authz::{AuthzLayer, AuthzPolicies, AuthzPolicy, PolicyAction, principal};
//! use mesh_core::model::{Permission, RbacPolicy};
//!
//! let allow_productpage = AuthzPolicy::new(
//!     "allow-productpage",
//!     PolicyAction::Allow,
//!     RbacPolicy {
//!         name: "allow-productpage".into(),
//!         permissions: vec![Permission::Any],
//!         principals: vec![principal::istio("cluster.local/ns/default/sa/productpage")],
//!     },
//! );
//! let (tx, rx) = tokio::sync::watch::channel(Arc::new(AuthzPolicies::new(vec![allow_productpage])));
//! let layer = AuthzLayer::new(rx);
//! # let _ = (tx, layer);
//! ```

pub mod authz;
mod compiled;
mod deny;
mod metrics;
mod policy;
pub mod principal;
mod request;

pub use authz::{Authz, AuthzLayer};
pub use mesh_tls::server::ConnectionAddrs;
pub use metrics::AuthzMetrics;
pub use policy::{AuthzPolicies, AuthzPolicy, Decision, Evaluation, PolicyAction};
pub use request::rbac_request;
