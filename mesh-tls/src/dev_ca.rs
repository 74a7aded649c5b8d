//! [`DevCa`]: an in-process certificate authority for development and tests.
//!
//! It issues Istio-style X.509-SVIDs (ECDSA P-256, empty subject, one critical URI SAN,
//! `digitalSignature | keyEncipherment`, `serverAuth + clientAuth`, not a CA), signs CSRs for
//! an *authenticated* identity (the CSR's own SAN is ignored, as istiod does), and can mint
//! deliberately broken certificates through [`DevCa::issue_with`] so tests can check that
//! verifiers reject them.
//!
//! ```
//! use std::time::Duration;
//! use mesh_core::{SpiffeId, TrustDomain};
//! use mesh_tls::dev_ca::DevCa;
//!
//! let td = TrustDomain::new("cluster.local").unwrap();
//! let ca = DevCa::new(td.clone()).unwrap();
//! let id = SpiffeId::istio(&td, "default", "web").unwrap();
//! let creds = ca.issue(&id, Duration::from_secs(3600)).unwrap();
//! assert_eq!(creds.id, id);
//! assert_eq!(creds.roots, vec![ca.root_der()]);
//! ```

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Credentials, TlsError};

/// How far in the past issued certificates start, to tolerate small clock skew between
/// peers (Istio backdates by a similar amount).
const BACKDATE: Duration = Duration::from_secs(60);
/// Lifetime of a generated root or intermediate.
const CA_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// File names of Istio's `ROOT_CA_DIR` / plugged-in CA layout.
pub mod files {
    /// The signing certificate (the root itself, or the intermediate).
    pub const CA_CERT: &str = "ca-cert.pem";
    /// The signing key (PKCS#8 PEM).
    pub const CA_KEY: &str = "ca-key.pem";
    /// The root certificate.
    pub const ROOT_CERT: &str = "root-cert.pem";
    /// The signing certificate followed by the chain up to and including the root.
    pub const CERT_CHAIN: &str = "cert-chain.pem";
}

/// A certificate authority for one trust domain, held in memory.
pub struct DevCa {
    trust_domain: TrustDomain,
    root: CertificateDer<'static>,
    /// Certificates between a leaf and the root, nearest to the leaf first (empty when the
    /// root signs directly).
    intermediates: Vec<CertificateDer<'static>>,
    signer: Issuer<'static, KeyPair>,
    signer_cert: CertificateDer<'static>,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa")
            .field("trust_domain", &self.trust_domain)
            .field("intermediates", &self.intermediates.len())
            .finish_non_exhaustive()
    }
}

/// Everything [`DevCa::issue_with`] puts into a leaf certificate. Start from
/// [`IssueOptions::new`] (a valid SVID) and break what the test needs broken.
#[derive(Clone, Debug)]
pub struct IssueOptions {
    /// The identity recorded in the returned [`Credentials::id`] (not necessarily in the
    /// certificate: see `uri_sans`).
    pub id: SpiffeId,
    /// URI SANs written into the certificate, verbatim.
    pub uri_sans: Vec<String>,
    /// DNS SANs written into the certificate.
    pub dns_sans: Vec<String>,
    /// IP SANs written into the certificate.
    pub ip_sans: Vec<std::net::IpAddr>,
    /// Validity start.
    pub not_before: SystemTime,
    /// Validity end.
    pub not_after: SystemTime,
    /// Mark the leaf as a CA (`basicConstraints CA=true`, `keyCertSign`).
    pub is_ca: bool,
    /// Key usages; `None` means the SVID default (`digitalSignature | keyEncipherment`).
    pub key_usages: Option<Vec<KeyUsagePurpose>>,
    /// Sign the leaf with its own key instead of the CA's.
    pub self_signed: bool,
}

impl IssueOptions {
    /// Options for a valid SVID for `id`, valid from a minute ago for `ttl`.
    pub fn new(id: &SpiffeId, ttl: Duration) -> Self {
        let now = SystemTime::now();
        Self {
            id: id.clone(),
            uri_sans: vec![id.to_string()],
            dns_sans: Vec::new(),
            ip_sans: Vec::new(),
            not_before: now - BACKDATE,
            not_after: now + ttl,
            is_ca: false,
            key_usages: None,
            self_signed: false,
        }
    }
}

impl DevCa {
    /// A CA whose self-signed ECDSA P-256 root signs leaves directly.
    pub fn new(trust_domain: TrustDomain) -> Result<Self, TlsError> {
        let (root_params, root_key) = ca_params(&trust_domain, "root", None)?;
        let root = root_params.self_signed(&root_key).map_err(rcgen_err)?;
        let root_der = root.der().clone();
        Ok(Self {
            trust_domain,
            signer_cert: root_der.clone(),
            root: root_der,
            intermediates: Vec::new(),
            signer: Issuer::new(root_params, root_key),
        })
    }

