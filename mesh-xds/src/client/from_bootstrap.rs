//! Client settings and the channel from a gRPC A27 bootstrap (its first `xds_servers` entry).

use std::sync::Arc;

use super::channel::{TlsConfigFn, XdsChannel};

/// Makes the per-connection TLS config from the workload identity, verifying the control
/// plane by the SPIFFE ID given (when the bootstrap's `server_name` is one) or else by the
/// server name. `mesh::control_plane_tls` is one.
pub type IdentityTls = Arc<dyn Fn(Option<&str>) -> TlsConfigFn + Send + Sync>;
use super::{Protocol, XdsClientConfig, XdsClientError, channel};
use crate::bootstrap::{Bootstrap, ChannelCredentials, XdsServer};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The `server_features` entry that selects delta ADS. gRPC's bootstrap has no such
/// feature (gRPC only speaks SotW); this one is ours.
pub const DELTA_FEATURE: &str = "delta_ads";

impl XdsClientConfig {
    /// Settings from a bootstrap: the node, the protocol ([`DELTA_FEATURE`] selects
    /// delta), `ignore_resource_deletion`, and the call-credentials token file.
    ///
    /// ```
    /// use mesh_xds::bootstrap::Bootstrap;
    /// use mesh_xds::client::{Protocol, XdsClientConfig};
    ///
    /// let bootstrap = Bootstrap::from_json(r#"{
    ///   "xds_servers": [{"server_uri": "localhost:15010", "channel_creds": [{"type": "insecure"}],
    ///                    "server_features": ["xds_v3", "delta_ads"]}],
    ///   "node": {"id": "sidecar~10.0.0.1~a.default~default.svc.cluster.local"}
    /// }"#).unwrap();
    /// let config = XdsClientConfig::from_bootstrap(&bootstrap).unwrap();
    /// assert_eq!(config.protocol, Protocol::Delta);
    /// assert_eq!(config.node.id, "sidecar~10.0.0.1~a.default~default.svc.cluster.local");
    /// ```
    pub fn from_bootstrap(bootstrap: &Bootstrap) -> Result<Self, XdsClientError> {
        let server = first_server(bootstrap)?;
        Ok(Self {
            node: bootstrap.node_proto(),
            protocol: if server.has_feature(DELTA_FEATURE) {
                Protocol::Delta
            } else {
                Protocol::StateOfTheWorld
            },
            ignore_resource_deletion: server.ignore_resource_deletion(),
            token_file: server.token_file(),
            ..Default::default()
        })
    }
}

/// The channel to the bootstrap's first server: plaintext for `insecure` (asked for
/// explicitly, gRPC A27); for `tls` (also when `channel_creds` is empty), the
/// `ca_certificate_file` roots (and the client certificate and key for mTLS), read now,
/// with the given crypto provider, verifying `server_name` or the URI's host.
pub fn channel_from_bootstrap(
    bootstrap: &Bootstrap,
    provider: Arc<CryptoProvider>,
) -> Result<XdsChannel, XdsClientError> {
    channel_from_bootstrap_with(bootstrap, provider, None)
}

/// [`channel_from_bootstrap`], with `mesh_tls` making the TLS config of each connection
/// when the `tls` creds name no `ca_certificate_file` (e.g. the workload identity's trust
/// bundle as roots and its certificate as client certificate, as `mesh` does). A
/// `server_name` that is a SPIFFE ID (`spiffe://...`) is verified that way only.
pub fn channel_from_bootstrap_with(
    bootstrap: &Bootstrap,
    provider: Arc<CryptoProvider>,
    mesh_tls: Option<IdentityTls>,
) -> Result<XdsChannel, XdsClientError> {
    let server = first_server(bootstrap)?;
    let creds = server
        .channel_credentials()
        .map_err(|e| invalid(e.to_string()))?;
    match creds {
        ChannelCredentials::Insecure => {
            channel::insecure_any_host(&server_uri(&server.server_uri, "http"))
        }
        ChannelCredentials::Tls {
            ca_certificate_file,
            certificate_file,
            private_key_file,
            server_name,
        } => {
            if server.server_uri.starts_with("http://") {
                return Err(invalid(format!(
                    "server_uri {:?} is plaintext http:// but the channel_creds are tls: write https:// (or host:port), or opt in to plaintext with channel_creds [{{\"type\": \"insecure\"}}]",
                    server.server_uri
                )));
            }
            let uri = server_uri(&server.server_uri, "https");
            // A SPIFFE ID is checked by the verifier; the SNI is then the URI's host.
            let spiffe = server_name
                .as_deref()
                .filter(|n| n.starts_with("spiffe://"));
            let dns_name = if spiffe.is_some() {
                None
            } else {
                server_name.as_deref()
            };
            let Some(ca) = ca_certificate_file else {
                return match mesh_tls {
                    Some(make) => channel::tls_dynamic(&uri, make(spiffe), dns_name),
                    None => Err(invalid(
                        "tls channel_creds without ca_certificate_file: name the mesh root file, or build the channel with channel::tls and your roots".into(),
                    )),
                };
            };
            if let Some(id) = spiffe {
                return Err(invalid(format!(
                    "server_name {id:?} is a SPIFFE ID: it is verified with the workload identity (leave out ca_certificate_file), not with a root file"
                )));
            }
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&ca)
                .map_err(|e| invalid(format!("ca_certificate_file {}: {e}", ca.display())))?
            {
                let cert = cert
                    .map_err(|e| invalid(format!("ca_certificate_file {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("ca_certificate_file {}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(invalid(format!(
                    "ca_certificate_file {} holds no certificate",
                    ca.display()
                )));
            }
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(format!("crypto provider: {e}")))?
                .with_root_certificates(roots);
            let config = match (certificate_file, private_key_file) {
                (Some(cert), Some(key)) => {
                    let chain = CertificateDer::pem_file_iter(&cert)
                        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            invalid(format!("certificate_file {}: {e}", cert.display()))
                        })?;
                    // The key's content never goes into the error.
                    let key_der = PrivateKeyDer::from_pem_file(&key).map_err(|_| {
                        invalid(format!(
                            "private_key_file {}: no readable PEM private key",
                            key.display()
                        ))
                    })?;
                    builder
                        .with_client_auth_cert(chain, key_der)
                        .map_err(|e| invalid(format!("client certificate: {e}")))?
                }
                _ => builder.with_no_client_auth(),
            };
            channel::tls(&uri, Arc::new(config), dns_name)
        }
    }
}

