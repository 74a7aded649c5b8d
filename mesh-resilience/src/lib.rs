//! Envoy-compatible resilience middleware for the in-process data plane, as tower layers.
//!
//! One module folder per middleware, each usable alone in a `tower::ServiceBuilder`:
//!
//! - [`classify`]: the one failure classifier shared by retries, outlier detection and
//!   telemetry (HTTP status classes, gRPC status, connect failure / reset / timeout found
//!   by walking the error's `source()` chain).
//! - [`retry`]: Envoy's `retry_on` conditions, `num_retries`, per-try timeouts, fully
//!   jittered exponential back-off, previous-hosts avoidance, retry budgets and request
//!   bodies replayed from a bounded buffer.
//! - [`timeout`]: route timeout (504 `upstream request timeout`), `grpc-timeout` capped by
//!   `max_stream_duration`, stream idle timeout; gRPC requests get `DEADLINE_EXCEEDED`.
//! - [`circuit_breaker`]: per cluster and priority limits on connections, pending
//!   requests, requests and retries; overflow answers 503 with `x-envoy-overloaded: true`.
//! - [`outlier`]: consecutive 5xx / gateway / local-origin failures, success rate and
//!   failure percentage; drives the ejection flag that mesh-route's balancers skip.
//! - [`fault`]: delay and abort injection as Envoy's fault filter and Istio's
//!   VirtualService `fault`.
//! - [`rate_limit`]: local token bucket, 429 with `x-envoy-ratelimited: true`.
//!
//! Policies are given statically to a layer's constructor or per request in request
//! extensions (see [`policy`]), where a router (MeshClient) puts the route's policy.
//! [`ResilienceStack`] wires all of them to the xDS config around each cluster of a
//! `MeshClient` ([`stack`]).
//!
//! See docs/resilience.md for the Envoy and Istio mapping.

pub mod body;
pub mod circuit_breaker;
pub mod classify;
pub mod fault;
pub mod outlier;
pub mod policy;
pub mod rate_limit;
pub mod retry;
pub mod stack;
pub mod timeout;

pub use body::LocalBody;
pub use classify::{Classification, Classify, FailureClassifier};
pub use stack::{ClusterResilience, ResilienceStack};
