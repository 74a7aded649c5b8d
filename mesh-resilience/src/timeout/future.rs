use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Response, StatusCode};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

use super::{TimeoutBody, is_timed_out};
use crate::LocalBody;
use crate::body::{local_grpc_response, local_response};
use crate::classify::grpc_code;

/// The response future of [`Timeout`](super::Timeout).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    idle: Option<Duration>,
    stream_deadline: Option<Instant>,
    grpc: bool,
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        deadline: Option<Instant>,
        idle: Option<Duration>,
        stream_deadline: Option<Instant>,
        grpc: bool,
    ) -> Self {
        Self {
            inner,
            sleep: deadline.map(tokio::time::sleep_until),
            idle,
            stream_deadline,
            grpc,
        }
    }
}

pub(super) fn timed_out<B>(grpc: bool) -> Response<LocalBody<B>> {
    if grpc {
        local_grpc_response(
            grpc_code::DEADLINE_EXCEEDED,
            "upstream request timeout",
            &[],
        )
    } else {
        local_response(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout", &[])
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<LocalBody<TimeoutBody<RB>>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.inner.poll(cx) {
            Poll::Ready(Ok(resp)) => {
                let (idle, deadline) = (*this.idle, *this.stream_deadline);
                return Poll::Ready(Ok(
                    resp.map(|b| LocalBody::Inner(TimeoutBody::new(b, idle, deadline)))
                ));
            }
            Poll::Ready(Err(e)) => {
                let e: BoxError = e.into();
                if is_timed_out(&*e) {
                    return Poll::Ready(Ok(timed_out(*this.grpc)));
                }
                return Poll::Ready(Err(e));
            }
            Poll::Pending => {}
        }
        if let Some(sleep) = this.sleep.as_pin_mut()
            && sleep.poll(cx).is_ready()
        {
            return Poll::Ready(Ok(timed_out(*this.grpc)));
        }
        Poll::Pending
    }
}
