//! Local rate limiting with a token bucket (Envoy's `local_ratelimit` filter), for a
//! route, a virtual host, or a server: requests beyond the bucket get `429` with
//! `x-envoy-ratelimited: true` (gRPC: `UNAVAILABLE`, as Envoy maps 429).
//!
//! The bucket comes from the request's [`RateLimitBucket`] extension (a router puts the
//! route's or virtual host's bucket there), else from the layer.
//!
//! [`LocalRateLimitLayer`] is the xDS-driven variant: it takes the route's
//! `envoy.filters.http.local_ratelimit` configs from its `RoutePolicy` and keeps their
//! buckets itself (MeshClient's `ResilienceStack` uses it).
//!
//! Alone, on a server: in front of an axum `Router` served by hyper (`tests/standalone.rs`
//! runs this):
//!
//! ```no_run
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use hyper_util::rt::{TokioExecutor, TokioIo};
//! use hyper_util::server::conn::auto;
//! use hyper_util::service::TowerToHyperService;
//! use mesh_resilience::rate_limit::{RateLimitLayer, TokenBucket, TokenBucketConfig};
//! use tower::ServiceBuilder;
//!
//! # async fn run() -> std::io::Result<()> {
//! // 100 requests per second, bursts of 100.
//! let bucket = TokenBucket::new(TokenBucketConfig { max_tokens: 100, tokens_per_fill: 1, fill_interval: Duration::from_millis(10) });
//! let app = Router::new().route("/", get(|| async { "hello" }));
//! let svc = ServiceBuilder::new()
//!     .layer(RateLimitLayer::new(bucket)) // beyond: 429 `local_rate_limited`
//!     .service(app);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let svc = TowerToHyperService::new(svc.clone());
//!     tokio::spawn(async move {
//!         let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
//!     });
//! }
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use pin_project::pin_project;
use tokio::time::Instant;
use tower::{BoxError, Service};
use tower_layer::Layer;

mod local;

pub use local::{LocalRateLimit, LocalRateLimitLayer, LocalRateLimits};

use crate::LocalBody;
use crate::body::{is_grpc, local_grpc_response, local_response};
use crate::classify::grpc_code;

/// Token bucket settings (Envoy's `token_bucket`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucketConfig {
    /// Bucket size, and the tokens at start.
    pub max_tokens: u32,
    /// Tokens added per fill (default 1).
    pub tokens_per_fill: u32,
    /// Time between fills.
    pub fill_interval: Duration,
}

impl Default for TokenBucketConfig {
    fn default() -> Self {
        Self {
            max_tokens: 100,
            tokens_per_fill: 1,
            fill_interval: Duration::from_millis(10),
        }
    }
}

/// A shared token bucket.
#[derive(Debug)]
pub struct TokenBucket {
    cfg: TokenBucketConfig,
    state: Mutex<(u32, Instant)>,
    limited: AtomicU64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(cfg: TokenBucketConfig) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((cfg.max_tokens, Instant::now())),
            cfg,
            limited: AtomicU64::new(0),
        })
    }

    /// Takes a token; `false` (and counted) when the bucket is empty.
    pub fn try_take(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let interval = self.cfg.fill_interval.max(Duration::from_micros(1));
        let fills = (s.1.elapsed().as_nanos() / interval.as_nanos()) as u64;
        if fills > 0 {
            let add = fills.saturating_mul(self.cfg.tokens_per_fill as u64);
            s.0 = (s.0 as u64 + add).min(self.cfg.max_tokens as u64) as u32;
            s.1 += interval * fills.min(u32::MAX as u64) as u32;
        }
        if s.0 > 0 {
            s.0 -= 1;
            true
        } else {
            self.limited.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Requests refused so far (Envoy's `rate_limited`).
    pub fn limited_total(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }
}

/// The bucket for this request (route or virtual host), in request extensions.
#[derive(Clone, Debug)]
pub struct RateLimitBucket(pub Arc<TokenBucket>);

/// Applies a token bucket (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Option<Arc<TokenBucket>>,
}

impl RateLimitLayer {
    /// Limits every request with `bucket` (unless the request names its own).
    pub fn new(bucket: Arc<TokenBucket>) -> Self {
        Self {
            bucket: Some(bucket),
        }
    }

    /// Limits only requests that carry a [`RateLimitBucket`].
    pub fn per_request() -> Self {
        Self { bucket: None }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

/// The service made by [`RateLimitLayer`].
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Option<Arc<TokenBucket>>,
}

impl<S, B, RB> Service<Request<B>> for RateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<LocalBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let bucket = req
            .extensions()
            .get::<RateLimitBucket>()
            .map(|b| &b.0)
            .or(self.bucket.as_ref());
        if bucket.is_some_and(|b| !b.try_take()) {
            let flag = [("x-envoy-ratelimited", "true")];
            let resp = if is_grpc(&req) {
                local_grpc_response(grpc_code::UNAVAILABLE, "local_rate_limited", &flag)
            } else {
                local_response(StatusCode::TOO_MANY_REQUESTS, "local_rate_limited", &flag)
            };
            return ResponseFuture::Limited(Some(resp));
        }
        ResponseFuture::Inner(self.inner.call(req))
    }
}

/// The response future of [`RateLimit`].
#[pin_project(project = Proj)]
#[derive(Debug)]
pub enum ResponseFuture<F, RB> {
    /// Passed on.
    Inner(#[pin] F),
    /// Refused.
    Limited(Option<Response<LocalBody<RB>>>),
}

impl<F, RB, E> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<LocalBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner(f) => f
                .poll(cx)
                .map(|r| r.map(|resp| resp.map(LocalBody::Inner)).map_err(Into::into)),
            Proj::Limited(r) => match r.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => Poll::Ready(Err("rate limit future polled after completion".into())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_per_interval_up_to_max() {
        let b = TokenBucket::new(TokenBucketConfig {
            max_tokens: 2,
            tokens_per_fill: 1,
            fill_interval: Duration::from_millis(100),
        });
        assert!(b.try_take() && b.try_take() && !b.try_take());
        tokio::time::advance(Duration::from_millis(150)).await;
        assert!(b.try_take() && !b.try_take(), "one fill in 150 ms");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            b.try_take() && b.try_take() && !b.try_take(),
            "capped at max_tokens"
        );
        assert_eq!(b.limited_total(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn per_route_bucket_and_grpc() {
        let ok = tower::service_fn(|_r: Request<()>| async {
            Ok::<_, BoxError>(Response::new(String::new()))
        });
        let svc = RateLimitLayer::per_request().layer(ok);
        for _ in 0..3 {
            let r = svc.clone().oneshot(Request::new(())).await.unwrap();
            assert_eq!(r.status(), 200, "no bucket, no limit");
        }
        let bucket = TokenBucket::new(TokenBucketConfig {
            max_tokens: 1,
            tokens_per_fill: 1,
            fill_interval: Duration::from_secs(1),
        });
        let req = || {
            let mut r = Request::builder()
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            r.extensions_mut().insert(RateLimitBucket(bucket.clone()));
            r
        };
        assert_eq!(svc.clone().oneshot(req()).await.unwrap().status(), 200);
        let limited = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(limited.headers()["grpc-status"], "14");
        assert_eq!(limited.headers()["x-envoy-ratelimited"], "true");
    }
}
