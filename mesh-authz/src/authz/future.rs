use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http_body_util::{Either, Full};
use pin_project::pin_project;

use super::AuthzBody;

/// The inner service's response, or the denial.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<F> {
    Inner(#[pin] F),
    Denied(Option<Response<Full<Bytes>>>),
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(f: F) -> Self {
        Self {
            kind: Kind::Inner(f),
        }
    }

    pub(crate) fn denied(res: Response<Full<Bytes>>) -> Self {
        Self {
            kind: Kind::Denied(Some(res)),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<AuthzBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner(f) => {
                let res = ready!(f.poll(cx))?;
                Poll::Ready(Ok(res.map(Either::Left)))
            }
            KindProj::Denied(res) => match res.take() {
                Some(res) => Poll::Ready(Ok(res.map(Either::Right))),
                // Polled after completion: nothing sensible to return.
                None => Poll::Pending,
            },
        }
    }
}
