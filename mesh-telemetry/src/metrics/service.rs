use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use mesh_core::extensions::PeerIdentity;
use tower::BoxError;
use tower_service::Service;

use super::body::MeteredBody;
use super::future::ResponseFuture;
use super::peers::PeerResolver;
use super::recording::Recording;
use super::source::SourceWorkload;
use super::{Protocol, Reporter};

/// The service built by [`super::IstioMetricsLayer`].
#[derive(Clone, Debug)]
pub struct IstioMetricsService<S> {
    inner: S,
    resolver: Arc<PeerResolver>,
}

impl<S> IstioMetricsService<S> {
    pub(crate) fn new(inner: S, resolver: Arc<PeerResolver>) -> Self {
        Self { inner, resolver }
    }
}

pub(crate) fn protocol_of<B>(req: &Request<B>) -> Protocol {
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc { Protocol::Grpc } else { Protocol::Http }
}

pub(crate) fn authority_of<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("")
}

impl<S, B, RB> Service<Request<B>> for IstioMetricsService<S>
where
    S: Service<Request<MeteredBody<B>>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    B: http_body::Body,
    RB: http_body::Body,
{
    type Response = Response<MeteredBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let start = Instant::now();
        let protocol = protocol_of(&req);
        let peer = match self.resolver.reporter() {
            Reporter::Source => self.resolver.resolve(authority_of(&req), false),
            Reporter::Destination => match (
                req.extensions().get::<SourceWorkload>(),
                req.extensions().get::<PeerIdentity>(),
            ) {
                (Some(s), id) => self.resolver.resolve_source(s, id.is_some()),
                (None, Some(id)) => self.resolver.resolve(id.0.as_str(), true),
                (None, None) => self.resolver.resolve("", false),
            },
        };
        // An empty request body (a GET's) has no bytes to count: no shared counter. The size
        // hint answers first: an HTTP/2 body's `is_end_stream` locks its connection's streams.
        let empty = req.body().size_hint().exact() == Some(0) || req.body().is_end_stream();
        let request_bytes = (!empty).then(|| Arc::new(AtomicU64::new(0)));
        let req = req.map(|b| MeteredBody::counting(b, request_bytes.clone()));
        ResponseFuture::new(
            self.inner.call(req),
            Recording::new(peer, start, protocol, request_bytes),
        )
    }
}
