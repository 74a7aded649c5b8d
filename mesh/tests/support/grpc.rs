//! A tonic server (`support/echo.rs`) behind `Mesh::serve` and a client mesh, both
//! configured by the embedded control plane in process from Istio YAML.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh::Mesh;
use mesh::xds::bootstrap::IstioNode;

use super::echo::{Echo, EchoClient, Msg};

pub const HOST: &str = "echo.default.svc.cluster.local";
pub const TARGET: &str = "xds:///echo.default.svc.cluster.local:9080";

/// The echo service on `port` (protocol `protocol`, mTLS or plaintext `tls`), STRICT or
/// PERMISSIVE mTLS, plus `extra` YAML.
pub fn config(port: u16, protocol: &str, tls: &str, mode: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: grpc, protocol: {protocol}}}]
  workloadSelector: {{labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {port}}}
  labels: {{app: echo}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: {tls}}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: {mode}}}}}
---
{extra}
"#
    )
}

/// An mTLS gRPC service (`GRPC` port, `ISTIO_MUTUAL`, STRICT) with `extra` YAML.
pub fn mtls(port: u16, extra: &str) -> String {
    config(port, "GRPC", "ISTIO_MUTUAL", "STRICT", extra)
}

pub use mesh_test_support::free_port;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub echo: Echo,
    pub server: Mesh,
    pub client: Mesh,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: tokio::task::JoinHandle<Result<(), tower::BoxError>>,
}

pub fn node(name: &str, app: &str) -> IstioNode {
    IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ..Default::default()
    }
}

/// How a test serves `echo` on `addr` with the server mesh, until `stop` fires.
pub type Serve = Box<
    dyn FnOnce(
        Mesh,
        SocketAddr,
        Echo,
        tokio::sync::oneshot::Receiver<()>,
    ) -> tokio::task::JoinHandle<Result<(), tower::BoxError>>,
>;

/// Starts `echo` behind `Mesh::serve` with the config `yaml(port)` and a client mesh (as
/// `client`); returns once a unary call through `mesh.channel` succeeds.
pub async fn start(echo: Echo, yaml: impl Fn(u16) -> String) -> Fixture {
    start_with(
        echo,
        yaml,
        Box::new(|server, addr, svc, stopped| {
            tokio::spawn(async move {
                server
                    .serve_with_shutdown(addr, svc, async {
                        let _ = stopped.await;
                    })
                    .await
                    .map_err(Into::into)
            })
        }),
    )
    .await
}

/// [`start`] with the server run by `serve`.
pub async fn start_with(echo: Echo, yaml: impl Fn(u16) -> String, serve: Serve) -> Fixture {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.yaml"), yaml(port)).unwrap();
    let ca = super::dev_ca();
    let server = super::local_mesh(&ca, dir.path(), node("echo", "echo")).await;
    let client = super::local_mesh(&ca, dir.path(), node("client", "client")).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let served = serve(server.clone(), addr, echo.clone(), stopped);
    let mut c = EchoClient::new(client.channel(TARGET));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match c.unary("Unary", Msg::new("ping", 0)).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("never served: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    Fixture {
        dir,
        port,
        echo,
        server,
        client,
        stop: Some(stop),
        served,
    }
}

/// A client mesh alone, configured with `yaml` (for tests that run their own server);
/// keep the directory for as long as the mesh.
pub async fn client_mesh(yaml: String) -> (tempfile::TempDir, Mesh) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.yaml"), yaml).unwrap();
    let client = super::local_mesh(&super::dev_ca(), dir.path(), node("client", "client")).await;
    (dir, client)
}

impl Fixture {
    pub fn channel(&self) -> EchoClient<mesh::Channel> {
        EchoClient::new(self.client.channel(TARGET))
    }

    /// Replaces the config and waits until the client routes with it.
    pub async fn reconfigure(&self, yaml: String) {
        std::fs::write(self.dir.path().join("echo.yaml"), yaml).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.client.mesh_client().caught_up().await;
    }
}
