//! SPIFFE certificate verifiers for rustls: chain to the trust bundle with webpki, then the
//! X.509-SVID rules ([`crate::svid`]), the allowed trust domains and the expected identities.
//! The server name dialled is ignored: a SPIFFE peer is authenticated by its URI SAN, and
//! other SANs (DNS, IP, email) count only when a [`PeerPolicy`] SAN matcher names them.
//!
//! Every rejection is counted per [`Rule`] in a shared [`VerifyStats`] and surfaces as
//! `rustls::Error::InvalidCertificate(CertificateError::Other(..))` wrapping the
//! [`SvidError`], which [`rejection`] recovers for a readable message.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use mesh_core::model::SanMatcher;
use mesh_core::{SpiffeId, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};

use crate::TlsError;
use crate::san;
use crate::svid::{Rule, SvidError, parse_leaf};

/// Which peers to accept.
///
/// - `identities` or `san_matchers` non-empty: the peer's SPIFFE ID must be one of the
///   identities, or one of the matchers must accept one of its SANs (a client checking the
///   server it dialled: the SAN matchers of an xDS cluster, as Envoy applies them).
/// - otherwise any identity of an allowed trust domain is accepted.
/// - `trust_domains` empty means: our own trust domain (plus those of `identities`).
///
/// The peer is an X.509-SVID of an allowed trust domain in every case: SAN matchers narrow
/// the accepted peers, never widen them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Exact SPIFFE IDs to accept; empty = any identity of an allowed trust domain.
    pub identities: Vec<SpiffeId>,
    /// Trust domains to accept; empty = our own.
    pub trust_domains: Vec<TrustDomain>,
    /// Envoy SAN matchers (prefix, regex, DNS, IP...); any one accepting any SAN of the
    /// peer's certificate accepts it, as an identity of `identities` does.
    pub san_matchers: Vec<SanMatcher>,
}

