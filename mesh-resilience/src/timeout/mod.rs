//! Request timeouts with Envoy's answers.
//!
//! [`TimeoutLayer`] bounds the wait for the response headers by the route timeout
//! (`Arc<RoutePolicy>` or [`TimeoutPolicy`](crate::policy::TimeoutPolicy) in the request's
//! extensions, else the layer's static policy) and answers `504` with Envoy's body
//! `upstream request timeout`; gRPC requests get a trailers-only `DEADLINE_EXCEEDED`.
//!
//! - `grpc-timeout` is honoured for gRPC requests, as a proxyless gRPC client honours its
//!   caller's deadline: the header's value minus `grpc_timeout_header_offset`; when
//!   `grpc_timeout_header_max` is set it is capped by the max (zero: no cap) and replaces
//!   the route timeout (Envoy), else the shorter of the two applies. Without the header
//!   the route timeout applies, except a default one (`timeout_is_default`: the route set
//!   none), which gRPC requests do not get (gRFC A31 has no default deadline).
//! - `max_stream_duration` bounds the whole stream, response body included.
//! - `idle_timeout` bounds the wait for the headers and every gap between body frames;
//!   an idle body ends with a [`TimedOut`] error.
//! - An inner [`TimedOut`] error (a retry's per-try timeout) is answered the same way.
//!
//! When the timer fires the inner future is dropped, which frees its connection and
//! tasks.
//!
//! Alone, around a hyper-util client (`tests/standalone.rs` runs this against a slow
//! server):
//!
//! ```no_run
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_resilience::{policy::TimeoutPolicy, timeout::TimeoutLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::new(TimeoutPolicy { timeout: Some(Duration::from_millis(100)), ..Default::default() }))
//!     .service(client);
//! let resp = svc.oneshot(http::Request::get("http://127.0.0.1:8080/slow").body(Full::new(Bytes::new()))?).await?;
//! assert_eq!(resp.status(), 504); // body: "upstream request timeout"
//! # Ok(()) }
//! ```

mod body;
mod future;
mod grpc;
mod layer;

pub use body::TimeoutBody;
pub use future::ResponseFuture;
pub use grpc::parse_grpc_timeout;
pub use layer::{Timeout, TimeoutLayer};

/// A timeout elapsed (per-try, route, or idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream request timeout")
    }
}

impl std::error::Error for TimedOut {}

/// Whether `err` or one of its causes is a [`TimedOut`].
pub fn is_timed_out(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<TimedOut>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // fake upstreams spell out their types
mod tests;
