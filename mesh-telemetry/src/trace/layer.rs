use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Request;
use pin_project::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use super::{Propagation, TraceContext};

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
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    side: Side,
    propagation: Propagation,
}

impl TraceLayer {
    /// The server side.
    pub fn server(propagation: Propagation) -> Self {
        Self {
            side: Side::Server,
            propagation,
        }
    }

    /// The client side.
    pub fn client(propagation: Propagation) -> Self {
        Self {
            side: Side::Client,
            propagation,
        }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            layer: *self,
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
/// current for the task while it runs.
#[pin_project]
pub struct ResponseFuture<F: Future> {
    #[pin]
    inner: Instrumented<TaskLocalFuture<TraceContext, F>>,
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F: Future> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("trace::ResponseFuture")
    }
}

impl<S, B> Service<Request<B>> for TraceService<S>
where
    S: Service<Request<B>>,
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
        let span = tracing::info_span!(
            "request",
            otel.kind = kind,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
            parent_span_id = tracing::field::Empty,
            method = %req.method(),
            uri = %req.uri(),
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
