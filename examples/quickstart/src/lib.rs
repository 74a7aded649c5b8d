//! The code of docs/getting-started.md ("Your own service"), as a crate the test suite
//! builds and runs: two services, `hello` (an axum app behind the mesh's mTLS server) and
//! `caller` (a routed mTLS client), each getting its certificate from the embedded control
//! plane's Istio CA and its config from its xDS server (`control-plane serve`).
//!
//! The regions between `ANCHOR:` comments are the guide's snippets; `tests/guide.rs` checks
//! that the guide shows them as they are here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

// ANCHOR: imports
use axum::{Extension, Router, routing::get};
use mesh::telemetry::metrics::IstioMetricsService; // Istio's request metrics as a layer
use mesh::tls::ca::IstioCaClient; // the Istio CA API (istiod, `control-plane serve`)
use mesh::tls::rotation::Rotation; // renews the certificate at half life
use mesh::xds::bootstrap::{Bootstrap, IstioNode}; // the node a proxyless workload sends
use mesh::{Mesh, PeerIdentity};
use rustls_pki_types::{CertificateDer, pem::PemObject};
// ANCHOR_END: imports

/// Any error of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The port `hello` serves on: its WorkloadEntry's port in `config/hello.yaml`.
pub const HELLO_ADDR: ([u8; 4], u16) = ([127, 0, 0, 1], 18480);

/// Where a workload finds the control plane, from the environment (defaults: what
/// `control-plane serve` listens on and writes).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `MESH_XDS_ADDR`: the xDS server (`http://` is plaintext, loopback only).
    pub xds: String,
    /// `MESH_CA_ADDR`: the Istio CA.
    pub ca: String,
    /// `MESH_ROOT_CERT`: the mesh root that verifies the CA (`--out-dir`'s `root-cert.pem`).
    pub root: PathBuf,
    /// `MESH_TOKEN_FILE`: a bearer token for the CA (unset: the CA runs with `--ca-open`).
    pub token: Option<PathBuf>,
    /// `MESH_READY_TIMEOUT` (seconds, default 10): how long to wait for the first
    /// certificate before giving up with the CA's answer.
    pub ready_timeout: Duration,
}

impl Settings {
    /// From `MESH_XDS_ADDR`, `MESH_CA_ADDR`, `MESH_ROOT_CERT`, `MESH_TOKEN_FILE`,
    /// `MESH_READY_TIMEOUT`.
    pub fn from_env() -> Self {
        let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
        Self {
            xds: var("MESH_XDS_ADDR", "http://127.0.0.1:15010"),
            ca: var("MESH_CA_ADDR", "https://127.0.0.1:15012"),
            root: var("MESH_ROOT_CERT", ".mesh/root-cert.pem").into(),
            token: std::env::var_os("MESH_TOKEN_FILE").map(PathBuf::from),
            ready_timeout: std::env::var("MESH_READY_TIMEOUT")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Duration::from_secs(10), Duration::from_secs),
        }
    }
}

// ANCHOR: connect
/// Joins the mesh as workload `name` (its service account and `app` label too) on
/// 127.0.0.1: a certificate from the control plane's CA, config from its xDS server.
pub async fn connect(name: &str, settings: &Settings) -> Result<Mesh, BoxError> {
    let node = IstioNode {
        ip: "127.0.0.1".parse()?, // names the workload's inbound listener
        pod_name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        ..Default::default()
    };
    // The root that signed the CA's serving certificate (`--out-dir`'s root-cert.pem).
    let roots = CertificateDer::pem_file_iter(&settings.root)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", settings.root.display()))?;
    let mut ca = IstioCaClient::new(settings.ca.clone(), node.spiffe_id()?, roots);
    if let Some(token) = &settings.token {
        ca = ca.with_token_file(token); // else the CA must run with --ca-open
    }
    let mesh = Mesh::builder()
        .identity_source(Rotation::new(ca))
        .bootstrap(Bootstrap::istio_proxyless(node, &settings.xds))
        .build()?;
    // Never wait silently: after the timeout, the error says why (the CA's answer).
    mesh.ready(settings.ready_timeout, &[]).await?;
    Ok(mesh)
}
// ANCHOR_END: connect

// ANCHOR: hello
/// The `hello` service: an axum app served with `axum::serve` on the mesh's listener,
/// which applies the control plane's PeerAuthentication (mTLS) and AuthorizationPolicies
/// to every request, until `shutdown` completes (then requests in flight finish).
pub async fn hello(
    settings: &Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let mesh = connect("hello", settings).await?;
    let app = Router::new().route(
        "/",
        get(|Extension(caller): Extension<PeerIdentity>| async move {
            format!("hello, {caller}\n") // the caller's verified SPIFFE ID
        }),
    );
    let listener = mesh.listener(SocketAddr::from(HELLO_ADDR)).await?;
    // Connections are refused until the control plane's inbound listener arrives.
    listener.status().wait_for(|s| s.is_serving()).await?;
    println!(
        "hello: serving on {} as {}",
        SocketAddr::from(HELLO_ADDR),
        mesh.identity().ready().await.id
    );
    // `mesh.app` applies each connection's policies per request: required (a bare
    // router on the mesh listener has its connections closed).
    axum::serve(listener, mesh.app(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
// ANCHOR_END: hello

// ANCHOR: call
/// The `caller` service: one request to `hello` through the mesh (its route, its
/// endpoints, mTLS to the SPIFFE ID the control plane expects there); returns the body.
pub async fn call(settings: &Settings) -> Result<String, BoxError> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let mesh = connect("caller", settings).await?;
    // Optional (the first request does it too): the routes now, or why not.
    let hello = "hello.default.svc.cluster.local:8080";
    mesh.ready(settings.ready_timeout, &[hello]).await?;
    let req = http::Request::get(format!("http://{hello}/"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let resp = mesh.client().oneshot(req).await?;
    let status = resp.status();
    let server = resp.extensions().get::<PeerIdentity>().cloned();
    let body = resp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(format!("hello answered {status}: {body}").into());
    }
    if let Some(server) = server {
        println!("caller: {status} from {server}");
    }
    Ok(body)
}
// ANCHOR_END: call

// ANCHOR: layers
/// `app` with Istio's server-side request metrics (recorded into `mesh.metrics()`) around
/// it; your own tower middleware goes in the same `ServiceBuilder`.
pub fn with_metrics(mesh: &Mesh, app: Router) -> IstioMetricsService<Router> {
    use mesh::telemetry::metrics::ServiceInfo;
    tower::ServiceBuilder::new()
        .layer(mesh.inbound_metrics(ServiceInfo::from_host("hello.default.svc.cluster.local")))
        .service(app)
}
// ANCHOR_END: layers
