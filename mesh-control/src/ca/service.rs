//! [`IstioCaService`]: the `istio.v1.auth.IstioCertificateService` gRPC service. It
//! authenticates each caller (client certificate from [`CaPeer`], else a bootstrap bearer
//! token), refuses a CSR for any other identity, and has a [`CaSigner`] sign it.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::TlsError;
use mesh_tls::ca::istio_proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, SERVICE_NAME,
};
use mesh_tls::dev_ca::DevCa;
use rcgen::CertificateSigningRequestParams;
use tonic::server::NamedService;
use tonic::{Code, Status};

use super::incoming::CaPeer;

/// Signs certificate requests for an authenticated identity. [`DevCa`] is one; a test can
/// plug a misbehaving one, a deployment an external CA.
pub trait CaSigner: Send + Sync + 'static {
    /// Signs `csr_pem` for `authenticated`, valid for `ttl`; returns the PEM chain, leaf
    /// first, root last.
    fn sign(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, TlsError>;
}

impl CaSigner for DevCa {
    fn sign(
        &self,
        csr_pem: &str,
        authenticated: &SpiffeId,
        ttl: Duration,
    ) -> Result<Vec<String>, TlsError> {
        self.sign_csr(csr_pem, authenticated, ttl)
    }
}

/// A bootstrap token and the identity it proves.
#[derive(Clone)]
pub(super) enum Token {
    Value(Vec<u8>, SpiffeId),
    /// Read at every request, so the file can be rotated.
    File(PathBuf, SpiffeId),
}

/// What the service needs from [`IstioCaServer`](super::IstioCaServer)'s settings.
pub(super) struct ServiceInner {
    pub(super) signer: Arc<dyn CaSigner>,
    pub(super) tokens: Vec<Token>,
    /// Set when unauthenticated callers are signed (`--ca-open`): the only trust domain
    /// they may ask for.
    pub(super) open: Option<TrustDomain>,
    pub(super) default_ttl: Duration,
    pub(super) max_ttl: Duration,
}

/// The `istio.v1.auth.IstioCertificateService` gRPC service, hand-written (what
/// tonic-build would generate). It authenticates callers from the [`CaPeer`] that
/// [`CaIncoming`](super::CaIncoming) attaches to each connection, and from bearer tokens.
#[derive(Clone)]
pub struct IstioCaService {
    inner: Arc<ServiceInner>,
}

impl IstioCaService {
    pub(super) fn new(inner: ServiceInner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }
}

impl std::fmt::Debug for IstioCaService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioCaService").finish_non_exhaustive()
    }
}

impl NamedService for IstioCaService {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower::Service<http::Request<tonic::body::Body>> for IstioCaService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if req.uri().path() != CREATE_CERTIFICATE_PATH {
            let status = Status::unimplemented(format!("unknown method {}", req.uri().path()));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let unary = CreateCertificate(self.inner.clone());
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<
                IstioCertificateResponse,
                IstioCertificateRequest,
            >::default();
            Ok(tonic::server::Grpc::new(codec).unary(unary, req).await)
        })
    }
}

struct CreateCertificate(Arc<ServiceInner>);

impl tonic::server::UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<'static, Result<tonic::Response<IstioCertificateResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<IstioCertificateRequest>) -> Self::Future {
        let inner = self.0.clone();
        let remote = request.extensions().get::<CaPeer>().map(|p| p.remote);
        Box::pin(async move {
            let result = inner.create_certificate(request).await;
            // A refused CSR leaves the workload without an identity: say why here too, not
            // only to the caller (which may not log it).
            if let Err(status) = &result {
                tracing::warn!(?remote, code = ?status.code(), reason = status.message(), "refused a certificate request");
            }
            result
        })
    }
}

