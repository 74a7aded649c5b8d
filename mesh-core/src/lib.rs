//! Core types shared by every crate of the mesh, and the seams between them.
//!
//! - [`identity`]: SPIFFE IDs and trust domains.
//! - [`model`]: the protocol-free config model (listeners, routes, clusters, endpoints,
//!   RBAC), what the xDS translation and the embedded control plane produce.
//! - [`config`]: the config seam: [`ConfigSnapshot`](config::ConfigSnapshot) and the
//!   [`ConfigSource`](config::ConfigSource) trait every source implements.
//! - [`extensions`]: what layers pass each other in request and response extensions
//!   (route policy, peer identity, connection addresses, the endpoint that answered).
//! - [`path`]: request-path normalization as Envoy's HTTP connection manager does it, and
//!   the tower layer applying it before routing and RBAC.
//! - [`hosts`]: the trait through which outlier detection ejects hosts from a balancer.
//! - [`error`]: identity errors, the shared connect error and a cause-chain search.
//!
//! This crate has no protobuf, TLS or network I/O (only `http` and tower's traits), so layers and routing can be tested with
//! plain structs and every config source produces the same model.
//!
//! ```
//! use mesh_core::SpiffeId;
//!
//! let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews".parse().unwrap();
//! assert_eq!(id.trust_domain().as_str(), "cluster.local");
//! assert_eq!(id.istio_namespace(), Some("default"));
//! assert_eq!(id.istio_service_account(), Some("reviews"));
//! ```

pub mod config;
pub mod error;
pub mod extensions;
pub mod hosts;
pub mod identity;
pub mod model;
pub mod path;

pub use error::{BoxError, ConnectError, Error, IdentityError};
pub use identity::{SpiffeId, TrustDomain};
