//! Cases 6 and 7: unary gRPC (`grpc.health.v1.Health/Check`, tonic on both sides).
//!
//! - Case 6, the baseline: a tonic client over hyper HTTP/2 over tokio-rustls mTLS (client
//!   certificate, WebPKI verifiers; the same dev-CA certificates as case 2), one connection
//!   per lane -> tonic's `Routes` served by hyper over tokio-rustls.
//! - Case 7, the mesh: a generated tonic client on `mesh.channel(target)` (routing from the
//!   embedded control plane's xDS, a `GRPC` port, ISTIO_MUTUAL; the facade's default
//!   stack) -> the same `Routes` behind mesh-tls's SPIFFE mTLS server.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_tls::IdentityStore;
use mesh_tls::config::{ServerSettings, default_provider};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{MeshAcceptor, serve_with_shutdown};
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::lanes::{AbortOnDrop, free_port};
use super::{Case, CaseId};
use crate::loadgen::Lane;
use crate::{Error, certs};

/// The gRPC service the mesh case calls.
pub const HOST: &str = "grpc-echo.bench.svc.cluster.local";
/// Its port.
pub const PORT: u16 = 9090;

/// The health service, answering SERVING for `""`.
fn routes() -> tonic::service::Routes {
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::service::Routes::new(health)
}

/// A lane: one `Health/Check` per send, checked to answer SERVING.
struct GrpcLane<T>(HealthClient<T>);

impl<T> Lane for GrpcLane<T>
where
    T: tonic::client::GrpcService<tonic::body::Body> + Send,
    T::Future: Send,
    T::Error: Into<tower::BoxError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower::BoxError> + Send,
{
    fn send(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let resp = self.0.check(HealthCheckRequest::default()).await?;
            if resp.into_inner().status != ServingStatus::Serving as i32 {
                return Err("Health/Check did not answer SERVING".into());
            }
            Ok(())
        })
    }
}

/// Case 6.
pub struct GrpcTonicMtls {
    addr: SocketAddr,
    connector: TlsConnector,
    _server: AbortOnDrop,
}

impl GrpcTonicMtls {
    /// Issues the server and client certificates from `ca` (as case 2) and starts the server.
    pub async fn start(ca: &DevCa) -> Result<Self, Error> {
        let server_creds = certs::issue(ca, "echo")?;
        let client_creds = certs::issue(ca, "bench-client")?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.root_der())?;
        let roots = Arc::new(roots);
        let provider = default_provider();
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()?,
            )
            .with_single_cert(server_creds.chain.clone(), server_creds.key.clone_key())?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(
                WebPkiServerVerifier::builder_with_provider(roots, provider).build()?,
            )
            .with_client_auth_cert(client_creds.chain.clone(), client_creds.key.clone_key())?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(Arc::new(server));
        let task = tokio::spawn(accept_loop(listener, acceptor));
        Ok(Self {
            addr,
            connector: TlsConnector::from(Arc::new(client)),
            _server: AbortOnDrop(task),
        })
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor) {
    let routes = routes();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(routes.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

/// One hyper HTTP/2 connection as the tower service tonic's client takes.
#[derive(Clone)]
struct H2Conn(http2::SendRequest<tonic::body::Body>);

impl tower::Service<http::Request<tonic::body::Body>> for H2Conn {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(req))
    }
}

impl Case for GrpcTonicMtls {
    fn id(&self) -> CaseId {
        CaseId::GrpcTonicMtls
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(certs::SERVER_DNS)?;
            let tls = self.connector.connect(name, tcp).await?;
            let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let origin = format!("https://{}", certs::SERVER_DNS).parse()?;
            let client = HealthClient::with_origin(H2Conn(sender), origin);
            Ok(Box::new(GrpcLane(client)) as Box<dyn Lane>)
        })
    }

    fn describe(&self) -> String {
        "unary gRPC `Health/Check`: a tonic-generated client over hyper 1 \
         `client::conn::http2` over tokio-rustls (TLS 1.3, client certificate, WebPKI \
         verifiers, *ring*) -> tonic `Routes` served by hyper `server::conn::http2`, one \
         connection per lane"
            .into()
    }
}

/// The Istio config of the gRPC service, one workload on `port`.
fn config(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-echo, namespace: bench}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: grpc-echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: grpc-echo-1, namespace: bench}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {port}}}
  labels: {{app: grpc-echo}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: grpc-echo, namespace: bench}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"#
    )
}

/// Case 7.
pub struct GrpcMesh {
    client: HealthClient<mesh::Channel>,
    _cp: ControlPlane,
    _config: tempfile::TempDir,
    _server: AbortOnDrop,
}

impl GrpcMesh {
    /// Starts the embedded control plane (with the CA saved in `ca_dir`, the same as `ca`),
    /// the server and the client mesh, and waits until the client has resolved the target.
    pub async fn start(ca: &DevCa, ca_dir: &Path) -> Result<Self, Error> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("grpc.yaml"), config(port))?;
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: dir.path().into(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: None,
            debug_addr: None,
            ca_dir: Some(ca_dir.into()),
            watch_interval: Duration::from_secs(5),
            ..Default::default()
        })
        .await?;

        let server_store = IdentityStore::from_credentials(certs::issue(ca, "echo")?)?;
        let acceptor = MeshAcceptor::new(server_store, ServerSettings::default());
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let server = tokio::spawn(async move {
            let _ = serve_with_shutdown(listener, acceptor, routes(), std::future::pending()).await;
        });

        let node = IstioNode {
            pod_name: "bench-client-0".into(),
            namespace: "bench".into(),
            service_account: "bench-client".into(),
            labels: BTreeMap::from([("app".to_owned(), "bench-client".to_owned())]),
            ..Default::default()
        };
        let uri = format!("http://{}", cp.xds_addr());
        let bootstrap = Bootstrap::istio_proxyless(node, &uri);
        let xds = XdsClient::new(
            XdsClientConfig {
                node: bootstrap.node_proto(),
                ..Default::default()
            },
            channel::insecure(&uri)?,
        );
        let client_store = IdentityStore::from_credentials(certs::issue(ca, "bench-client")?)?;
        let mesh = mesh::Mesh::builder()
            .identity_store(client_store)
            .xds_client(xds)
            .build()?;
        mesh.resolve(&format!("{HOST}:{PORT}")).await?;
        let client = HealthClient::new(mesh.channel(&format!("xds:///{HOST}:{PORT}")));
        Ok(Self {
            client,
            _cp: cp,
            _config: dir,
            _server: AbortOnDrop(server),
        })
    }
}

impl Case for GrpcMesh {
    fn id(&self) -> CaseId {
        CaseId::GrpcMesh
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move { Ok(Box::new(GrpcLane(self.client.clone())) as Box<dyn Lane>) })
    }

    fn describe(&self) -> String {
        "unary gRPC `Health/Check`: the same tonic-generated client on \
         `mesh.channel(\"xds:///grpc-echo...:9090\")` (routing from the embedded control \
         plane's xDS, a `GRPC` port, ISTIO_MUTUAL; the facade's default `ResilienceStack` \
         and source metrics; gRPC over mesh-route's HTTP/2 pool, connections shared by all \
         lanes) -> the same tonic `Routes` behind mesh-tls `serve_with_shutdown` (SPIFFE \
         mTLS); each lane holds a clone of the client"
            .into()
    }
}
