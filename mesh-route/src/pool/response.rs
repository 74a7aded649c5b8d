//! The response future of [`UpstreamPool::send`](super::UpstreamPool::send) and its body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tower::BoxError;

use super::h2::Stream;

/// The response future of [`UpstreamPool::send`](super::UpstreamPool::send). A failed
/// connection attempt is a [`ConnectError`](super::ConnectError).
pub struct ResponseFuture {
    pub(super) inner: Inner,
    pub(super) stream: Option<Stream>,
}

pub(super) type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

/// An HTTP/2 response and its stream's place on the connection.
pub(super) type BoxedStreamResponse =
    Pin<Box<dyn Future<Output = Result<(Response<Incoming>, Stream), BoxError>> + Send>>;

/// A response of an ALPN endpoint whose protocol is being learned, with its HTTP/2
/// stream's place if HTTP/2 it is.
pub(super) type BoxedAlpnResponse =
    Pin<Box<dyn Future<Output = Result<(Response<Incoming>, Option<Stream>), BoxError>> + Send>>;

pub(super) enum Inner {
    H1(BoxedResponse),
    H2(BoxedStreamResponse),
    Alpn(BoxedAlpnResponse),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<PoolBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unpin: every kind is boxed.
        let out = match &mut self.inner {
            Inner::H1(f) => f.as_mut().poll(cx),
            Inner::H2(f) => match f.as_mut().poll(cx) {
                Poll::Ready(Ok((resp, stream))) => {
                    self.stream = Some(stream);
                    Poll::Ready(Ok(resp))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
            Inner::Alpn(f) => match f.as_mut().poll(cx) {
                Poll::Ready(Ok((resp, stream))) => {
                    self.stream = stream;
                    Poll::Ready(Ok(resp))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        };
        match out {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(resp)) => {
                // The stream keeps its place on the connection until the body ends: a
                // long gRPC stream still holds one of the server's concurrent streams.
                let stream = self.stream.take();
                Poll::Ready(Ok(resp.map(|inner| PoolBody { inner, stream })))
            }
            Poll::Ready(Err(e)) => {
                self.stream = None;
                Poll::Ready(Err(e))
            }
        }
    }
}

/// The body of a response from an [`UpstreamPool`](super::UpstreamPool): hyper's body,
/// counted among its HTTP/2 connection's streams in flight until it ends, fails or is
/// dropped (so the pool opens another connection rather than queue a stream behind
/// long-lived ones).
pub struct PoolBody {
    inner: Incoming,
    stream: Option<Stream>,
}

impl PoolBody {
    /// hyper's body (the stream stops counting as in flight).
    pub fn into_inner(self) -> Incoming {
        self.inner
    }
}

impl std::fmt::Debug for PoolBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBody").finish_non_exhaustive()
    }
}

impl Body for PoolBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let out = Pin::new(&mut self.inner).poll_frame(cx);
        // Bytes still announced mean more to come, which saves asking: an HTTP/2 body's
        // `is_end_stream` locks its connection's streams.
        let ended = || self.inner.size_hint().lower() == 0 && self.inner.is_end_stream();
        if matches!(out, Poll::Ready(None | Some(Err(_)))) || ended() {
            self.stream = None;
        }
        out
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
