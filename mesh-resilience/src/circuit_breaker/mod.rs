//! Circuit breaking per cluster and priority, as Envoy's `circuit_breakers.thresholds`.
//!
//! A [`CircuitBreaker`] (one per cluster, shared by `Arc`) counts, per priority, the
//! requests in flight, the requests waiting for the inner service to become ready
//! (Envoy's pending requests: waiting for a connection), the open connections (for
//! connection pools, through [`CircuitBreaker::try_connection`]) and the retries in
//! flight (its [`RetryBudget`](crate::retry::RetryBudget), to hand to the retry layer).
//! [`CircuitBreakerLayer`] answers a request over a limit at once with `503`,
//! `x-envoy-overloaded: true` (gRPC: `UNAVAILABLE`) and counts it in the overflow
//! counters ([`BreakerStats`]). Connection pools share the breaker to enforce
//! `max_connections` and `max_pending_requests` where they apply (a request waiting for a
//! connection): they hold a [`Slot`] per connection, wait on
//! [`CircuitBreaker::connection_released`], and fail a request with [`Overflow`], which
//! the layer answers as any overflow. The priority comes from the request's
//! [`Priority`](crate::policy::Priority) extension (DEFAULT when absent).
//!
//! Alone, around a hyper-util client (`tests/standalone.rs` runs this against a slow
//! server):
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_core::model::{CircuitBreakers, Thresholds};
//! use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use mesh_resilience::policy::Priority;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! let limits = CircuitBreakers { default: Thresholds { max_requests: 2, ..Default::default() }, ..Default::default() };
//! let breaker = CircuitBreaker::new("reviews", &limits);
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service(client);
//! let req = http::Request::get("http://127.0.0.1:8080/reviews/1").body(Full::new(Bytes::new()))?;
//! // With two requests in flight, a third answers at once:
//! // 503, `x-envoy-overloaded: true`, counted in requests_overflow.
//! let resp = svc.oneshot(req).await?;
//! println!("{} {}", resp.status(), breaker.stats(Priority::Default).requests_overflow);
//! # Ok(()) }
//! ```

mod breaker;
mod layer;

pub use breaker::{BreakerStats, CircuitBreaker, Overflow, Slot};
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, GuardedBody, ResponseFuture};

#[cfg(test)]
mod tests;
