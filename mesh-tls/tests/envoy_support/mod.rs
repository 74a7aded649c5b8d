//! Envoy configuration pieces shared by the Envoy interop tests: certificate files in
//! Envoy's format, a `common_tls_context` with a SAN match, the router filter.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use mesh_tls::Credentials;

use crate::mtls_support::id;

pub use mesh_test_support::free_port;

fn pem_of(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// Writes Envoy's certificate chain, key and our root into `dir`; returns their paths.
pub fn write_envoy_certs(dir: &Path, creds: &Credentials) -> (PathBuf, PathBuf, PathBuf) {
    let chain = dir.join("envoy-chain.pem");
    let key = dir.join("envoy-key.pem");
    let root = dir.join("root-cert.pem");
    std::fs::write(
        &chain,
        creds.chain.iter().map(|c| pem_of(c)).collect::<String>(),
    )
    .unwrap();
    let rustls_pki_types::PrivateKeyDer::Pkcs8(k) = &creds.key else {
        panic!("dev CA keys are PKCS#8")
    };
    std::fs::write(
        &key,
        pem::encode(&pem::Pem::new("PRIVATE KEY", k.secret_pkcs8_der())),
    )
    .unwrap();
    std::fs::write(
        &root,
        creds.roots.iter().map(|c| pem_of(c)).collect::<String>(),
    )
    .unwrap();
    (chain, key, root)
}

/// `common_tls_context` with Envoy's certificate and a URI SAN match for `peer`.
pub fn tls_context(chain: &Path, key: &Path, root: &Path, peer: &str) -> String {
    format!(
        r#"
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{filename: "{chain}"}}
              private_key: {{filename: "{key}"}}
            validation_context:
              trusted_ca: {{filename: "{root}"}}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{exact: "{peer}"}}"#,
        chain = chain.display(),
        key = key.display(),
        root = root.display(),
    )
}

pub const ROUTER: &str = r#"
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}"#;

pub fn envoy_id() -> mesh_core::SpiffeId {
    id("envoy")
}
