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
use mesh_core::SpiffeId;
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
    pub(super) open: bool,
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
        Box::pin(async move { inner.create_certificate(request).await })
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
            None if self.open => match csr_ids.iter().next() {
                Some(id) if csr_ids.len() == 1 => SpiffeId::new(id).map_err(|e| {
                    Status::invalid_argument(format!("CSR URI SAN {id:?} is not a SPIFFE ID: {e}"))
                })?,
                _ => {
                    return Err(Status::invalid_argument(
                        "CSR must carry exactly one URI SAN (a SPIFFE ID)",
                    ));
                }
            },
            None => {
                return Err(Status::unauthenticated(
                    "no client certificate and no bearer token: the CA signs only for authenticated callers",
                ));
            }
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
        let mut matched: Option<SpiffeId> = None;
        // Compare against every token so timing does not reveal which one matched.
        for token in &self.tokens {
            let (expected, id) = match token {
                Token::Value(v, id) => (v.clone(), id),
                Token::File(path, id) => match tokio::fs::read_to_string(path).await {
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
}
