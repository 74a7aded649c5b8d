//! Core types shared by every crate of the mesh: SPIFFE identities and errors.
//!
//! This crate has no protobuf, TLS or I/O in its public API, so routing and policy can be
//! tested with plain structs and every config source (xDS, the embedded control plane,
//! static files) produces the same model.
//!
//! ```
//! use mesh_core::SpiffeId;
//!
//! let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews".parse().unwrap();
//! assert_eq!(id.trust_domain().as_str(), "cluster.local");
//! assert_eq!(id.istio_namespace(), Some("default"));
//! assert_eq!(id.istio_service_account(), Some("reviews"));
//! ```

pub mod error;
pub mod identity;
pub mod model;

pub use error::{Error, IdentityError};
pub use identity::{SpiffeId, TrustDomain};
