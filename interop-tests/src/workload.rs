//! A mesh workload built on the library, as an Istio proxyless workload of a control plane
//! (istiod, or our embedded control plane: the same code, only [`ControlPlaneAccess`]
//! differs).
//!
//! [`Workload::start`] does what a proxyless workload does in a real mesh:
//! - **identity**: an [`IstioCaClient`] under [`Rotation`] asks the control plane's CA for
//!   `spiffe://cluster.local/ns/<ns>/sa/<sa>` (authenticated with a service-account token
//!   when the access carries an issuer, renewals with the current certificate);
//! - **config**: an [`XdsClient`] with the node of [`Bootstrap::istio_proxyless`] (node id,
//!   `GENERATOR: grpc`, `NAMESPACE`, `SERVICE_ACCOUNT`, `INSTANCE_IPS`, `LABELS`), over TLS
//!   with the token, or plaintext;
//! - **outbound**: a [`MeshClient`] routing by the xDS config over mTLS;
//! - **inbound** (when it has a port): [`mesh::inbound::InboundServer`] on its own address,
//!   configured by its xDS server listener `xds.istio.io/grpc/lds/inbound/<ip>:<port>`:
//!   mTLS as PeerAuthentication says, and the listener's RBAC filters (Istio's
//!   AuthorizationPolicies as the control plane compiled them) enforced per request.
//!
//! The app behind the server answers `"<app>-<version>"`, after calling its downstream (if
//! any) with the caller's `end-user` header: `"frontend-v1 -> reviews-v2 -> ratings-v1"`.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use mesh::inbound::{InboundServer, ServingStatus};
use mesh_core::SpiffeId;
use mesh_core::model::{HttpFilterConfig, ListenerKind, RbacFilter, RbacRuleSet};
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::ca::IstioCaClient;
use mesh_tls::rotation::Rotation;
use mesh_tls::server::ConnectionAddrs;
use mesh_tls::{CertSource, IdentityStore, PeerIdentity};
use mesh_xds::bootstrap::{Bootstrap, ISTIO_SERVER_LISTENER_PREFIX, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};
use rustls::pki_types::CertificateDer;
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::HarnessError;
use crate::jwt::TestIssuer;

/// The Istio version our nodes report (istiod adapts some config to old proxies).
pub const ISTIO_VERSION: &str = "1.31.0";

/// How long a workload waits for its first certificate and its inbound listener.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a workload finds its control plane and how it authenticates.
#[derive(Clone)]
pub struct ControlPlaneAccess {
    /// The Istio CA, `https://host:port` (istiod's 15012).
    pub ca_url: String,
    /// The root that verifies the CA's and the xDS server's certificates.
    pub root: CertificateDer<'static>,
    /// The TLS server name to verify (istiod: `istiod.istio-system.svc`); `None`: the host
    /// of the URL.
    pub server_name: Option<String>,
    /// The xDS server: `https://...` (TLS, istiod's 15012) or `http://...` (plaintext).
    pub xds_url: String,
    /// Token issuer: each workload authenticates to the CA and to xDS with a token of its
    /// service account (istiod). `None`: no token (a CA that signs for loopback callers).
    pub tokens: Option<Arc<TestIssuer>>,
    /// Where token files are written.
    pub token_dir: PathBuf,
    /// The certificate lifetime to ask for.
    pub cert_ttl: Duration,
}

impl std::fmt::Debug for ControlPlaneAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlaneAccess")
            .field("ca_url", &self.ca_url)
            .field("xds_url", &self.xds_url)
            .field("server_name", &self.server_name)
            .field("tokens", &self.tokens.is_some())
            .field("cert_ttl", &self.cert_ttl)
            .finish_non_exhaustive()
    }
}

/// One workload of the config.
#[derive(Clone, Debug)]
pub struct WorkloadSpec {
    /// The `app` label (and service account unless [`WorkloadSpec::account`] differs).
    pub app: String,
    /// The `version` label.
    pub version: String,
    /// The namespace.
    pub namespace: String,
    /// The service account.
    pub account: String,
    /// The workload's own address (its WorkloadEntry `address`).
    pub ip: IpAddr,
    /// The port it serves on (`None`: a client only).
    pub port: Option<u16>,
    /// What the app calls for each request it serves (`http://host:port/path`).
    pub downstream: Option<String>,
}

impl WorkloadSpec {
    /// A workload in namespace `default` with service account `account`.
    pub fn new(app: &str, version: &str, account: &str, ip: [u8; 4]) -> Self {
        Self {
            app: app.into(),
            version: version.into(),
            namespace: "default".into(),
            account: account.into(),
            ip: IpAddr::from(ip),
            port: None,
            downstream: None,
        }
    }

    /// Serves on `port`.
    pub fn serving(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Calls `url` for each request.
    pub fn calling(mut self, url: &str) -> Self {
        self.downstream = Some(url.into());
        self
    }

    /// In namespace `ns`.
    pub fn in_namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }

