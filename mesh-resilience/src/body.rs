//! [`LocalBody`]: a response body that is either the inner service's body or one generated
//! locally by a layer (a 503 from the circuit breaker, a 504 from the timeout, ...).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tower::BoxError;

/// Either the inner body or a small locally generated one.
#[pin_project(project = LocalBodyProj)]
#[derive(Debug)]
pub enum LocalBody<B> {
    /// The inner service's body.
    Inner(#[pin] B),
    /// A local answer: its data (taken when sent).
    Local(Option<Bytes>),
}

impl<B> LocalBody<B> {
    /// A local body with this text.
    pub fn local(text: &'static str) -> Self {
        if text.is_empty() {
            Self::Local(None)
        } else {
            Self::Local(Some(Bytes::from_static(text.as_bytes())))
        }
    }

    /// Whether a layer generated this body.
    pub fn is_local(&self) -> bool {
        matches!(self, Self::Local(_))
    }
}

impl<B> Default for LocalBody<B> {
    fn default() -> Self {
        Self::Local(None)
    }
}

impl<B> Body for LocalBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            LocalBodyProj::Inner(b) => b.poll_frame(cx).map_err(Into::into),
            LocalBodyProj::Local(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner(b) => b.is_end_stream(),
            Self::Local(d) => d.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner(b) => b.size_hint(),
            Self::Local(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

/// Whether a request is gRPC (`content-type: application/grpc*`).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    is_grpc_headers(req.headers())
}

/// Whether these headers carry a gRPC content type.
pub fn is_grpc_headers(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// A local HTTP answer: `status`, `text/plain` body `text`, plus `extra` headers.
pub fn local_response<B>(
    status: StatusCode,
    text: &'static str,
    extra: &[(&'static str, &'static str)],
) -> Response<LocalBody<B>> {
    let mut resp = Response::new(LocalBody::local(text));
    *resp.status_mut() = status;
    if !text.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    for (k, v) in extra {
        resp.headers_mut().insert(*k, HeaderValue::from_static(v));
    }
    resp
}

/// A local gRPC answer as a trailers-only response: HTTP 200 with `grpc-status` and
/// `grpc-message` in the headers, as Envoy sends for local replies to gRPC requests.
pub fn local_grpc_response<B>(
    code: u32,
    message: &'static str,
    extra: &[(&'static str, &'static str)],
) -> Response<LocalBody<B>> {
    let mut resp = Response::new(LocalBody::Local(None));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if !message.is_empty() {
        h.insert("grpc-message", HeaderValue::from_static(message));
    }
    for (k, v) in extra {
        h.insert(*k, HeaderValue::from_static(v));
    }
    resp
}

/// Envoy's mapping from an HTTP status to a gRPC status for local replies to gRPC requests
/// (`Grpc::Utility::httpToGrpcStatus`).
pub fn http_to_grpc_status(status: u16) -> u32 {
    match status {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}
