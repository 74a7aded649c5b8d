use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

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

/// The response future of [`CircuitBreakerService`]: a state machine, not a boxed
/// future, so the layer costs no allocation per request.
#[pin_project]
pub struct ResponseFuture<S, B, F> {
    #[pin]
    state: State<S, B, F>,
    /// The request's slot, moved into the response body.
    slot: Option<Slot>,
    breaker: Arc<CircuitBreaker>,
    priority: Priority,
    grpc: bool,
}

// Inline on purpose: the future lives inside the stack's one boxed future, and boxing the
// large variant is the allocation this state machine removes.
#[allow(clippy::large_enum_variant)]
#[pin_project(project = StateProj)]
enum State<S, B, F> {
    /// No request slot: Envoy's overflow reply.
    Overflow,
    /// Waiting for the inner service (a connection); a wait counts as a pending request.
    Ready {
        svc: S,
        req: Option<Request<B>>,
        pending: Option<Slot>,
        first: bool,
    },
    /// The inner call.
    Calling {
        #[pin]
        fut: F,
    },
    Done,
}

impl<S, B, F> std::fmt::Debug for ResponseFuture<S, B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("priority", &self.priority)
            .field("grpc", &self.grpc)
            .finish_non_exhaustive()
    }
}

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
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<LocalBody<GuardedBody<RB>>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B, S::Future>;

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
        let slot = self.breaker.try_request(priority);
        let state = match slot {
            None => State::Overflow,
            Some(_) => State::Ready {
                svc: self.inner.clone(),
                req: Some(req),
                pending: None,
                first: true,
            },
        };
        ResponseFuture {
            state,
            slot,
            breaker: self.breaker.clone(),
            priority,
            grpc,
        }
    }
}

impl<S, B, RB> Future for ResponseFuture<S, B, S::Future>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<LocalBody<GuardedBody<RB>>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let grpc = *this.grpc;
        loop {
            match this.state.as_mut().project() {
                StateProj::Overflow => {
                    this.state.set(State::Done);
                    return Poll::Ready(Ok(overflow(grpc)));
                }
                StateProj::Ready {
                    svc,
                    req,
                    pending,
                    first,
                } => match svc.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let Some(req) = req.take() else {
                            return Poll::Ready(Err("polled after completion".into()));
                        };
                        let fut = svc.call(req);
                        // Dropping the state frees the pending slot.
                        this.state.set(State::Calling { fut });
                    }
                    Poll::Ready(Err(e)) => {
                        this.state.set(State::Done);
                        this.slot.take();
                        return Poll::Ready(Err(e.into()));
                    }
                    Poll::Pending if *first => {
                        *first = false;
                        match this.breaker.try_pending(*this.priority) {
                            Some(p) => {
                                *pending = Some(p);
                                return Poll::Pending;
                            }
                            None => {
                                this.state.set(State::Done);
                                this.slot.take();
                                return Poll::Ready(Ok(overflow(grpc)));
                            }
                        }
                    }
                    Poll::Pending => return Poll::Pending,
                },
                StateProj::Calling { fut } => {
                    let result = ready!(fut.poll(cx)).map_err(Into::into);
                    this.state.set(State::Done);
                    let slot = this.slot.take();
                    // A connection pool that shares this breaker refuses over its own
                    // limits (`max_pending_requests` while waiting for a connection) with
                    // `Overflow`.
                    return Poll::Ready(match result {
                        Err(e) if find_cause::<Overflow>(&*e).is_some() => Ok(overflow(grpc)),
                        Err(e) => Err(e),
                        Ok(resp) => Ok(resp.map(|b| {
                            LocalBody::Inner(GuardedBody {
                                inner: b,
                                _slot: slot,
                            })
                        })),
                    });
                }
                StateProj::Done => {
                    return Poll::Ready(Err("polled after completion".into()));
                }
            }
        }
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
