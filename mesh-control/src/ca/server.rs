//! [`IstioCaServer`], the CA server before it listens, and what it becomes:
//! [`RunningCaServer`] (serving in a background task) or [`CaParts`] (a service and its
//! connections, for a gRPC server of the caller's).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::SpiffeId;
use mesh_tls::TlsError;
use mesh_tls::dev_ca::{DevCa, IssueOptions};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

use super::incoming::CaIncoming;
use super::service::{CaSigner, IstioCaService, ServiceInner, Token};

/// The CA server, before it listens. See the [module docs](super).
///
/// ```no_run
/// # async fn f() -> Result<(), mesh_tls::TlsError> {
/// use std::sync::Arc;
/// use mesh_core::{SpiffeId, TrustDomain};
/// use mesh_control::ca::IstioCaServer;
/// use mesh_tls::dev_ca::DevCa;
/// let ca = Arc::new(DevCa::new(TrustDomain::new("cluster.local")?)?);
/// let id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/web")?;
/// let server = IstioCaServer::new(ca)
///     .with_token("bootstrap-secret", id)
///     .bind("127.0.0.1:15012".parse().unwrap())
///     .await?;
/// println!("CA listening on {}", server.local_addr());
/// # Ok(()) }
/// ```
pub struct IstioCaServer {
    ca: Arc<DevCa>,
    signer: Arc<dyn CaSigner>,
    tokens: Vec<Token>,
    client_certs: bool,
    open: bool,
    default_ttl: Duration,
    max_ttl: Duration,
    dns_names: Vec<String>,
    ip_addrs: Vec<IpAddr>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for IstioCaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioCaServer")
            .field("trust_domain", self.ca.trust_domain())
            .field("tokens", &self.tokens.len())
            .field("client_certs", &self.client_certs)
            .field("open", &self.open)
            .field("default_ttl", &self.default_ttl)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl IstioCaServer {
    /// A server for `ca`, accepting client certificates chained to it; 24 h default and
    /// maximum validity; serving names `istiod.istio-system.svc`, `localhost`, 127.0.0.1
    /// and ::1.
    pub fn new(ca: Arc<DevCa>) -> Self {
        Self {
            signer: ca.clone(),
            ca,
            tokens: Vec::new(),
            client_certs: true,
            open: false,
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(24 * 3600),
            dns_names: vec!["istiod.istio-system.svc".into(), "localhost".into()],
            ip_addrs: vec![[127, 0, 0, 1].into(), std::net::Ipv6Addr::LOCALHOST.into()],
            provider: mesh_tls::config::default_provider(),
        }
    }

    /// Accepts `authorization: Bearer <token>` as proof of `id`.
    pub fn with_token(mut self, token: impl Into<String>, id: SpiffeId) -> Self {
        self.tokens
            .push(Token::Value(token.into().trim().as_bytes().to_vec(), id));
        self
    }

    /// Accepts the token stored in `path` (read at every request, trimmed) as proof of `id`.
    pub fn with_token_file(mut self, path: impl Into<PathBuf>, id: SpiffeId) -> Self {
        self.tokens.push(Token::File(path.into(), id));
        self
    }

    /// Whether client certificates chained to the CA authenticate callers (default: yes).
    pub fn with_client_certificates(mut self, enabled: bool) -> Self {
        self.client_certs = enabled;
        self
    }

    /// Signs the identity an unauthenticated caller's CSR asks for, within limits: only the
    /// CA's own trust domain, never an `istio-system` identity. Only allowed on loopback
    /// addresses ([`bind`](Self::bind) refuses anything else), and any local process can then
    /// obtain any workload identity: for development only (a warning is logged at start).
    pub fn allow_unauthenticated(mut self) -> Self {
        self.open = true;
        self
    }

    /// Signs with `signer` instead of the dev CA (the dev CA still issues the serving
    /// certificate and anchors client certificates).
    pub fn with_signer(mut self, signer: Arc<dyn CaSigner>) -> Self {
        self.signer = signer;
        self
    }

    /// Validity when the request asks for none (default 24 h).
    pub fn with_default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Longest validity granted; longer requests are shortened to it (default 24 h).
    pub fn with_max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// DNS and IP names of the serving certificate.
    pub fn with_serving_names(mut self, dns: Vec<String>, ips: Vec<IpAddr>) -> Self {
        self.dns_names = dns;
        self.ip_addrs = ips;
        self
    }

    /// The crypto provider for TLS (default: the crate's default provider).
    pub fn with_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
        self.provider = provider;
        self
    }