impl PeerPolicy {
    /// Accept exactly these identities.
    pub fn identities(ids: impl IntoIterator<Item = SpiffeId>) -> Self {
        Self {
            identities: ids.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Accept any identity of these trust domains.
    pub fn trust_domains(tds: impl IntoIterator<Item = TrustDomain>) -> Self {
        Self {
            trust_domains: tds.into_iter().collect(),
            ..Self::default()
        }
    }

    /// Also accept peers with a SAN one of `matchers` accepts.
    pub fn with_san_matchers(mut self, matchers: impl IntoIterator<Item = SanMatcher>) -> Self {
        self.san_matchers.extend(matchers);
        self
    }

    /// The trust domains accepted when our own is `own`.
    fn allowed_trust_domains(&self, own: &TrustDomain) -> Vec<TrustDomain> {
        let mut tds = self.trust_domains.clone();
        if tds.is_empty() {
            tds.push(own.clone());
            tds.extend(self.identities.iter().map(SpiffeId::trust_domain));
        }
        tds.sort();
        tds.dedup();
        tds
    }
}

/// Counters of verification outcomes, per broken rule. Shared (`Arc`) by every verifier
/// built from one acceptor or connector; read them for telemetry.
#[derive(Debug, Default)]
pub struct VerifyStats {
    accepted: AtomicU64,
    rejected: [AtomicU64; Rule::ALL.len()],
}

impl VerifyStats {
    /// New zeroed counters.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Peers accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Peers rejected for `rule` so far.
    pub fn rejected(&self, rule: Rule) -> u64 {
        self.rejected[rule as usize].load(Ordering::Relaxed)
    }

    /// Rejections so far, all rules.
    pub fn rejected_total(&self) -> u64 {
        Rule::ALL.iter().map(|r| self.rejected(*r)).sum()
    }

    /// Every rule with its rejection count.
    pub fn snapshot(&self) -> Vec<(Rule, u64)> {
        Rule::ALL.iter().map(|r| (*r, self.rejected(*r))).collect()
    }

    /// Counts a rejection decided outside the verifiers (e.g. no client certificate).
    pub(crate) fn record_rejection(&self, rule: Rule) {
        self.rejected[rule as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn record(&self, result: &Result<SpiffeId, SvidError>) {
        match result {
            Ok(_) => self.accepted.fetch_add(1, Ordering::Relaxed),
            Err(e) => self.rejected[e.rule() as usize].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The SPIFFE rules shared by both verifiers.
#[derive(Debug)]
struct SpiffeRules {
    anchors: Vec<TrustAnchor<'static>>,
    allowed: Vec<TrustDomain>,
    identities: Vec<SpiffeId>,
    san_matchers: Vec<SanMatcher>,
    algs: WebPkiSupportedAlgorithms,
    stats: Arc<VerifyStats>,
}

impl SpiffeRules {
    fn new(
        roots: &[CertificateDer<'static>],
        own: &TrustDomain,
        policy: &PeerPolicy,
        provider: &CryptoProvider,
        stats: Arc<VerifyStats>,
    ) -> Result<Self, TlsError> {
        let anchors = roots
            .iter()
            .map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .map(|a| a.to_owned())
                    .map_err(|e| TlsError::decode("trust bundle root", format!("{e:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if anchors.is_empty() {
            return Err(TlsError::NoIdentity("the trust bundle is empty".into()));
        }
        Ok(Self {
            anchors,
            allowed: policy.allowed_trust_domains(own),
            identities: policy.identities.clone(),
            san_matchers: policy.san_matchers.clone(),
            algs: provider.signature_verification_algorithms,
            stats,
        })
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, rustls::Error> {
        let result = self.check(end_entity, intermediates, now, usage);
        self.stats.record(&result);
        result.map_err(|e| {
            tracing::debug!(rule = %e.rule(), error = %e, "peer certificate rejected");
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<SpiffeId, SvidError> {
        let svid = parse_leaf(end_entity)?;
        svid.check_time(UNIX_EPOCH + Duration::from_secs(now.as_secs()))?;
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| SvidError::Malformed(format!("{e:?}")))?;
        if let Err(e) = cert.verify_for_usage(
            self.algs.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        ) {
            return Err(match e {
                webpki::Error::UnknownIssuer if svid.self_signed => SvidError::SelfSigned,
                webpki::Error::UnknownIssuer => SvidError::UntrustedChain(
                    "issuer is not in the trust bundle (unknown or untrusted root)".into(),
                ),
                // Same issuer name as a trusted CA, different key: another root.
                webpki::Error::InvalidSignatureForPublicKey => SvidError::UntrustedChain(
                    "signed by a key that is not in the trust bundle (untrusted root)".into(),
                ),
                other => SvidError::UntrustedChain(format!("{other:?}")),
            });
        }
        if !self
            .allowed
            .iter()
            .any(|td| td.as_str() == svid.id.trust_domain_str())
        {
            return Err(SvidError::WrongTrustDomain {
                id: svid.id.to_string(),
                got: svid.id.trust_domain_str().to_string(),
                allowed: join(&self.allowed),
            });
        }
        if (self.identities.is_empty() && self.san_matchers.is_empty())
            || self.identities.contains(&svid.id)
            || self.san_accepted(end_entity)?
        {
            return Ok(svid.id);
        }
        let mut expected: Vec<String> = self.identities.iter().map(ToString::to_string).collect();
        expected.extend(self.san_matchers.iter().map(san::describe));
        Err(SvidError::UnexpectedIdentity {
            id: svid.id.to_string(),
            expected: expected.join(", "),
        })
    }

    /// Whether a SAN matcher accepts one of the certificate's SANs.
    fn san_accepted(&self, end_entity: &CertificateDer<'_>) -> Result<bool, SvidError> {
        if self.san_matchers.is_empty() {
            return Ok(false);
        }
        let sans = san::subject_alt_names(end_entity)?;
        Ok(self
            .san_matchers
            .iter()
            .any(|m| sans.iter().any(|(ty, v)| san::matches(m, *ty, v))))
    }

    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verifies a server's certificate for our client: chain, SVID rules, [`PeerPolicy`].
/// The server name the client dialled is ignored.
#[derive(Debug)]
pub struct SpiffeServerVerifier(SpiffeRules);

impl SpiffeServerVerifier {
    /// A verifier trusting `roots`, for a client whose own trust domain is `own`.
    pub fn new(
        roots: &[CertificateDer<'static>],
        own: &TrustDomain,
        policy: &PeerPolicy,
        provider: &CryptoProvider,
        stats: Arc<VerifyStats>,
    ) -> Result<Self, TlsError> {
        SpiffeRules::new(roots, own, policy, provider, stats).map(Self)
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify(
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::server_auth(),
            )
            .map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algs.supported_schemes()
    }
}

/// Verifies a client's certificate for our server: a client certificate is mandatory,
/// then chain, SVID rules and [`PeerPolicy`].
#[derive(Debug)]
pub struct SpiffeClientVerifier(SpiffeRules);

impl SpiffeClientVerifier {
    /// A verifier trusting `roots`, for a server whose own trust domain is `own`.
    pub fn new(
        roots: &[CertificateDer<'static>],
        own: &TrustDomain,
        policy: &PeerPolicy,
        provider: &CryptoProvider,
        stats: Arc<VerifyStats>,
    ) -> Result<Self, TlsError> {
        SpiffeRules::new(roots, own, policy, provider, stats).map(Self)
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // SVID clients have exactly one certificate; hints would only leak the bundle.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify(
                end_entity,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
            )
            .map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.algs.supported_schemes()
    }
}

/// The SVID rule behind a rustls error, if a SPIFFE verifier produced it.
pub fn rejection(err: &rustls::Error) -> Option<&SvidError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(e))) => {
            e.downcast_ref::<SvidError>()
        }
        _ => None,
    }
}

/// Turns a handshake I/O error into a [`TlsError`] that names the broken rule when a
/// SPIFFE verifier rejected the peer.
pub fn handshake_error(err: std::io::Error) -> TlsError {
    if let Some(rustls_err) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        if let Some(svid) = rejection(rustls_err) {
            return TlsError::Rejected(svid.clone());
        }
        return TlsError::Rustls(rustls_err.clone());
    }
    TlsError::Handshake(err.to_string())
}

#[cfg(test)]
#[cfg(feature = "dev-ca")] // certificates from the dev CA
mod tests {
    use super::*;
    use crate::dev_ca::{DevCa, IssueOptions};

    /// The current time as rustls wants it (for verifier tests).
    fn unix_now() -> UnixTime {
        use std::time::SystemTime;
        UnixTime::since_unix_epoch(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        )
    }

    fn td() -> TrustDomain {
        TrustDomain::new("cluster.local").unwrap()
    }

    #[test]
    fn server_verifier_checks_identity_and_counts() {
        let ca = DevCa::with_intermediate(td()).unwrap();
        let web = SpiffeId::istio(&td(), "default", "web").unwrap();
        let db = SpiffeId::istio(&td(), "default", "db").unwrap();
        let stats = VerifyStats::new();
        let v = SpiffeServerVerifier::new(
            &[ca.root_der()],
            &td(),
            &PeerPolicy::identities([db.clone()]),
            &crate::config::default_provider(),
            stats.clone(),
        )
        .unwrap();
        let name = ServerName::try_from("anything.example").unwrap();
        let good = ca.issue(&db, Duration::from_secs(60)).unwrap();
        v.verify_server_cert(&good.chain[0], &good.chain[1..], &name, &[], unix_now())
            .unwrap();
        let bad = ca.issue(&web, Duration::from_secs(60)).unwrap();
        let err = v
            .verify_server_cert(&bad.chain[0], &bad.chain[1..], &name, &[], unix_now())
            .unwrap_err();
        assert_eq!(
            rejection(&err).map(SvidError::rule),
            Some(Rule::UnexpectedIdentity)
        );
        assert_eq!(stats.accepted(), 1);
        assert_eq!(stats.rejected(Rule::UnexpectedIdentity), 1);
        assert_eq!(stats.rejected_total(), 1);
    }

    #[test]
    fn chain_without_intermediate_is_untrusted() {
        let ca = DevCa::with_intermediate(td()).unwrap();
        let web = SpiffeId::istio(&td(), "default", "web").unwrap();
        let v = SpiffeClientVerifier::new(
            &[ca.root_der()],
            &td(),
            &PeerPolicy::default(),
            &crate::config::default_provider(),
            VerifyStats::new(),
        )
        .unwrap();
        let c = ca.issue(&web, Duration::from_secs(60)).unwrap();
        v.verify_client_cert(&c.chain[0], &c.chain[1..], unix_now())
            .unwrap();
        let err = v
            .verify_client_cert(&c.chain[0], &[], unix_now())
            .unwrap_err();
        assert_eq!(
            rejection(&err).map(SvidError::rule),
            Some(Rule::UntrustedChain)
        );
    }

    #[test]
    fn policy_trust_domains() {
        let own = td();
        let other = TrustDomain::new("other.org").unwrap();
        assert_eq!(
            PeerPolicy::default().allowed_trust_domains(&own),
            vec![own.clone()]
        );
        let id = SpiffeId::istio(&other, "a", "b").unwrap();
        assert_eq!(
            PeerPolicy::identities([id]).allowed_trust_domains(&own),
            vec![own.clone(), other.clone()]
        );
        assert_eq!(
            PeerPolicy::trust_domains([other.clone()]).allowed_trust_domains(&own),
            vec![other]
        );
    }

    #[test]
    fn empty_bundle_is_refused() {
        let err = SpiffeServerVerifier::new(
            &[],
            &td(),
            &PeerPolicy::default(),
            &crate::config::default_provider(),
            VerifyStats::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("trust bundle is empty"), "{err}");
    }

    #[test]
    fn wrong_trust_domain_from_a_trusted_ca() {
        let ca = DevCa::new(td()).unwrap();
        let foreign = SpiffeId::new("spiffe://evil.org/ns/default/sa/web").unwrap();
        let c = ca
            .issue_with(IssueOptions::new(&foreign, Duration::from_secs(60)))
            .unwrap();
        let v = SpiffeClientVerifier::new(
            &[ca.root_der()],
            &td(),
            &PeerPolicy::default(),
            &crate::config::default_provider(),
            VerifyStats::new(),
        )
        .unwrap();
        let err = v
            .verify_client_cert(&c.chain[0], &[], unix_now())
            .unwrap_err();
        let svid = rejection(&err).unwrap();
        assert_eq!(svid.rule(), Rule::WrongTrustDomain);
        assert!(svid.to_string().contains("evil.org"), "{svid}");
    }
}
