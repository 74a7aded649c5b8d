//! A ServiceEntry's `addresses` as Istio users write them: a request addressed to the
//! service's virtual IP reaches the service's endpoints, as through an Istio sidecar (the
//! VIP is a domain of the service's virtual host), on a workload configured by the embedded
//! control plane in process.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::xds::bootstrap::IstioNode;
use tower::ServiceExt;

/// A server answering with `name`.
async fn server(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn service(name: &str, vip: &str, port: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {name}.default.svc.cluster.local
  trafficPolicy: {{tls: {{mode: DISABLE}}}}
---
"#
    )
}

async fn get(client: &mesh::Client, uri: &str) -> (u16, String) {
    let req = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_service_vip_reaches_the_service() {
    let (cart, shop) = (server("cart").await, server("shop").await);
    let dir = tempfile::tempdir().unwrap();
    let yaml = service("cart", "240.240.0.10", cart) + &service("shop", "240.240.0.11/32", shop);
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let node = IstioNode {
        pod_name: "web-0".into(),
        service_account: "web".into(),
        labels: BTreeMap::from([("app".to_owned(), "web".to_owned())]),
        ..Default::default()
    };
    let m = support::local_mesh(&support::dev_ca(), dir.path(), node).await;
    let client = m.client();
    // By VIP (with or without the default port), by name, and a `/32` address as its IP.
    assert_eq!(
        get(&client, "http://240.240.0.10:80/").await,
        (200, "cart".into())
    );
    assert_eq!(
        get(&client, "http://240.240.0.10/").await,
        (200, "cart".into())
    );
    assert_eq!(
        get(&client, "http://cart.default.svc.cluster.local/").await,
        (200, "cart".into())
    );
    assert_eq!(
        get(&client, "http://240.240.0.11/").await,
        (200, "shop".into())
    );
}
