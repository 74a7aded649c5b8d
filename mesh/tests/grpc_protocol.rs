//! gRPC always goes over HTTP/2: a cluster whose protocol says HTTP/1.1 (an `HTTP` port,
//! plaintext, as istiod's proxyless generator leaves gRPC clusters without HTTP/2 options)
//! still carries gRPC calls over HTTP/2, multiplexed, with more connections once each
//! carries the cluster's `max_concurrent_streams` (gRFC A105).

mod support;

use support::echo::{Echo, Msg};
use support::grpc::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_goes_over_http2_on_an_http1_cluster() {
    let f = start(Echo::default(), |p| {
        config(p, "HTTP", "DISABLE", "PERMISSIVE", "")
    })
    .await;
    let mut c = f.channel();
    let calls = (0..20).map(|i| {
        let mut c = c.clone();
        async move { c.unary("Unary", Msg::new("x", i)).await }
    });
    for (i, reply) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = reply.unwrap();
        assert_eq!(reply.n, i as u32);
        assert_eq!(reply.info, "plaintext HTTP/2.0", "the server sees HTTP/2");
    }
    let reply = c.unary("Unary", Msg::new("x", 1)).await.unwrap();
    assert_eq!(reply.info, "plaintext HTTP/2.0");
}

/// Connections the client has opened to the echo service's cluster so far.
fn connections(mesh: &mesh::Mesh) -> f64 {
    let mut registry = prometheus_client::registry::Registry::default();
    mesh.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let series = format!(
        "mesh_cluster_upstream_cx_total{{cluster_name=\"outbound|9080||{}\"}} ",
        support::grpc::HOST
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `concurrent` calls that each hold a stream open for 300 ms (the server never answers;
/// the caller's deadline ends them).
async fn hold_streams(c: &support::echo::EchoClient<mesh::Channel>, concurrent: usize) {
    let calls = (0..concurrent).map(|_| {
        let mut c = c.clone();
        async move {
            let mut req = tonic::Request::new(Msg::default());
            req.set_timeout(std::time::Duration::from_millis(300));
            c.unary("Hang", req).await
        }
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap_err().code(), tonic::Code::DeadlineExceeded);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_streams_share_connections_until_max_concurrent_streams() {
    // HTTP/1.1 cluster: 20 concurrent calls share the HTTP/2 connections (one per worker
    // thread at most), where HTTP/1.1 would open one per call.
    let f = start(Echo::default(), |p| {
        config(p, "HTTP", "DISABLE", "PERMISSIVE", "")
    })
    .await;
    let before = connections(&f.client);
    hold_streams(&f.channel(), 20).await;
    let opened = connections(&f.client) - before;
    assert!(
        opened <= 2.0,
        "{opened} connections for 20 concurrent calls"
    );

    // maxConcurrentStreams 2 (gRFC A105): 10 concurrent calls need 5 connections.
    let f = start(Echo::default(), |p| {
        support::grpc::mtls(p, "").replace(
            "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
            "trafficPolicy: {tls: {mode: ISTIO_MUTUAL}, connectionPool: {http: {maxConcurrentStreams: 2}}}",
        )
    })
    .await;
    hold_streams(&f.channel(), 10).await;
    let total = connections(&f.client);
    // Picks racing for the last slot may open one more.
    assert!(
        (5.0..=6.0).contains(&total),
        "{total} connections for 10 calls at 2 streams each"
    );
}
