//! A workload configured over real xDS by the embedded control plane (mesh-control's
//! server on loopback, no CA or debug port), and the process figures the fault tests print.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};

#[allow(unused_imports)]
pub use mesh_test_support::free_port;

/// This process's resident memory, KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The control plane serving the Istio YAML in `dir` as xDS on `xds_addr` (port 0 picks
/// one: `xds_addr()`).
pub async fn control_plane(dir: &Path, xds_addr: SocketAddr) -> ControlPlane {
    ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.into(),
        xds_addr,
        ca_addr: None,
        debug_addr: None,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The service `web.default.svc.cluster.local` (HTTP, 8080) and its one workload `web`
/// (service account `web`, label `app: web`) on 127.0.0.1:`port`; with `mtls`, a namespace
/// PeerAuthentication of that mode.
pub fn web_workload_yaml(port: u16, mtls: Option<&str>) -> String {
    let mut yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web, namespace: default}}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: web}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: web}}
  serviceAccount: web
"
    );
    if let Some(mode) = mtls {
        yaml.push_str(&format!(
            "---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: {mode}}}}}
"
        ));
    }
    yaml
}

/// The node of pod `name` in `default`, service account `name`, label `app: name`, on
/// 127.0.0.1.
pub fn node(name: &str) -> IstioNode {
    IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        ..Default::default()
    }
}

/// The proxyless bootstrap of `node` and its xDS client of the control plane on
/// `xds_addr` (plaintext; it connects, and retries, once used).
pub fn xds_client(node: IstioNode, xds_addr: SocketAddr) -> (Bootstrap, XdsClient) {
    let uri = format!("http://{xds_addr}");
    let bootstrap = Bootstrap::istio_proxyless(node, &uri);
    let xds = XdsClient::new(
        XdsClientConfig {
            node: bootstrap.node_proto(),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    (bootstrap, xds)
}