    /// `<app>-<version>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.app, self.version)
    }

    /// The name of the xDS server listener for this workload's port.
    pub fn inbound_listener(&self) -> Option<String> {
        self.port.map(|p| {
            format!(
                "{ISTIO_SERVER_LISTENER_PREFIX}{}",
                SocketAddr::new(self.ip, p)
            )
        })
    }
}

/// A running workload. Its tasks stop on drop.
pub struct Workload {
    /// What it is.
    pub spec: WorkloadSpec,
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its credentials (kept current by the CA client).
    pub identity: IdentityStore,
    /// Its xDS client.
    pub xds: XdsClient,
    /// Its outbound client.
    pub client: MeshClient,
    /// Requests its app answered (authorized ones).
    pub served: Arc<AtomicU64>,
    connections: Arc<Mutex<HashSet<SocketAddr>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload")
            .field("spec", &self.spec)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Workload {
    /// Bootstraps the workload against `access`: certificate, xDS, MeshClient, and (with a
    /// port) its server once its inbound listener has arrived.
    pub async fn start(
        access: &ControlPlaneAccess,
        spec: WorkloadSpec,
    ) -> Result<Self, HarnessError> {
        let node = IstioNode {
            ip: spec.ip,
            pod_name: spec.name(),
            namespace: spec.namespace.clone(),
            service_account: spec.account.clone(),
            labels: BTreeMap::from([
                ("app".to_owned(), spec.app.clone()),
                ("version".to_owned(), spec.version.clone()),
            ]),
            istio_version: ISTIO_VERSION.into(),
            workload_name: Some(spec.name()),
            ..Default::default()
        };
        let id = node
            .spiffe_id()
            .map_err(|e| HarnessError::NotReady(format!("{}: {e}", spec.name())))?;
        let token_file = match &access.tokens {
            None => None,
            Some(issuer) => {
                let path = access
                    .token_dir
                    .join(format!("{}.{}.jwt", spec.namespace, spec.account));
                let token =
                    issuer.token(&spec.namespace, &spec.account, Duration::from_secs(3600))?;
                std::fs::write(&path, token)
                    .map_err(HarnessError::io(format!("writing {}", path.display())))?;
                Some(path)
            }
        };
        let mut tasks = Vec::new();

        // Identity: the CA client renews at half life; renewals authenticate with the
        // current certificate.
        let identity = IdentityStore::new();
        let mut ca =
            IstioCaClient::new(access.ca_url.clone(), id.clone(), vec![access.root.clone()])
                .with_client_certificate(identity.clone())
                .with_ttl(access.cert_ttl);
        if let Some(name) = &access.server_name {
            ca = ca.with_server_name(name.clone());
        }
        if let Some(token) = &token_file {
            ca = ca.with_token_file(token);
        }
        tasks.push(tokio::spawn(CertSource::run(
            Box::new(Rotation::new(ca)),
            identity.clone(),
        )));
        tokio::time::timeout(READY_TIMEOUT, identity.ready())
            .await
            .map_err(|_| {
                HarnessError::NotReady(format!(
                    "{}: no certificate from {} within {READY_TIMEOUT:?}: {:?}",
                    spec.name(),
                    access.ca_url,
                    identity.status()
                ))
            })?;

        // Config: the proxyless node over TLS (token) or plaintext.
        let bootstrap = Bootstrap::istio_proxyless(node, &access.xds_url);
        let config = XdsClientConfig {
            node: bootstrap.node_proto(),
            token_file,
            backoff: crate::xds::fast_backoff(),
            resource_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let xds_channel = if access.xds_url.starts_with("https://") {
            channel::tls(
                &access.xds_url,
                tls_roots(access.root.clone())?,
                access.server_name.as_deref(),
            )
        } else {
            channel::insecure(&access.xds_url)
        }
        .map_err(|e| HarnessError::NotReady(format!("xDS channel: {e}")))?;
        let xds = XdsClient::new(config, xds_channel);
        let client = MeshClient::new(xds.clone(), identity.clone(), MeshClientConfig::default());

        let mut workload = Self {
            id,
            identity,
            xds,
            client,
            served: Arc::new(AtomicU64::new(0)),
            connections: Arc::default(),
            tasks,
            spec,
        };
        if workload.spec.port.is_some() {
            workload.serve().await?;
        }
        Ok(workload)
    }

    /// Serves on `ip:port` with [`InboundServer`] and waits until its inbound listener has
    /// arrived (the server is NOT_SERVING before).
    async fn serve(&mut self) -> Result<(), HarnessError> {
        let (Some(port), Some(listener_name)) = (self.spec.port, self.spec.inbound_listener())
        else {
            return Ok(());
        };
        let addr = SocketAddr::new(self.spec.ip, port);
        let server = InboundServer::new(
            self.xds.clone(),
            self.identity.clone(),
            addr,
            listener_name.clone(),
        )
        .drain_timeout(Duration::from_secs(1));
        let mut status = server.status();
        let app = App {
            name: self.spec.name(),
            downstream: self.spec.downstream.clone(),
            client: self.client.clone(),
            served: self.served.clone(),
            connections: self.connections.clone(),
        };
        let service = tower::service_fn(move |req| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(app.handle(req).await) }
        });
        let name = self.spec.name();
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = server.serve(service).await {
                tracing::error!(workload = %name, error = %e, "inbound server stopped");
            }
        }));
        let serving = tokio::time::timeout(READY_TIMEOUT, async {
            status.wait_for(ServingStatus::is_serving).await.is_ok()
        })
        .await;
        if serving != Ok(true) {
            return Err(HarnessError::NotReady(format!(
                "{}: not serving within {READY_TIMEOUT:?} ({:?})",
                self.spec.name(),
                *status.borrow()
            )));
        }
        Ok(())
    }

    /// The names of the RBAC policies of the inbound listener (`ns[..]-policy[..]-rule[..]`
    /// as istiod names them), DENY and ALLOW filters together.
    pub fn inbound_policy_names(&self) -> Vec<String> {
        let Some(name) = self.spec.inbound_listener() else {
            return Vec::new();
        };
        let snap = self.xds.snapshot();
        let Some(ListenerKind::Server(server)) = snap.listeners.get(name.as_str()).map(|l| &l.kind)
        else {
            return Vec::new();
        };
        server
            .filter_chains
            .iter()
            .chain(server.default_filter_chain.iter())
            .flat_map(|c| &c.http_connection_manager.http_filters)
            .filter_map(|f| match &f.config {
                HttpFilterConfig::Rbac(RbacFilter {
                    rules: RbacRuleSet::Rules(rules),
                    ..
                }) => Some(rules),
                _ => None,
            })
            .flat_map(|r| r.policies.iter().map(|p| p.name.clone()))
            .collect()
    }

    /// Distinct client connections the server has answered requests on.
    pub fn connections_seen(&self) -> usize {
        self.connections.lock().map(|c| c.len()).unwrap_or_default()
    }

    /// Whether every filter chain of the inbound listener requires a client certificate
    /// (PeerAuthentication STRICT as the control plane compiled it).
    pub fn inbound_is_strict(&self) -> bool {
        let Some(name) = self.spec.inbound_listener() else {
            return false;
        };
        let snap = self.xds.snapshot();
        let Some(ListenerKind::Server(server)) = snap.listeners.get(name.as_str()).map(|l| &l.kind)
        else {
            return false;
        };
        let chains: Vec<_> = server
            .filter_chains
            .iter()
            .chain(server.default_filter_chain.iter())
            .collect();
        !chains.is_empty()
            && chains
                .iter()
                .all(|c| c.tls.as_ref().is_some_and(|t| t.require_client_certificate))
    }

    /// Sends `method url` through this workload's MeshClient with `headers`; returns the
    /// status and body (a transport error is `Err`).
    pub async fn call(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<(StatusCode, String), tower::BoxError> {
        call(&self.client, method, url, headers).await
    }
}

