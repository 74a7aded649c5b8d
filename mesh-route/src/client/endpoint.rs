//! [`EndpointService`]: one attempt to one cluster: the load balancer's pick, then the
//! pooled connection to the picked endpoint. The innermost service of a cluster's stack.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use mesh_core::error::find_cause;
use mesh_resilience::circuit_breaker::Overflow;
use tower::{BoxError, Service};

use super::extensions::{
    AutoHostRewrite, EndpointError, PreviousHosts, RequestHash, UpstreamEndpoint,
};
use crate::lb::{ActiveRequest, Balancer, EndpointRef, PickContext};
use crate::pool::{self, PoolBody, UpstreamPool};

/// The cluster has no endpoint that may serve (Envoy's `no healthy upstream`, flag `UH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no healthy upstream")]
pub struct NoHealthyUpstream;

/// Picks an endpoint of one cluster and sends the request to it on the cluster's pool.
///
/// - The pick uses the request's [`RequestHash`] (ring hash, Maglev) and re-picks, up to
///   `max_attempts` times, while it lands on one of the [`PreviousHosts`] a retry layer
///   put into the extensions.
/// - [`AutoHostRewrite`] sets the authority to the endpoint's hostname.
/// - The response carries [`UpstreamEndpoint`] in its extensions; an error is an
///   [`EndpointError`] naming the endpoint (connect failure, reset), or
///   [`NoHealthyUpstream`].
/// - The endpoint counts the request as active (least request) until its response
///   headers arrive.
///
/// The request's URI must be absolute: its authority is what the server sees
/// (`Host` / `:authority`), the connection goes to the picked endpoint.
#[derive(Clone, Debug)]
pub struct EndpointService {
    balancer: Arc<Balancer>,
    pool: UpstreamPool,
}

impl EndpointService {
    /// Picks from `balancer`, sends on `pool`.
    pub fn new(balancer: Arc<Balancer>, pool: UpstreamPool) -> Self {
        Self { balancer, pool }
    }

    /// The balancer.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    fn pick<B>(&self, req: &Request<B>) -> Option<EndpointRef> {
        let hash = req.extensions().get::<RequestHash>().map(|h| h.0);
        let mut ep = self.balancer.pick(&PickContext::new().hash(hash))?;
        if let Some(prev) = req.extensions().get::<PreviousHosts>() {
            for _ in 0..prev.max_attempts {
                if !prev.contains(ep.hash_key()) {
                    break;
                }
                // Ring hash and Maglev would land on the same host with the same hash.
                ep = self.balancer.pick(&PickContext::new())?;
            }
        }
        Some(ep)
    }
}

impl<B> Service<Request<B>> for EndpointService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<PoolBody>;
    type Error = BoxError;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> EndpointFuture {
        let Some(ep) = self.pick(&req) else {
            return EndpointFuture {
                state: State::Failed(Some(NoHealthyUpstream.into())),
            };
        };
        // An ended body (a GET's) becomes the pool's empty body: boxing a zero-sized body
        // allocates nothing.
        let mut req = req.map(|b| {
            if b.is_end_stream() {
                pool::RequestBody::default()
            } else {
                b.map_err(Into::into).boxed_unsync()
            }
        });
        if req.extensions().get::<AutoHostRewrite>().is_some()
            && let Some(host) = ep.endpoint().hostname.as_deref()
        {
            set_authority(&mut req, host);
        }
        let active = ep.start_request();
        let tls_mode = ep.endpoint().tls_mode;
        let fut = self.pool.send_with(ep.key(), ep.address(), tls_mode, req);
        EndpointFuture {
            state: State::Sending {
                fut,
                endpoint: ep.key().clone(),
                _active: active,
            },
        }
    }
}

/// Replaces the URI's authority and `Host` (auto host rewrite).
fn set_authority<B>(req: &mut Request<B>, host: &str) {
    let mut parts = req.uri().clone().into_parts();
    if let Ok(a) = host.parse() {
        parts.authority = Some(a);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

/// The response future of [`EndpointService`].
pub struct EndpointFuture {
    state: State,
}

enum State {
    Failed(Option<BoxError>),
    Sending {
        fut: pool::ResponseFuture,
        endpoint: Arc<str>,
        _active: ActiveRequest,
    },
}

impl std::fmt::Debug for EndpointFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointFuture").finish_non_exhaustive()
    }
}

impl Future for EndpointFuture {
    type Output = Result<Response<PoolBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin (the pool's future is).
        let this = self.get_mut();
        match &mut this.state {
            State::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or_else(|| "polled after completion".into()))),
            State::Sending { fut, endpoint, .. } => match Pin::new(fut).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(mut resp)) => {
                    resp.extensions_mut()
                        .insert(UpstreamEndpoint(endpoint.clone()));
                    this.state = State::Failed(None);
                    Poll::Ready(Ok(resp))
                }
                // Refused before reaching the endpoint: not the endpoint's failure (no
                // outlier detection), the breaker layer answers it.
                Poll::Ready(Err(e)) if find_cause::<Overflow>(&*e).is_some() => {
                    this.state = State::Failed(None);
                    Poll::Ready(Err(e))
                }
                Poll::Ready(Err(e)) => {
                    let err = EndpointError {
                        endpoint: endpoint.clone(),
                        source: e,
                    };
                    this.state = State::Failed(None);
                    Poll::Ready(Err(Box::new(err)))
                }
            },
        }
    }
}
