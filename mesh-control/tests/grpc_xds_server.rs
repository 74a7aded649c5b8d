//! A proxyless gRPC *server* not written here (PyPI grpcio, `xds=True`, gRPC A36) takes its
//! inbound listener `xds.istio.io/grpc/lds/inbound/127.0.0.1:<port>` from our control plane
//! and behaves as the Istio YAML says: PERMISSIVE serves plaintext (gRPC ignores the
//! `transport_protocol: tls` chain, as A36 says), an AuthorizationPolicy turns into RBAC that
//! grpcio enforces (PERMISSION_DENIED for a plaintext caller when only a principal is
//! allowed; allowed by path), and STRICT stops plaintext. Every step is a config edit.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

const SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: probe, namespace: default}
spec:
  hosts: [probe.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  endpoints: [{address: 127.0.0.1, ports: {grpc: PORT}, serviceAccount: pyserver, labels: {app: probe}}]
"#;

fn peer_auth(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

fn allow(rule: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: probe, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: probe}}}}\n  rules: [{rule}]\n"
    )
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../interop/grpcio/xds_server.py")
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn probe(python: &str, pythonpath: &Path, port: u16) -> String {
    let out = Command::new(python)
        .arg(script())
        .args(["probe", &port.to_string()])
        .env("PYTHONPATH", pythonpath)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn eventually(python: &str, pythonpath: &Path, port: u16, want: &str) {
    let mut last = String::new();
    for _ in 0..60 {
        last = probe(python, pythonpath, port);
        if last == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the grpcio server never answered {want} (last: {last})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_xds_server_follows_peer_authentication_and_authorization_policy() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
    let python = std::env::var("MESH_GRPCIO_PYTHON").unwrap_or_else(|_| "python3".into());
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("probe.yaml"),
        SERVICE.replace("PORT", &port.to_string()),
    )
    .unwrap();
    let security = config.join("security.yaml");
    std::fs::write(&security, peer_auth("PERMISSIVE")).unwrap();
    let cp = control_plane(&config).await;

    // grpcio needs the certificate provider `default` the mTLS chains name.
    let creds = cp
        .ca()
        .issue(&id("pyserver"), Duration::from_secs(3600))
        .unwrap();
    let (chain, key, root) = write_certs(dir.path(), &creds);
    let bootstrap = dir.path().join("bootstrap.json");
    let json = serde_json::json!({
        "xds_servers": [{
            "server_uri": cp.xds_addr().to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"]
        }],
        "node": {
            "id": "sidecar~127.0.0.1~pyserver.default~default.svc.cluster.local",
            "metadata": {"GENERATOR": "grpc", "NAMESPACE": "default",
                         "INSTANCE_IPS": "127.0.0.1", "SERVICE_ACCOUNT": "pyserver"},
            "locality": {}
        },
        "certificate_providers": {"default": {"plugin_name": "file_watcher", "config": {
            "certificate_file": chain, "private_key_file": key, "ca_certificate_file": root,
            "refresh_interval": "900s"}}},
        "server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s"
    });
    std::fs::write(&bootstrap, json.to_string()).unwrap();
    let _server = Server(
        Command::new(&python)
            .arg(script())
            .args(["serve", &port.to_string()])
            .env("PYTHONPATH", &pythonpath)
            .env("GRPC_XDS_BOOTSTRAP", &bootstrap)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // PERMISSIVE: served over plaintext (the method is unknown: UNIMPLEMENTED).
    eventually(&python, &pythonpath, port, "UNIMPLEMENTED").await;

    // Only productpage may call: a plaintext caller has no principal.
    let pa = peer_auth("DISABLE");
    std::fs::write(
        &security,
        format!(
            "{pa}{}",
            allow("{from: [{source: {principals: [cluster.local/ns/default/sa/productpage]}}]}")
        ),
    )
    .unwrap();
    eventually(&python, &pythonpath, port, "PERMISSION_DENIED").await;

    // Allowed by path.
    std::fs::write(
        &security,
        format!(
            "{pa}{}",
            allow("{to: [{operation: {paths: [\"/mesh.Probe/*\"]}}]}")
        ),
    )
    .unwrap();
    eventually(&python, &pythonpath, port, "UNIMPLEMENTED").await;

    // STRICT: plaintext is no longer served.
    std::fs::write(&security, peer_auth("STRICT")).unwrap();
    eventually(&python, &pythonpath, port, "UNAVAILABLE").await;
}
