//! The RBAC view of an HTTP request: headers (pseudo-headers included), the caller's
//! identity and the connection's addresses, all borrowed from the request.

use http::Request;
use mesh_core::extensions::{ConnectionAddrs, MeshConnectInfo, PeerIdentity};
use mesh_core::model::RbacRequest;

/// Builds the [`RbacRequest`] for `req` and hands it to `f`.
///
/// Header names are lowercase (as `http` stores them); repeated headers are joined with
/// `,` as Envoy does; values that are not UTF-8 are left out (they match no string
/// matcher, as a missing header). The caller is the [`PeerIdentity`] in the extensions
/// (or tonic's [`MeshConnectInfo`]); addresses come from [`ConnectionAddrs`] or
/// [`MeshConnectInfo`].
pub fn rbac_request<B, R>(req: &Request<B>, f: impl FnOnce(&RbacRequest<'_>) -> R) -> R {
    let headers = req.headers();
    // Joined values of repeated headers, built first so the view can borrow them.
    let mut joined: Vec<(&str, String)> = Vec::new();
    for name in headers.keys() {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            let all: Vec<&str> = headers
                .get_all(name)
                .iter()
                .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
                .collect();
            joined.push((name.as_str(), all.join(",")));
        }
    }
    let mut view: Vec<(&str, &str)> = Vec::with_capacity(headers.keys_len() + 3);
    view.push((":method", req.method().as_str()));
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    view.push((":path", path));
    let authority = req.uri().authority().map(|a| a.as_str()).or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    if let Some(a) = authority {
        view.push((":authority", a));
    }
    for name in headers.keys() {
        if let Some((n, v)) = joined.iter().find(|(n, _)| *n == name.as_str()) {
            view.push((n, v.as_str()));
        } else if let Some(v) = headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        {
            view.push((name.as_str(), v));
        }
    }

    let ext = req.extensions();
    let connect = ext.get::<MeshConnectInfo>();
    let peer = ext
        .get::<PeerIdentity>()
        .or_else(|| connect.map(|c| &c.peer));
    let (remote, local) = match ext.get::<ConnectionAddrs>() {
        Some(a) => (Some(a.remote), Some(a.local)),
        None => (
            connect.and_then(|c| c.remote_addr),
            connect.and_then(|c| c.local_addr),
        ),
    };
    let rbac = RbacRequest {
        headers: view,
        authenticated: peer.is_some(),
        peer_names: peer.map(|p| p.id().as_str()).into_iter().collect(),
        peer_ip: remote.map(|a| a.ip()),
        remote_ip: None,
        destination: local.map(|a| (a.ip(), a.port())),
        server_name: None,
    };
    f(&rbac)
}