/// Sends one request through `client`.
pub async fn call(
    client: &MeshClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, String), tower::BoxError> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .clone()
        .oneshot(req.body(Empty::<Bytes>::new())?)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The app: answers its name, after calling its downstream.
#[derive(Clone)]
struct App {
    name: String,
    downstream: Option<String>,
    client: MeshClient,
    served: Arc<AtomicU64>,
    connections: Arc<Mutex<HashSet<SocketAddr>>>,
}

impl App {
    async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        self.served.fetch_add(1, Ordering::Relaxed);
        if let (Some(addrs), Ok(mut seen)) = (
            req.extensions().get::<ConnectionAddrs>(),
            self.connections.lock(),
        ) {
            seen.insert(addrs.remote);
        }
        let caller = req
            .extensions()
            .get::<PeerIdentity>()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let reply = |status: StatusCode, body: String| {
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            if let Ok(v) = http::HeaderValue::from_str(&caller) {
                resp.headers_mut().insert("x-caller", v);
            }
            resp
        };
        let Some(url) = &self.downstream else {
            return reply(StatusCode::OK, self.name.clone());
        };
        let user = req
            .headers()
            .get("end-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let headers: Vec<(&str, &str)> = user.iter().map(|u| ("end-user", u.as_str())).collect();
        match call(&self.client, "GET", url, &headers).await {
            Ok((StatusCode::OK, body)) => reply(StatusCode::OK, format!("{} -> {body}", self.name)),
            Ok((status, body)) => reply(
                StatusCode::BAD_GATEWAY,
                format!("{} -> {status} {body}", self.name),
            ),
            Err(e) => reply(
                StatusCode::BAD_GATEWAY,
                format!("{} -> error {e}", self.name),
            ),
        }
    }
}

fn tls_roots(root: CertificateDer<'static>) -> Result<Arc<rustls::ClientConfig>, HarnessError> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(root)
        .map_err(|e| HarnessError::Crypto(format!("control plane root: {e}")))?;
    let config = rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| HarnessError::Crypto(format!("TLS versions: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
