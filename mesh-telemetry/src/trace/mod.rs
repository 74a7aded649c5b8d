//! Per-request `tracing` spans with W3C `traceparent` and B3 propagation.
//!
//! The server layer ([`TraceLayer::server`]) continues the caller's trace (or starts one)
//! with a new span id, and makes that context current for the handler; the client layer
//! ([`TraceLayer::client`]) takes the current context (or an explicit [`TraceContext`] in
//! the request extensions, or starts a new trace), opens a child span and injects it into
//! the outgoing headers. A service that calls another service inside its handler thus
//! forwards one trace id with correct parent links.

mod layer;
#[cfg(feature = "otlp")]
mod otel;
mod propagation;
mod tags;

pub use layer::{Side, TraceLayer, TraceService, current};
pub use propagation::{Propagation, TraceContext};
pub use tags::SpanTags;
