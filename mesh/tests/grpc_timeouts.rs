//! Proxyless gRPC deadlines and retries through `mesh.channel` on real traffic: the
//! caller's `grpc-timeout` ends a call the server never answers with DEADLINE_EXCEEDED;
//! a VirtualService retry on `unavailable` retries a failing unary call, and never a
//! stream whose response headers were sent (gRFC A44).

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use support::echo::{Echo, Msg};
use support::grpc::{HOST, mtls, start};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_100m_ends_in_deadline_exceeded_after_100ms() {
    let f = start(Echo::default(), |p| mtls(p, "")).await;
    let mut c = f.channel();
    for _ in 0..3 {
        let mut req = tonic::Request::new(Msg::default());
        req.set_timeout(Duration::from_millis(100));
        let start = Instant::now();
        let e = c.unary("Hang", req).await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
        assert_eq!(e.message(), "upstream request timeout", "the mesh's answer");
        assert!(
            took >= Duration::from_millis(95) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
}

/// The same without the default layers: a mesh over [`PlainStack`] (what
/// `MeshClient::new` uses: one attempt, no retries) still ends the call at the caller's
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_holds_without_the_default_layers() {
    use mesh::core::config::StaticSource;
    use mesh::route::client::PlainStack;

    let f = start(Echo::default(), |p| mtls(p, "")).await;
    let snapshot = (*f.client.mesh_client().applied()).clone();
    let plain = mesh::Mesh::builder()
        .identity_store(f.client.identity().clone())
        .config_source(StaticSource::new(snapshot))
        .cluster_stack(PlainStack)
        .build()
        .unwrap();
    let mut c = support::echo::EchoClient::new(plain.channel(support::grpc::TARGET));
    let mut req = tonic::Request::new(Msg::default());
    req.set_timeout(Duration::from_millis(100));
    let start = Instant::now();
    // tonic only sends the deadline: without the mesh the call would hang.
    let e = tokio::time::timeout(Duration::from_secs(5), c.unary("Hang", req))
        .await
        .expect("the mesh ends the call at the caller's deadline")
        .unwrap_err();
    let took = start.elapsed();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(
        took >= Duration::from_millis(95) && took < Duration::from_millis(600),
        "{took:?}"
    );
}

fn retry_on_unavailable(port: u16) -> String {
    mtls(
        port,
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
    retries: {{attempts: 3, retryOn: unavailable}}
"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_before_headers_only() {
    let echo = Echo {
        fail_first: 2,
        ..Default::default()
    };
    let f = start(echo, retry_on_unavailable).await;
    let mut c = f.channel();
    f.echo.calls.store(0, Ordering::SeqCst);
    // Two UNAVAILABLE answers, then success: the caller sees only the third.
    let reply = c.unary("Flaky", Msg::new("x", 0)).await.unwrap();
    assert_eq!(reply.n, 3, "retried twice");
    assert_eq!(f.echo.calls.load(Ordering::SeqCst), 3);

    // A stream that sent its headers and a message, then failed with UNAVAILABLE: the
    // caller gets both, and the call is not retried.
    f.echo.calls.store(0, Ordering::SeqCst);
    let mut s = c
        .server_streaming("FlakyStream", Msg::default())
        .await
        .unwrap();
    assert_eq!(s.next().await.unwrap().unwrap().n, 1);
    let e = s.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
    assert_eq!(f.echo.calls.load(Ordering::SeqCst), 1, "never retried");
}

/// The embedded control plane sets every route's timeout (0 when the VirtualService sets
/// none, as istiod does); other control planes may leave it unset, which is Envoy's 15 s
/// default for HTTP. The client's config here is the embedded control plane's with every
/// route timeout removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unary_call_longer_than_15s_passes_on_a_route_without_timeout() {
    use mesh::core::config::StaticSource;
    use mesh::core::model::RouteAction;

    let f = start(Echo::default(), |p| mtls(p, "")).await;
    let mut snapshot = (*f.client.mesh_client().applied()).clone();
    let configs: Vec<_> = snapshot.route_configs.values().cloned().collect();
    for rc in configs {
        let mut rc = (*rc).clone();
        for route in rc.virtual_hosts.iter_mut().flat_map(|vh| &mut vh.routes) {
            if let RouteAction::Forward(f) = &mut route.action {
                f.timeout = None;
            }
        }
        snapshot.insert_route_config(rc);
    }
    let listener = format!("{HOST}:9080");
    let rc = snapshot
        .route_config_of(&listener)
        .expect("the target's routes");
    assert!(
        rc.virtual_hosts
            .iter()
            .flat_map(|vh| &vh.routes)
            .all(|r| matches!(&r.action, RouteAction::Forward(f) if f.timeout.is_none()))
    );
    let static_mesh = mesh::Mesh::builder()
        .identity_store(f.client.identity().clone())
        .config_source(StaticSource::new(snapshot))
        .build()
        .unwrap();
    let mut c = support::echo::EchoClient::new(static_mesh.channel(support::grpc::TARGET));
    let start = Instant::now();
    let reply = c.unary("Sleep", Msg::new("slow", 16_000)).await.unwrap();
    assert_eq!(reply.n, 16_000);
    assert!(start.elapsed() >= Duration::from_secs(16));
}
