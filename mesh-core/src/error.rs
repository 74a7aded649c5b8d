//! The crate's error types.

/// Why a SPIFFE ID or trust domain was rejected. Each variant names the rule of the
/// SPIFFE ID specification (SPIFFE-ID.md) that the input broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The scheme is not `spiffe://`.
    #[error("SPIFFE ID must start with \"spiffe://\": {0:?}")]
    WrongScheme(String),
    /// The trust domain is empty.
    #[error("SPIFFE ID has an empty trust domain")]
    EmptyTrustDomain,
    /// The trust domain holds a character outside `[a-z0-9.-_]`.
    #[error(
        "trust domain {0:?} has a character outside [a-z0-9.-_] (must be lowercase, no port or user info)"
    )]
    BadTrustDomainChar(String),
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is longer than 255 bytes")]
    TrustDomainTooLong,
    /// A path segment is empty (`//` or a trailing `/`).
    #[error("SPIFFE ID path has an empty segment or a trailing slash")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("SPIFFE ID path has a relative segment ('.' or '..')")]
    DotSegment,
    /// A path segment holds a character outside `[A-Za-z0-9.-_]`.
    #[error("SPIFFE ID path segment {0:?} has a character outside [A-Za-z0-9.-_]")]
    BadPathChar(String),
    /// The ID has a query or fragment.
    #[error("SPIFFE ID must not have a query or fragment")]
    QueryOrFragment,
    /// The whole ID is longer than 2048 bytes.
    #[error("SPIFFE ID is longer than 2048 bytes")]
    TooLong,
}

/// The crate's error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An invalid SPIFFE identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A boxed error, as tower and hyper use it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to an upstream endpoint could not be made (TCP connect, TLS handshake, the
/// server's identity, or the HTTP handshake): nothing was sent, so the request is safe to
/// retry and the failure is local-origin (Envoy's `connect-failure`).
#[derive(Debug, thiserror::Error)]
#[error("upstream connect error: {0}")]
pub struct ConnectError(#[source] pub BoxError);

/// The first error of type `E` in `err`'s cause chain (`err` itself included).
///
/// ```
/// use mesh_core::error::{ConnectError, find_cause};
/// let err = ConnectError("refused".into());
/// let wrapped: Box<dyn std::error::Error + Send + Sync> = Box::new(err);
/// assert!(find_cause::<ConnectError>(&*wrapped).is_some());
/// ```
pub fn find_cause<'a, E: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a E> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}
