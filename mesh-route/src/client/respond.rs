//! Response bodies and local replies (what Envoy answers itself), and their gRPC form.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use mesh_resilience::body::http_to_grpc_status;
use mesh_resilience::classify::grpc_code;
use tower::BoxError;

/// The response body of [`MeshClient`](super::MeshClient): the upstream's body, or a local
/// reply.
pub type MeshBody = UnsyncBoxBody<Bytes, BoxError>;

/// Where a request went, in the extensions of the upstream request and of the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The virtual host's name.
    pub virtual_host: Arc<str>,
    /// The route's name.
    pub route: Arc<str>,
    /// The cluster.
    pub cluster: Arc<str>,
    /// The endpoint's `ip:port` (or `host:port`).
    pub endpoint: Arc<str>,
}

/// Marks a reply the client made itself, with what its gRPC form says.
#[derive(Clone, Debug)]
struct LocalReply {
    /// The gRPC status when the HTTP status does not say it (proxyless gRPC reports no
    /// route as UNAVAILABLE, not Envoy's 404 -> UNIMPLEMENTED).
    code: Option<u32>,
    message: String,
}

/// A local reply with a text body (none when empty).
pub(crate) fn local(status: u16, body: &str) -> Response<MeshBody> {
    let mut resp = bytes(status, Bytes::copy_from_slice(body.as_bytes()));
    if !body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    resp.extensions_mut().insert(LocalReply {
        code: None,
        message: body.to_owned(),
    });
    resp
}

/// Like [`local`], answered to gRPC requests with gRPC status `code`.
pub(crate) fn local_grpc(status: u16, code: u32, body: &str) -> Response<MeshBody> {
    let mut resp = local(status, body);
    resp.extensions_mut().insert(LocalReply {
        code: Some(code),
        message: body.to_owned(),
    });
    resp
}

/// A local reply with `body`.
pub(crate) fn bytes(status: u16, body: Bytes) -> Response<MeshBody> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.extensions_mut().insert(LocalReply {
        code: None,
        message: String::new(),
    });
    resp
}

/// The answer to a gRPC request: a local reply that is not a success becomes a
/// trailers-only response (HTTP 200, `grpc-status`, `grpc-message`), as Envoy and proxyless
/// gRPC clients report local failures; tonic would otherwise misread a text body as a
/// message. Other responses pass unchanged.
pub(crate) fn for_grpc(resp: Response<MeshBody>) -> Response<MeshBody> {
    let Some(reply) = resp.extensions().get::<LocalReply>() else {
        return resp;
    };
    if resp.status().is_success() {
        return resp;
    }
    let status = resp.status();
    let code = reply
        .code
        .unwrap_or_else(|| http_to_grpc_status(status.as_u16()));
    let message = match reply.message.as_str() {
        "" => format!("the mesh client answered HTTP {status}"),
        m => m.to_owned(),
    };
    let (mut parts, _) = resp.into_parts();
    parts.status = http::StatusCode::OK;
    let h = &mut parts.headers;
    h.remove(http::header::CONTENT_LENGTH);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(&message)) {
        h.insert("grpc-message", v);
    }
    Response::from_parts(parts, Empty::new().map_err(|e| match e {}).boxed_unsync())
}

/// `grpc-message` encoding (gRPC over HTTP/2 spec): bytes outside printable ASCII and `%`
/// as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// gRPC status codes the client sets itself.
pub(crate) use grpc_code::{DEADLINE_EXCEEDED, UNAVAILABLE};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_replies_become_trailers_only_grpc() {
        let resp = for_grpc(local(503, "no healthy upstream"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["grpc-message"], "no healthy upstream");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let resp = for_grpc(local_grpc(404, UNAVAILABLE, "no route"));
        assert_eq!(resp.headers()["grpc-status"], "14");
        let resp = for_grpc(local(400, "caf\u{e9} 100%"));
        assert_eq!(resp.headers()["grpc-status"], "13");
        assert_eq!(resp.headers()["grpc-message"], "caf%C3%A9 100%25");
    }

    #[test]
    fn upstream_responses_pass_unchanged() {
        let mut resp = Response::new(Empty::new().map_err(|e| match e {}).boxed_unsync());
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        let resp = for_grpc(resp);
        assert_eq!(resp.status(), 503);
        assert!(resp.headers().get("grpc-status").is_none());
    }
}
