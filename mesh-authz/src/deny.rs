//! The denial response, as Envoy's RBAC filter sends it.

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;

/// Envoy's local-reply body for an RBAC denial.
pub(crate) const BODY: &str = "RBAC: access denied";

/// gRPC requests get a trailers-only `PERMISSION_DENIED`; others `403`.
pub(crate) fn response<B>(req: &Request<B>) -> Response<Full<Bytes>> {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        });
    let mut res = Response::new(Full::new(if grpc {
        Bytes::new()
    } else {
        Bytes::from_static(BODY.as_bytes())
    }));
    let h = res.headers_mut();
    if grpc {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", HeaderValue::from_static("7"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static("RBAC: access denied"),
        );
    } else {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    if !grpc {
        *res.status_mut() = StatusCode::FORBIDDEN;
    }
    res
}
