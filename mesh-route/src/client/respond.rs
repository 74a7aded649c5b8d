//! Response bodies and local replies (what Envoy answers itself).

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
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

/// A local reply with a text body (none when empty).
pub(crate) fn local(status: u16, body: &str) -> Response<MeshBody> {
    let mut resp = bytes(status, Bytes::copy_from_slice(body.as_bytes()));
    if !body.is_empty() {
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
    }
    resp
}

/// A local reply with `body`.
pub(crate) fn bytes(status: u16, body: Bytes) -> Response<MeshBody> {
    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp
}
