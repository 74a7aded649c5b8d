//! `Mesh::ready` never waits silently: after its timeout it says why, for each cause a new
//! user meets (the CA refuses, the xDS server is unreachable, the service does not exist),
//! against a real CA server and a real xDS server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh::tls::ca::IstioCaClient;
use mesh::tls::rotation::Rotation;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh::xds::resource::ResourceType;
use mesh::{Mesh, NotReady};
use mesh_control::ca::IstioCaServer;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::dev_ca::DevCa;

const TIMEOUT: Duration = Duration::from_secs(2);

fn node() -> IstioNode {
    IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "web-1".into(),
        service_account: "web".into(),
        ..Default::default()
    }
}

fn web() -> SpiffeId {
    SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap()
}

/// `ready` with an xDS server at `xds` and the dev CA's identity; returns its error and how
/// long it took.
async fn not_ready(ca: &DevCa, xds: &str, target: &str) -> (NotReady, Duration) {
    let mesh = Mesh::builder()
        .dev_ca(ca, &web())
        .unwrap()
        .bootstrap(Bootstrap::istio_proxyless(node(), xds))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = mesh.ready(TIMEOUT, &[target]).await.unwrap_err();
    (err, start.elapsed())
}

#[tokio::test]
async fn a_refused_csr_is_the_error() {
    let ca = Arc::new(DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap());
    // No token, no open mode: the CA refuses unauthenticated CSRs.
    let server = IstioCaServer::new(ca.clone())
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let client = IstioCaClient::new(server.url(), web(), vec![server.root()]);
    let mesh = Mesh::builder()
        .identity_source(Rotation::new(client))
        .bootstrap(Bootstrap::istio_proxyless(node(), "http://127.0.0.1:9"))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = mesh.ready(TIMEOUT, &[]).await.unwrap_err();
    assert!(start.elapsed() < TIMEOUT + Duration::from_secs(1));
    let msg = err.to_string();
    assert!(matches!(err, NotReady::Identity { .. }), "{msg}");
    assert!(
        msg.starts_with("no workload certificate after 2s: ")
            && msg.contains("no client certificate and no bearer token"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_unreachable_xds_server_is_the_error() {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let (err, took) = not_ready(
        &ca,
        &format!("http://{addr}"),
        "web.default.svc.cluster.local:80",
    )
    .await;
    assert!(took < TIMEOUT + Duration::from_secs(1));
    let msg = err.to_string();
    assert!(
        msg.starts_with("web.default.svc.cluster.local:80: no routes after 2s: ")
            && msg.contains("the xDS server is unreachable"),
        "{msg}"
    );
}

/// A control plane (xDS only) whose config has the service `web.default.svc.cluster.local:80`.
async fn control_plane_with_web() -> (ControlPlane, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
         metadata: {name: web, namespace: default}\n\
         spec: {hosts: [web.default.svc.cluster.local], location: MESH_INTERNAL, \
         resolution: STATIC, ports: [{number: 80, name: http, protocol: HTTP}], \
         endpoints: [{address: 127.0.0.1}]}\n",
    )
    .unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        ..Default::default()
    })
    .await
    .unwrap();
    (cp, dir)
}

/// An identity source that publishes its certificate only when told to (a slow CA).
struct HeldBack {
    creds: mesh_tls::Credentials,
    release: tokio::sync::oneshot::Receiver<()>,
}

impl mesh_tls::CertSource for HeldBack {
    fn run(
        self: Box<Self>,
        store: mesh_tls::IdentityStore,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            if self.release.await.is_ok() {
                store.publish(self.creds).unwrap();
            }
            std::future::pending::<()>().await;
        })
    }
}

/// `ready` asks for the routes while the certificate is being issued (over plaintext xDS,
/// which does not need it): a start pays the longer of the CSR and the xDS exchange, not
/// their sum. Here the listener arrives with the certificate still held back, and `ready`
/// returns once it is released.
#[tokio::test]
async fn the_routes_are_fetched_while_the_certificate_is_issued() {
    let (cp, _dir) = control_plane_with_web().await;
    let xds = format!("http://{}", cp.xds_addr());
    let (release, held) = tokio::sync::oneshot::channel();
    let creds = cp.ca().issue(&web(), Duration::from_secs(3600)).unwrap();
    let mesh = Mesh::builder()
        .identity_source(HeldBack {
            creds,
            release: held,
        })
        .bootstrap(Bootstrap::istio_proxyless(node(), &xds))
        .build()
        .unwrap();
    let target = "web.default.svc.cluster.local:80";
    let ready = tokio::spawn({
        let mesh = mesh.clone();
        async move { mesh.ready(Duration::from_secs(10), &[target]).await }
    });
    let client = mesh.xds().unwrap().clone();
    let listener = async {
        loop {
            let status = client.status().await.unwrap();
            if status
                .get(ResourceType::Listener, target)
                .is_some_and(|l| l.has_value)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("no listener while the certificate was held back");
    assert!(!ready.is_finished(), "ready without a certificate");
    release.send(()).unwrap();
    ready.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_service_the_control_plane_does_not_have_is_the_error() {
    let (cp, _dir) = control_plane_with_web().await;
    let xds = format!("http://{}", cp.xds_addr());
    // The service that exists resolves...
    let mesh = Mesh::builder()
        .dev_ca(cp.ca(), &web())
        .unwrap()
        .bootstrap(Bootstrap::istio_proxyless(node(), &xds))
        .build()
        .unwrap();
    mesh.ready(TIMEOUT, &["web.default.svc.cluster.local:80"])
        .await
        .unwrap();
    // ... a misspelt one says that the control plane does not have it: at once while
    // waiting for the server's answer, ...
    let (err, _) = not_ready(cp.ca(), &xds, "xds:///wbe.default.svc.cluster.local:80").await;
    let msg = err.to_string();
    assert!(
        msg.contains(
            "no answer yet for Listener \"wbe.default.svc.cluster.local:80\" (connected: true;"
        ),
        "{msg}"
    );
    // ... and by name once the client's does-not-exist timer has run out.
    let bootstrap = Bootstrap::istio_proxyless(node(), &xds);
    let mut config = XdsClientConfig::from_bootstrap(&bootstrap).unwrap();
    config.resource_timeout = Duration::from_millis(500);
    let mesh = Mesh::builder()
        .dev_ca(cp.ca(), &web())
        .unwrap()
        .xds_client(XdsClient::new(config, channel::insecure(&xds).unwrap()))
        .build()
        .unwrap();
    let err = mesh
        .ready(TIMEOUT, &["wbe.default.svc.cluster.local:80"])
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(
            "the control plane has no listener \"wbe.default.svc.cluster.local:80\" (DOES_NOT_EXIST"
        ),
        "{msg}"
    );
}
