//! gRPC always goes over HTTP/2: a cluster whose protocol says HTTP/1.1 (an `HTTP` port,
//! plaintext, as istiod's proxyless generator leaves gRPC clusters without HTTP/2 options)
//! still carries gRPC calls over HTTP/2, multiplexed, with more connections once each
//! carries the cluster's `max_concurrent_streams` (gRFC A105).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::echo::{Echo, EchoClient, Msg};
use support::grpc::{TARGET, client_mesh, config, start};

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
            req.set_timeout(Duration::from_millis(300));
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

/// A plain tonic server allowing `streams` concurrent streams per connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); returns its port and the connections it accepted.
async fn limited_server(streams: u32) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let incoming = futures::stream::unfold(listener, move |l| {
        let count = count.clone();
        async move {
            let conn = l.accept().await.map(|(s, _)| s);
            count.fetch_add(1, Ordering::SeqCst);
            Some((conn, l))
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .max_concurrent_streams(streams)
            .add_service(Echo::default())
            .serve_with_incoming(incoming),
    );
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_streams_past_max_concurrent_streams_open_more_connections() {
    // gRFC A105: a server allowing N streams per connection and the DestinationRule's
    // maxConcurrentStreams saying so.
    let pool = ", connectionPool: {http: {maxConcurrentStreams: 4}}";
    five_times_the_streams(4, pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_max_concurrent_streams_a_connection_carries_100_streams() {
    // No maxConcurrentStreams: 100 streams per connection (the server's own SETTINGS limit
    // is not visible through hyper-util's pool), as a server allowing 100 wants.
    five_times_the_streams(100, "").await;
}

/// 5N long server streams at once to a server allowing `n` = N streams per connection,
/// with the DestinationRule's `pool` settings: each runs at once, none waits for another
/// to end, over at least 5 connections.
async fn five_times_the_streams(n: usize, pool: &str) {
    let (port, accepted) = limited_server(n as u32).await;
    let yaml = config(port, "GRPC", "DISABLE", "PERMISSIVE", "").replace(
        "trafficPolicy: {tls: {mode: DISABLE}}",
        &format!("trafficPolicy: {{tls: {{mode: DISABLE}}{pool}}}"),
    );
    let (_dir, client) = client_mesh(yaml).await;
    let c = EchoClient::new(client.channel(TARGET));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = c.clone().unary("Unary", Msg::new("ping", 0)).await {
        assert!(tokio::time::Instant::now() < deadline, "never served: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every stream holds its place (a message every 100 ms for minutes) until all have
    // their first message: a stream queued behind the others would never get one.
    let all = Arc::new(tokio::sync::Barrier::new(5 * n));
    let calls = (0..5 * n).map(|i| {
        let (mut c, all) = (c.clone(), all.clone());
        async move {
            let call = async {
                let mut s = c
                    .server_streaming("Slow", Msg::new(vec![100], 10_000))
                    .await?;
                let first = s.message().await?;
                all.wait().await;
                Ok::<_, tonic::Status>(first)
            };
            match tokio::time::timeout(Duration::from_secs(15), call).await {
                Ok(first) => assert_eq!(first.unwrap().map(|m| m.n), Some(0), "stream {i}"),
                Err(_) => panic!("stream {i} waited for another to end"),
            }
        }
    });
    futures::future::join_all(calls).await;
    let accepted = accepted.load(Ordering::SeqCst);
    assert!(
        accepted >= 5,
        "{accepted} connections for {} streams",
        5 * n
    );
}
