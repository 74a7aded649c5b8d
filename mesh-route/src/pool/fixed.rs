//! A connector that dials one endpoint whatever URI it is asked for, so that a request's
//! URI can carry the authority the server should see.

use std::task::{Context, Poll};

use http::Uri;
use tower::Service;

/// Dials `target` for every URI.
#[derive(Clone, Debug)]
pub(crate) struct Fixed<C> {
    inner: C,
    target: Uri,
}

impl<C> Fixed<C> {
    pub(crate) fn new(inner: C, target: Uri) -> Self {
        Self { inner, target }
    }
}

impl<C: Service<Uri>> Service<Uri> for Fixed<C> {
    type Response = C::Response;
    type Error = C::Error;
    type Future = C::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        self.inner.call(self.target.clone())
    }
}
