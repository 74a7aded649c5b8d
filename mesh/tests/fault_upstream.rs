//! Fault matrix (docs/reliability.md): an upstream resets the connection in the middle of
//! a response body. Through the composed client (`Mesh::client()`), configured the Istio
//! way by the embedded control plane, against raw TCP upstreams on 127.0.0.1:
//!
//! - the caller sees the 200 head, then an error while reading the body, within seconds
//!   (not a hang, not a truncated body passed off as complete);
//! - a reset before any response byte is retried (`retryOn: reset`) onto a healthy
//!   endpoint, so every request succeeds; once the head went out the response is the
//!   caller's and is not retried.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use mesh::Mesh;
use mesh_control::server::ControlPlane;
use support::xds::{control_plane, node, xds_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

const HOST: &str = "fault.default.svc.cluster.local";

#[derive(Clone, Copy)]
enum Upstream {
    /// Answers the head and half the body (content-length 2000), then resets.
    ResetMidBody,
    /// Resets as soon as the request arrived, before any response byte.
    ResetBeforeHead,
    /// Answers 200 with the whole body.
    Healthy,
}

async fn upstream(kind: Upstream) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                loop {
                    // Each request is small: one read holds its head and body.
                    let mut buf = [0u8; 4096];
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let head = b"HTTP/1.1 200 OK\r\ncontent-length: 2000\r\n\r\n";
                    match kind {
                        Upstream::Healthy => {
                            let _ = tcp.write_all(head).await;
                            let _ = tcp.write_all(&[b'x'; 2000]).await;
                        }
                        Upstream::ResetMidBody => {
                            let _ = tcp.write_all(head).await;
                            let _ = tcp.write_all(&[b'x'; 1000]).await;
                            let _ = tcp.flush().await;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            // SO_LINGER 0: close sends an RST.
                            let _ = tcp.set_zero_linger();
                            return;
                        }
                        Upstream::ResetBeforeHead => {
                            let _ = tcp.set_zero_linger();
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

struct Fixture {
    _cp: ControlPlane,
    _dir: tempfile::TempDir,
    mesh: Mesh,
}

/// The service `HOST` on `addrs`, round robin, retrying resets.
async fn mesh_for(addrs: &[SocketAddr]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: fault, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: fault}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: fault, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{loadBalancer: {{simple: ROUND_ROBIN}}, tls: {{mode: DISABLE}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fault, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "reset,connect-failure"}}
"#
    );
    for (i, a) in addrs.iter().enumerate() {
        yaml.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: fault-{i}, namespace: default}}\n\
spec:\n  address: 127.0.0.1\n  ports: {{http: {}}}\n  labels: {{app: fault}}\n  serviceAccount: fault\n",
            a.port()
        ));
    }
    std::fs::write(dir.path().join("fault.yaml"), yaml).unwrap();
    let cp = control_plane(dir.path(), ([127, 0, 0, 1], 0).into()).await;
    let (_, xds) = xds_client(node("caller"), cp.xds_addr());
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
    mesh.resolve(&format!("{HOST}:8080")).await.unwrap();
    Fixture {
        _cp: cp,
        _dir: dir,
        mesh,
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::get(format!("http://{HOST}:8080/"))
        .body(Full::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_upstream_reset_mid_body_is_an_error_not_a_hang() {
    let f = mesh_for(&[upstream(Upstream::ResetMidBody).await]).await;
    for _ in 0..5 {
        let started = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            let resp = f
                .mesh
                .client()
                .oneshot(request())
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(resp.status(), 200, "the head went out before the reset");
            resp.into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .map_err(|e| e.to_string())
        })
        .await
        .expect("the caller hangs on a reset upstream");
        let body_err = outcome.expect_err("a truncated body was passed off as complete");
        eprintln!(
            "reset mid-body: error {body_err:?} after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_upstream_reset_before_the_head_is_retried_onto_a_healthy_endpoint() {
    let f = mesh_for(&[
        upstream(Upstream::ResetBeforeHead).await,
        upstream(Upstream::Healthy).await,
    ])
    .await;
    for i in 0..50 {
        let resp = f.mesh.client().oneshot(request()).await;
        let resp = resp.unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(resp.status(), 200, "request {i}");
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes();
        assert_eq!(body.len(), 2000, "request {i}");
    }
}
