//! SPIFFE identities: [`TrustDomain`] and [`SpiffeId`], with Istio's
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>` helpers.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::IdentityError;

const SCHEME: &str = "spiffe://";
const MAX_ID_LEN: usize = 2048;
const MAX_TD_LEN: usize = 255;

/// A SPIFFE trust domain such as `cluster.local`.
///
/// ```
/// use mesh_core::TrustDomain;
/// let td = TrustDomain::new("cluster.local").unwrap();
/// assert_eq!(td.to_string(), "cluster.local");
/// assert!(TrustDomain::new("Cluster.Local").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(Arc<str>);

impl TrustDomain {
    /// Validates a trust domain name (lowercase letters, digits, `.`, `-`, `_`).
    /// Also accepts a `spiffe://<td>` URI, as trust bundles are often keyed that way.
    pub fn new(name: &str) -> Result<Self, IdentityError> {
        let name = name.strip_prefix(SCHEME).unwrap_or(name);
        let name = name.strip_suffix('/').unwrap_or(name);
        validate_trust_domain(name)?;
        Ok(Self(name.into()))
    }

    /// The trust domain as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://<td>`), as used in trust bundles.
    pub fn id_string(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A validated SPIFFE ID: `spiffe://<trust-domain>/<path>`.
///
/// Cheap to clone (one `Arc`). Comparison is exact, as the SPIFFE spec requires.
///
/// ```
/// use mesh_core::{SpiffeId, TrustDomain};
/// let td = TrustDomain::new("cluster.local").unwrap();
/// let id = SpiffeId::istio(&td, "default", "productpage").unwrap();
/// assert_eq!(id.as_str(), "spiffe://cluster.local/ns/default/sa/productpage");
/// assert_eq!(id.path(), "/ns/default/sa/productpage");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    uri: Arc<str>,
    /// Byte offset where the path starts (== uri.len() when the path is empty).
    path_start: usize,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn new(uri: &str) -> Result<Self, IdentityError> {
        if uri.is_empty() {
            return Err(IdentityError::Empty);
        }
        if uri.len() > MAX_ID_LEN {
            return Err(IdentityError::TooLong);
        }
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::WrongScheme(truncate(uri)))?;
        if rest.contains(['?', '#']) {
            return Err(IdentityError::QueryOrFragment);
        }
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(Self {
            uri: uri.into(),
            path_start: SCHEME.len() + td.len(),
        })
    }

    /// Builds an ID from a trust domain and a path (which must start with `/` or be empty).
    pub fn from_parts(td: &TrustDomain, path: &str) -> Result<Self, IdentityError> {
        Self::new(&format!("{SCHEME}{td}{path}"))
    }

    /// Istio's workload identity: `spiffe://<td>/ns/<namespace>/sa/<service_account>`.
    pub fn istio(
        td: &TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        Self::from_parts(td, &format!("/ns/{namespace}/sa/{service_account}"))
    }

    /// The whole URI.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.uri[SCHEME.len()..self.path_start].into())
    }

    /// The trust domain name, without allocating.
    pub fn trust_domain_str(&self) -> &str {
        &self.uri[SCHEME.len()..self.path_start]
    }

    /// The path, including its leading `/` (empty for a trust domain ID).
    pub fn path(&self) -> &str {
        &self.uri[self.path_start..]
    }

    /// The namespace if the path has Istio's `/ns/<ns>/sa/<sa>` form.
    pub fn istio_namespace(&self) -> Option<&str> {
        self.istio_parts().map(|(ns, _)| ns)
    }

    /// The service account if the path has Istio's `/ns/<ns>/sa/<sa>` form.
    pub fn istio_service_account(&self) -> Option<&str> {
        self.istio_parts().map(|(_, sa)| sa)
    }

    fn istio_parts(&self) -> Option<(&str, &str)> {
        let mut segs = self.path().strip_prefix('/')?.split('/');
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(ns), Some("sa"), Some(sa), None) => Some((ns, sa)),
            _ => None,
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = IdentityError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

