use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Service};
use tower_layer::Layer;

use super::{ResponseFuture, parse_grpc_timeout};
use crate::LocalBody;
use crate::body::is_grpc;
use crate::policy::{TimeoutPolicy, route_policy};
use crate::timeout::TimeoutBody;

/// Applies request timeouts (see the [module docs](super)).
#[derive(Clone, Debug, Default)]
pub struct TimeoutLayer {
    policy: TimeoutPolicy,
}

impl TimeoutLayer {
    /// Used when the request carries no policy.
    pub fn new(policy: TimeoutPolicy) -> Self {
        Self { policy }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            policy: self.policy.clone(),
        }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    policy: TimeoutPolicy,
}

fn positive(d: Option<Duration>) -> Option<Duration> {
    d.filter(|d| !d.is_zero())
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The effective limits of one request.
pub(super) struct Limits {
    pub(super) headers: Option<Duration>,
    pub(super) idle: Option<Duration>,
    pub(super) stream: Option<Duration>,
}

pub(super) fn limits<B>(req: &Request<B>, fallback: &TimeoutPolicy) -> Limits {
    let from_route;
    let p = if let Some(p) = req.extensions().get::<TimeoutPolicy>() {
        p
    } else if let Some(rp) = route_policy(req.extensions()) {
        from_route = TimeoutPolicy::from_route(rp);
        &from_route
    } else {
        fallback
    };
    let grpc = is_grpc(req);
    let mut route = positive(p.timeout).filter(|_| !(grpc && p.timeout_is_default));
    let header = grpc
        .then(|| req.headers().get("grpc-timeout"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    if let Some(t) = header {
        let t = t.saturating_sub(p.grpc_timeout_header_offset.unwrap_or_default());
        route = match p.grpc_timeout_header_max {
            // Envoy: the header, capped, replaces the route timeout.
            Some(max) => Some(if max.is_zero() { t } else { t.min(max) }),
            // Proxyless gRPC: the caller's deadline always holds, within the route's.
            None => min_opt(route, Some(t)),
        };
    }
    let stream = positive(p.max_stream_duration);
    let idle = positive(p.idle_timeout);
    Limits {
        headers: min_opt(min_opt(route, stream), idle),
        idle,
        stream,
    }
}

impl<S, B, RB> Service<Request<B>> for Timeout<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<LocalBody<TimeoutBody<RB>>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let l = limits(&req, &self.policy);
        let grpc = is_grpc(&req);
        let now = Instant::now();
        let stream_deadline = l.stream.map(|d| now + d);
        ResponseFuture::new(
            self.inner.call(req),
            l.headers.map(|d| now + d),
            l.idle,
            stream_deadline,
            grpc,
        )
    }
}
