//! The performance harness of the project (`scripts/bench`).
//!
//! The HTTP cases serve the same payload ([`payload`]): hyper HTTP/1.1 plaintext, hyper over
//! rustls mTLS with HTTP/2 and with HTTP/1.1, the in-process mesh (`MeshClient` -> mesh
//! server) over an HTTP/1.1 and an HTTP/2 cluster, our proxy pair and an Envoy pair. Each is driven by the same load generator ([`loadgen`]) at three
//! loads: one connection sequential, a fixed rate over 16 connections with latency measured
//! from the intended send time (corrected for coordinated omission), and saturation with 32
//! connections in a closed loop. [`procstat`] adds up the CPU time of every process
//! involved and reads the proxies' resident memory; [`report`] turns rounds of runs into
//! medians, ratios, a markdown table and an SVG plot. [`coldstart`] times proxies from
//! process start to their first routed mTLS request.

pub mod alloc;
pub mod cases;
pub mod certs;
pub mod churn;
pub mod coldstart;
pub mod criterion;
pub mod harness;
pub mod idle;
pub mod loadgen;
pub mod payload;
pub mod procstat;
pub mod report;
pub mod svg;

/// Errors of the harness (setup failures, failed requests, bad output files).
pub type Error = Box<dyn std::error::Error + Send + Sync>;