    /// A CA with a root and one intermediate; leaves are signed by the intermediate and
    /// their chain carries it.
    pub fn with_intermediate(trust_domain: TrustDomain) -> Result<Self, TlsError> {
        let (root_params, root_key) = ca_params(&trust_domain, "root", None)?;
        let root = root_params.self_signed(&root_key).map_err(rcgen_err)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let (int_params, int_key) = ca_params(&trust_domain, "intermediate", Some(0))?;
        let int = int_params
            .signed_by(&int_key, &root_issuer)
            .map_err(rcgen_err)?;
        Ok(Self {
            trust_domain,
            root: root.der().clone(),
            intermediates: vec![int.der().clone()],
            signer_cert: int.der().clone(),
            signer: Issuer::new(int_params, int_key),
        })
    }

    /// The trust domain this CA issues for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The root certificate (DER).
    pub fn root_der(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// The root certificate (PEM).
    pub fn root_pem(&self) -> String {
        pem("CERTIFICATE", &self.root)
    }

    /// Issues a valid X.509-SVID for `id`, valid for `ttl` (from a minute ago).
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<Credentials, TlsError> {
        self.issue_with(IssueOptions::new(id, ttl))
    }

    /// Issues a certificate exactly as `opts` describes, valid or not. The result is NOT
    /// checked against the SVID rules: this is how tests mint bad certificates.
    pub fn issue_with(&self, opts: IssueOptions) -> Result<Credentials, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
        let params = leaf_params(&opts)?;
        let cert = if opts.self_signed {
            params.self_signed(&key)
        } else {
            params.signed_by(&key, &self.signer)
        }
        .map_err(rcgen_err)?;
        let mut chain = vec![cert.der().clone()];
        if !opts.self_signed {
            chain.extend(self.intermediates.iter().cloned());
        }
        Ok(Credentials {
            id: opts.id,
            chain,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            roots: vec![self.root.clone()],
            not_before: truncate_to_secs(opts.not_before),
            not_after: truncate_to_secs(opts.not_after),
        })
    }

    /// Signs a PEM CSR for `authenticated`, the identity the caller proved (client
    /// certificate or token). Only the CSR's public key is used: its subject and SANs are
    /// ignored, so a caller cannot obtain an identity it did not authenticate as.
    ///
    /// Returns the PEM chain, leaf first, root last (the `cert_chain` of Istio's
    /// `IstioCertificateResponse`).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::decode("certificate signing request", e))?;
        let params = leaf_params(&IssueOptions::new(authenticated, ttl))?;
        let cert = params
            .signed_by(&csr.public_key, &self.signer)
            .map_err(rcgen_err)?;
        let mut out = vec![cert.pem()];
        out.extend(self.intermediates.iter().map(|c| pem("CERTIFICATE", c)));
        out.push(self.root_pem());
        Ok(out)
    }

    /// Writes the CA in Istio's `ROOT_CA_DIR` layout (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`), so istiod can sign with the same CA.
    ///
    /// `dir` is created owner-only (0700) if missing; each file is written atomically (temp
    /// file, fsync, rename) and the key, owner-only (0600), last: a directory with a key
    /// holds a whole CA, so a crash midway leaves no key beside foreign certificates.
    pub fn save(&self, dir: &Path) -> Result<(), TlsError> {
        crate::secret_file::create_private_dir(dir)?;
        let write = |name: &str, contents: &str, private: bool| {
            crate::secret_file::write_atomic(&dir.join(name), contents.as_bytes(), private)
        };
        let mut chain = pem("CERTIFICATE", &self.signer_cert);
        for c in self.intermediates.iter().skip(1) {
            chain.push_str(&pem("CERTIFICATE", c));
        }
        if !self.intermediates.is_empty() {
            chain.push_str(&self.root_pem());
        }
        write(
            files::CA_CERT,
            &pem("CERTIFICATE", &self.signer_cert),
            false,
        )?;
        write(files::ROOT_CERT, &self.root_pem(), false)?;
        write(files::CERT_CHAIN, &chain, false)?;
        let key = zeroize::Zeroizing::new(self.signer.key().serialize_pem());
        write(files::CA_KEY, &key, true)
    }

    /// Loads a CA saved by [`save`](Self::save) (or any Istio plugged-in CA directory with
    /// an ECDSA P-256 or other rcgen-supported key). The key file must be owner-only (no
    /// group or other permission bits): anything else is refused, naming the file.
    pub fn load(dir: &Path, trust_domain: TrustDomain) -> Result<Self, TlsError> {
        crate::secret_file::check_private(&dir.join(files::CA_KEY))?;
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|s| (path.display().to_string(), s))
                .map_err(|source| TlsError::Io {
                    path: path.display().to_string(),
                    source,
                })
        };
        let (key_path, key_pem) = read(files::CA_KEY)?;
        let key_pem = zeroize::Zeroizing::new(key_pem);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| TlsError::decode(&key_path, e))?;
        let (cert_path, cert_pem) = read(files::CA_CERT)?;
        let signer_cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::decode(&cert_path, e))?;
        let (root_path, root_pem) = read(files::ROOT_CERT)?;
        let root = CertificateDer::from_pem_slice(root_pem.as_bytes())
            .map_err(|e| TlsError::decode(&root_path, e))?;
        let (chain_path, chain_pem) = read(files::CERT_CHAIN)?;
        let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::decode(&chain_path, e))?;
        let signer = Issuer::from_ca_cert_der(&signer_cert, key)
            .map_err(|e| TlsError::decode(&cert_path, e))?;
        // Intermediates: the chain minus the root (a root-signed CA has none).
        let intermediates = if signer_cert == root {
            Vec::new()
        } else {
            chain.into_iter().filter(|c| *c != root).collect()
        };
        Ok(Self {
            trust_domain,
            root,
            intermediates,
            signer,
            signer_cert,
        })
    }
}

