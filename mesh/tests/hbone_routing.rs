//! Under the embedded control plane, a WorkloadEntry labelled
//! `networking.istio.io/tunnel: http` is reached by `mesh.client()` through an HBONE tunnel
//! (a real `HboneServer` on the workload's :15008 sees the CONNECT), and one without the
//! label is dialled directly on its own port.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::IdentityStore;
use mesh::core::SpiffeId;
use mesh::hbone::HboneServer;
use mesh::xds::bootstrap::IstioNode;
use tower::ServiceExt;

const HOST: &str = "reviews.default.svc.cluster.local";
const TUNNELLED: [u8; 4] = [127, 0, 18, 41];
const DIRECT: [u8; 4] = [127, 0, 18, 42];

fn config() -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ambient, namespace: default}}
spec:
  address: 127.0.18.41
  labels: {{app: reviews, version: ambient, networking.istio.io/tunnel: http, security.istio.io/tlsMode: disabled}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: direct, namespace: default}}
spec:
  address: 127.0.18.42
  labels: {{app: reviews, version: direct, security.istio.io/tlsMode: disabled}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
  subsets:
  - {{name: ambient, labels: {{version: ambient}}}}
  - {{name: direct, labels: {{version: direct}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-to: {{exact: direct}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: direct}}}}]
  - route: [{{destination: {{host: {HOST}, subset: ambient}}}}]
"#
    )
}

fn get(to: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(format!("http://{HOST}:9080/"))
        .header("x-to", to)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_labelled_workload_entry_is_reached_through_hbone() {
    let ca = support::dev_ca();
    let reviews = SpiffeId::istio(ca.trust_domain(), "default", "reviews").unwrap();
    let store = || {
        IdentityStore::from_credentials(ca.issue(&reviews, Duration::from_secs(3600)).unwrap())
            .unwrap()
    };
    // The labelled workload: an HBONE server on its :15008 answering on port 9080.
    let app = axum::Router::new().fallback(|| async { "through hbone" });
    let tunnelled = HboneServer::builder(store())
        .http(9080, app.clone())
        .build();
    let tunnels = tunnelled.metrics().clone();
    let l = tokio::net::TcpListener::bind(SocketAddr::from((TUNNELLED, 15008)))
        .await
        .unwrap();
    tokio::spawn(tunnelled.serve(l, std::future::pending()));
    // The unlabelled one: an HBONE server that must see nothing, and its own port 9080,
    // counting the connections that arrive there.
    let untouched = HboneServer::builder(store()).http(9080, app).build();
    let untouched_tunnels = untouched.metrics().clone();
    let l = tokio::net::TcpListener::bind(SocketAddr::from((DIRECT, 15008)))
        .await
        .unwrap();
    tokio::spawn(untouched.serve(l, std::future::pending()));
    let direct_conns = Arc::new(AtomicUsize::new(0));
    let l = tokio::net::TcpListener::bind(SocketAddr::from((DIRECT, 9080)))
        .await
        .unwrap();
    let seen = direct_conns.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            drop(conn);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reviews.yaml"), config()).unwrap();
    let node = IstioNode {
        pod_name: "productpage".into(),
        namespace: "default".into(),
        service_account: "productpage".into(),
        labels: BTreeMap::from([("app".to_owned(), "productpage".to_owned())]),
        ..Default::default()
    };
    let m = support::local_mesh(&ca, dir.path(), node).await;

    // The routes arrive from the control plane in a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let resp = m.client().oneshot(get("ambient")).await;
        if let Ok(resp) = resp
            && resp.status() == 200
        {
            break resp.into_body().collect().await.unwrap().to_bytes();
        }
        assert!(tokio::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, "through hbone");
    assert!(tunnels.tunnels() >= 1, "the request arrived as a CONNECT");

    // The unlabelled workload is dialled on its own port, never through its :15008.
    let _ = m.client().oneshot(get("direct")).await;
    assert!(direct_conns.load(Ordering::Relaxed) >= 1);
    assert_eq!(untouched_tunnels.tunnels(), 0);
    assert_eq!(untouched_tunnels.connections(), 0);
}
