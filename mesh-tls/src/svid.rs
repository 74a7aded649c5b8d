//! X.509-SVID rules (SPIFFE standards/X509-SVID.md), enforced on peers and on our own
//! certificates. STUB: to be completed.

use crate::{Credentials, TlsError};

/// A broken X.509-SVID or verification rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// The certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
}

/// Checks our own credentials before they are installed.
pub fn check_own_credentials(_creds: &Credentials) -> Result<(), TlsError> {
    Ok(())
}
