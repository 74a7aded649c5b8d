//! Fault injection as Envoy's fault filter and Istio's VirtualService `fault`: a delay
//! and/or an abort, each for a fraction of requests, only for requests whose headers
//! match, at most `max_active_faults` at once.
//!
//! The config comes from the request's `Arc<FaultConfig>` extension, else the route's
//! per-filter override (`RoutePolicy::fault(filter_name)`), else the layer's static
//! config. Header control as Envoy: `x-envoy-fault-delay-request` (ms, with
//! `DelayKind::FromHeader`), `x-envoy-fault-abort-request` (HTTP status) and
//! `x-envoy-fault-abort-grpc-request` (gRPC status, with `AbortKind::FromHeader`), and
//! `x-envoy-fault-delay-request-percentage` / `x-envoy-fault-abort-request-percentage`
//! (a numerator over the configured denominator, never above the configured one).
//! An HTTP abort of a gRPC request answers the mapped gRPC status.
//!
//! Alone, around a hyper-util client (`tests/standalone.rs` runs this against a real
//! server):
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_core::model::{AbortKind, FaultAbort, FaultConfig, Fraction};
//! use mesh_resilience::fault::FaultLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # async fn run() -> Result<(), tower::BoxError> {
//! let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! // Istio: fault.abort { httpStatus: 503, percentage: 10 }
//! let cfg = FaultConfig {
//!     abort: Some(FaultAbort { kind: AbortKind::Http(503), percentage: Fraction::new(10, 100) }),
//!     ..Default::default()
//! };
//! let svc = ServiceBuilder::new()
//!     .layer(FaultLayer::new(Some(cfg)))
//!     .service(client);
//! // One request in ten answers 503 without reaching the server.
//! let resp = svc.oneshot(http::Request::get("http://127.0.0.1:8080/").body(Full::new(Bytes::new()))?).await?;
//! println!("{}", resp.status());
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use mesh_core::model::{AbortKind, DelayKind, FaultConfig, Fraction};
use pin_project::pin_project;
use tower::{BoxError, Service, ServiceExt};
use tower_layer::Layer;

use crate::LocalBody;
use crate::body::{http_to_grpc_status, is_grpc, local_grpc_response, local_response};
use crate::policy::route_policy;

/// The fault filter's default name, used to find per-route overrides.
pub const FAULT_FILTER: &str = "envoy.filters.http.fault";

/// Injects faults (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct FaultLayer {
    config: Option<Arc<FaultConfig>>,
    filter_name: Arc<str>,
    active: Arc<AtomicU32>,
}

impl FaultLayer {
    /// A layer with this static config (`None`: only per-request configs).
    pub fn new(config: Option<FaultConfig>) -> Self {
        Self {
            config: config.map(Arc::new),
            filter_name: FAULT_FILTER.into(),
            active: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The filter name under which routes carry overrides.
    pub fn filter_name(mut self, name: &str) -> Self {
        self.filter_name = name.into();
        self
    }
}

impl<S> Layer<S> for FaultLayer {
    type Service = Fault<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fault {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`FaultLayer`].
#[derive(Clone, Debug)]
pub struct Fault<S> {
    inner: S,
    layer: FaultLayer,
}

/// A request that gets a fault: its delay and abort, boxed (rare, unlike the pass-through).
type Faulted<RB> = Pin<Box<dyn Future<Output = Result<Response<LocalBody<RB>>, BoxError>> + Send>>;

/// The response future of [`Fault`]: the inner service's future, unboxed, when no fault
/// applies (nearly every request), so the layer costs no allocation then.
#[pin_project(project = ResponseFutureProj)]
pub enum ResponseFuture<F, RB> {
    /// No fault: the inner call.
    Inner(#[pin] F),
    /// A delay and/or an abort.
    Faulted(Faulted<RB>),
}

impl<F, RB> std::fmt::Debug for ResponseFuture<F, RB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let faulted = matches!(self, Self::Faulted(_));
        f.debug_struct("ResponseFuture")
            .field("faulted", &faulted)
            .finish()
    }
}

impl<F, RB, E> Future for ResponseFuture<F, RB>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<LocalBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ResponseFutureProj::Inner(f) => f
                .poll(cx)
                .map(|r| r.map(|r| r.map(LocalBody::Inner)).map_err(Into::into)),
            ResponseFutureProj::Faulted(f) => f.as_mut().poll(cx),
        }
    }
}

