//! What each endpoint's connections dial: the transport (mTLS, plaintext or an HBONE tunnel),
//! the endpoint's URI and the ALPN offered.

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use mesh_core::model::{EndpointAddress, UpstreamProtocol};
use mesh_hbone::HboneConnector;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ALPN_H2, ALPN_HTTP11};

/// The connector every endpoint's client starts from.
#[derive(Clone, Debug)]
pub(super) enum Transport {
    /// mTLS through mesh-tls, with the cluster's expected server identities.
    Tls(MeshConnector),
    /// Plaintext (the cluster has no TLS context).
    Plain(HttpConnector),
    /// HTTP/2 `CONNECT` over mTLS to the endpoint's IP port 15008 (endpoints marked
    /// `TlsMode::Hbone`); plaintext HTTP inside the tunnel.
    Hbone(HboneConnector),
}

/// The URI the connector dials for an endpoint.
pub(super) fn endpoint_uri(address: &EndpointAddress) -> Uri {
    let authority = match address {
        EndpointAddress::Socket(a) => a.to_string(),
        EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
    };
    // An address that is no valid authority (cannot come from a parsed EDS address) dials
    // nothing and fails as a connect error.
    format!("http://{authority}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://invalid.invalid:1"))
}

/// ALPN offered to a TLS endpoint: the cluster's list when it names HTTP protocols, else
/// what the protocol option allows (HTTP/2 preferred where both are allowed).
pub(super) fn alpn_for(proto: UpstreamProtocol, cluster_alpn: &[String]) -> Vec<Vec<u8>> {
    let from_cluster: Vec<Vec<u8>> = cluster_alpn
        .iter()
        .filter(|p| p.as_bytes() == ALPN_H2 || p.as_bytes() == ALPN_HTTP11)
        .map(|p| p.as_bytes().to_vec())
        .collect();
    match proto {
        UpstreamProtocol::Http1 => vec![ALPN_HTTP11.to_vec()],
        UpstreamProtocol::Http2 => vec![ALPN_H2.to_vec()],
        _ if !from_cluster.is_empty() => from_cluster,
        _ => vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_follows_protocol_options() {
        assert_eq!(
            alpn_for(UpstreamProtocol::Http1, &[]),
            vec![b"http/1.1".to_vec()]
        );
        assert_eq!(alpn_for(UpstreamProtocol::Http2, &[]), vec![b"h2".to_vec()]);
        assert_eq!(
            alpn_for(UpstreamProtocol::Auto, &["istio".into(), "h2".into()]),
            vec![b"h2".to_vec()]
        );
        assert_eq!(alpn_for(UpstreamProtocol::Auto, &[]).len(), 2);
    }

    #[test]
    fn endpoint_uri_names_the_address() {
        let a = EndpointAddress::Socket(([10, 0, 0, 1], 9080).into());
        assert_eq!(endpoint_uri(&a).to_string(), "http://10.0.0.1:9080/");
        let d = EndpointAddress::Dns {
            host: "reviews".into(),
            port: 80,
        };
        assert_eq!(endpoint_uri(&d).to_string(), "http://reviews:80/");
    }
}
