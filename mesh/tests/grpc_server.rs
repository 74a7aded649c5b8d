//! A tonic server behind `Mesh::serve`, configured by the embedded control plane: STRICT
//! mTLS with the caller's `PeerIdentity` in the request extensions, an
//! AuthorizationPolicy that allows one method and so denies another (PERMISSION_DENIED
//! as the tonic client sees it), and a graceful drain (GOAWAY) on shutdown that lets a
//! stream under way finish.

mod support;

use std::time::Duration;

use futures::StreamExt;
use support::echo::{Echo, Msg};
use support::grpc::{mtls, start};
use tonic::Code;

fn allow_unary_only(port: u16) -> String {
    mtls(
        port,
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-unary, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {paths: [/mesh.test.Echo/Unary]}}]
"#,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_allows_one_method_and_denies_another() {
    let f = start(Echo::default(), allow_unary_only).await;
    let mut c = f.channel();
    let reply = c.unary("Unary", Msg::new("a", 1)).await.unwrap();
    assert!(
        reply
            .info
            .starts_with("spiffe://cluster.local/ns/default/sa/client "),
        "PeerIdentity in the request extensions: {}",
        reply.info
    );
    let e = c
        .server_streaming("Repeat", Msg::new("a", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = c.unary("Flaky", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_a_stream_under_way() {
    let mut f = start(Echo::default(), |p| mtls(p, "")).await;
    let mut c = f.channel();
    // Ten messages 100 ms apart.
    let mut stream = c
        .server_streaming("Slow", Msg::new(vec![100], 10))
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().n, 0);
    f.stop.take().unwrap().send(()).unwrap();
    let mut n = 1;
    while let Some(m) = stream.next().await {
        assert_eq!(m.unwrap().n, n, "the stream finishes after the GOAWAY");
        n += 1;
    }
    assert_eq!(n, 10);
    tokio::time::timeout(Duration::from_secs(5), &mut f.served)
        .await
        .expect("the server stops once drained")
        .unwrap()
        .unwrap();
    let e = c.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
}
