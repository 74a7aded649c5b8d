//! X.509-SVID rules (SPIFFE `standards/X509-SVID.md`), enforced on peer certificates by the
//! verifiers in [`crate::verify`] and on our own certificates before they are installed.
//!
//! A leaf X.509-SVID must:
//! - carry exactly one URI SAN, and it must be a valid SPIFFE ID (§2);
//! - not be a CA: `basicConstraints` CA=false or absent (§4.1);
//! - have `keyUsage` with `digitalSignature`, and neither `keyCertSign` nor `cRLSign` (§4.3);
//! - be inside its validity window.
//!
//! DNS names and the subject are ignored for authentication, as SPIFFE requires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::SpiffeId;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::{Credentials, TlsError};

/// A broken X.509-SVID or verification rule. Each variant names one rule; see
/// [`SvidError::rule`] for the stable name used as a metric label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SvidError {
    /// The peer sent no certificate.
    #[error("no certificate presented")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("malformed certificate: {0}")]
    Malformed(String),
    /// No URI SAN: there is no SPIFFE ID.
    #[error("X.509-SVID must have exactly one URI SAN, found none")]
    NoUriSan,
    /// More than one URI SAN: the identity is ambiguous.
    #[error("X.509-SVID must have exactly one URI SAN, found {0} URI SANs")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN {uri:?} is not a valid SPIFFE ID: {reason}")]
    InvalidSpiffeId {
        /// The URI SAN.
        uri: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The leaf has `basicConstraints` CA=true.
    #[error("leaf certificate is a CA (basicConstraints CA=true)")]
    LeafIsCa,
    /// The leaf's key usage lacks `digitalSignature` (or the extension is missing).
    #[error("leaf certificate key usage must include digitalSignature")]
    MissingDigitalSignature,
    /// The leaf's key usage includes `keyCertSign` or `cRLSign`.
    #[error("leaf certificate key usage must not include {0}")]
    LeafCanSign(&'static str),
    /// The certificate's validity ended.
    #[error("certificate expired at {not_after} (now {now})")]
    Expired {
        /// End of validity.
        not_after: String,
        /// The time of the check.
        now: String,
    },
    /// The certificate's validity has not started.
    #[error("certificate not yet valid: valid from {not_before} (now {now})")]
    NotYetValid {
        /// Start of validity.
        not_before: String,
        /// The time of the check.
        now: String,
    },
    /// The leaf is self-signed.
    #[error("certificate is self-signed, not issued by a trusted CA")]
    SelfSigned,
    /// The chain does not lead to a root of the trust bundle.
    #[error("certificate chain is not trusted: {0}")]
    UntrustedChain(String),
    /// The SPIFFE ID is in a trust domain we do not accept.
    #[error("SPIFFE ID {id} is from trust domain {got}, allowed: {allowed}")]
    WrongTrustDomain {
        /// The peer's SPIFFE ID.
        id: String,
        /// Its trust domain.
        got: String,
        /// The accepted trust domains.
        allowed: String,
    },
    /// The SPIFFE ID is not one of the expected identities.
    #[error("SPIFFE ID {id} is not an expected identity (expected: {expected})")]
    UnexpectedIdentity {
        /// The peer's SPIFFE ID.
        id: String,
        /// The identities that would have been accepted.
        expected: String,
    },
}

/// The rule a rejection broke, as a small copyable value (for counters and metric labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// [`SvidError::NoCertificate`]
    NoCertificate,
    /// [`SvidError::Malformed`]
    Malformed,
    /// [`SvidError::NoUriSan`]
    NoUriSan,
    /// [`SvidError::MultipleUriSans`]
    MultipleUriSans,
    /// [`SvidError::InvalidSpiffeId`]
    InvalidSpiffeId,
    /// [`SvidError::LeafIsCa`]
    LeafIsCa,
    /// [`SvidError::MissingDigitalSignature`] and [`SvidError::LeafCanSign`]
    KeyUsage,
    /// [`SvidError::Expired`]
    Expired,
    /// [`SvidError::NotYetValid`]
    NotYetValid,
    /// [`SvidError::SelfSigned`]
    SelfSigned,
    /// [`SvidError::UntrustedChain`]
    UntrustedChain,
    /// [`SvidError::WrongTrustDomain`]
    WrongTrustDomain,
    /// [`SvidError::UnexpectedIdentity`]
    UnexpectedIdentity,
}

