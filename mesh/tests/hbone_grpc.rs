//! gRPC inside HBONE tunnels on real traffic: a generated-style tonic client on
//! `mesh.channel(..)` calls a tonic service that is reachable only through a workload's
//! `HboneServer` (a WorkloadEntry labelled `networking.istio.io/tunnel: http`, configured
//! by the embedded control plane), unary and server streaming.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use mesh::IdentityStore;
use mesh::core::SpiffeId;
use mesh::hbone::HboneServer;
use mesh::xds::bootstrap::IstioNode;
use support::echo::{Echo, EchoClient, Msg};

const HOST: &str = "echo.default.svc.cluster.local";
const TARGET: &str = "xds:///echo.default.svc.cluster.local:9080";
/// The workload's address; nothing listens on its port 9080, only on its :15008.
const WORKLOAD: [u8; 4] = [127, 0, 18, 51];

fn config() -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
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
metadata: {{name: echo, namespace: default}}
spec:
  address: 127.0.18.51
  labels: {{app: echo, networking.istio.io/tunnel: http, security.istio.io/tlsMode: disabled}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_server_streaming_grpc_through_an_hbone_tunnel() {
    let ca = support::dev_ca();
    let echo_id = SpiffeId::istio(ca.trust_domain(), "default", "echo").unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&echo_id, Duration::from_secs(3600)).unwrap())
            .unwrap();
    let server = HboneServer::builder(store)
        .http(9080, Echo::default())
        .build();
    let tunnels = server.metrics().clone();
    let l = tokio::net::TcpListener::bind(SocketAddr::from((WORKLOAD, 15008)))
        .await
        .unwrap();
    tokio::spawn(server.serve(l, std::future::pending()));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("echo.yaml"), config()).unwrap();
    let node = IstioNode {
        pod_name: "client".into(),
        namespace: "default".into(),
        service_account: "client".into(),
        labels: BTreeMap::from([("app".to_owned(), "client".to_owned())]),
        ..Default::default()
    };
    let m = support::local_mesh(&ca, dir.path(), node).await;
    let mut c = EchoClient::new(m.channel(TARGET));

    // The routes arrive from the control plane in a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match c.unary("Unary", Msg::new("hi", 7)).await {
            Ok(reply) => break reply,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "never answered: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((reply.data.as_slice(), reply.n), (&b"hi"[..], 7));
    assert_eq!(
        reply.info, "spiffe://cluster.local/ns/default/sa/client HTTP/2.0",
        "the service sees the caller's identity (the tunnel's mTLS) and HTTP/2 inside"
    );
    assert!(tunnels.tunnels() >= 1, "the call arrived as a CONNECT");

    // A server stream of 200 messages of 16 KiB (3 MiB) through the tunnel.
    let mut stream = c
        .server_streaming("Repeat", Msg::new(vec![3u8; 16 << 10], 200))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(msg) = stream.next().await {
        let msg = msg.unwrap();
        assert_eq!((msg.n, msg.data.len()), (n, 16 << 10));
        n += 1;
    }
    assert_eq!(n, 200);
}
