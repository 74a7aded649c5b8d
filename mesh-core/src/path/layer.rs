//! [`PathNormalizationLayer`]: [`PathNormalization`] on every request of a tower service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{Either, Empty};
use tower_layer::Layer;
use tower_service::Service;

use super::{PathNormalization, PathOutcome};

/// The response body of [`PathNormalize`]: the inner service's, or the empty body of a
/// local 400 or 307 (Envoy sends those without a body too).
pub type PathBody<B> = Either<B, Empty<Bytes>>;

/// Normalizes the request path before the inner service sees it, as Envoy's HTTP connection
/// manager does before its filters (RBAC) and the router: the inner service, and the app
/// behind it, get the normalized path. Refused paths get an empty 400, escaped slashes under
/// `UnescapeAndRedirect` a 307 to the normalized path; neither reaches the inner service.
///
/// ```
/// use mesh_core::path::{PathNormalization, PathNormalizationLayer};
/// use tower::ServiceBuilder;
///
/// // The app's response body comes back as `PathBody::Left`, local replies as `Right`.
/// let svc = ServiceBuilder::new()
///     .layer(PathNormalizationLayer::new(PathNormalization::BASE))
///     .service_fn(|req: http::Request<()>| async move {
///         Ok::<_, std::convert::Infallible>(http::Response::new(req.uri().path().to_string()))
///     });
/// # drop(svc);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct PathNormalizationLayer {
    config: PathNormalization,
}

impl PathNormalizationLayer {
    /// A layer applying `config`.
    pub fn new(config: PathNormalization) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for PathNormalizationLayer {
    type Service = PathNormalize<S>;

    fn layer(&self, inner: S) -> PathNormalize<S> {
        PathNormalize {
            inner,
            config: self.config,
        }
    }
}

/// The service [`PathNormalizationLayer`] builds.
#[derive(Clone, Copy, Debug)]
pub struct PathNormalize<S> {
    inner: S,
    config: PathNormalization,
}

impl<S> PathNormalize<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: PathNormalization) -> Self {
        Self { inner, config }
    }

    /// The configuration applied.
    pub fn config(&self) -> PathNormalization {
        self.config
    }
}

/// What to do with a request, decided from its method and target alone.
enum Verdict {
    Pass,
    Rewrite(Uri),
    Reply(StatusCode, Option<HeaderValue>),
}

fn verdict(config: &PathNormalization, method: &Method, uri: &Uri) -> Verdict {
    if config.is_noop() || *method == Method::CONNECT {
        return Verdict::Pass;
    }
    let target = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    if target == "*" && *method == Method::OPTIONS {
        return Verdict::Pass;
    }
    let bad = Verdict::Reply(StatusCode::BAD_REQUEST, None);
    match config.apply(target) {
        PathOutcome::Unchanged => Verdict::Pass,
        PathOutcome::Forward(p) => {
            let mut parts = uri.clone().into_parts();
            let Ok(pq) = PathAndQuery::try_from(p) else {
                return bad;
            };
            parts.path_and_query = Some(pq);
            Uri::from_parts(parts).map_or(bad, Verdict::Rewrite)
        }
        PathOutcome::Redirect(p) => match HeaderValue::try_from(p) {
            Ok(location) => Verdict::Reply(StatusCode::TEMPORARY_REDIRECT, Some(location)),
            Err(_) => bad,
        },
        PathOutcome::Reject(reason) => {
            tracing::debug!(path = target, reason, "request path refused");
            bad
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for PathNormalize<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<PathBody<ResB>>;
    type Error = S::Error;
    type Future = PathNormalizeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        match verdict(&self.config, req.method(), req.uri()) {
            Verdict::Pass => {}
            Verdict::Rewrite(uri) => *req.uri_mut() = uri,
            Verdict::Reply(status, location) => {
                let mut res = Response::new(Empty::new());
                *res.status_mut() = status;
                if let Some(location) = location {
                    res.headers_mut().insert(header::LOCATION, location);
                }
                return PathNormalizeFuture::Reply(Some(res));
            }
        }
        PathNormalizeFuture::Inner(self.inner.call(req))
    }
}

/// The future of [`PathNormalize`]: the inner service's, or a local reply.
#[derive(Debug)]
#[pin_project::pin_project(project = Proj)]
pub enum PathNormalizeFuture<F> {
    /// The inner service is answering.
    Inner(#[pin] F),
    /// A local 400 or 307.
    Reply(Option<Response<Empty<Bytes>>>),
}

impl<F, B, E> Future for PathNormalizeFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<PathBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Inner(f) => f.poll(cx).map_ok(|res| res.map(Either::Left)),
            Proj::Reply(r) => match r.take() {
                Some(res) => Poll::Ready(Ok(res.map(Either::Right))),
                // Polled after completion: never ready again rather than panic.
                None => Poll::Pending,
            },
        }
    }
}
