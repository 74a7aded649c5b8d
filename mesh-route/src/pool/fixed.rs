//! A connector that dials one endpoint whatever URI it is asked for, so that a request's
//! URI can carry the authority the server should see. It counts the connections it makes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use tower::Service;

use super::counted::{Counted, Counters};

/// Dials `target` for every URI.
#[derive(Clone, Debug)]
pub(crate) struct Fixed<C> {
    inner: C,
    target: Uri,
    counters: Arc<Counters>,
}

impl<C> Fixed<C> {
    pub(crate) fn new(inner: C, target: Uri, counters: Arc<Counters>) -> Self {
        Self {
            inner,
            target,
            counters,
        }
    }
}

type Connecting<T, E> = Pin<Box<dyn Future<Output = Result<Counted<T>, E>> + Send>>;

impl<C> Service<Uri> for Fixed<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    // Boxed once per connection, not per request.
    type Future = Connecting<C::Response, C::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let attempt = self.inner.call(self.target.clone());
        let counters = self.counters.clone();
        Box::pin(async move { counters.record(attempt.await) })
    }
}
