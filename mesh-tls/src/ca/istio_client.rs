//! [`IstioCaClient`]: certificates from istiod (or any Istio-compatible CA) over
//! `istio.v1.auth.IstioCertificateService/CreateCertificate`.
//!
//! Each [`fetch`](crate::CertProvider::fetch) generates a fresh ECDSA P-256 key and a CSR
//! with an empty subject and one critical URI SAN (our SPIFFE ID), sends it over TLS gRPC,
//! and checks the answer: the leaf must name exactly the identity we asked for (a CA signs
//! the *authenticated caller's* identity, which may differ), follow the X.509-SVID rules,
//! carry our public key and chain to the CA's roots.
//!
//! Authentication, as istio-agent does it: a bearer token read from a file at every call
//! (`authorization: Bearer <jwt>`, plus the `ClusterID` header), and/or a client
//! certificate, our current SVID from an [`IdentityStore`], which lets a workload renew
//! without a token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::rt::TokioIo;
use mesh_core::SpiffeId;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;

use super::istio_proto::{
    CLUSTER_ID_HEADER, CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse,
};
use crate::{CertProvider, Credentials, IdentityStore, TlsError};

/// Requests workload certificates from an Istio CA. See the [module docs](self).
///
/// ```no_run
/// # async fn f(ca_root: rustls::pki_types::CertificateDer<'static>) {
/// use mesh_core::SpiffeId;
/// use mesh_tls::{IdentityStore, ca::IstioCaClient, rotation::Rotation};
/// let id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap();
/// let store = IdentityStore::new();
/// let client = IstioCaClient::new("https://istiod.istio-system.svc:15012", id, vec![ca_root])
///     .with_token_file("/var/run/secrets/tokens/istio-token")
///     // renew with the current certificate once we have one
///     .with_client_certificate(store.clone());
/// let _task = Rotation::new(client).spawn(store.clone());
/// store.ready().await;
/// # }
/// ```
#[derive(Clone)]
pub struct IstioCaClient {
    address: String,
    server_name: Option<String>,
    ca_roots: Vec<CertificateDer<'static>>,
    id: SpiffeId,
    ttl: Duration,
    cluster_id: String,
    token_file: Option<PathBuf>,
    client_cert: Option<IdentityStore>,
    metadata: Vec<(String, String)>,
    timeout: Duration,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for IstioCaClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token file path is fine to show; its contents never are.
        f.debug_struct("IstioCaClient")
            .field("address", &self.address)
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("cluster_id", &self.cluster_id)
            .field("token_file", &self.token_file)
            .field("client_cert", &self.client_cert.is_some())
            .finish_non_exhaustive()
    }
}

impl IstioCaClient {
    /// A client for the CA at `address` (`https://host:port`, Istio uses port 15012),
    /// requesting certificates for `id`. `ca_roots` authenticate the CA's TLS certificate
    /// and are the trust bundle of the returned [`Credentials`] (with the root the CA
    /// returns at the end of the chain).
    ///
    /// Defaults: 24 h validity requested, cluster ID `Kubernetes`, 10 s timeout, no
    /// authentication until [`with_token_file`](Self::with_token_file) or
    /// [`with_client_certificate`](Self::with_client_certificate) is called.
    pub fn new(
        address: impl Into<String>,
        id: SpiffeId,
        ca_roots: Vec<CertificateDer<'static>>,
    ) -> Self {
        Self {
            address: address.into(),
            server_name: None,
            ca_roots,
            id,
            ttl: Duration::from_secs(24 * 3600),
            cluster_id: "Kubernetes".into(),
            token_file: None,
            client_cert: None,
            metadata: Vec::new(),
            timeout: Duration::from_secs(10),
            provider: crate::config::default_provider(),
        }
    }

    /// Sends `authorization: Bearer <contents of path>` (trimmed), read at every call so a
    /// rotated token is picked up. An unreadable file is an error, unless a client
    /// certificate ([`with_client_certificate`](Self::with_client_certificate)) is
    /// available to authenticate the call instead.
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Presents the current certificate in `store` (when there is a valid one) as the TLS
    /// client certificate, so the CA can authenticate the renewal by it.
    pub fn with_client_certificate(mut self, store: IdentityStore) -> Self {
        self.client_cert = Some(store);
        self
    }

    /// The validity to request (`validity_duration`).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The `ClusterID` header value (default `Kubernetes`).
    pub fn with_cluster_id(mut self, cluster_id: impl Into<String>) -> Self {
        self.cluster_id = cluster_id.into();
        self
    }

