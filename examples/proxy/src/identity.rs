//! The workload certificate: PEM files (istio-agent layout, or the bootstrap's
//! `file_watcher` provider), the Istio CA, or a local CA directory; CA-issued
//! certificates are renewed at half life.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::SpiffeId;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::{CertProvider, Credentials, TlsError};

use mesh_tls::ca::IstioCaClient;
use mesh_tls::rotation::Rotation;
use mesh_tls::source::{FileSource, FileSourceConfig};
use mesh_tls::{CertSource, IdentityStore};
use mesh_xds::bootstrap::Bootstrap;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::task::JoinHandle;

use crate::options::{IdentitySource, ProxyOptions};

/// Starts the identity source; the store fills when the first certificate arrives.
pub(crate) fn start(
    opts: &ProxyOptions,
    bootstrap: &Bootstrap,
) -> Result<(IdentityStore, JoinHandle<()>), String> {
    let source: Box<dyn CertSource> = match &opts.identity {
        Some(IdentitySource::Files(dir)) => Box::new(FileSource::dir(dir)),
        Some(IdentitySource::IstioCa(uri)) => {
            let path = opts
                .ca_root
                .as_ref()
                .ok_or("--identity istio-ca needs --ca-root")?;
            let roots = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("--ca-root {}: {e}", path.display()))?;
            if roots.is_empty() {
                return Err(format!("--ca-root {}: no certificate", path.display()));
            }
            // The CA signs the identity the node metadata implies.
            let id = crate::node::spiffe_id(bootstrap)?;
            let store = IdentityStore::new();
            let mut client = IstioCaClient::new(uri.clone(), id, roots)
                .with_server_name(opts.ca_server_name.clone())
                // Renewals authenticate with the current certificate.
                .with_client_certificate(store.clone());
            if let Some(token) = &opts.token {
                client = client.with_token_file(token);
            }
            let task = Rotation::new(client).spawn(store.clone());
            return Ok((store, task));
        }
        Some(IdentitySource::CaDir(dir)) => {
            let id = crate::node::spiffe_id(bootstrap)?;
            let ca = DevCa::load(dir, id.trust_domain())
                .map_err(|e| format!("--identity ca:{}: {e}", dir.display()))?;
            Box::new(Rotation::new(LocalCa {
                ca: Arc::new(ca),
                id,
            }))
        }
        None => Box::new(from_bootstrap(bootstrap)?),
    };
    let store = IdentityStore::new();
    let task = tokio::spawn(source.run(store.clone()));
    Ok((store, task))
}

/// Issues our certificate with a CA key we hold (`--identity ca:DIR`).
struct LocalCa {
    ca: Arc<DevCa>,
    id: SpiffeId,
}

impl CertProvider for LocalCa {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Credentials, TlsError>> + Send + '_>> {
        let issued = self.ca.issue(&self.id, LOCAL_TTL);
        Box::pin(std::future::ready(issued))
    }
}

/// Validity of locally issued certificates (renewed at half life).
const LOCAL_TTL: Duration = Duration::from_secs(24 * 3600);

/// The bootstrap's `default` file_watcher provider (what Istio's TLS contexts name).
fn from_bootstrap(b: &Bootstrap) -> Result<FileSource, String> {
    let none = "no identity: give --identity files:DIR or istio-ca:URI, or a bootstrap with a \
                `default` file_watcher certificate provider";
    let provider = b.certificate_providers.get("default").ok_or(none)?;
    let fw = provider.file_watcher().map_err(|e| e.to_string())?;
    let (Some(cert_chain), Some(key), Some(roots)) = (
        fw.certificate_file,
        fw.private_key_file,
        fw.ca_certificate_file,
    ) else {
        return Err(format!(
            "{none} (its certificate, key and CA files must all be set)"
        ));
    };
    Ok(FileSource::new(FileSourceConfig {
        cert_chain,
        key,
        roots,
        poll_interval: Duration::from_secs(1),
    }))
}