impl Rule {
    /// Every rule, in a fixed order (index = `rule as usize`).
    pub const ALL: [Rule; 13] = [
        Rule::NoCertificate,
        Rule::Malformed,
        Rule::NoUriSan,
        Rule::MultipleUriSans,
        Rule::InvalidSpiffeId,
        Rule::LeafIsCa,
        Rule::KeyUsage,
        Rule::Expired,
        Rule::NotYetValid,
        Rule::SelfSigned,
        Rule::UntrustedChain,
        Rule::WrongTrustDomain,
        Rule::UnexpectedIdentity,
    ];

    /// A stable snake_case name, e.g. `"multiple_uri_sans"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NoCertificate => "no_certificate",
            Rule::Malformed => "malformed",
            Rule::NoUriSan => "no_uri_san",
            Rule::MultipleUriSans => "multiple_uri_sans",
            Rule::InvalidSpiffeId => "invalid_spiffe_id",
            Rule::LeafIsCa => "leaf_is_ca",
            Rule::KeyUsage => "key_usage",
            Rule::Expired => "expired",
            Rule::NotYetValid => "not_yet_valid",
            Rule::SelfSigned => "self_signed",
            Rule::UntrustedChain => "untrusted_chain",
            Rule::WrongTrustDomain => "wrong_trust_domain",
            Rule::UnexpectedIdentity => "unexpected_identity",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl SvidError {
    /// The rule this error reports.
    pub fn rule(&self) -> Rule {
        match self {
            SvidError::NoCertificate => Rule::NoCertificate,
            SvidError::Malformed(_) => Rule::Malformed,
            SvidError::NoUriSan => Rule::NoUriSan,
            SvidError::MultipleUriSans(_) => Rule::MultipleUriSans,
            SvidError::InvalidSpiffeId { .. } => Rule::InvalidSpiffeId,
            SvidError::LeafIsCa => Rule::LeafIsCa,
            SvidError::MissingDigitalSignature | SvidError::LeafCanSign(_) => Rule::KeyUsage,
            SvidError::Expired { .. } => Rule::Expired,
            SvidError::NotYetValid { .. } => Rule::NotYetValid,
            SvidError::SelfSigned => Rule::SelfSigned,
            SvidError::UntrustedChain(_) => Rule::UntrustedChain,
            SvidError::WrongTrustDomain { .. } => Rule::WrongTrustDomain,
            SvidError::UnexpectedIdentity { .. } => Rule::UnexpectedIdentity,
        }
    }
}

/// What a leaf X.509-SVID says, once its structural rules have been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Svid {
    /// The SPIFFE ID from the one URI SAN.
    pub id: SpiffeId,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
    /// Whether issuer and subject are equal (used to explain a chain failure).
    pub self_signed: bool,
}

impl Svid {
    /// Checks the validity window at `now`.
    pub fn check_time(&self, now: SystemTime) -> Result<(), SvidError> {
        if now < self.not_before {
            return Err(SvidError::NotYetValid {
                not_before: fmt_time(self.not_before),
                now: fmt_time(now),
            });
        }
        if now > self.not_after {
            return Err(SvidError::Expired {
                not_after: fmt_time(self.not_after),
                now: fmt_time(now),
            });
        }
        Ok(())
    }
}

