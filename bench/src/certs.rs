//! Certificates for every case from one mesh-tls dev CA (the embedded control plane's):
//! SPIFFE X.509-SVIDs that also carry a DNS SAN, so that plain rustls (WebPKI) and Envoy
//! can check the server name while the mesh checks the SPIFFE ID.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::SpiffeId;
use mesh_tls::Credentials;
use mesh_tls::dev_ca::{DevCa, IssueOptions};

use crate::Error;

/// The DNS name every server certificate carries.
pub const SERVER_DNS: &str = "echo.bench.svc.cluster.local";

/// The SPIFFE ID of service account `sa` in namespace `bench`.
pub fn spiffe_id(ca: &DevCa, sa: &str) -> Result<SpiffeId, Error> {
    Ok(SpiffeId::istio(ca.trust_domain(), "bench", sa)?)
}

/// Issues credentials for service account `sa`, valid one day, with [`SERVER_DNS`] as DNS
/// SAN.
pub fn issue(ca: &DevCa, sa: &str) -> Result<Credentials, Error> {
    let id = spiffe_id(ca, sa)?;
    let mut opts = IssueOptions::new(&id, Duration::from_secs(24 * 3600));
    opts.dns_sans = vec![SERVER_DNS.into()];
    Ok(ca.issue_with(opts)?)
}

/// PEM files of one workload: `cert.pem` (chain), `key.pem`, `root.pem`.
#[derive(Clone, Debug)]
pub struct PemFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// PKCS#8 private key.
    pub key: PathBuf,
    /// Trust anchors.
    pub root: PathBuf,
}

/// Writes `creds` as PEM files under `dir/name-*.pem`.
pub fn write_pem(dir: &Path, name: &str, creds: &Credentials) -> Result<PemFiles, Error> {
    let encode = |tag: &str, der: &[u8]| pem::encode(&pem::Pem::new(tag, der.to_vec()));
    let chain: String = creds
        .chain
        .iter()
        .map(|c| encode("CERTIFICATE", c.as_ref()))
        .collect();
    let roots: String = creds
        .roots
        .iter()
        .map(|c| encode("CERTIFICATE", c.as_ref()))
        .collect();
    let key = encode("PRIVATE KEY", creds.key.secret_der());
    let files = PemFiles {
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        root: dir.join(format!("{name}-root.pem")),
    };
    std::fs::write(&files.cert, chain)?;
    std::fs::write(&files.key, key)?;
    std::fs::write(&files.root, roots)?;
    Ok(files)
}

/// Writes `creds` in istio-agent's layout (`cert-chain.pem`, `key.pem`, `root-cert.pem`)
/// into `dir`.
pub fn write_istio_files(dir: &Path, creds: &Credentials) -> Result<(), Error> {
    let files = write_pem(dir, "tmp", creds)?;
    std::fs::rename(&files.cert, dir.join("cert-chain.pem"))?;
    std::fs::rename(&files.key, dir.join("key.pem"))?;
    std::fs::rename(&files.root, dir.join("root-cert.pem"))?;
    Ok(())
}