impl ServiceInner {
    async fn create_certificate(
        &self,
        request: tonic::Request<IstioCertificateRequest>,
    ) -> Result<tonic::Response<IstioCertificateResponse>, Status> {
        let csr_ids = csr_identities(&request.get_ref().csr)?;
        let authenticated = match self.authenticate(&request).await? {
            Some(id) => id,
            None => match &self.open {
                Some(trust_domain) => open_identity(&csr_ids, trust_domain)?,
                None => {
                    return Err(Status::unauthenticated(
                        "no client certificate and no bearer token: the CA signs only for authenticated callers",
                    ));
                }
            },
        };
        // Sign only what the caller proved; never believe the CSR's SAN.
        if let Some(other) = csr_ids.iter().find(|u| *u != authenticated.as_str()) {
            return Err(Status::permission_denied(format!(
                "CSR asks for {other} but the caller authenticated as {authenticated}"
            )));
        }
        let remote = request.extensions().get::<CaPeer>().map(|p| p.remote);
        let req = request.into_inner();
        let ttl = match u64::try_from(req.validity_duration) {
            Ok(0) | Err(_) => self.default_ttl,
            Ok(secs) => Duration::from_secs(secs).min(self.max_ttl),
        };
        let chain = self
            .signer
            .sign(&req.csr, &authenticated, ttl)
            .map_err(|e| match e {
                TlsError::Decode { .. } => Status::invalid_argument(e.to_string()),
                other => Status::internal(format!("signing failed: {other}")),
            })?;
        tracing::info!(id = %authenticated, ?ttl, ?remote, "issued workload certificate");
        Ok(tonic::Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }

    /// The identity the caller proved: client certificate first, then bearer token.
    async fn authenticate(
        &self,
        request: &tonic::Request<IstioCertificateRequest>,
    ) -> Result<Option<SpiffeId>, Status> {
        match request.extensions().get::<CaPeer>().map(|p| &p.peer) {
            Some(Ok(Some(id))) => return Ok(Some(id.clone())),
            Some(Err(why)) => return Err(Status::unauthenticated(why.clone())),
            _ => {}
        }
        let Some(header) = request.metadata().get("authorization") else {
            return Ok(None);
        };
        let presented = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated("authorization header is not `Bearer <token>`")
            })?;
        if presented.is_empty() {
            return Err(Status::unauthenticated("empty bearer token"));
        }
        let mut matched: Option<SpiffeId> = None;
        // Compare against every token so timing does not reveal which one matched.
        for token in &self.tokens {
            let (expected, id) = match token {
                Token::Value(v, id) => (v.clone(), id),
                Token::File(path, id) => match tokio::fs::read_to_string(path).await {
                    // An emptied token file proves nothing (never "" == "").
                    Ok(s) if s.trim().is_empty() => {
                        tracing::warn!(path = %path.display(), "CA token file is empty; ignoring it");
                        continue;
                    }
                    Ok(s) => (s.trim().as_bytes().to_vec(), id),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "CA token file unreadable");
                        continue;
                    }
                },
            };
            if constant_time_eq(presented.as_bytes(), &expected) && matched.is_none() {
                matched = Some(id.clone());
            }
        }
        match matched {
            Some(id) => Ok(Some(id)),
            None => Err(Status::new(
                Code::Unauthenticated,
                "bearer token not recognized",
            )),
        }
    }
}

/// The identity an unauthenticated caller may get from an open CA (`--ca-open`): the CSR's
/// single SPIFFE ID, only in the CA's own trust domain and never in `istio-system` (the
/// control plane's own namespace: an open CA must not mint istiod's identity).
fn open_identity(
    csr_ids: &BTreeSet<String>,
    trust_domain: &TrustDomain,
) -> Result<SpiffeId, Status> {
    let [uri] = csr_ids.iter().collect::<Vec<_>>()[..] else {
        return Err(Status::invalid_argument(
            "CSR must carry exactly one URI SAN (a SPIFFE ID)",
        ));
    };
    let id = SpiffeId::new(uri).map_err(|e| {
        Status::invalid_argument(format!("CSR URI SAN {uri:?} is not a SPIFFE ID: {e}"))
    })?;
    if id.trust_domain() != *trust_domain {
        return Err(Status::permission_denied(format!(
            "open CA signs only its own trust domain {trust_domain}, not {id}"
        )));
    }
    if id.path().starts_with("/ns/istio-system/") {
        return Err(Status::permission_denied(format!(
            "open CA never signs istio-system identities ({id})"
        )));
    }
    Ok(id)
}

/// The URI SANs of a PEM CSR.
fn csr_identities(csr_pem: &str) -> Result<BTreeSet<String>, Status> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| Status::invalid_argument(format!("CSR does not parse: {e}")))?;
    Ok(csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|san| match san {
            rcgen::SanType::URI(u) => Some(u.as_str().to_string()),
            _ => None,
        })
        .collect())
}

/// Equal-length inputs are compared without early exit; the length itself is not secret.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    fn inner(tokens: Vec<Token>, open: Option<TrustDomain>) -> ServiceInner {
        let td = TrustDomain::new("cluster.local").unwrap();
        ServiceInner {
            signer: Arc::new(DevCa::new(td).unwrap()),
            tokens,
            open,
            default_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(60),
        }
    }

    fn request(bearer: Option<&str>, csr_id: &str) -> tonic::Request<IstioCertificateRequest> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(csr_id.try_into().unwrap())];
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            ..Default::default()
        });
        if let Some(b) = bearer {
            request
                .metadata_mut()
                .insert("authorization", b.parse().unwrap());
        }
        request
    }

    const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";

    #[tokio::test]
    async fn an_empty_token_file_authenticates_nobody() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "\n").unwrap();
        let ca = inner(vec![Token::File(path, SpiffeId::new(WEB).unwrap())], None);
        for bearer in ["Bearer ", "Bearer  \t", "bearer"] {
            let err = ca
                .create_certificate(request(Some(bearer), WEB))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{bearer:?}: {err:?}");
        }
    }

    #[tokio::test]
    async fn an_open_ca_signs_only_its_trust_domain_outside_istio_system() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = inner(vec![], Some(td));
        let ok = ca.create_certificate(request(None, WEB)).await.unwrap();
        assert!(!ok.get_ref().cert_chain.is_empty());
        for (asked, rule) in [
            (
                "spiffe://other.example/ns/default/sa/web",
                "own trust domain",
            ),
            (
                "spiffe://cluster.local/ns/istio-system/sa/istiod-service-account",
                "istio-system",
            ),
        ] {
            let err = ca
                .create_certificate(request(None, asked))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::PermissionDenied, "{asked}: {err:?}");
            assert!(err.message().contains(rule), "{asked}: {}", err.message());
        }
    }
}
