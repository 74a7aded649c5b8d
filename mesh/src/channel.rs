//! [`Channel`]: the mesh client bound to one target, as tonic's generated clients want it.
//!
//! tonic sends path-only URIs (`/pkg.Service/Method`) unless its channel adds the origin;
//! the mesh client routes by the request's `host:port`, so a channel sets the scheme and
//! the target's authority on every request, as a gRPC channel does for its target.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::Body;
use tower::{BoxError, Service};

use crate::Client;

/// The response body of a [`Channel`].
pub type ChannelBody = mesh_telemetry::metrics::MeteredBody<mesh_route::client::MeshBody>;

/// A tonic channel to one target through the mesh: what [`Mesh::channel`](crate::Mesh::channel)
/// returns. Generated clients take it as it is (`GreeterClient::new(mesh.channel(..))`).
/// Cheap to clone; clones share the mesh client's routers and connection pools.
#[derive(Clone, Debug)]
pub struct Channel {
    client: Client,
    /// The target's `host[:port]`, or why the target is invalid.
    authority: Result<Authority, String>,
}

impl Channel {
    pub(crate) fn new(client: Client, target: &str) -> Self {
        Self {
            client,
            authority: parse_target(target),
        }
    }

    /// The target's authority (`host:port`), or `None` when the target was invalid (every
    /// call then fails with a gRPC `INVALID_ARGUMENT` status naming it).
    pub fn authority(&self) -> Option<&Authority> {
        self.authority.as_ref().ok()
    }
}

/// `xds:///host:port` or `host:port` (the port may be omitted: 80) as an authority.
pub(crate) fn parse_target(target: &str) -> Result<Authority, String> {
    let rest = target.strip_prefix("xds:///").unwrap_or(target);
    let invalid = || format!("invalid target {target:?}: expected xds:///host:port or host:port");
    if rest.is_empty() || rest.contains(['/', '@']) {
        return Err(invalid());
    }
    rest.parse::<Authority>().map_err(|_| invalid())
}

impl<B> Service<Request<B>> for Channel
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ChannelBody>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ChannelBody>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Request<B>>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let authority = match &self.authority {
            Ok(a) => a.clone(),
            Err(e) => {
                let e = invalid_target(e);
                return Box::pin(std::future::ready(Err(e)));
            }
        };
        let mut parts = std::mem::take(req.uri_mut()).into_parts();
        parts.scheme = Some(Scheme::HTTP);
        parts.authority = Some(authority);
        if parts.path_and_query.is_none() {
            parts.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        match Uri::from_parts(parts) {
            Ok(uri) => *req.uri_mut() = uri,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        }
        Box::pin(self.client.call(req))
    }
}

/// What a call on a channel with an invalid target fails with: tonic reports errors that
/// carry a `Status` as that status.
fn invalid_target(message: &str) -> BoxError {
    Box::new(tonic::Status::invalid_argument(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::parse_target;

    #[test]
    fn targets_with_and_without_the_scheme() {
        let a = parse_target("xds:///reviews.default.svc.cluster.local:9080").unwrap();
        assert_eq!(a.as_str(), "reviews.default.svc.cluster.local:9080");
        assert_eq!(parse_target("reviews:9080").unwrap().port_u16(), Some(9080));
        assert_eq!(parse_target("reviews").unwrap().as_str(), "reviews");
        for bad in [
            "",
            "xds:///",
            "xds:///a/b",
            "http://reviews:9080",
            "u@reviews:1",
        ] {
            let e = parse_target(bad).unwrap_err();
            assert!(e.contains("invalid target"), "{bad}: {e}");
        }
    }
}
