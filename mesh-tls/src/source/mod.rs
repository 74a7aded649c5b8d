//! Long-running identity sources: PEM files with hot reload ([`files`]) and the SPIFFE
//! Workload API ([`spire`], feature `spire`). CSR-based CAs live in [`crate::ca`] and run
//! under [`crate::rotation::Rotation`].

pub mod files;
#[cfg(feature = "spire")]
pub mod spire;

pub use files::{FileSource, FileSourceConfig};
#[cfg(feature = "spire")]
pub use spire::{SpireSource, SpireSourceConfig};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Credentials, TlsError};

/// Fails with [`TlsError::KeyMismatch`] unless `key` is the private key of `leaf`.
pub(crate) fn check_key_matches(
    provider: &CryptoProvider,
    leaf: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
) -> Result<(), TlsError> {
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| TlsError::decode("private key", e))?;
    let certified = rustls::sign::CertifiedKey::new(vec![leaf.clone()], signing);
    certified.keys_match().map_err(|e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch
        }
        other => TlsError::Rustls(other),
    })
}

/// Builds checked [`Credentials`] from DER parts: the leaf must follow the X.509-SVID rules
/// and gives the identity and validity; the key must match it.
pub(crate) fn credentials_from_parts(
    provider: &CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
    what: &str,
) -> Result<Credentials, TlsError> {
    let leaf = chain
        .first()
        .ok_or_else(|| TlsError::decode(what, "certificate chain is empty"))?;
    let info = crate::svid::parse_leaf(leaf)
        .map_err(|e| TlsError::decode(what, format!("leaf certificate: {e}")))?;
    check_key_matches(provider, leaf, &key)?;
    if roots.is_empty() {
        return Err(TlsError::decode(
            what,
            "trust bundle has no root certificate",
        ));
    }
    Ok(Credentials {
        id: info.id,
        chain,
        key,
        roots,
        not_before: info.not_before,
        not_after: info.not_after,
    })
}
