//! The embedded control plane (Pilot, Citadel and Galley in miniature).
//!
//! - [`istio`] (Galley): Istio's own YAML (ServiceEntry, WorkloadEntry, VirtualService,
//!   DestinationRule, PeerAuthentication, AuthorizationPolicy) read from a directory, the
//!   same directory a real istiod loads with `--configDir`, validated with errors that name
//!   the file, resource, field and rule, and published as validated [`istio::MeshConfig`]
//!   snapshots as the directory changes (an invalid edit keeps the last good config).
//! - [`generate`] (Pilot's generators): a `MeshConfig` becomes the Envoy resources istiod
//!   would send a node, proxyless (`GENERATOR: grpc`) or Envoy.
//! - [`xds_server`]: those resources served over ADS (state of the world and delta), for
//!   workloads in other processes (Envoy, gRPC, our own `XdsClient`).
//! - [`local`]: the same resources for a workload in *this* process, without gRPC:
//!   [`LocalSource`] generates for its node and decodes through mesh-xds's translation
//!   into [`ConfigSnapshot`](mesh_core::config::ConfigSnapshot)s (same validation, same
//!   rejections as an xDS client), a [`ConfigSource`](mesh_core::config::ConfigSource)
//!   beside the xDS client and `StaticSource`.
//! - [`server`]: the whole control plane wired ([`server::ControlPlane`]): the watcher,
//!   the xDS server, the Istio CA (Citadel) and debug endpoints.
//!
//! - [`ca`] (Citadel): [`ca::IstioCaServer`], the Istio CA gRPC API over a dev CA (or any
//!   [`ca::CaSigner`]), which [`server::ControlPlane`] runs; workloads reach it with
//!   `mesh_tls::ca::IstioCaClient`.
//!
//! The supported subset of Istio's API is documented in `docs/istio-config.md`, the
//! generators, the xDS server and the local source in `docs/control-plane.md`.

pub mod ca;
pub mod generate;
pub mod istio;
pub mod local;
pub mod server;
pub mod xds_server;

pub use local::LocalSource;

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
