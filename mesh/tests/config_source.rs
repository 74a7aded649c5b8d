//! `MeshBuilder::config_source`: a workload configured by the embedded control plane in
//! process (`mesh_control::LocalSource`), no xDS server and no xDS client: routes, subsets
//! and mTLS identities as over xDS, and a directory edit reroutes without a restart.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::Extension;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::tls::dev_ca::DevCa;
use mesh::tls::server::serve_with_shutdown;
use mesh::xds::bootstrap::IstioNode;
use mesh::{Mesh, PeerIdentity, Upstream};
use tower::ServiceExt;

const ECHO: &str = "echo.default.svc.cluster.local:8080";

fn config(v2_weight: u32) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - route:
    - {{destination: {{host: echo.default.svc.cluster.local, subset: v1}}, weight: {}}}
    - {{destination: {{host: echo.default.svc.cluster.local, subset: v2}}, weight: {v2_weight}}}
"#,
        100 - v2_weight
    )
}

fn workloads(v1: u16, v2: u16) -> String {
    [("v1", v1), ("v2", v2)]
        .map(|(v, port)| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: echo-{v}, namespace: default}}\n\
spec:\n  address: 127.0.0.1\n  ports: {{http: {port}}}\n  labels: {{app: echo, version: {v}}}\n  serviceAccount: echo\n"
            )
        })
        .concat()
}

use mesh_test_support::free_port;

/// A mesh for `pod` (service account `account`, `version` label) configured in process.
async fn mesh(ca: &DevCa, dir: &std::path::Path, pod: &str, account: &str, version: &str) -> Mesh {
    let node = IstioNode {
        pod_name: pod.into(),
        service_account: account.into(),
        labels: BTreeMap::from([
            ("app".to_owned(), account.to_owned()),
            ("version".to_owned(), version.to_owned()),
        ]),
        ..Default::default()
    };
    support::local_mesh(ca, dir, node).await
}

async fn call(client: &mesh::Client) -> (u16, String, Option<Upstream>) {
    let req = http::Request::get(format!("http://{ECHO}/hello"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let up = resp.extensions().get::<Upstream>().cloned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_source_configures_client_and_servers_without_xds() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    std::fs::write(dir.path().join("services.yaml"), config(0)).unwrap();
    std::fs::write(dir.path().join("workloads.yaml"), workloads(p1, p2)).unwrap();
    let ca = support::dev_ca();

    for (version, port) in [("v1", p1), ("v2", p2)] {
        let m = mesh(&ca, dir.path(), &format!("echo-{version}"), "echo", version).await;
        assert!(m.xds().is_none(), "no xDS client behind a config source");
        let app = axum::Router::new().route(
            "/{*path}",
            get(move |Extension(peer): Extension<PeerIdentity>| async move {
                format!("{version} {peer}")
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(serve_with_shutdown(
            listener,
            m.acceptor(),
            app,
            std::future::pending(),
        ));
    }

    let caller = mesh(&ca, dir.path(), "client-0", "client", "v1").await;
    caller.resolve(ECHO).await.unwrap();
    let client = caller.client();
    let (status, body, up) = call(&client).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, "v1 spiffe://cluster.local/ns/default/sa/client");
    assert_eq!(
        up.unwrap().cluster.to_string(),
        "outbound|8080|v1|echo.default.svc.cluster.local"
    );
    let snapshot = caller.source().snapshots().borrow().clone();
    assert!(snapshot.listeners.contains_key(ECHO));

    // Everything to v2 now: the edit reaches the client through its source.
    std::fs::write(dir.path().join("services.yaml"), config(100)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, _) = call(&client).await;
        assert_eq!(status, 200, "{body}");
        if body.starts_with("v2 ") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never rerouted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
