use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use mesh_core::extensions::ResponseFlags;
use pin_project::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::{Propagation, SpanTags, TraceContext};

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// The trace context of the request being served by this task (set by the server layer).
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// Which side of a call the layer is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Extracts the caller's context from the request headers.
    Server,
    /// Injects a child of the current context into the request headers.
    Client,
}

/// Opens a `tracing` span per request and propagates the trace context.
///
/// The span carries the attributes Envoy sets under Istio: the workload's [`SpanTags`]
/// (`istio.canonical_service`, `istio.mesh_id`, ...), `component`, `http.method`,
/// `http.url`, `http.protocol`, `user_agent`, `guid:x-request-id`, `upstream_cluster`,
/// and on the response `http.status_code`, `response_flags` and `error`. Fields are
/// computed only when a subscriber wants the span: without one, no span is allocated and
/// the layer only propagates the headers.
#[derive(Clone, Debug)]
pub struct TraceLayer {
    side: Side,
    propagation: Propagation,
    tags: Arc<SpanTags>,
}

impl TraceLayer {
    /// The server side.
    pub fn server(propagation: Propagation) -> Self {
        Self {
            side: Side::Server,
            propagation,
            tags: Arc::default(),
        }
    }

    /// The client side.
    pub fn client(propagation: Propagation) -> Self {
        Self {
            side: Side::Client,
            propagation,
            tags: Arc::default(),
        }
    }

    /// The workload's span attributes (default: istiod's defaults, `unknown`).
    pub fn with_tags(mut self, tags: SpanTags) -> Self {
        self.tags = Arc::new(tags);
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service built by [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    layer: TraceLayer,
}

/// The future of [`TraceService`]: the inner future inside the span, with the context
/// current for the task while it runs; records the response on the span.
#[pin_project]
pub struct ResponseFuture<F: Future> {
    #[pin]
    inner: Instrumented<TaskLocalFuture<TraceContext, F>>,
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let out = ready!(inner.as_mut().poll(cx));
        let span = inner.span();
        if !span.is_disabled() {
            record_response(span, &out);
        }
        Poll::Ready(out)
    }
}

/// Envoy's response tags; `error` and the OpenTelemetry status for 5xx and failures.
fn record_response<B, E>(span: &tracing::Span, out: &Result<Response<B>, E>) {
    match out {
        Ok(resp) => {
            let status = resp.status().as_u16();
            span.record("http.status_code", status);
            let flags = resp
                .extensions()
                .get::<ResponseFlags>()
                .map_or("-", |f| f.0);
            span.record("response_flags", flags);
            if status >= 500 {
                span.record("error", true);
                span.record("otel.status_code", "ERROR");
            }
        }
        Err(_) => {
            span.record("http.status_code", 0);
            span.record("error", true);
            span.record("otel.status_code", "ERROR");
        }
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("trace::ResponseFuture")
    }
}

impl<S, B, RB> Service<Request<B>> for TraceService<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let prop = self.layer.propagation;
        let kind = match self.layer.side {
            Side::Server => "server",
            Side::Client => "client",
        };
        let tags = &self.layer.tags;
        let header = |name: http::header::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        };
        // Field values are evaluated only when the span is enabled.
        let span = tracing::info_span!(
            "request",
            otel.kind = kind,
            otel.name = %OperationName(&req),
            otel.status_code = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            component = "proxy",
            node_id = tags.node_id.as_str(),
            "istio.canonical_service" = tags.canonical_service.as_str(),
            "istio.canonical_revision" = tags.canonical_revision.as_str(),
            "istio.namespace" = tags.namespace.as_str(),
            "istio.mesh_id" = tags.mesh_id.as_str(),
            "istio.cluster_id" = tags.cluster_id.as_str(),
            "http.method" = %req.method(),
            "http.url" = %Url(&req),
            "http.protocol" = ?req.version(),
            user_agent = header(http::header::USER_AGENT),
            "guid:x-request-id" = header(http::header::HeaderName::from_static("x-request-id")),
            upstream_cluster = %UpstreamCluster(&req, self.layer.side),
            "http.status_code" = tracing::field::Empty,
            response_flags = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let ctx = match self.layer.side {
            Side::Server => {
                let caller = TraceContext::extract(req.headers(), prop);
                let ctx = server_context(&span, caller);
                req.extensions_mut().insert(ctx);
                ctx
            }
            Side::Client => {
                let explicit = req.extensions().get::<TraceContext>().copied();
                let ctx = client_context(&span, explicit);
                ctx.inject(req.headers_mut(), prop);
                ctx
            }
        };
        if !span.is_disabled() {
            span.record("trace_id", ctx.trace_id_hex());
            span.record("span_id", ctx.span_id_hex());
            if let Some(p) = ctx.parent_span_id {
                span.record(
                    "parent_span_id",
                    TraceContext { span_id: p, ..ctx }.span_id_hex(),
                );
            }
        }
        let fut = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            inner: CURRENT.scope(ctx, fut).instrument(span),
        }
    }
}

