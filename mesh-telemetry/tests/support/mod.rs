//! A small in-process mesh for the tests: the embedded control plane on generated Istio
//! config, workloads with identities from its CA, their MeshClients, and mTLS servers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::IdentityStore;
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};

/// One service of the test mesh: `<name>.default.svc.cluster.local:8080`, served by one
/// workload `<name>-v1` (service account `<name>`) on `port`.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
}

impl Service {
    pub fn host(&self) -> String {
        format!("{}.default.svc.cluster.local", self.name)
    }

    pub fn target(&self) -> String {
        format!("{}:8080", self.host())
    }
}

// Not every test binary that includes this module uses it.
#[allow(unused_imports)]
pub use mesh_test_support::free_port;

/// The labels of workload `<name>-v1` (service account `<name>`, namespace `default`), as
/// the test mesh's workloads have them.
pub fn workload_info(name: &str) -> mesh_telemetry::metrics::WorkloadInfo {
    mesh_telemetry::metrics::WorkloadInfo {
        workload: format!("{name}-v1"),
        namespace: "default".into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{name}"),
        app: name.into(),
        version: "v1".into(),
        canonical_service: name.into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    }
}

/// The exposition's first line of metric `name` whose labels contain all `needles`.
pub fn series<'a>(text: &'a str, name: &str, needles: &[&str]) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
}

fn config(services: &[Service]) -> String {
    let mut y = String::new();
    for s in services {
        let (n, host, port) = (s.name, s.host(), s.port);
        y += &format!(
            "---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {n}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {n}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {n}, namespace: default}}
spec:
  host: {host}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {n}-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {n}, version: v1}}
  serviceAccount: {n}
"
        );
    }
    y
}

pub struct TestMesh {
    pub cp: ControlPlane,
    _dir: tempfile::TempDir,
}

impl TestMesh {
    pub async fn start(services: &[Service]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), config(services)).unwrap();
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: dir.path().into(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: None,
            debug_addr: None,
            ..Default::default()
        })
        .await
        .unwrap();
        Self { cp, _dir: dir }
    }

    /// A workload with service account `account`: identity, xDS client, MeshClient.
    pub fn workload(&self, account: &str) -> Workload {
        let node = IstioNode {
            pod_name: format!("{account}-v1"),
            service_account: account.into(),
            labels: BTreeMap::from([
                ("app".to_owned(), account.to_owned()),
                ("version".to_owned(), "v1".to_owned()),
            ]),
            ..Default::default()
        };
        let id = node.spiffe_id().unwrap();
        let creds = self.cp.ca().issue(&id, Duration::from_secs(3600)).unwrap();
        let identity = IdentityStore::from_credentials(creds).unwrap();
        let uri = format!("http://{}", self.cp.xds_addr());
        let bootstrap = Bootstrap::istio_proxyless(node, &uri);
        let xds = XdsClient::new(
            XdsClientConfig {
                node: bootstrap.node_proto(),
                ..Default::default()
            },
            channel::insecure(&uri).unwrap(),
        );
        let client = MeshClient::new(xds.clone(), identity.clone(), MeshClientConfig::default());
        Workload {
            identity,
            xds,
            client,
        }
    }
}

pub struct Workload {
    pub identity: IdentityStore,
    pub xds: XdsClient,
    pub client: MeshClient,
}

/// Serves `service` over mTLS with `identity` on 127.0.0.1:`port` until the test ends.
pub async fn serve<S, B>(identity: &IdentityStore, port: u16, service: S) -> SocketAddr
where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<tower::BoxError>,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = mesh_tls::server::MeshAcceptor::new(
        identity.clone(),
        mesh_tls::config::ServerSettings::default(),
    );
    tokio::spawn(mesh_tls::server::serve_with_shutdown(
        listener,
        acceptor,
        service,
        std::future::pending(),
    ));
    addr
}
