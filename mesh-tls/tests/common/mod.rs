//! Helpers shared by the identity-source tests (dev CA, Istio file layout, polling).
//!
//! NOTE: reconstructed by the tls-verify engineer after accidentally overwriting the
//! original (13:40 UTC); the functions match what files_reload.rs and rotation.rs call.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::Credentials;
use mesh_tls::dev_ca::DevCa;
use rustls_pki_types::PrivateKeyDer;

pub fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

/// `spiffe://cluster.local/ns/default/sa/<sa>`.
pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&td(), "default", sa).unwrap()
}

pub fn ca() -> DevCa {
    DevCa::new(td()).unwrap()
}

pub fn issue(ca: &DevCa, sa: &str, ttl: Duration) -> Credentials {
    ca.issue(&id(sa), ttl).unwrap()
}

fn pem_of(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The leaf and intermediates, PEM.
pub fn chain_pem(creds: &Credentials) -> String {
    creds
        .chain
        .iter()
        .map(|c| pem_of("CERTIFICATE", c))
        .collect()
}

/// The trust bundle, PEM.
pub fn roots_pem(creds: &Credentials) -> String {
    creds
        .roots
        .iter()
        .map(|c| pem_of("CERTIFICATE", c))
        .collect()
}

/// The private key, PEM (PKCS#8 for keys issued by the dev CA).
pub fn key_pem(creds: &Credentials) -> String {
    match &creds.key {
        PrivateKeyDer::Pkcs8(k) => pem_of("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(k) => pem_of("EC PRIVATE KEY", k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(k) => pem_of("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        _ => panic!("unsupported key type"),
    }
}

/// Writes istio-agent's layout: cert-chain.pem, key.pem, root-cert.pem.
pub fn write_istio_dir(dir: &Path, creds: &Credentials) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain_pem(creds)).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem(creds)).unwrap();
    std::fs::write(dir.join("root-cert.pem"), roots_pem(creds)).unwrap();
}

/// Polls `cond` every 20 ms until it holds (true) or `limit` passes (false).
pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
