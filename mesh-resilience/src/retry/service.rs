use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use mesh_core::extensions::ATTEMPT_COUNT_HEADER;
use mesh_core::model::RetryPolicy;
use pin_project::pin_project;
use tower::{BoxError, Service, ServiceExt};

use super::{Backoff, ReplayBody, RetryConfig, is_retriable};
use crate::classify::{Classification, Classify};
use crate::policy::{PreviousHosts, UpstreamEndpoint, error_endpoint, route_policy};
use crate::timeout::{TimedOut, TimeoutBody};

/// The attempts of a request with a retry policy, boxed once.
type Retrying<RB> =
    Pin<Box<dyn Future<Output = Result<Response<TimeoutBody<RB>>, BoxError>> + Send + 'static>>;

/// The response future of [`Retry`]: the inner call itself, unboxed, when the request has
/// no retry policy; the attempt loop, boxed once, when it has one.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, RB> {
    /// No retry policy: one attempt.
    Once(#[pin] F),
    /// Attempts until one succeeds or the policy gives up.
    Retrying(Retrying<RB>),
}

impl<F, RB> std::fmt::Debug for ResponseFuture<F, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let retrying = matches!(self, Self::Retrying(_));
        f.debug_struct("ResponseFuture")
            .field("retrying", &retrying)
            .finish()
    }
}

impl<F, RB, E> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TimeoutBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Once(f) => f.poll(cx).map(|r| {
                r.map(|r| r.map(|b| TimeoutBody::new(b, None, None)))
                    .map_err(Into::into)
            }),
            ResponseFutureProj::Retrying(f) => f.as_mut().poll(cx),
        }
    }
}

/// The service made by [`RetryLayer`](super::RetryLayer).
#[derive(Clone, Debug)]
pub struct Retry<S, C> {
    pub(super) inner: S,
    pub(super) config: RetryConfig,
    pub(super) classifier: C,
}

fn resolve_policy(
    req_ext: &http::Extensions,
    fallback: &Option<Arc<RetryPolicy>>,
) -> Option<Arc<RetryPolicy>> {
    if let Some(p) = req_ext.get::<Arc<RetryPolicy>>() {
        return Some(p.clone());
    }
    if let Some(rp) = route_policy(req_ext) {
        return rp.retry_policy.clone();
    }
    fallback.clone()
}

impl<S, C, B, RB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    C: Classify,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
{
    type Response = Response<TimeoutBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = resolve_policy(req.extensions(), &self.config.policy)
            .filter(|p| p.num_retries > 0 && !p.retry_on.is_empty());
        let Some(policy) = policy else {
            return ResponseFuture::Once(self.inner.call(req.map(ReplayBody::direct)));
        };
        // The inner service was made ready by poll_ready: use it for the first attempt.
        let clone = self.inner.clone();
        let mut first = std::mem::replace(&mut self.inner, clone);
        let config = self.config.clone();
        let classifier = self.classifier.clone();
        let (parts, body) = req.into_parts();
        let body = ReplayBody::new(body, config.buffer_cap);
        // per_try_idle_timeout also bounds every gap in the final attempt's response body.
        let body_idle = policy.per_try_idle_timeout.filter(|t| !t.is_zero());
        let done = move |r: Result<Response<RB>, BoxError>| {
            r.map(|r| r.map(|b| TimeoutBody::new(b, body_idle, None)))
        };
        let count_attempts =
            route_policy(&parts.extensions).is_some_and(|p| p.include_attempt_count);

        ResponseFuture::Retrying(Box::pin(async move {
            let _active = config.budget.start_request();
            let mut backoff = Backoff::new(&policy.back_off);
            let mut tried: Vec<Arc<str>> = Vec::new();
            let mut retry_slot = None;
            let mut body = body;
            let mut attempt: u32 = 0;
            loop {
                // Clone before sending: the clone replays everything this attempt reads.
                let spare = body.try_clone();
                let mut req = Request::new(body);
                *req.method_mut() = parts.method.clone();
                *req.uri_mut() = parts.uri.clone();
                *req.version_mut() = parts.version;
                *req.headers_mut() = parts.headers.clone();
                *req.extensions_mut() = parts.extensions.clone();
                // The router numbered the first attempt.
                if count_attempts && attempt > 0 {
                    req.headers_mut()
                        .insert(ATTEMPT_COUNT_HEADER, HeaderValue::from(attempt + 1));
                }
                // Replays are this layer's: a pool below keeps no copy of its own.
                req.extensions_mut().insert(super::RetriedAbove);
                if policy.retry_previous_hosts && !tried.is_empty() {
                    req.extensions_mut().insert(PreviousHosts {
                        hosts: tried.clone(),
                        max_attempts: policy.host_selection_retry_max_attempts,
                    });
                }
                let call = async {
                    if attempt == 0 {
                        first.call(req).await.map_err(Into::into)
                    } else {
                        let mut svc = first.clone();
                        svc.ready().await.map_err(Into::into)?;
                        svc.call(req).await.map_err(Into::into)
                    }
                };
                // per_try_idle_timeout bounds the wait for the response headers here, and
                // the gaps in the body through `done`.
                let per_try = [policy.per_try_timeout, policy.per_try_idle_timeout]
                    .into_iter()
                    .flatten()
                    .filter(|t| !t.is_zero())
                    .min();
                let result: Result<Response<RB>, BoxError> = match per_try {
                    Some(t) => match tokio::time::timeout(t, call).await {
                        Ok(r) => r,
                        Err(_) => Err(TimedOut.into()),
                    },
                    _ => call.await,
                };
                drop(retry_slot.take());
                let (class, endpoint): (Classification, Option<Arc<str>>) = match &result {
                    Ok(resp) => (
                        classifier.classify_response(resp),
                        resp.extensions()
                            .get::<UpstreamEndpoint>()
                            .map(|e| e.0.clone()),
                    ),
                    Err(e) => (classifier.classify_error(&**e), error_endpoint(&**e)),
                };
                let headers = result.as_ref().ok().map(|r| r.headers());
                if attempt >= policy.num_retries || !is_retriable(&policy, &class, headers) {
                    return done(result);
                }
                let Some(spare) = spare.filter(|b| !b.is_capped()) else {
                    return done(result); // the body went past the replay buffer
                };
                let Some(slot) = config.budget.try_retry() else {
                    return done(result); // retry budget exhausted
                };
                if let Some(e) = endpoint {
                    tried.push(e);
                }
                // Free the failed attempt (and its connection) before waiting.
                drop(result);
                tokio::time::sleep(backoff.next_delay()).await;
                retry_slot = Some(slot);
                body = spare;
                attempt += 1;
            }
        }))
    }
}
