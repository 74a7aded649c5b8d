//! A proxyless gRPC client not written here (PyPI grpcio, `MESH_GRPCIO_PYTHONPATH`) calls a
//! tonic server behind `Mesh::serve`, both configured by the embedded control plane: grpcio
//! over xDS from its server (`GRPC_XDS_BOOTSTRAP`, `GENERATOR: grpc`), our server from the
//! same YAML in process. Plaintext (PERMISSIVE): grpcio's xDS mTLS needs file-watcher
//! certificate providers this test does not set up.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh::xds::bootstrap::IstioNode;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use support::grpc::free_port;

const HOST: &str = "greeter.default.svc.cluster.local";

fn config(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: greeter}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: greeter, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {port}}}
  labels: {{app: greeter}}
  serviceAccount: greeter
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: PERMISSIVE}}}}
"#
    )
}

fn bootstrap(dir: &Path, xds: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("bootstrap.json");
    let json = serde_json::json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {
            "id": "sidecar~127.0.0.1~pyclient.default~default.svc.cluster.local",
            "cluster": "pyclient.default",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
            "locality": {}
        }
    });
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_a_tonic_server_behind_mesh_serve() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
    let python = std::env::var("MESH_GRPCIO_PYTHON").unwrap_or_else(|_| "python3".into());
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeter.yaml"), config(port)).unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        watch_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();

    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "greeter".into(),
        namespace: "default".into(),
        service_account: "greeter".into(),
        labels: BTreeMap::from([("app".to_owned(), "greeter".to_owned())]),
        ..Default::default()
    };
    let server = support::local_mesh(&support::dev_ca(), dir.path(), node).await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("who", tonic_health::ServingStatus::Serving)
        .await;
    let inbound = server
        .inbound_server(([127, 0, 0, 1], port).into())
        .unwrap();
    let mut status = inbound.status();
    tokio::spawn(inbound.serve(tonic::service::Routes::new(health)));
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.is_serving()))
        .await
        .expect("the server serves once its listener arrives")
        .unwrap();

    let boot = bootstrap(dir.path(), cp.xds_addr());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/grpcio/xds_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(&script)
            .arg(format!("xds:///{HOST}:50051"))
            .arg("who")
            .arg("5")
            .env("PYTHONPATH", pythonpath)
            .env("GRPC_XDS_BOOTSTRAP", boot)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(answers, vec!["0801"; 5], "SERVING, five times");
    assert!(cp.xds().status().nacks.is_empty());
}
