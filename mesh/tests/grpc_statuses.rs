//! Local failures as a tonic client sees them through `mesh.channel`: trailers-only gRPC
//! statuses with a message a person can act on, as a proxyless gRPC client reports them.
//! No route, no endpoint, a refused connection and circuit-breaker overflow: UNAVAILABLE;
//! a route timeout: DEADLINE_EXCEEDED.

mod support;

use std::time::{Duration, Instant};

use support::echo::{Echo, EchoClient, Msg};
use support::grpc::{HOST, free_port, mtls, start};
use tonic::Code;

fn routes(port: u16) -> String {
    mtls(
        port,
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{uri: {{exact: /mesh.test.Echo/Hang}}}}]
    route: [{{destination: {{host: {HOST}}}}}]
    timeout: 200ms
  - match: [{{uri: {{prefix: /mesh.test.Echo/}}}}]
    route: [{{destination: {{host: {HOST}}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: empty, namespace: default}}
spec:
  hosts: [empty.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: nobody}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: closed, namespace: default}}
spec:
  hosts: [closed.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1, ports: {{grpc: {closed}}}}}]
"#,
            closed = free_port()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_failures_are_grpc_statuses() {
    let f = start(Echo::default(), routes).await;
    let mut c = f.channel();

    // The route table has no route for another service's path.
    let other = tonic::Request::new(Msg::default());
    let e = c
        .unary_path("/other.Service/Call", other)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("no route"), "{e}");
    assert!(e.message().contains("/other.Service/Call"), "{e}");

    // A route timeout.
    let start = Instant::now();
    let e = c.unary("Hang", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(
        start.elapsed() >= Duration::from_millis(195),
        "{:?}",
        start.elapsed()
    );

    // A service without endpoints.
    let mut empty = EchoClient::new(f.client.channel("empty.default.svc.cluster.local:9080"));
    let e = empty.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("no healthy upstream"), "{e}");

    // An endpoint that refuses connections.
    let mut closed = EchoClient::new(f.client.channel("closed.default.svc.cluster.local:9080"));
    let e = closed.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("connection failure"), "{e}");

    // A target the control plane does not know.
    let mut unknown = EchoClient::new(f.client.channel("nowhere.default.svc.cluster.local:9080"));
    let e = unknown.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(
        e.message()
            .contains("nowhere.default.svc.cluster.local:9080"),
        "{e}"
    );
}

fn one_request_at_a_time(port: u16) -> String {
    mtls(port, "").replace(
        "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
        "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, connectionPool: {http: {http2MaxRequests: 1}}}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_is_unavailable() {
    let f = start(Echo::default(), one_request_at_a_time).await;
    let mut c = f.channel();
    let mut hang = c.clone();
    let held = tokio::spawn(async move {
        let mut req = tonic::Request::new(Msg::default());
        req.set_timeout(Duration::from_millis(500));
        hang.unary("Hang", req).await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = c.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("overflow"), "{e}");
    let held = held.await.unwrap().unwrap_err();
    assert_eq!(held.code(), Code::DeadlineExceeded);
    c.unary("Unary", Msg::default()).await.unwrap();
}
