//! The embedded control plane (Pilot, Citadel and Galley in miniature).
//!
//! For now it holds the config half: [`istio`] reads Istio's own YAML (ServiceEntry,
//! WorkloadEntry, VirtualService, DestinationRule, PeerAuthentication, AuthorizationPolicy)
//! from a directory, the same directory a real istiod loads with `--configDir`, validates it
//! with errors that name the file, resource, field and rule, and publishes validated
//! [`istio::MeshConfig`] snapshots as the directory changes. The xDS server and the CA will
//! consume those snapshots.
//!
//! [`ca`] is Citadel's part: [`ca::IstioCaServer`], the Istio CA gRPC API over a dev CA (or
//! any [`ca::CaSigner`]), which [`server::ControlPlane`] runs; workloads reach it with
//! `mesh_tls::ca::IstioCaClient`.
//!
//! The supported subset of Istio's API is documented in `docs/istio-config.md`.

pub mod ca;
pub mod generate;
pub mod istio;
pub mod server;

use std::path::PathBuf;

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config directory itself cannot be read.
    #[error("cannot read config directory {}: {source}", dir.display())]
    ConfigDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config is invalid; every problem is listed.
    #[error(transparent)]
    Invalid(#[from] istio::ConfigErrors),
}
