use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;

use super::TimedOut;

/// A response body bounded by the stream idle timeout and `max_stream_duration`; it ends
/// with a [`TimedOut`] error when either fires.
#[pin_project]
#[derive(Debug)]
pub struct TimeoutBody<B> {
    #[pin]
    inner: B,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    // Boxed so that the body stays `Unpin` when `B` is.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> TimeoutBody<B> {
    pub(crate) fn new(inner: B, idle: Option<Duration>, deadline: Option<Instant>) -> Self {
        Self {
            inner,
            idle,
            deadline,
            sleep: None,
        }
    }

    fn next_deadline(idle: Option<Duration>, deadline: Option<Instant>) -> Option<Instant> {
        let idle_at = idle.map(|d| Instant::now() + d);
        match (idle_at, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<B> Body for TimeoutBody<B>
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
        let this = self.project();
        if let Poll::Ready(f) = this.inner.poll_frame(cx) {
            // Progress: the idle timer restarts on the next wait.
            *this.sleep = None;
            return Poll::Ready(f.map(|r| r.map_err(Into::into)));
        }
        if this.sleep.is_none() {
            match Self::next_deadline(*this.idle, *this.deadline) {
                Some(at) => *this.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
                None => return Poll::Pending,
            }
        }
        if let Some(s) = this.sleep.as_mut()
            && s.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err(TimedOut.into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
