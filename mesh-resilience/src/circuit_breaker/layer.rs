use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower::{BoxError, Service};
use tower_layer::Layer;

use mesh_core::error::find_cause;
use mesh_core::extensions::ResponseFlags;

use super::{CircuitBreaker, Overflow, Slot};
use crate::LocalBody;
use crate::body::{is_grpc, local_grpc_response, local_response};
use crate::classify::grpc_code;
use crate::policy::Priority;

const OVERFLOW_BODY: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: overflow";

/// Applies a [`CircuitBreaker`] (see the [module docs](super)).
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer {
    breaker: Arc<CircuitBreaker>,
}

impl CircuitBreakerLayer {
    /// A layer over this cluster's breaker.
    pub fn new(breaker: Arc<CircuitBreaker>) -> Self {
        Self { breaker }
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
        }
    }
}

/// The service made by [`CircuitBreakerLayer`]. It is always ready: a request that
/// cannot get a slot is answered at once instead of waiting.
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S> {
    inner: S,
    breaker: Arc<CircuitBreaker>,
}

/// The response future of [`CircuitBreakerService`].
pub type ResponseFuture<RB> =
    Pin<Box<dyn Future<Output = Result<Response<LocalBody<GuardedBody<RB>>>, BoxError>> + Send>>;

/// Envoy's overflow reply: 503 (gRPC `UNAVAILABLE`), `x-envoy-overloaded`, flag `UO`.
fn overflow<B>(grpc: bool) -> Response<LocalBody<B>> {
    let flag = [("x-envoy-overloaded", "true")];
    let mut resp = if grpc {
        local_grpc_response(grpc_code::UNAVAILABLE, OVERFLOW_BODY, &flag)
    } else {
        local_response(StatusCode::SERVICE_UNAVAILABLE, OVERFLOW_BODY, &flag)
    };
    resp.extensions_mut().insert(ResponseFlags("UO"));
    resp
}

impl<S, B, RB> Service<Request<B>> for CircuitBreakerService<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<LocalBody<GuardedBody<RB>>>;
    type Error = BoxError;
    type Future = ResponseFuture<RB>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let priority = req
            .extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default();
        let grpc = is_grpc(&req);
        let Some(slot) = self.breaker.try_request(priority) else {
            return Box::pin(std::future::ready(Ok(overflow(grpc))));
        };
        let breaker = self.breaker.clone();
        let mut svc = self.inner.clone();
        Box::pin(async move {
            // Waiting for the inner service (a connection) is a pending request.
            let mut pending: Option<Slot> = None;
            let mut first = true;
            let ready = poll_fn(|cx| match svc.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(Some(r.map_err(Into::<BoxError>::into))),
                Poll::Pending if first => {
                    first = false;
                    match breaker.try_pending(priority) {
                        Some(p) => {
                            pending = Some(p);
                            Poll::Pending
                        }
                        None => Poll::Ready(None),
                    }
                }
                Poll::Pending => Poll::Pending,
            })
            .await;
            drop(pending);
            match ready {
                None => return Ok(overflow(grpc)),
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => {}
            }
            // A connection pool that shares this breaker refuses over its own limits
            // (`max_pending_requests` while waiting for a connection) with `Overflow`.
            let resp = match svc.call(req).await.map_err(Into::into) {
                Err(e) if find_cause::<Overflow>(&*e).is_some() => return Ok(overflow(grpc)),
                r => r?,
            };
            Ok(resp.map(|b| {
                LocalBody::Inner(GuardedBody {
                    inner: b,
                    _slot: Some(slot),
                })
            }))
        })
    }
}

/// A response body that holds the request's slot until it is dropped: a request counts
/// against `max_requests` until its response has been read.
#[pin_project]
#[derive(Debug)]
pub struct GuardedBody<B> {
    #[pin]
    inner: B,
    _slot: Option<Slot>,
}

impl<B> Body for GuardedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
