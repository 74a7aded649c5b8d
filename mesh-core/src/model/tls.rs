//! TLS settings carried by listeners (downstream) and clusters (upstream). Certificates are
//! never inline: they come from named certificate-provider instances (gRPC A29; Istio uses
//! instance `default` with certificate `default` and CA `ROOTCA`).

use super::matcher::StringMatcher;

/// A certificate from a certificate-provider instance named in the bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CertificateProviderInstance {
    /// Instance name, a key of the bootstrap's `certificate_providers`.
    pub instance_name: String,
    /// Certificate name within the instance (often empty or `default`/`ROOTCA`).
    pub certificate_name: String,
}

/// Which SAN type a [`SanMatcher`] inspects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SanType {
    /// Any SAN type (the legacy `match_subject_alt_names` field).
    Any,
    /// URI SANs (SPIFFE IDs).
    Uri,
    /// DNS SANs.
    Dns,
    /// Email SANs.
    Email,
    /// IP address SANs.
    IpAddress,
}

/// A subject-alternative-name matcher; the peer is accepted when any matcher matches any SAN
/// of its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SanMatcher {
    /// SAN type inspected.
    pub san_type: SanType,
    /// Matcher for the SAN's value.
    pub matcher: StringMatcher,
}

impl SanMatcher {
    /// Whether this matcher accepts a SAN of type `san_type` with `value`.
    pub fn matches(&self, san_type: SanType, value: &str) -> bool {
        (self.san_type == SanType::Any || self.san_type == san_type) && self.matcher.matches(value)
    }
}

/// How the peer's certificate is validated.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CertificateValidation {
    /// The CA bundle; `None` means the peer certificate is not verified (only meaningful on
    /// the server side when client certificates are not required).
    pub ca_certificate: Option<CertificateProviderInstance>,
    /// Expected SANs; empty accepts any SAN from a trusted chain.
    pub san_matchers: Vec<SanMatcher>,
}

impl CertificateValidation {
    /// Whether the peer's SANs (type and value; `SanType::Any` is not a SAN type here) satisfy
    /// the matchers: any matcher accepting any SAN, or no matchers at all.
    ///
    /// ```
    /// use mesh_core::model::{CertificateValidation, SanMatcher, SanType, StringMatcher};
    /// let v = CertificateValidation {
    ///     ca_certificate: None,
    ///     san_matchers: vec![SanMatcher {
    ///         san_type: SanType::Uri,
    ///         matcher: StringMatcher::Exact {
    ///             value: "spiffe://cluster.local/ns/default/sa/reviews".into(),
    ///             ignore_case: false,
    ///         },
    ///     }],
    /// };
    /// assert!(v.accepts_sans(&[(SanType::Uri, "spiffe://cluster.local/ns/default/sa/reviews")]));
    /// assert!(!v.accepts_sans(&[(SanType::Dns, "spiffe://cluster.local/ns/default/sa/reviews")]));
    /// ```
    pub fn accepts_sans(&self, sans: &[(SanType, &str)]) -> bool {
        self.san_matchers.is_empty()
            || self
                .san_matchers
                .iter()
                .any(|m| sans.iter().any(|(t, v)| m.matches(*t, v)))
    }
}

/// Client-side (upstream) TLS for a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// SNI to send.
    pub sni: Option<String>,
    /// Our certificate (mTLS); `None` for plain TLS.
    pub identity_certificate: Option<CertificateProviderInstance>,
    /// How the server's certificate is verified.
    pub validation: CertificateValidation,
    /// ALPN protocols to offer.
    pub alpn_protocols: Vec<String>,
    /// Narrowing of versions, cipher suites and key-exchange groups offered.
    pub params: TlsParams,
}

/// Server-side (downstream) TLS for a filter chain.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DownstreamTls {
    /// Our certificate (required for a TLS server).
    pub identity_certificate: CertificateProviderInstance,
    /// How client certificates are validated.
    pub validation: CertificateValidation,
    /// Reject clients that present no certificate (STRICT mTLS).
    pub require_client_certificate: bool,
    /// ALPN protocols to accept.
    pub alpn_protocols: Vec<String>,
    /// Narrowing of versions, cipher suites and key-exchange groups accepted.
    pub params: TlsParams,
}

/// A TLS version a [`TlsParams`] range can name: rustls implements only these two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

/// TLS 1.2 cipher suites (their Envoy/BoringSSL names) that mesh-tls implements: the
/// ECDHE AEAD suites. TLS 1.3 suites are not configurable (as in Envoy).
pub const TLS12_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

/// Key-exchange groups (Envoy's `ecdh_curves` names) that mesh-tls implements.
pub const ECDH_CURVES: &[&str] = &["X25519", "P-256", "P-384"];

/// What a TLS handshake may use (Envoy's `CommonTlsContext.tls_params`): the offer is
/// narrowed to these, never widened beyond what the crypto provider implements. Empty
/// fields leave the provider's defaults (TLS 1.2 and 1.3, all its suites and groups).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TlsParams {
    /// Lowest version offered (`None`: TLS 1.2).
    pub min_version: Option<TlsVersion>,
    /// Highest version offered (`None`: TLS 1.3).
    pub max_version: Option<TlsVersion>,
    /// TLS 1.2 suites, names from [`TLS12_CIPHER_SUITES`], most preferred first.
    pub cipher_suites: Vec<String>,
    /// Key-exchange groups, names from [`ECDH_CURVES`], most preferred first.
    pub ecdh_curves: Vec<String>,
}

impl TlsParams {
    /// Whether `version` lies in the range.
    pub fn allows(&self, version: TlsVersion) -> bool {
        self.min_version.is_none_or(|m| m <= version)
            && self.max_version.is_none_or(|m| version <= m)
    }
}
