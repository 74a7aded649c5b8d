use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project::pin_project;
use tower::{BoxError, Service};
use tower_layer::Layer;

use super::OutlierDetector;
use crate::classify::{Classify, FailureClassifier};
use crate::policy::{UpstreamEndpoint, error_endpoint};

/// Feeds a service's outcomes to an [`OutlierDetector`].
#[derive(Clone, Debug)]
pub struct OutlierLayer<C = FailureClassifier> {
    detector: Arc<OutlierDetector>,
    classifier: C,
}

impl OutlierLayer {
    /// A layer recording into `detector`.
    pub fn new(detector: Arc<OutlierDetector>) -> Self {
        Self {
            detector,
            classifier: FailureClassifier,
        }
    }
}

impl<C> OutlierLayer<C> {
    /// Uses another failure classifier.
    pub fn with_classifier<C2>(self, classifier: C2) -> OutlierLayer<C2> {
        OutlierLayer {
            detector: self.detector,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for OutlierLayer<C> {
    type Service = Outlier<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Outlier {
            inner,
            detector: self.detector.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The service made by [`OutlierLayer`].
#[derive(Clone, Debug)]
pub struct Outlier<S, C> {
    inner: S,
    detector: Arc<OutlierDetector>,
    classifier: C,
}

impl<S, C, B, RB> Service<Request<B>> for Outlier<S, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(req),
            detector: self.detector.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// The response future of [`Outlier`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, C> {
    #[pin]
    inner: F,
    detector: Arc<OutlierDetector>,
    classifier: C,
}

impl<F, C, RB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.map_err(Into::into),
        };
        match &out {
            Ok(resp) => {
                if let Some(ep) = resp.extensions().get::<UpstreamEndpoint>() {
                    this.detector
                        .record(&ep.0, this.classifier.classify_response(resp));
                }
            }
            Err(e) => {
                if let Some(ep) = error_endpoint(&**e) {
                    this.detector
                        .record(&ep, this.classifier.classify_error(&**e));
                }
            }
        }
        Poll::Ready(out)
    }
}