fn header_u64(h: &HeaderMap, name: &str) -> Option<u64> {
    h.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Draws against `f`, with the percentage header (a numerator) lowering it.
fn hit(f: Fraction, h: &HeaderMap, pct_header: &str) -> bool {
    let mut f = f;
    if let Some(n) = header_u64(h, pct_header) {
        f.numerator = f.numerator.min(n.min(u32::MAX as u64) as u32);
    }
    let ppm = f.per_million();
    ppm > 0 && (rand::random::<u32>() % 1_000_000) < ppm
}

struct Decision {
    delay: Option<Duration>,
    abort: Option<Abort>,
}

enum Abort {
    Http(u16),
    Grpc(u32),
}

fn decide(cfg: &FaultConfig, h: &HeaderMap) -> Decision {
    if !cfg.headers.iter().all(|m| {
        let v = h.get(m.name.as_str()).and_then(|v| v.to_str().ok());
        m.matches(v)
    }) {
        return Decision {
            delay: None,
            abort: None,
        };
    }
    let delay = cfg.delay.as_ref().and_then(|d| {
        let dur = match &d.kind {
            DelayKind::Fixed(t) => Some(*t),
            DelayKind::FromHeader => {
                header_u64(h, "x-envoy-fault-delay-request").map(Duration::from_millis)
            }
        }?;
        hit(d.percentage, h, "x-envoy-fault-delay-request-percentage").then_some(dur)
    });
    let abort = cfg.abort.as_ref().and_then(|a| {
        let what = match &a.kind {
            AbortKind::Http(s) => Some(Abort::Http(*s)),
            AbortKind::Grpc(c) => Some(Abort::Grpc(*c)),
            AbortKind::FromHeader => header_u64(h, "x-envoy-fault-abort-grpc-request")
                .map(|c| Abort::Grpc(c as u32))
                .or_else(|| {
                    header_u64(h, "x-envoy-fault-abort-request")
                        .filter(|s| (200..600).contains(s))
                        .map(|s| Abort::Http(s as u16))
                }),
        }?;
        hit(a.percentage, h, "x-envoy-fault-abort-request-percentage").then_some(what)
    });
    Decision { delay, abort }
}

struct ActiveFault(Arc<AtomicU32>);

impl Drop for ActiveFault {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B, RB> Service<Request<B>> for Fault<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<LocalBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cfg = req
            .extensions()
            .get::<Arc<FaultConfig>>()
            .cloned()
            .or_else(|| {
                route_policy(req.extensions())
                    .and_then(|p| p.fault(&self.layer.filter_name).cloned().map(Arc::new))
            })
            .or_else(|| self.layer.config.clone());
        let decision = cfg.as_deref().map(|c| decide(c, req.headers()));
        let guard = match (&decision, cfg.as_deref()) {
            (Some(d), Some(c)) if d.delay.is_some() || d.abort.is_some() => {
                let prev = self.layer.active.fetch_add(1, Ordering::AcqRel);
                let guard = ActiveFault(self.layer.active.clone());
                if c.max_active_faults.is_some_and(|m| prev >= m) {
                    None // over max_active_faults: no fault for this one
                } else {
                    Some(guard)
                }
            }
            _ => None,
        };
        let (Some(guard), Some(d)) = (guard, decision) else {
            return ResponseFuture::Inner(self.inner.call(req));
        };
        let grpc = is_grpc(&req);
        // The inner service was readied for this call; a delayed call uses a fresh clone.
        let clone = self.inner.clone();
        let svc = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::Faulted(Box::pin(async move {
            let _guard = guard;
            if let Some(t) = d.delay {
                tokio::time::sleep(t).await;
            }
            match d.abort {
                Some(Abort::Grpc(code)) => {
                    return Ok(local_grpc_response(code, "fault filter abort", &[]));
                }
                Some(Abort::Http(status)) => {
                    if grpc {
                        let code = http_to_grpc_status(status);
                        return Ok(local_grpc_response(code, "fault filter abort", &[]));
                    }
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                    return Ok(local_response(status, "fault filter abort", &[]));
                }
                None => {}
            }
            let resp = svc.oneshot(req).await.map_err(Into::into)?;
            Ok(resp.map(LocalBody::Inner))
        }))
    }
}

#[cfg(test)]
mod tests;