/// The server span's context: a child of the caller's span, or a new trace.
#[cfg(not(feature = "otlp"))]
fn server_context(_span: &tracing::Span, caller: Option<TraceContext>) -> TraceContext {
    caller
        .map(|c| c.child())
        .unwrap_or_else(TraceContext::new_root)
}

/// The server span's context, from its OpenTelemetry span when one is exported.
#[cfg(feature = "otlp")]
fn server_context(span: &tracing::Span, caller: Option<TraceContext>) -> TraceContext {
    if let Some(c) = &caller {
        super::otel::set_parent(span, c, true);
    }
    super::otel::adopt(span, caller.map(|c| c.span_id)).unwrap_or_else(|| {
        caller
            .map(|c| c.child())
            .unwrap_or_else(TraceContext::new_root)
    })
}

/// The client span's context: a child of the explicit parent (request extensions), else
/// of the span being served, else a new trace.
#[cfg(not(feature = "otlp"))]
fn client_context(_span: &tracing::Span, explicit: Option<TraceContext>) -> TraceContext {
    explicit
        .or_else(current)
        .map(|p| p.child())
        .unwrap_or_else(TraceContext::new_root)
}

/// The client span's context, from its OpenTelemetry span when one is exported. Without an
/// explicit parent, the OpenTelemetry parent is the current `tracing` span (the server
/// span, or an application span inside it).
#[cfg(feature = "otlp")]
fn client_context(span: &tracing::Span, explicit: Option<TraceContext>) -> TraceContext {
    let otel_parent = super::otel::current_span_id();
    let parent = explicit.or_else(current);
    let link = explicit.or_else(|| parent.filter(|_| otel_parent.is_none()));
    if let Some(p) = &link {
        super::otel::set_parent(span, p, false);
    }
    let parent_id = match link {
        Some(p) => Some(p.span_id),
        None => otel_parent.or(parent.map(|p| p.span_id)),
    };
    super::otel::adopt(span, parent_id).unwrap_or_else(|| {
        parent
            .map(|p| p.child())
            .unwrap_or_else(TraceContext::new_root)
    })
}

/// The authority of a request: its URI's, else its `Host` header.
fn authority<B>(req: &Request<B>) -> &str {
    req.uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(http::header::HOST)?.to_str().ok())
        .unwrap_or("-")
}

/// Istio's operation name: `<host>:<port>/*`.
struct OperationName<'a, B>(&'a Request<B>);
impl<B> std::fmt::Display for OperationName<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/*", authority(self.0))
    }
}

/// `http.url`: scheme, authority and path as the request addressed them.
struct Url<'a, B>(&'a Request<B>);
impl<B> std::fmt::Display for Url<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uri = self.0.uri();
        let scheme = uri.scheme_str().unwrap_or("http");
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        write!(f, "{scheme}://{}{path}", authority(self.0))
    }
}

/// Envoy's cluster names: `outbound|<port>||<host>` for a call, `inbound|<port>||` for a
/// request served.
struct UpstreamCluster<'a, B>(&'a Request<B>, Side);
impl<B> std::fmt::Display for UpstreamCluster<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = authority(self.0);
        let default_port = match self.0.uri().scheme_str() {
            Some("https") => "443",
            _ => "80",
        };
        let (host, port) = match auth.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, p),
            _ => (auth, default_port),
        };
        match self.1 {
            Side::Client => write!(f, "outbound|{port}||{host}"),
            Side::Server => write!(f, "inbound|{port}||"),
        }
    }
}