    /// Binds `addr` and serves in a background task until the returned handle is dropped.
    pub async fn bind(self, addr: SocketAddr) -> Result<RunningCaServer, TlsError> {
        self.check_auth(addr.ip())?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| TlsError::Io {
                path: format!("bind {addr}"),
                source,
            })?;
        self.serve(listener)
    }

    /// Serves on an already bound listener in a background task.
    pub fn serve(self, listener: TcpListener) -> Result<RunningCaServer, TlsError> {
        let CaParts {
            service,
            incoming,
            local_addr,
            root,
        } = self.into_parts(listener)?;
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let serve = tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "Istio CA server stopped");
            }
        });
        tracing::info!(%local_addr, "Istio CA server listening");
        Ok(RunningCaServer {
            local_addr,
            root,
            shutdown: Some(shutdown_tx),
            tasks: vec![serve],
        })
    }

    /// The pieces of [`serve`](Self::serve), for serving the CA next to other gRPC
    /// services on one port, as istiod serves xDS and the CA on 15012: add
    /// [`CaParts::service`] to your `tonic::transport::Server` and serve it with
    /// `serve_with_incoming(parts.incoming)`. Other services can read the caller's
    /// verified identity from the [`CaPeer`](super::CaPeer) in every request's extensions.
    pub fn into_parts(self, listener: TcpListener) -> Result<CaParts, TlsError> {
        let local_addr = listener.local_addr().map_err(|source| TlsError::Io {
            path: "CA listener".into(),
            source,
        })?;
        self.check_auth(local_addr.ip())?;
        if self.open {
            tracing::warn!(
                %local_addr,
                "the CA signs unauthenticated CSRs (open mode): any local process can obtain any workload identity of its trust domain"
            );
        }
        let acceptor = TlsAcceptor::from(Arc::new(self.tls_config()?));
        let root = self.ca.root_der();
        let trust_domain = self.ca.trust_domain().clone();
        let service = IstioCaService::new(ServiceInner {
            signer: self.signer,
            tokens: self.tokens,
            open: self.open.then_some(trust_domain.clone()),
            default_ttl: self.default_ttl,
            max_ttl: self.max_ttl,
        });
        Ok(CaParts {
            service,
            incoming: CaIncoming::start(listener, acceptor, trust_domain),
            local_addr,
            root,
        })
    }

    fn check_auth(&self, ip: IpAddr) -> Result<(), TlsError> {
        if self.open && !ip.is_loopback() {
            return Err(TlsError::Other(format!(
                "refusing to run an unauthenticated (open) CA signer on non-loopback address {ip}"
            )));
        }
        if let Some(id) = self.tokens.iter().find_map(|t| match t {
            Token::Value(v, id) if v.is_empty() => Some(id),
            _ => None,
        }) {
            return Err(TlsError::Other(format!(
                "the CA token for {id} is empty: an empty token would authenticate anyone"
            )));
        }
        if !self.open && !self.client_certs && self.tokens.is_empty() {
            return Err(TlsError::Other(
                "CA server has no way to authenticate callers: add a token or enable client certificates".into(),
            ));
        }
        Ok(())
    }

    fn tls_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let id = SpiffeId::from_parts(
            self.ca.trust_domain(),
            "/ns/istio-system/sa/istiod-service-account",
        )?;
        let mut opts = IssueOptions::new(&id, Duration::from_secs(365 * 24 * 3600));
        opts.dns_sans = self.dns_names.clone();
        opts.ip_sans = self.ip_addrs.clone();
        let serving = self.ca.issue_with(opts)?;
        let builder = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.client_certs {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.ca.root_der())?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            )
            // Token callers have no certificate.
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Other(format!("client certificate verifier: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config =
            builder.with_single_cert(serving.chain.clone(), serving.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// A listening CA server; dropping it stops the server.
pub struct RunningCaServer {
    local_addr: SocketAddr,
    root: CertificateDer<'static>,
    shutdown: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RunningCaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningCaServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl RunningCaServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://<addr>`, for [`IstioCaClient::new`](mesh_tls::ca::IstioCaClient::new).
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// The CA root that clients should trust.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }
}

impl Drop for RunningCaServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The CA's gRPC service and its TLS connections, from [`IstioCaServer::into_parts`].
#[derive(Debug)]
pub struct CaParts {
    /// The `istio.v1.auth.IstioCertificateService` gRPC service.
    pub service: IstioCaService,
    /// TLS connections (client certificate optional) ready for
    /// `tonic::transport::Server::serve_with_incoming`.
    pub incoming: CaIncoming,
    /// The bound address.
    pub local_addr: SocketAddr,
    /// The CA root that clients should trust.
    pub root: CertificateDer<'static>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_signer_refuses_non_loopback() {
        let ca =
            Arc::new(DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap()).unwrap());
        let err = IstioCaServer::new(ca)
            .allow_unauthenticated()
            .bind("0.0.0.0:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("non-loopback"), "{err}");
    }

    #[tokio::test]
    async fn server_without_any_authentication_refuses_to_start() {
        let ca =
            Arc::new(DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap()).unwrap());
        let err = IstioCaServer::new(ca)
            .with_client_certificates(false)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no way to authenticate"), "{err}");
    }
}
