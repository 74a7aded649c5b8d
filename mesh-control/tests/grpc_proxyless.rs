//! A proxyless gRPC client not written here (PyPI grpcio, `MESH_GRPCIO_PYTHONPATH`)
//! resolves `xds:///greeter.default.svc.cluster.local:50051` through our control plane
//! (`GRPC_XDS_BOOTSTRAP`, node metadata `GENERATOR: grpc`) and calls a gRPC server picked by
//! the VirtualService. Plaintext: grpcio's xDS mTLS needs file-watcher certificate
//! providers wired to a per-process certificate, which this test does not set up.
//!
//! Two tonic health servers back the service: asked about `who`, v1 answers SERVING
//! (`0801`) and v2 NOT_SERVING (`0802`), so the answers tell which subset was called.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::*;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;

const HOST: &str = "greeter.default.svc.cluster.local";

async fn health_server(status: ServingStatus) -> u16 {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("who", status).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

fn config(v1: u16, v2: u16, subset: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 50051, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {v1}}}, labels: {{version: v1}}, serviceAccount: greeter}}
  - {{address: 127.0.0.1, ports: {{grpc: {v2}}}, labels: {{version: v2}}, serviceAccount: greeter}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: default}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - destination: {{host: {HOST}, subset: {subset}}}
"#
    )
}

fn bootstrap(dir: &Path, xds: std::net::SocketAddr) -> std::path::PathBuf {
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

fn run_client(python: &str, pythonpath: &str, bootstrap: &Path, calls: u32) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/grpcio/xds_client.py");
    let out = Command::new(python)
        .arg(&script)
        .arg(format!("xds:///{HOST}:50051"))
        .arg("who")
        .arg(calls.to_string())
        .env("PYTHONPATH", pythonpath)
        .env("GRPC_XDS_BOOTSTRAP", bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "grpcio client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_resolves_and_calls_through_our_control_plane() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
    let python = std::env::var("MESH_GRPCIO_PYTHON").unwrap_or_else(|_| "python3".into());
    let v1 = health_server(ServingStatus::Serving).await;
    let v2 = health_server(ServingStatus::NotServing).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeter.yaml"), config(v1, v2, "v2")).unwrap();
    let cp = control_plane(dir.path()).await;
    let boot = bootstrap(dir.path(), cp.xds_addr());
    let pp = pythonpath.display().to_string();

    let python2 = python.clone();
    let (pp2, boot2) = (pp.clone(), boot.clone());
    let answers = tokio::task::spawn_blocking(move || run_client(&python2, &pp2, &boot2, 5))
        .await
        .unwrap();
    assert_eq!(
        answers,
        vec!["0802"; 5],
        "the VirtualService sends every call to v2"
    );
    let status = cp.xds().status();
    assert!(status.nacks.is_empty(), "grpcio NACKed: {:?}", status.nacks);

    // The route moves to v1: a new client process follows.
    std::fs::write(dir.path().join("greeter.yaml"), config(v1, v2, "v1")).unwrap();
    let generation = cp.xds().generation();
    within(Duration::from_secs(2), "the edit is loaded", || {
        cp.xds().generation() > generation
    })
    .await;
    let answers = tokio::task::spawn_blocking(move || run_client(&python, &pp, &boot, 5))
        .await
        .unwrap();
    assert_eq!(answers, vec!["0801"; 5]);
    assert!(cp.xds().status().nacks.is_empty());
}
