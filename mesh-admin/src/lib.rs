//! Where routing, resilience, identity and xDS state meet telemetry: an opt-in admin HTTP
//! server, Envoy-style (`/stats/prometheus`, `/config_dump`, `/clusters`, `/certs`, `/ready`,
//! `/healthz`, `POST /logging`) plus a live service graph (`/graph`, `/graph.json`, computed
//! from the registry's Istio metrics), CSDS for an admin gRPC port, and the collectors that read
//! the other crates' state at scrape time:
//!
//! | item | what it reads | what it exports |
//! |---|---|---|
//! | [`Admin`] | a registry, closures, an [`IdentityStore`](mesh_tls::IdentityStore), an [`XdsStatusSource`] | the admin endpoints |
//! | [`csds::CsdsService`] | an [`XdsStatusSource`] | `envoy.service.status.v3.ClientStatusDiscoveryService` |
//! | [`config_dump`] | a [`ConfigSnapshot`](mesh_core::config::ConfigSnapshot) or any [`ConfigSource`](mesh_core::config::ConfigSource) | `/config_dump` JSON |
//! | [`UpstreamMetrics`] | mesh-route's balancers and pools, mesh-resilience's breakers and outlier detectors | `mesh_cluster_*`, Envoy's `/clusters` JSON |
//! | [`IdentityCollector`] | mesh-tls's store and verifier counters | `mesh_identity_*`, `mesh_tls_*` |
//! | [`XdsCollector`], [`XdsStatusCache`] | mesh-xds's client status | `mesh_xds_*` |
//!
//! The request-path layers (Istio metrics, tracing, access logs) are in mesh-telemetry,
//! which depends on none of these crates; this crate builds on it.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use mesh_admin::{Admin, IdentityCollector, UpstreamMetrics};
//! use mesh_telemetry::metrics::IstioMetrics;
//! use mesh_tls::IdentityStore;
//!
//! let store = IdentityStore::new();
//! let upstream = UpstreamMetrics::new(); // fed by ResilienceStack::observe (see `upstream`)
//! let mut registry = Registry::default();
//! IstioMetrics::new().register(&mut registry); // istio_*
//! upstream.register(&mut registry); // mesh_cluster_*
//! registry
//!     .sub_registry_with_prefix("mesh")
//!     .register_collector(Box::new(IdentityCollector::new(store.clone())));
//!
//! let admin = Admin::new()
//!     .with_registry(Arc::new(registry))
//!     .with_identity(store)
//!     .with_clusters(move || upstream.clusters_json());
//! admin.serve(tokio::net::TcpListener::bind("127.0.0.1:15000").await?).await
//! # }
//! ```

pub mod config_dump;
pub mod csds;
pub mod debug_json;
mod graph;
mod handlers;
mod identity;
mod server;
pub mod upstream;
mod xds;

use std::time::{SystemTime, UNIX_EPOCH};

pub use identity::IdentityCollector;
pub use server::{Admin, JsonFn, LogFilterFn, reload_log_filter};
pub use upstream::{ClusterSources, PoolStats, UpstreamMetrics};
pub use xds::{XdsCollector, XdsStatusCache, XdsStatusSource};

/// Unix seconds of `t` (0 before the epoch).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
