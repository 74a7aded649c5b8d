//! Request mirroring through `Mesh::client()`: a VirtualService `mirror` (Envoy's
//! `request_mirror_policies`) sends a fire-and-forget copy, body included, to the shadow
//! cluster with the request's host (istiod's `disable_shadow_host_suffix_append`); a slow or failing shadow never delays or
//! fails the main request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh::Mesh;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use tokio::net::TcpListener;
use tower::ServiceExt;

/// What a server saw: (Host, body) per request.
type Seen = Arc<Mutex<Vec<(String, Bytes)>>>;

/// A plaintext HTTP/1.1 server answering `status` after `delay`, recording what it saw.
async fn serve(status: u16, delay: Duration) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = record.clone();
                    async move {
                        let host = req
                            .headers()
                            .get("host")
                            .map_or(String::new(), |h| h.to_str().unwrap_or_default().to_owned());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        record.lock().unwrap().push((host, body));
                        tokio::time::sleep(delay).await;
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn config(main: SocketAddr, shadow: SocketAddr) -> String {
    let entry = |name: &str| {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
"#
        )
    };
    let workload = |name: &str, addr: SocketAddr| {
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {}}}
  labels: {{app: {name}}}
"#,
            addr.port()
        )
    };
    entry("main")
        + &entry("shadow")
        + &workload("main", main)
        + &workload("shadow", shadow)
        + r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: main, namespace: default}
spec:
  hosts: [main.default.svc.cluster.local]
  http:
  - route: [{destination: {host: main.default.svc.cluster.local}}]
    mirror: {host: shadow.default.svc.cluster.local}
    mirrorPercentage: {value: 100}
"#
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_copy_reaches_the_shadow_without_delaying_the_main_request() {
    let (main, main_seen) = serve(200, Duration::ZERO).await;
    // A slow, failing shadow: the main request must neither wait for it nor see its 500.
    let (shadow, shadow_seen) = serve(500, Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), config(main, shadow)).unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        watch_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    let node = IstioNode {
        pod_name: "caller".into(),
        service_account: "caller".into(),
        labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
        ..Default::default()
    };
    let uri = format!("http://{}", cp.xds_addr());
    let xds = XdsClient::new(
        XdsClientConfig {
            node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    let mesh = Mesh::builder()
        .dev_ca(
            cp.ca(),
            &"spiffe://cluster.local/ns/default/sa/caller"
                .parse()
                .unwrap(),
        )
        .unwrap()
        .xds_client(xds)
        .build()
        .unwrap();
    mesh.resolve("main.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let client = mesh.client();
    for i in 0..5 {
        let body = Bytes::from(format!("payload {i} ").repeat(1000));
        let req = Request::post("http://main.default.svc.cluster.local:8080/x")
            .body(Full::new(body))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(1), client.clone().oneshot(req))
            .await
            .expect("the main request does not wait for the shadow")
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // The shadow got every copy with its full body and the request's host.
    let copies = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = shadow_seen.lock().unwrap().len();
            if n == 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        copies.is_ok(),
        "shadow saw {:?}",
        shadow_seen.lock().unwrap().len()
    );
    let main_seen = main_seen.lock().unwrap().clone();
    let shadow_seen = shadow_seen.lock().unwrap().clone();
    assert_eq!(main_seen.len(), 5);
    for ((host, body), (shost, sbody)) in main_seen.iter().zip(shadow_seen.iter()) {
        assert_eq!(host, "main.default.svc.cluster.local:8080");
        // As istiod configures it: the request's own host, no `-shadow` suffix.
        assert_eq!(shost, "main.default.svc.cluster.local:8080");
        assert_eq!(body.len(), sbody.len());
    }
}
