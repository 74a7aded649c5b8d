//! A proxyless gRPC client not written here (PyPI grpcio, `MESH_GRPCIO_PYTHONPATH`) calls a
//! tonic server behind `Mesh::serve`, both configured by the embedded control plane: grpcio
//! over xDS from its server (`GRPC_XDS_BOOTSTRAP`, `GENERATOR: grpc`), our server from the
//! same YAML in process. In plaintext (PERMISSIVE), and over mTLS (ISTIO_MUTUAL, STRICT)
//! with grpcio's xDS channel credentials and `file_watcher` certificate files from the same
//! CA as our server's, as Istio's agent writes them.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh::xds::bootstrap::IstioNode;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use support::grpc::free_port;

const HOST: &str = "greeter.default.svc.cluster.local";

fn config(port: u16) -> String {
    config_with(port, "PERMISSIVE", "")
}

/// ISTIO_MUTUAL to the greeter, STRICT, and a policy allowing only `sa/pyclient` to call
/// `Health/Check`.
fn mtls_config(port: u16) -> String {
    config_with(
        port,
        "STRICT",
        &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: greeter, namespace: default}}
spec:
  selector: {{matchLabels: {{app: greeter}}}}
  action: ALLOW
  rules:
  - from: [{{source: {{principals: [cluster.local/ns/default/sa/pyclient]}}}}]
    to: [{{operation: {{paths: [/grpc.health.v1.Health/Check]}}}}]
"#
        ),
    )
}

fn config_with(port: u16, mode: &str, extra: &str) -> String {
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
spec: {{mtls: {{mode: {mode}}}}}
{extra}"#
    )
}

fn bootstrap(dir: &Path, xds: SocketAddr) -> std::path::PathBuf {
    bootstrap_as(dir, xds, "pyclient", None)
}

/// grpcio's bootstrap as service account `sa`; with `certs`, a `file_watcher` certificate
/// provider `default` over Istio's file names there (what Istio's TLS contexts reference).
fn bootstrap_as(dir: &Path, xds: SocketAddr, sa: &str, certs: Option<&Path>) -> PathBuf {
    let path = dir.join(format!("bootstrap-{sa}.json"));
    let mut json = serde_json::json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {
            "id": format!("sidecar~127.0.0.1~{sa}.default~default.svc.cluster.local"),
            "cluster": format!("{sa}.default"),
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default"},
            "locality": {}
        }
    });
    if let Some(d) = certs {
        json["certificate_providers"] = serde_json::json!({"default": {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": d.join("cert-chain.pem"),
                "private_key_file": d.join("key.pem"),
                "ca_certificate_file": d.join("root-cert.pem"),
                "refresh_interval": "900s"
            }
        }});
    }
    std::fs::write(&path, json.to_string()).unwrap();
    path
}

/// `creds` as Istio's agent writes them: `cert-chain.pem`, `key.pem`, `root-cert.pem`.
fn write_cert_dir(dir: &Path, creds: &mesh::tls::Credentials) {
    let pem = |label: &str, der: &[u8]| pem::encode(&pem::Pem::new(label, der.to_vec()));
    let certs = |cs: &[rustls::pki_types::CertificateDer<'_>]| -> String {
        cs.iter().map(|c| pem("CERTIFICATE", c)).collect()
    };
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), certs(&creds.chain)).unwrap();
    std::fs::write(
        dir.join("key.pem"),
        pem("PRIVATE KEY", creds.key.secret_der()),
    )
    .unwrap();
    std::fs::write(dir.join("root-cert.pem"), certs(&creds.roots)).unwrap();
}

/// Runs the grpcio client script (`xds_client.py TARGET who CALLS [xds-creds]`); its
/// output lines.
async fn grpcio_client(
    pythonpath: PathBuf,
    boot: PathBuf,
    calls: u32,
    xds_creds: bool,
) -> Vec<String> {
    let python = std::env::var("MESH_GRPCIO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/grpcio/xds_client.py");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg(format!("xds:///{HOST}:50051"))
            .arg("who")
            .arg(calls.to_string());
        if xds_creds {
            cmd.arg("xds-creds");
        }
        cmd.env("PYTHONPATH", pythonpath)
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
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_a_tonic_server_behind_mesh_serve() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
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
    let answers = grpcio_client(pythonpath, boot, 5, false).await;
    assert_eq!(answers, vec!["0801"; 5], "SERVING, five times");
    assert!(cp.xds().status().nacks.is_empty());
}

/// grpcio with xDS channel credentials calls our tonic server over mTLS: the control plane
/// says ISTIO_MUTUAL (an UpstreamTlsContext naming certificate provider `default`), grpcio
/// presents the certificate of its `file_watcher` files and verifies our server's SPIFFE
/// ID; our server is STRICT and allows only `sa/pyclient`, so the SERVING answers were mTLS
/// with grpcio's identity, and the same client as `sa/intruder` is denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_a_tonic_server_over_mtls_with_xds_credentials() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeter.yaml"), mtls_config(port)).unwrap();
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
    let ca = support::dev_ca();
    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "greeter".into(),
        namespace: "default".into(),
        service_account: "greeter".into(),
        labels: BTreeMap::from([("app".to_owned(), "greeter".to_owned())]),
        ..Default::default()
    };
    let server = support::local_mesh(&ca, dir.path(), node).await;
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

    let td = mesh::core::TrustDomain::new("cluster.local").unwrap();
    let mut runs = Vec::new();
    for sa in ["pyclient", "intruder"] {
        let certs = dir.path().join(sa);
        let id = mesh::core::SpiffeId::istio(&td, "default", sa).unwrap();
        write_cert_dir(&certs, &ca.issue(&id, Duration::from_secs(3600)).unwrap());
        let boot = bootstrap_as(dir.path(), cp.xds_addr(), sa, Some(&certs));
        runs.push(grpcio_client(pythonpath.clone(), boot, 3, true).await);
    }
    assert_eq!(
        runs[0],
        vec!["0801"; 3],
        "SERVING, three times, as sa/pyclient"
    );
    assert_eq!(runs[1].len(), 3, "{:?}", runs[1]);
    for line in &runs[1] {
        assert!(line.starts_with("PERMISSION_DENIED"), "sa/intruder: {line}");
    }
    assert!(cp.xds().status().nacks.is_empty());
}