    /// The name to verify the CA's TLS certificate against (default: the host of the
    /// address), e.g. `istiod.istio-system.svc` when dialing an IP.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Adds a string entry to the request's `metadata` struct.
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.push((key.into(), value.into()));
        self
    }

    /// Deadline for connecting and for the call (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The crypto provider for TLS and key checks (default: the crate's default provider).
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// The identity this client requests.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// One round trip: new key, CSR, call, checks.
    pub async fn create_certificate(&self) -> Result<Credentials, TlsError> {
        // Wiped when dropped: the key's only copy left is the one in the credentials.
        let key = zeroize::Zeroizing::new(
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(|e| TlsError::Other(format!("generating an ECDSA P-256 key: {e}")))?,
        );
        let csr = csr_pem(&self.id, &key)?;
        let chain = self.call(csr).await?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        self.check_response(chain, key)
    }

    async fn call(&self, csr: String) -> Result<Vec<String>, TlsError> {
        let mut message = IstioCertificateRequest {
            csr,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        };
        if !self.metadata.is_empty() {
            let fields = self
                .metadata
                .iter()
                .map(|(k, v)| {
                    let value = prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(v.clone())),
                    };
                    (k.clone(), value)
                })
                .collect();
            message.metadata = Some(prost_types::Struct { fields });
        }
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        let md = request.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(self.cluster_id.as_str()) {
            md.insert(CLUSTER_ID_HEADER, v);
        }
        // Our current certificate, if renewal by client certificate is on and we have one.
        let client_creds = self.client_cert.as_ref().and_then(IdentityStore::current);
        if let Some(path) = &self.token_file {
            match tokio::fs::read_to_string(path).await {
                // An empty token proves nothing: renew with the certificate, or refuse.
                Ok(token) if token.trim().is_empty() => {
                    if client_creds.is_none() {
                        return Err(TlsError::Other(format!(
                            "the CA token file {} is empty",
                            path.display()
                        )));
                    }
                    tracing::debug!(path = %path.display(), "empty token; renewing with the client certificate");
                }
                Ok(token) => {
                    let mut value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
                        .map_err(|_| {
                            TlsError::decode(
                                path.display().to_string(),
                                "token is not a valid header value",
                            )
                        })?;
                    value.set_sensitive(true);
                    md.insert("authorization", value);
                }
                // The certificate alone authenticates a renewal.
                Err(e) if client_creds.is_some() => {
                    tracing::debug!(path = %path.display(), error = %e, "no token; renewing with the client certificate");
                }
                Err(source) => {
                    return Err(TlsError::Io {
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
        }

        let channel = self.connect(client_creds).await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| TlsError::Ca(format!("{}: not ready: {e}", self.address)))?;
        let codec =
            tonic_prost::ProstCodec::<IstioCertificateRequest, IstioCertificateResponse>::default();
        let path = http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE_PATH);
        let response = grpc.unary(request, path, codec).await.map_err(|s| {
            TlsError::Ca(format!(
                "{} CreateCertificate failed: {:?}: {}",
                self.address,
                s.code(),
                s.message()
            ))
        })?;
        Ok(response.into_inner().cert_chain)
    }

    async fn connect(
        &self,
        client_creds: Option<Arc<Credentials>>,
    ) -> Result<tonic::transport::Channel, TlsError> {
        let uri: Uri = self
            .address
            .parse()
            .map_err(|e| TlsError::decode(format!("CA address {:?}", self.address), e))?;
        let host = uri
            .host()
            .ok_or_else(|| TlsError::decode(format!("CA address {:?}", self.address), "no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let name = self.server_name.clone().unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| TlsError::decode(format!("CA server name {name:?}"), e))?;
        let tls = TlsConnector::from(Arc::new(self.tls_config(client_creds)?));
        let connector = tower::service_fn(move |uri: Uri| {
            let tls = tls.clone();
            let server_name = server_name.clone();
            async move {
                let host = uri.host().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host, port)).await?;
                tcp.set_nodelay(true)?;
                let stream = tls.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        });
        Endpoint::from_shared(self.address.clone())
            .map_err(|e| TlsError::decode(format!("CA address {:?}", self.address), e))?
            .connect_timeout(self.timeout)
            .timeout(self.timeout)
            .connect_with_connector(connector)
            .await
            .map_err(|e| {
                TlsError::Ca(format!(
                    "connecting to {}: {}",
                    self.address,
                    error_chain(&e)
                ))
            })
    }

    fn tls_config(
        &self,
        client_creds: Option<Arc<Credentials>>,
    ) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for root in &self.ca_roots {
            roots.add(root.clone())?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let mut config = match client_creds {
            Some(creds) => {
                builder.with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// Checks the CA's answer and turns it into credentials.
    fn check_response(
        &self,
        chain_pem: Vec<String>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Credentials, TlsError> {
        let mut chain = Vec::with_capacity(chain_pem.len());
        for (i, pem) in chain_pem.iter().enumerate() {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                chain.push(
                    cert.map_err(|e| TlsError::decode(format!("CA response cert_chain[{i}]"), e))?,
                );
            }
        }
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError::Ca("CA returned an empty certificate chain".into()))?;
        // Identity first: a CA signs whatever identity it authenticated us as.
        let svid = crate::svid::parse_leaf(leaf)?;
        if svid.id != self.id {
            return Err(TlsError::WrongIdentityIssued {
                requested: self.id.to_string(),
                got: svid.id.to_string(),
            });
        }
        // The last certificate is the root when it is self-issued; it joins the bundle.
        let mut roots = self.ca_roots.clone();
        if chain.len() > 1
            && is_self_issued(chain.last())
            && let Some(root) = chain.pop()
            && !roots.contains(&root)
        {
            roots.push(root);
        }
        self.check_chain(&chain, &roots)?;
        super::super::source::credentials_from_parts(
            &self.provider,
            chain,
            key,
            roots,
            "CA response",
        )
        .map_err(|e| match e {
            TlsError::KeyMismatch => {
                TlsError::Ca("CA returned a certificate for a different public key".into())
            }
            other => other,
        })
    }

    /// The leaf must chain to one of the roots.
    fn check_chain(
        &self,
        chain: &[CertificateDer<'static>],
        roots: &[CertificateDer<'static>],
    ) -> Result<(), TlsError> {
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root.clone())?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(store),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Other(format!("building chain verifier: {e}")))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| TlsError::Ca("CA returned an empty certificate chain".into()))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                TlsError::Ca(format!(
                    "issued certificate does not chain to the CA root: {e}"
                ))
            })?;
        Ok(())
    }
}

