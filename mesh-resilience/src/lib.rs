//! Envoy-compatible resilience middleware as tower layers, usable alone on any hyper,
//! hyper-util, axum or tonic service.
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
//!   failure percentage; ejects hosts through [`mesh_core::hosts::EjectableHosts`], which
//!   mesh-route's balancers implement.
//! - [`fault`]: delay and abort injection as Envoy's fault filter and Istio's
//!   VirtualService `fault`.
//! - [`rate_limit`]: local token bucket, 429 with `x-envoy-ratelimited: true`.
//!
//! Policies are given statically to a layer's constructor or per request in request
//! extensions (see [`policy`]), where a router (MeshClient) puts the route's policy. The
//! extension types shared with routers and endpoint pickers (`RoutePolicy`,
//! `UpstreamEndpoint`, `EndpointError`, `PreviousHosts`) live in
//! [`mesh_core::extensions`], so this crate depends on mesh-core, tower, http and tokio
//! (plus hyper, hyper-util and h2 for their error types), nothing of routing, TLS or xDS.
//!
//! # Alone, around a hyper-util client
//!
//! The usual outbound order, outermost first (`tests/standalone.rs` runs this against a
//! real server):
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_core::model::{CircuitBreakers, RetryOn, RetryPolicy, Thresholds};
//! use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use mesh_resilience::policy::{Priority, TimeoutPolicy};
//! use mesh_resilience::retry::{ReplayBody, RetryConfig, RetryLayer};
//! use mesh_resilience::timeout::TimeoutLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let client: Client<HttpConnector, ReplayBody<Full<Bytes>>> =
//!     Client::builder(TokioExecutor::new()).build_http();
//! let limits = CircuitBreakers {
//!     default: Thresholds { max_requests: 100, max_retries: 3, ..Default::default() },
//!     ..Default::default()
//! };
//! let breaker = CircuitBreaker::new("reviews", &limits);
//! let retry = RetryConfig::default()
//!     .policy(RetryPolicy {
//!         retry_on: vec![RetryOn::Http5xx, RetryOn::ConnectFailure, RetryOn::Reset],
//!         num_retries: 2,
//!         per_try_timeout: Some(Duration::from_secs(1)),
//!         ..Default::default()
//!     })
//!     .budget(breaker.retry_budget(Priority::Default));
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(TimeoutPolicy { timeout: Some(Duration::from_secs(3)), ..Default::default() }))
//!     .layer(RetryLayer::new(retry))
//!     .layer(CircuitBreakerLayer::new(breaker))
//!     .service(client);
//! let req = http::Request::get("http://127.0.0.1:8080/reviews/1").body(Full::new(Bytes::new()))?;
//! let resp = svc.oneshot(req).await?; // 504 after 3 s, 503 x-envoy-overloaded past 100
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```
//!
//! Features (off by default, both on in the mesh): `hyper-util` lets the classifier see
//! hyper-util's legacy client errors (a reset or timeout while connecting then counts as a
//! connect failure, not a reset or timeout: enable it with that client), `h2` lets it see
//! HTTP/2 stream errors (`REFUSED_STREAM` for `refused-stream` retries, resets, GOAWAY).
//! Without them those errors are classified by their causes (`std::io::Error`s,
//! `hyper::Error`).
//!
//! # In the mesh
//!
//! `mesh_route::client::ResilienceStack` (mesh-route's `client/resilience.rs`, where
//! routing and resilience meet) wires these layers to the cluster and route config around
//! each cluster of a `MeshClient`: fault, timeout, retry (budget from the cluster's
//! breaker), circuit breaker, outlier detection over the cluster's `Balancer`. The `mesh`
//! facade uses it by default (`mesh::ResilienceStack`).
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
pub mod timeout;

pub use body::LocalBody;
pub use classify::{Classification, Classify, FailureClassifier};
