//! A VirtualService's weighted split and header route apply to gRPC calls through
//! `mesh.channel` as to HTTP: two tonic servers (subsets v1 and v2) behind `Mesh::serve`,
//! 4,000 calls split within 3 points of the weights, and metadata routing to v2.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use mesh::xds::bootstrap::IstioNode;
use support::echo::{Echo, EchoClient, Msg};
use support::grpc::{HOST, TARGET, free_port};

fn config(v1: u16, v2: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {v1}}}
  labels: {{app: echo, version: v1}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-v2, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {v2}}}
  labels: {{app: echo, version: v2}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{headers: {{x-track: {{exact: canary}}}}}}]
    route: [{{destination: {{host: {HOST}, subset: v2}}}}]
  - route:
    - {{destination: {{host: {HOST}, subset: v1}}, weight: 70}}
    - {{destination: {{host: {HOST}, subset: v2}}, weight: 30}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    )
}

fn node(name: &str) -> IstioNode {
    IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_and_header_route_apply_to_grpc() {
    let (v1, v2) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.yaml"), config(v1, v2)).unwrap();
    let ca = support::dev_ca();
    let server = support::local_mesh(&ca, dir.path(), node("echo")).await;
    for (port, tag) in [(v1, 1), (v2, 2)] {
        let (s, addr) = (server.clone(), SocketAddr::from(([127, 0, 0, 1], port)));
        let echo = Echo {
            tag,
            ..Default::default()
        };
        tokio::spawn(async move { s.serve(addr, echo).await });
    }
    let client = support::local_mesh(&ca, dir.path(), node("client")).await;
    let mut c = EchoClient::new(client.channel(TARGET));
    // Both servers serve once their listeners arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut seen = [false; 3];
    while !(seen[1] && seen[2]) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "servers never served"
        );
        match c.unary("Which", Msg::default()).await {
            Ok(m) => seen[m.n as usize] = true,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }

    // The pick is random per call (Envoy's): 4,000 calls put 3 points at more than four
    // standard deviations (with 1,000, one run in 25 would miss by chance).
    let mut counts = [0u32; 3];
    for _ in 0..4000 {
        counts[c.unary("Which", Msg::default()).await.unwrap().n as usize] += 1;
    }
    let v2_share = f64::from(counts[2]) / 40.0;
    assert!(
        (27.0..=33.0).contains(&v2_share),
        "v2 got {v2_share}% of 4000 calls, weight 30: {counts:?}"
    );

    for _ in 0..50 {
        let mut req = tonic::Request::new(Msg::default());
        req.metadata_mut()
            .insert("x-track", "canary".parse().unwrap());
        assert_eq!(c.unary("Which", req).await.unwrap().n, 2, "header route");
    }
}
