//! Telemetry for the mesh: Istio's standard metrics from both sides of every call, the
//! library's own metrics, trace propagation (W3C `traceparent` and B3), access logs and an
//! opt-in admin server (Prometheus stats, config dump, clusters, certificates, readiness,
//! log levels) with CSDS.
//!
//! See `docs/telemetry.md` for how to plug the layers into clients and servers.

pub mod access_log;
pub mod admin;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod trace;
