//! Retries with Envoy's semantics.
//!
//! [`RetryLayer`] wraps a service that sends one attempt (typically: load balancer pick +
//! connection pool). For each request it resolves the retry policy (request extension
//! `Arc<RetryPolicy>`, else the route policy's `retry_policy`, else the layer's static
//! policy), then:
//!
//! - classifies each attempt with the shared [`classify`](crate::classify) classifier and
//!   retries when the outcome matches `retry_on` ([`is_retriable`]): `5xx`,
//!   `gateway-error`, `reset`, `connect-failure`, `retriable-4xx`, `refused-stream`,
//!   `retriable-status-codes`, `retriable-headers`, `envoy-ratelimited`, and the gRPC
//!   `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`;
//! - makes at most `num_retries` retries, each attempt bounded by `per_try_timeout`
//!   and by `per_try_idle_timeout` (until the response headers, and between the final
//!   attempt's response body frames: the body then ends with a
//!   [`TimedOut`](crate::timeout::TimedOut) error),
//!   waiting a fully jittered exponential [`Backoff`] between them;
//! - asks the cluster's [`RetryBudget`] for a slot before each retry, so retries stay
//!   within `max_retries` or `budget_percent` of active requests;
//! - with `retry_previous_hosts`, puts the endpoints already tried into the next
//!   attempt's extensions as [`PreviousHosts`](crate::policy::PreviousHosts) (read from
//!   each attempt's [`UpstreamEndpoint`](crate::policy::UpstreamEndpoint));
//! - replays the request body from a buffer of at most `buffer_cap` bytes
//!   ([`ReplayBody`]); a longer body is sent once and not retried.
//!
//! Alone, around a hyper-util client (`tests/standalone.rs` runs this against a real
//! server):
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_core::model::{RetryOn, RetryPolicy};
//! use mesh_resilience::retry::{ReplayBody, RetryConfig, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! // The layer wraps each request body in a ReplayBody, so the client sends those.
//! let client: Client<HttpConnector, ReplayBody<Full<Bytes>>> =
//!     Client::builder(TokioExecutor::new()).build_http();
//! let policy = RetryPolicy {
//!     retry_on: vec![RetryOn::Http5xx, RetryOn::ConnectFailure, RetryOn::Reset],
//!     num_retries: 2,
//!     per_try_timeout: Some(Duration::from_millis(500)),
//!     ..Default::default()
//! };
//! let svc = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryConfig::default().policy(policy)))
//!     .service(client);
//! let req = http::Request::post("http://127.0.0.1:8080/orders")
//!     .body(Full::new(Bytes::from_static(b"ping")))?;
//! let resp = svc.oneshot(req).await?; // up to 3 attempts, the body replayed to each
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

mod backoff;
mod budget;
mod condition;
mod layer;
mod replay;
mod service;

pub use backoff::Backoff;

/// In every attempt's extensions of a request the retry layer may send again (it has a
/// retry policy and keeps a replay of the body): whether a refused stream is sent again is
/// its policy's call (`refused-stream`), so a connection pool below keeps no copy of its own
/// (mesh-route's HTTP/2 pool sends refused streams again only for requests without one).
#[derive(Clone, Copy, Debug)]
pub struct RetriedAbove;

pub use budget::{RequestGuard, RetryBudget, RetryGuard};
pub use condition::is_retriable;
pub use layer::{RetryConfig, RetryLayer};
pub use replay::{BodyTooLargeToReplay, ReplayBody};
pub use service::{ResponseFuture, Retry};

#[cfg(test)]
#[allow(clippy::type_complexity)] // fake upstreams spell out their types
mod tests;
