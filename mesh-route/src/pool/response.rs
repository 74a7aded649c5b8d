//! The response future of [`UpstreamPool::send`](super::UpstreamPool::send).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use hyper::body::Incoming;
use tower::BoxError;

use super::h2::Stream;

/// The response future of [`UpstreamPool::send`](super::UpstreamPool::send). A failed
/// connection attempt is a [`ConnectError`](super::ConnectError) (or hyper-util's error with
/// `is_connect()` on ALPN-negotiated clusters).
pub struct ResponseFuture {
    pub(super) inner: Inner,
    pub(super) stream: Option<Stream>,
}

pub(super) type BoxedResponse =
    Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

pub(super) enum Inner {
    H1(BoxedResponse),
    Legacy(hyper_util::client::legacy::ResponseFuture),
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<Incoming>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Unpin: both kinds are boxed.
        let out = match &mut self.inner {
            Inner::H1(f) => f.as_mut().poll(cx),
            Inner::Legacy(f) => Pin::new(f).poll(cx).map_err(Into::into),
        };
        if out.is_ready() {
            self.stream = None;
        }
        out
    }
}
