//! [`IstioCaServer`]: a CA served over `istio.v1.auth.IstioCertificateService`, like
//! istiod's Citadel on port 15012. By default it signs with the in-process
//! [`DevCa`]; any [`CaSigner`] can take its place.
//!
//! Every caller is authenticated, by a client certificate chained to the CA (identity: its
//! SPIFFE ID) or by a bootstrap bearer token mapped to an identity (compared in constant
//! time). The CA signs the *authenticated* identity: a CSR asking for another one is refused
//! with `PERMISSION_DENIED` naming both. An open signer, which believes the CSR, exists for
//! local experiments and refuses to listen anywhere but loopback.
//!
//! The server's own TLS certificate is issued by the same CA for DNS/IP names like istiod's
//! (`istiod.istio-system.svc`, `localhost`, `127.0.0.1`, `::1` by default), valid for a
//! year and not rotated: this is a development CA.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_core::SpiffeId;
use rcgen::CertificateSigningRequestParams;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::server::NamedService;
use tonic::transport::server::Connected;
use tonic::{Code, Status};

use super::istio_proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, SERVICE_NAME,
};
use crate::TlsError;
use crate::dev_ca::{DevCa, IssueOptions};

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
enum Token {
    Value(Vec<u8>, SpiffeId),
    /// Read at every request, so the file can be rotated.
    File(PathBuf, SpiffeId),
}

/// The CA server, before it listens. See the [module docs](self).
///
/// ```no_run
/// # async fn f() -> Result<(), mesh_tls::TlsError> {
/// use std::sync::Arc;
/// use mesh_core::{SpiffeId, TrustDomain};
/// use mesh_tls::{ca::IstioCaServer, dev_ca::DevCa};
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
            provider: crate::config::default_provider(),
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

    /// Signs whatever identity an unauthenticated caller's CSR asks for. Only allowed on
    /// loopback addresses: [`bind`](Self::bind) refuses anything else.
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
    /// verified identity from the [`CaPeer`] in every request's extensions.
    pub fn into_parts(self, listener: TcpListener) -> Result<CaParts, TlsError> {
        let local_addr = listener.local_addr().map_err(|source| TlsError::Io {
            path: "CA listener".into(),
            source,
        })?;
        self.check_auth(local_addr.ip())?;
        let acceptor = TlsAcceptor::from(Arc::new(self.tls_config()?));
        let root = self.ca.root_der();
        let trust_domain = self.ca.trust_domain().clone();
        let service = IstioCaService {
            inner: Arc::new(ServiceInner {
                signer: self.signer,
                tokens: self.tokens,
                open: self.open,
                default_ttl: self.default_ttl,
                max_ttl: self.max_ttl,
            }),
        };
        let (conn_tx, conn_rx) = mpsc::channel::<CaConnection>(64);
        let accept = tokio::spawn(accept_loop(listener, acceptor, conn_tx, trust_domain));
        Ok(CaParts {
            service,
            incoming: CaIncoming {
                conns: conn_rx,
                accept,
            },
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
        let mut config = builder.with_single_cert(serving.chain, serving.key)?;
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

    /// `https://<addr>`, for [`IstioCaClient::new`](super::IstioCaClient::new).
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

/// A stream of TLS connections to the CA port; dropping it stops accepting.
pub struct CaIncoming {
    conns: mpsc::Receiver<CaConnection>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for CaIncoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaIncoming").finish_non_exhaustive()
    }
}

impl futures::Stream for CaIncoming {
    type Item = Result<CaConnection, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.conns.poll_recv(cx).map(|c| c.map(Ok))
    }
}

impl Drop for CaIncoming {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Handshakes run concurrently, so a slow or silent client cannot hold up others.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<CaConnection>,
    trust_domain: mesh_core::TrustDomain,
) {
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "CA server accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let td = trust_domain.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            let stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "CA server TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "CA server TLS handshake timed out");
                    return;
                }
            };
            let peer = peer_identity(&stream, &td);
            let _ = conns
                .send(CaConnection {
                    stream,
                    info: CaPeer { remote, peer },
                })
                .await;
        });
    }
}

/// The SPIFFE ID of a verified client certificate, if any and if it is in our trust domain.
fn peer_identity(
    stream: &TlsStream<TcpStream>,
    td: &mesh_core::TrustDomain,
) -> Result<Option<SpiffeId>, String> {
    let Some(leaf) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Ok(None);
    };
    let svid = crate::svid::parse_leaf(leaf).map_err(|e| e.to_string())?;
    if svid.id.trust_domain_str() != td.as_str() {
        return Err(format!(
            "client certificate identity {} is not in trust domain {}",
            svid.id,
            td.as_str()
        ));
    }
    Ok(Some(svid.id))
}

/// What the CA port knows about a connection's peer; in every request's extensions
/// (`request.extensions().get::<CaPeer>()`).
#[derive(Clone, Debug)]
pub struct CaPeer {
    remote: SocketAddr,
    /// `Ok(Some(id))`: a verified client certificate; `Err`: a certificate we refuse.
    peer: Result<Option<SpiffeId>, String>,
}

impl CaPeer {
    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote
    }

    /// The SPIFFE ID of the client's certificate, when it presented one that chains to the
    /// CA and names an identity of the CA's trust domain.
    pub fn identity(&self) -> Option<&SpiffeId> {
        self.peer.as_ref().ok().and_then(Option::as_ref)
    }
}

/// One TLS connection to the CA port (see [`CaIncoming`]).
pub struct CaConnection {
    stream: TlsStream<TcpStream>,
    info: CaPeer,
}

impl Connected for CaConnection {
    type ConnectInfo = CaPeer;
    fn connect_info(&self) -> CaPeer {
        self.info.clone()
    }
}

impl AsyncRead for CaConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CaConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

struct ServiceInner {
    signer: Arc<dyn CaSigner>,
    tokens: Vec<Token>,
    open: bool,
    default_ttl: Duration,
    max_ttl: Duration,
}

/// The `istio.v1.auth.IstioCertificateService` gRPC service, hand-written (what
/// tonic-build would generate). It authenticates callers from the [`CaPeer`] that
/// [`CaIncoming`] attaches to each connection, and from bearer tokens.
#[derive(Clone)]
pub struct IstioCaService {
    inner: Arc<ServiceInner>,
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