fn validate_trust_domain(td: &str) -> Result<(), IdentityError> {
    if td.is_empty() {
        return Err(IdentityError::EmptyTrustDomain);
    }
    if td.len() > MAX_TD_LEN {
        return Err(IdentityError::TrustDomainTooLong);
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(IdentityError::BadTrustDomainChar(truncate(td)));
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), IdentityError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split item is empty.
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            return Err(IdentityError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(IdentityError::DotSegment);
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(IdentityError::BadPathChar(truncate(seg)));
        }
    }
    Ok(())
}

/// Bounds what an error message echoes back from untrusted input.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        for s in [
            "spiffe://cluster.local/ns/default/sa/reviews",
            "spiffe://example.org",
            "spiffe://a_b-c.d/x/Y.z-_1",
        ] {
            let id = SpiffeId::new(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn splits_trust_domain_and_path() {
        let id = SpiffeId::new("spiffe://td.io/ns/prod/sa/web").unwrap();
        assert_eq!(id.trust_domain(), TrustDomain::new("td.io").unwrap());
        assert_eq!(id.trust_domain_str(), "td.io");
        assert_eq!(id.path(), "/ns/prod/sa/web");
        assert_eq!(id.istio_namespace(), Some("prod"));
        assert_eq!(id.istio_service_account(), Some("web"));

        let bare = SpiffeId::new("spiffe://td.io").unwrap();
        assert_eq!(bare.path(), "");
        assert_eq!(bare.istio_namespace(), None);
        let other = SpiffeId::new("spiffe://td.io/ns/prod/sa/web/extra").unwrap();
        assert_eq!(other.istio_service_account(), None);
    }

    #[test]
    fn rejects_each_rule() {
        use IdentityError::*;
        let cases: &[(&str, IdentityError)] = &[
            ("", Empty),
            ("http://td/x", WrongScheme("http://td/x".into())),
            ("spiffe:///x", EmptyTrustDomain),
            ("spiffe://TD/x", BadTrustDomainChar("TD".into())),
            ("spiffe://td:443/x", BadTrustDomainChar("td:443".into())),
            ("spiffe://user@td/x", BadTrustDomainChar("user@td".into())),
            ("spiffe://td/", EmptySegment),
            ("spiffe://td/a//b", EmptySegment),
            ("spiffe://td/a/../b", DotSegment),
            ("spiffe://td/./b", DotSegment),
            ("spiffe://td/a%20b", BadPathChar("a%20b".into())),
            ("spiffe://td/a?x=1", QueryOrFragment),
            ("spiffe://td/a#f", QueryOrFragment),
        ];
        for (input, want) in cases {
            assert_eq!(SpiffeId::new(input).unwrap_err(), *want, "{input}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        assert_eq!(SpiffeId::new(&long).unwrap_err(), TooLong);
        let long_td = format!("spiffe://{}/x", "a".repeat(256));
        assert_eq!(SpiffeId::new(&long_td).unwrap_err(), TrustDomainTooLong);
    }

    #[test]
    fn istio_helper_validates() {
        let td = TrustDomain::new("cluster.local").unwrap();
        assert!(
            SpiffeId::istio(&td, "default", "bad/sa")
                .is_ok_and(|id| id.istio_service_account().is_none())
        );
        assert_eq!(
            SpiffeId::istio(&td, "default", "").unwrap_err(),
            IdentityError::EmptySegment
        );
        assert_eq!(
            SpiffeId::istio(&td, "ns", "a b").unwrap_err(),
            IdentityError::BadPathChar("a b".into())
        );
    }

    #[test]
    fn trust_domain_accepts_uri_form() {
        let td = TrustDomain::new("spiffe://cluster.local").unwrap();
        assert_eq!(td.as_str(), "cluster.local");
        assert_eq!(td.id_string(), "spiffe://cluster.local");
        assert_eq!(
            TrustDomain::new("").unwrap_err(),
            IdentityError::EmptyTrustDomain
        );
    }
}