fn ca_params(
    td: &TrustDomain,
    role: &str,
    path_len: Option<u8>,
) -> Result<(CertificateParams, KeyPair), TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(rcgen_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, td.as_str());
    dn.push(DnType::CommonName, format!("mesh dev CA {role}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + CA_TTL).into();
    params.serial_number = Some(random_serial());
    Ok((params, key))
}

fn leaf_params(opts: &IssueOptions) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    // Empty subject: the identity lives only in the (then critical) URI SAN.
    params.distinguished_name = DistinguishedName::new();
    let mut sans = Vec::new();
    for uri in &opts.uri_sans {
        let v = uri
            .clone()
            .try_into()
            .map_err(|e| TlsError::Other(format!("URI SAN {uri:?}: {e}")))?;
        sans.push(SanType::URI(v));
    }
    for dns in &opts.dns_sans {
        let v = dns
            .clone()
            .try_into()
            .map_err(|e| TlsError::Other(format!("DNS SAN {dns:?}: {e}")))?;
        sans.push(SanType::DnsName(v));
    }
    sans.extend(opts.ip_sans.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.is_ca = if opts.is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.key_usages = match &opts.key_usages {
        Some(k) => k.clone(),
        None if opts.is_ca => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ],
        None => vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ],
    };
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.not_before = opts.not_before.into();
    params.not_after = opts.not_after.into();
    params.serial_number = Some(random_serial());
    Ok(params)
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive INTEGER
    bytes[0] |= 0x01; // no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

fn truncate_to_secs(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// PEM-encodes one DER object (LF line endings).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    ::pem::encode_config(
        &::pem::Pem::new(label, der),
        ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF),
    )
}

fn rcgen_err(e: rcgen::Error) -> TlsError {
    TlsError::Other(format!("certificate generation: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn td() -> TrustDomain {
        TrustDomain::new("cluster.local").unwrap()
    }

    #[test]
    fn issued_leaf_is_an_istio_style_svid() {
        let ca = DevCa::new(td()).unwrap();
        let id = SpiffeId::istio(&td(), "default", "web").unwrap();
        let creds = ca.issue(&id, Duration::from_secs(600)).unwrap();
        let (_, cert) = X509Certificate::from_der(&creds.chain[0]).unwrap();
        assert!(
            cert.subject().iter().next().is_none(),
            "subject must be empty"
        );
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert!(san.critical, "SAN must be critical with an empty subject");
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://cluster.local/ns/default/sa/web")]
        );
        let bc = cert.basic_constraints().unwrap().unwrap();
        assert!(!bc.value.ca);
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(cert.validity().is_valid());
        crate::svid::check_own_credentials(&creds).unwrap();
    }

    #[test]
    fn pem_matches_rcgen() {
        let (params, key) = ca_params(&td(), "root", None).unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            pem("CERTIFICATE", cert.der()),
            cert.pem().replace("\r\n", "\n")
        );
    }

    #[test]
    fn sign_csr_ignores_the_requested_san() {
        let ca = DevCa::with_intermediate(td()).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .to_string()
                .try_into()
                .unwrap(),
        )];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let caller = SpiffeId::istio(&td(), "default", "web").unwrap();
        let chain = ca.sign_csr(&csr, &caller, Duration::from_secs(60)).unwrap();
        assert_eq!(chain.len(), 3, "leaf, intermediate, root");
        let leaf = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
        let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            san.value.general_names,
            vec![GeneralName::URI("spiffe://cluster.local/ns/default/sa/web")]
        );
        use rcgen::PublicKeyData;
        assert_eq!(cert.public_key().raw, key.subject_public_key_info());
        assert_eq!(chain[2], ca.root_pem());
    }

    #[test]
    fn save_and_load_round_trip() {
        for ca in [
            DevCa::new(td()).unwrap(),
            DevCa::with_intermediate(td()).unwrap(),
        ] {
            let dir = tempfile::tempdir().unwrap();
            ca.save(dir.path()).unwrap();
            let loaded = DevCa::load(dir.path(), td()).unwrap();
            assert_eq!(loaded.root_der(), ca.root_der());
            assert_eq!(loaded.intermediates, ca.intermediates);
            let id = SpiffeId::istio(&td(), "default", "web").unwrap();
            let creds = loaded.issue(&id, Duration::from_secs(60)).unwrap();
            crate::svid::check_own_credentials(&creds).unwrap();
        }
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = DevCa::load(dir.path(), td()).unwrap_err().to_string();
        assert!(err.contains("ca-key.pem"), "{err}");
    }
}
