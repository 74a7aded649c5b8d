use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;

use super::recording::{Recording, grpc_status};

/// A body that counts its bytes: request bodies add to a shared counter, response bodies
/// carry the call's recording (finished when the body is dropped).
#[pin_project]
#[derive(Debug)]
pub struct MeteredBody<B> {
    #[pin]
    inner: B,
    counter: Option<Arc<AtomicU64>>,
    recording: Option<Recording>,
}

impl<B: Body> MeteredBody<B> {
    pub(crate) fn counting(inner: B, counter: Option<Arc<AtomicU64>>) -> Self {
        Self {
            inner,
            counter,
            recording: None,
        }
    }

    pub(crate) fn recording(inner: B, mut recording: Recording) -> Self {
        recording.ended = at_end(&inner);
        Self {
            inner,
            counter: None,
            recording: Some(recording),
        }
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

/// The body has nothing more to send. A body with bytes still announced (its size hint's
/// lower bound) is not at its end, which saves asking: an HTTP/2 body's `is_end_stream`
/// locks its connection's streams, shared with the connection's task.
fn at_end<B: Body>(b: &B) -> bool {
    b.size_hint().lower() == 0 && b.is_end_stream()
}

impl<B: Body> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    let n = data.remaining() as u64;
                    if let Some(c) = this.counter {
                        c.fetch_add(n, Ordering::Relaxed);
                    }
                    if let Some(r) = this.recording.as_mut() {
                        r.response_bytes += n;
                    }
                } else if let (Some(t), Some(r)) = (f.trailers_ref(), this.recording.as_mut())
                    && let Some(g) = grpc_status(t)
                {
                    r.grpc = Some(g);
                }
            }
            Some(Err(_)) => {
                if let Some(r) = this.recording.as_mut() {
                    r.flags = "UPE";
                }
            }
            None => {}
        }
        if let Some(r) = this.recording.as_mut()
            && (frame.is_none() || at_end(&*inner))
        {
            r.ended = true;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