/// Parses a leaf certificate and checks the structural X.509-SVID rules (one URI SAN that
/// is a SPIFFE ID, not a CA, key usage). Time, chain and identity are checked elsewhere.
///
/// ```
/// # use std::time::Duration;
/// use mesh_core::{SpiffeId, TrustDomain};
/// use mesh_tls::{dev_ca::{DevCa, IssueOptions}, svid::{parse_leaf, SvidError}};
/// let td = TrustDomain::new("cluster.local").unwrap();
/// let ca = DevCa::new(td.clone()).unwrap();
/// let id = SpiffeId::istio(&td, "default", "web").unwrap();
/// let mut opts = IssueOptions::new(&id, Duration::from_secs(60));
/// opts.uri_sans.push("spiffe://cluster.local/ns/default/sa/other".into());
/// let creds = ca.issue_with(opts).unwrap();
/// assert_eq!(parse_leaf(&creds.chain[0]), Err(SvidError::MultipleUriSans(2)));
/// ```
pub fn parse_leaf(der: &[u8]) -> Result<Svid, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Malformed(
            "trailing data after certificate".into(),
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| SvidError::Malformed(format!("subjectAltName: {e}")))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some(*u),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    let id = SpiffeId::new(uri).map_err(|e| SvidError::InvalidSpiffeId {
        uri: uri.chars().take(256).collect(),
        reason: e.to_string(),
    })?;
    let bc = cert
        .basic_constraints()
        .map_err(|e| SvidError::Malformed(format!("basicConstraints: {e}")))?;
    if bc.is_some_and(|bc| bc.value.ca) {
        return Err(SvidError::LeafIsCa);
    }
    let ku = cert
        .key_usage()
        .map_err(|e| SvidError::Malformed(format!("keyUsage: {e}")))?
        .map(|k| k.value);
    match ku {
        None => return Err(SvidError::MissingDigitalSignature),
        Some(k) if !k.digital_signature() => return Err(SvidError::MissingDigitalSignature),
        Some(k) if k.key_cert_sign() => return Err(SvidError::LeafCanSign("keyCertSign")),
        Some(k) if k.crl_sign() => return Err(SvidError::LeafCanSign("cRLSign")),
        Some(_) => {}
    }
    let validity = cert.validity();
    // Issuer == subject: with the empty subjects SVIDs use, a CA-issued leaf never matches.
    let self_signed = cert.issuer() == cert.subject();
    Ok(Svid {
        id,
        not_before: to_system_time(validity.not_before.timestamp()),
        not_after: to_system_time(validity.not_after.timestamp()),
        self_signed,
    })
}

/// Checks our own credentials before they are installed: the leaf follows the
/// X.509-SVID rules, names `creds.id`, has not expired, and `creds.key` is the private key
/// of the leaf's public key ([`TlsError::KeyMismatch`] otherwise).
pub fn check_own_credentials(creds: &Credentials) -> Result<(), TlsError> {
    let leaf = creds.chain.first().ok_or(SvidError::NoCertificate)?;
    let svid = parse_leaf(leaf)?;
    if svid.id != creds.id {
        return Err(SvidError::UnexpectedIdentity {
            id: svid.id.to_string(),
            expected: creds.id.to_string(),
        }
        .into());
    }
    let now = SystemTime::now();
    if now > svid.not_after {
        return Err(SvidError::Expired {
            not_after: fmt_time(svid.not_after),
            now: fmt_time(now),
        }
        .into());
    }
    let provider = crate::provider::default_provider();
    match rustls::sign::CertifiedKey::from_der(
        creds.chain.clone(),
        creds.key.clone_key(),
        &provider,
    ) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        Err(e) => Err(TlsError::decode("private key", e)),
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// RFC 3339 UTC, to the second.
pub(crate) fn fmt_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(dt) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        ),
        Err(_) => format!("{secs}s since the epoch"),
    }
}

#[cfg(test)]
#[cfg(feature = "dev-ca")] // certificates from the dev CA
mod tests {
    use super::*;
    use crate::dev_ca::{DevCa, IssueOptions};
    use mesh_core::TrustDomain;
    use rcgen::KeyUsagePurpose;

    fn setup() -> (DevCa, SpiffeId) {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = DevCa::new(td.clone()).unwrap();
        (ca, SpiffeId::istio(&td, "default", "web").unwrap())
    }

    fn leaf_error(ca: &DevCa, f: impl FnOnce(&mut IssueOptions)) -> SvidError {
        let mut opts = IssueOptions::new(
            &SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap(),
            Duration::from_secs(600),
        );
        f(&mut opts);
        let creds = ca.issue_with(opts).unwrap();
        parse_leaf(&creds.chain[0]).unwrap_err()
    }

