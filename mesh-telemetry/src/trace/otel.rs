//! With the `otlp` feature: the request span's ids come from its OpenTelemetry span (when
//! an OpenTelemetry layer is in the subscriber), so what is propagated is what is exported.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TraceContext;

fn flags(sampled: bool) -> TraceFlags {
    if sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

/// Makes `parent` (a caller's span, or an explicit parent) the parent of `span`.
pub(super) fn set_parent(span: &tracing::Span, parent: &TraceContext, remote: bool) {
    let sc = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        flags(parent.sampled),
        remote,
        TraceState::default(),
    );
    // Fails only without an OpenTelemetry layer, when there is nothing to link.
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
}

/// The span id of the current `tracing` span's OpenTelemetry span, if any.
pub(super) fn current_span_id() -> Option<[u8; 8]> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.span_id().to_bytes())
}

/// `span`'s ids as a [`TraceContext`], when it has an OpenTelemetry span.
pub(super) fn adopt(span: &tracing::Span, parent_span_id: Option<[u8; 8]>) -> Option<TraceContext> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceContext {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        parent_span_id,
        sampled: sc.is_sampled(),
    })
}
