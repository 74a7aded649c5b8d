//! SPIFFE workload identity and mutual TLS for hyper, axum and tonic.
//!
//! Identity flows one way: a [`CertSource`] (PEM files, the Istio CA, the SPIFFE
//! Workload API, or the built-in dev CA) publishes [`Credentials`] into an
//! [`IdentityStore`]; acceptors and connectors build rustls configs from the store's
//! latest credentials for every new connection, and fail closed when there are none.

pub mod ca;
pub mod client;
pub mod config;
pub mod credentials;
pub mod dev_ca;
pub mod error;
pub mod peer;
mod provider;
pub mod rotation;
pub mod server;
pub mod sniff;
pub mod source;
pub mod store;
pub mod svid;
pub mod verify;

pub use credentials::Credentials;
pub use error::TlsError;
pub use peer::PeerIdentity;
pub use store::{CertProvider, CertSource, IdentityStats, IdentityStatus, IdentityStore};