    #[test]
    fn valid_svid_parses() {
        let (ca, id) = setup();
        let creds = ca.issue(&id, Duration::from_secs(600)).unwrap();
        let svid = parse_leaf(&creds.chain[0]).unwrap();
        assert_eq!(svid.id, id);
        assert!(!svid.self_signed);
        svid.check_time(SystemTime::now()).unwrap();
        check_own_credentials(&creds).unwrap();
    }

    #[test]
    fn structural_rules() {
        let (ca, _) = setup();
        assert_eq!(leaf_error(&ca, |o| o.uri_sans.clear()), SvidError::NoUriSan);
        assert_eq!(
            leaf_error(&ca, |o| o.uri_sans.push("spiffe://cluster.local/x".into())),
            SvidError::MultipleUriSans(2)
        );
        assert!(matches!(
            leaf_error(&ca, |o| o.uri_sans = vec!["https://example.com/a".into()]),
            SvidError::InvalidSpiffeId { .. }
        ));
        assert_eq!(leaf_error(&ca, |o| o.is_ca = true), SvidError::LeafIsCa);
        assert_eq!(
            leaf_error(&ca, |o| o.key_usages =
                Some(vec![KeyUsagePurpose::KeyEncipherment])),
            SvidError::MissingDigitalSignature
        );
        assert_eq!(
            leaf_error(&ca, |o| o.key_usages = Some(Vec::new())),
            SvidError::MissingDigitalSignature
        );
        assert_eq!(
            leaf_error(&ca, |o| {
                o.key_usages = Some(vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::CrlSign,
                ])
            }),
            SvidError::LeafCanSign("cRLSign")
        );
    }

    #[test]
    fn validity_window() {
        let (ca, id) = setup();
        let now = SystemTime::now();
        let mut opts = IssueOptions::new(&id, Duration::from_secs(60));
        opts.not_before = now - Duration::from_secs(7200);
        opts.not_after = now - Duration::from_secs(3600);
        let svid = parse_leaf(&ca.issue_with(opts).unwrap().chain[0]).unwrap();
        let err = svid.check_time(now).unwrap_err();
        assert_eq!(err.rule(), Rule::Expired);
        assert!(
            err.to_string().starts_with("certificate expired at "),
            "{err}"
        );

        let mut opts = IssueOptions::new(&id, Duration::from_secs(60));
        opts.not_before = now + Duration::from_secs(3600);
        opts.not_after = now + Duration::from_secs(7200);
        let svid = parse_leaf(&ca.issue_with(opts).unwrap().chain[0]).unwrap();
        assert_eq!(svid.check_time(now).unwrap_err().rule(), Rule::NotYetValid);
    }

    #[test]
    fn self_signed_is_detected() {
        let (ca, id) = setup();
        let mut opts = IssueOptions::new(&id, Duration::from_secs(60));
        opts.self_signed = true;
        let creds = ca.issue_with(opts).unwrap();
        assert!(parse_leaf(&creds.chain[0]).unwrap().self_signed);
    }

    #[test]
    fn own_credentials_key_must_match() {
        let (ca, id) = setup();
        let a = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let b = ca.issue(&id, Duration::from_secs(60)).unwrap();
        let mut mixed = a.clone();
        mixed.key = b.key.clone_key();
        assert!(matches!(
            check_own_credentials(&mixed),
            Err(TlsError::KeyMismatch)
        ));
    }

    #[test]
    fn own_credentials_must_name_their_id() {
        let (ca, id) = setup();
        let mut creds = ca.issue(&id, Duration::from_secs(60)).unwrap();
        creds.id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/other").unwrap();
        let err = check_own_credentials(&creds).unwrap_err().to_string();
        assert!(err.contains("not an expected identity"), "{err}");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert!(matches!(
            parse_leaf(b"\x30\x03\x02\x01"),
            Err(SvidError::Malformed(_))
        ));
        assert!(matches!(parse_leaf(&[]), Err(SvidError::Malformed(_))));
    }

    #[test]
    fn fmt_time_is_rfc3339() {
        assert_eq!(
            fmt_time(UNIX_EPOCH + Duration::from_secs(86400 + 61)),
            "1970-01-02T00:01:01Z"
        );
    }
}
