//! The crate's error type.

use mesh_core::IdentityError;

/// Every way identity and mTLS can fail. Messages name the rule that was broken and never
/// contain key material or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate broke an X.509-SVID rule or a verification rule.
    #[error("certificate rejected: {0}")]
    Rejected(#[from] crate::svid::SvidError),
    /// A SPIFFE ID did not parse.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// PEM or DER input could not be decoded.
    #[error("{what}: {reason}")]
    Decode {
        /// What was being decoded (a file path or a field name).
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("private key does not match the leaf certificate's public key")]
    KeyMismatch,
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate authority refused or failed a request.
    #[error("certificate authority: {0}")]
    Ca(String),
    /// The CA returned a certificate for a different identity than the one requested.
    #[error("CA returned a certificate for {got}, but {requested} was requested")]
    WrongIdentityIssued {
        /// What we asked for.
        requested: String,
        /// What the leaf's URI SAN says.
        got: String,
    },
    /// No usable credentials (not yet issued, or expired): connections fail closed.
    #[error("no valid workload identity: {0}")]
    NoIdentity(String),
    /// rustls rejected a configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A TLS handshake failed for a reason other than a certificate rule (I/O, protocol,
    /// timeout).
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// Any other error, with context.
    #[error("{0}")]
    Other(String),
}

impl TlsError {
    #[allow(dead_code)]
    pub(crate) fn decode(what: impl Into<String>, reason: impl ToString) -> Self {
        Self::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }
}
