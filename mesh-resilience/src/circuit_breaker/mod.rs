//! Circuit breaking per cluster and priority, as Envoy's `circuit_breakers.thresholds`.
//!
//! A [`CircuitBreaker`] (one per cluster, shared by `Arc`) counts, per priority, the
//! requests in flight, the requests waiting for the inner service to become ready
//! (Envoy's pending requests: waiting for a connection), the open connections (for
//! connection pools, through [`CircuitBreaker::try_connection`]) and the retries in
//! flight (its [`RetryBudget`](crate::retry::RetryBudget), to hand to the retry layer).
//! [`CircuitBreakerLayer`] answers a request over a limit at once with `503`,
//! `x-envoy-overloaded: true` (gRPC: `UNAVAILABLE`) and counts it in the overflow
//! counters ([`BreakerStats`]). The priority comes from the request's
//! [`Priority`](crate::policy::Priority) extension (DEFAULT when absent).
//!
//! ```
//! use mesh_core::model::{CircuitBreakers, Thresholds};
//! use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
//! use mesh_resilience::policy::Priority;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let limits = CircuitBreakers { default: Thresholds { max_requests: 0, ..Default::default() }, ..Default::default() };
//! let breaker = CircuitBreaker::new("reviews", &limits);
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new(breaker.clone()))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     });
//! let resp = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(resp.status(), 503);
//! assert_eq!(resp.headers()["x-envoy-overloaded"], "true");
//! assert_eq!(breaker.stats(Priority::Default).requests_overflow, 1);
//! # }
//! ```

mod breaker;
mod layer;

pub use breaker::{BreakerStats, CircuitBreaker, Slot};
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, GuardedBody, ResponseFuture};

#[cfg(test)]
mod tests;