fn first_server(bootstrap: &Bootstrap) -> Result<&XdsServer, XdsClientError> {
    bootstrap
        .xds_servers
        .first()
        .ok_or_else(|| invalid("xds_servers is empty".into()))
}

fn invalid(reason: String) -> XdsClientError {
    XdsClientError::InvalidBootstrap { reason }
}

/// A gRPC target (`host:port`, `dns:///host:port`, `unix:///path`) as a URI tonic takes.
pub(crate) fn server_uri(target: &str, scheme: &str) -> String {
    if target.starts_with("unix:") || target.contains("://") && !target.starts_with("dns:") {
        return target.to_owned();
    }
    let host_port = target
        .strip_prefix("dns:///")
        .or_else(|| target.strip_prefix("dns:"))
        .unwrap_or(target);
    format!("{scheme}://{host_port}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ring's provider (deprecated in rustls 0.23.48 for its lack of post-quantum key exchange,
    /// which these tests do not need).
    #[allow(deprecated)]
    fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn grpc_targets_become_uris() {
        assert_eq!(
            server_uri("localhost:15010", "http"),
            "http://localhost:15010"
        );
        assert_eq!(
            server_uri("dns:///istiod:15012", "https"),
            "https://istiod:15012"
        );
        assert_eq!(
            server_uri("unix:///etc/istio/proxy/XDS", "http"),
            "unix:///etc/istio/proxy/XDS"
        );
        assert_eq!(server_uri("https://a:1", "https"), "https://a:1");
    }

    #[test]
    fn tls_without_roots_is_a_clear_error() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls"}]}],
                "node": {"id": "n"}}"#,
        )
        .unwrap();
        let err = channel_from_bootstrap(&b, ring_provider())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca_certificate_file"), "{err}");
    }

    #[test]
    fn tls_creds_with_an_http_uri_are_refused() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "http://10.0.0.1:15010"}], "node": {"id": "n"}}"#,
        )
        .unwrap();
        let err = channel_from_bootstrap(&b, ring_provider())
            .unwrap_err()
            .to_string();
        assert!(err.contains("opt in to plaintext"), "{err}");
    }

    #[test]
    fn a_spiffe_server_name_needs_the_workload_identity() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "10.0.0.1:15012", "channel_creds": [{"type": "tls",
                 "config": {"ca_certificate_file": "/etc/ca.pem",
                            "server_name": "spiffe://cluster.local/ns/istio-system/sa/istiod"}}]}]}"#,
        )
        .unwrap();
        let err = channel_from_bootstrap(&b, ring_provider())
            .unwrap_err()
            .to_string();
        assert!(err.contains("is a SPIFFE ID"), "{err}");
        let err = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls",
                 "config": {"server_name": "spiffe://"}}]}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("tls server_name \"spiffe://\""), "{err}");
    }

    #[test]
    fn sotw_by_default_and_token_file_and_a53() {
        let b = Bootstrap::from_json(
            r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "tls"}],
                  "server_features": ["ignore_resource_deletion"],
                  "call_creds": [{"type": "jwt_token_file", "config": {"jwt_token_file": "/var/run/token"}}]}],
                "node": {"id": "n"}}"#,
        )
        .unwrap();
        let c = XdsClientConfig::from_bootstrap(&b).unwrap();
        assert_eq!(c.protocol, Protocol::StateOfTheWorld);
        assert!(c.ignore_resource_deletion);
        assert_eq!(
            c.token_file.as_deref(),
            Some(std::path::Path::new("/var/run/token"))
        );
    }
}
