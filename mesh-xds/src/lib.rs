//! The xDS client side: Pilot's half as a workload sees it.
//!
//! - [`client`]: one ADS stream (state of the world or delta) to a management server
//!   (istiod, go-control-plane, our own `mesh-control`), with subscriptions that follow
//!   each resource's dependencies, ACK/NACK per resource, reconnects with backoff and
//!   fail-static snapshots. [`client::XdsClient`] is a
//!   [`ConfigSource`](mesh_core::config::ConfigSource): it publishes
//!   [`ConfigSnapshot`](mesh_core::config::ConfigSnapshot)s that routing reads without locks.
//! - [`bootstrap`]: gRPC's A27 bootstrap JSON (plus certificate providers and call
//!   credentials), and the bootstrap Istio's agent writes for a proxyless workload.
//! - [`resource`] and [`translate`]: Envoy's protos decoded and validated into mesh-core's
//!   protocol-free model, or a [`Rejection`] naming the field and the rule broken (what a
//!   NACK carries). Every config source that starts from Envoy resources decodes through
//!   [`decode`], so each rejects the same resources for the same reasons.
//!
//! The xDS *server* is not here: it lives with the control plane that generates what it
//! serves (`mesh_control::xds_server`). The protocol is described in `docs/xds.md`.

pub mod bootstrap;
pub mod client;
pub mod resource;
pub mod translate;

pub use resource::{Rejection, Resource, ResourceType, decode, decode_as};