impl CertProvider for IstioCaClient {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, TlsError>> {
        Box::pin(self.create_certificate())
    }
}

/// A PEM CSR with an empty subject and one URI SAN, which rcgen marks critical because the
/// subject is empty (RFC 5280 §4.2.1.6), as Istio's CA expects.
pub(crate) fn csr_pem(id: &SpiffeId, key: &KeyPair) -> Result<String, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let uri = id
        .as_str()
        .try_into()
        .map_err(|e| TlsError::decode("SPIFFE ID for the CSR", e))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| TlsError::Other(format!("building the CSR: {e}")))
}

fn is_self_issued(cert: Option<&CertificateDer<'_>>) -> bool {
    use x509_parser::prelude::FromDer;
    cert.and_then(|c| x509_parser::certificate::X509Certificate::from_der(c).ok())
        .is_some_and(|(_, c)| c.issuer() == c.subject())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509CertificationRequest};

    #[test]
    fn csr_has_empty_subject_and_one_critical_uri_san() {
        let id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_pem(&id, &key).unwrap();
        let der = ::pem::parse(&pem).unwrap();
        assert_eq!(der.tag(), "CERTIFICATE REQUEST");
        let (_, csr) = X509CertificationRequest::from_der(der.contents()).unwrap();
        let info = &csr.certification_request_info;
        assert_eq!(info.subject.iter().count(), 0, "subject must be empty");
        let exts: Vec<_> = csr.requested_extensions().into_iter().flatten().collect();
        let sans: Vec<_> = exts
            .iter()
            .filter_map(|e| match e {
                ParsedExtension::SubjectAlternativeName(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(sans.len(), 1);
        assert_eq!(
            sans[0].general_names,
            vec![GeneralName::URI("spiffe://cluster.local/ns/default/sa/web")]
        );
        // Criticality is on the raw extension.
        let raw = x509_parser::der_parser::oid!(2.5.29.17);
        let critical = info
            .attributes()
            .iter()
            .flat_map(|a| match a.parsed_attribute() {
                x509_parser::prelude::ParsedCriAttribute::ExtensionRequest(r) => {
                    r.extensions.iter().collect::<Vec<_>>()
                }
                _ => Vec::new(),
            })
            .find(|e| e.oid == raw)
            .map(|e| e.critical);
        assert_eq!(critical, Some(true), "URI SAN must be critical");
        assert_eq!(
            rcgen::PublicKeyData::subject_public_key_info(&key),
            info.subject_pki.raw
        );
    }
}
