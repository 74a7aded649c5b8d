//! Header hygiene at the proxy's edges.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, TE, TRANSFER_ENCODING, UPGRADE};

/// `x-forwarded-client-cert`, as Envoy sets it for the app behind an inbound sidecar.
pub(crate) const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Removes hop-by-hop headers (RFC 9110 7.6.1): those named by `connection` and the fixed
/// list. HTTP/2 forbids them, and they describe the previous hop only.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.is_empty() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(n);
    }
    for n in ["keep-alive", "proxy-connection", "proxy-authorization"] {
        headers.remove(n);
    }
    // `te: trailers` is the one value HTTP/2 (gRPC) allows and needs.
    if headers
        .get(TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(CONNECTION, "keep-alive, x-hop".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-hop", "1".parse().unwrap());
        h.insert("x-end", "2".parse().unwrap());
        h.insert(TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("x-end") && h.contains_key(TE));
        h.insert(TE, "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(!h.contains_key(TE));
    }
}
