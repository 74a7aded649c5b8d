//! Circuit breakers on the connection pool, as Istio users write them: a DestinationRule's
//! `connectionPool` (`maxConnections`, `http1MaxPendingRequests`, `http2MaxRequests`) on a
//! workload configured by the embedded control plane in process. Overflow is answered at
//! once with Envoy's 503 `UO` and counted, as Envoy's HTTP/1.1 and HTTP/2 pools do. The
//! pool's timeouts (`connectTimeout`, `idleTimeout`) and connection lifetimes are here too.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::Mesh;
use mesh::xds::bootstrap::IstioNode;
use tower::ServiceExt;

const HOST: &str = "slow.default.svc.cluster.local";
/// How long the server holds each request: long enough for all 50 to arrive first.
const SERVICE_TIME: Duration = Duration::from_millis(600);

fn config(port: u16, protocol: &str, pool: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: slow, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: {protocol}}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: slow, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: DISABLE}}
    connectionPool: {pool}
"#
    )
}

/// What the server saw at most at once.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    connections: AtomicUsize,
    max_connections: AtomicUsize,
    requests: AtomicUsize,
    max_requests: AtomicUsize,
}

fn up(now: &AtomicUsize, max: &AtomicUsize) {
    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
    max.fetch_max(n, Ordering::SeqCst);
}

/// A server (HTTP/1.1 or HTTP/2 by prior knowledge) that answers each request after
/// [`SERVICE_TIME`].
async fn slow_server(h2: bool) -> (u16, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let seen = s.clone();
            tokio::spawn(async move {
                seen.accepted.fetch_add(1, Ordering::SeqCst);
                up(&seen.connections, &seen.max_connections);
                let svc = {
                    let seen = seen.clone();
                    service_fn(move |_req| {
                        let seen = seen.clone();
                        async move {
                            up(&seen.requests, &seen.max_requests);
                            tokio::time::sleep(SERVICE_TIME).await;
                            seen.requests.fetch_sub(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                        }
                    })
                };
                let io = TokioIo::new(tcp);
                let _ = if h2 {
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                } else {
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await
                };
                seen.connections.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (port, seen)
}

async fn mesh(dir: &std::path::Path) -> Mesh {
    let node = IstioNode {
        pod_name: "client-0".into(),
        service_account: "client".into(),
        labels: BTreeMap::from([("app".to_owned(), "client".to_owned())]),
        ..Default::default()
    };
    support::local_mesh(&support::dev_ca(), dir, node).await
}

/// One request's outcome: status, whether it carried `x-envoy-overloaded`, and how long
/// it took.
struct Outcome {
    status: u16,
    overloaded: bool,
    took: Duration,
}

async fn fire(client: &mesh::Client, n: usize) -> Vec<Outcome> {
    let calls = (0..n).map(|_| {
        let client = client.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let req = http::Request::get(format!("http://{HOST}:8080/slow"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = client.oneshot(req).await.unwrap();
            let status = resp.status().as_u16();
            let overloaded = resp.headers().contains_key("x-envoy-overloaded");
            resp.into_body().collect().await.unwrap();
            Outcome {
                status,
                overloaded,
                took: started.elapsed(),
            }
        })
    });
    let mut out = Vec::new();
    for c in calls.collect::<Vec<_>>() {
        out.push(c.await.unwrap());
    }
    out
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(HOST))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Fires 50 concurrent requests and checks Envoy's overflow behaviour; `admitted_max` is
/// how many may be admitted at once.
async fn overload(h2: bool, protocol: &str, pool: &str, admitted_max: usize) {
    let (port, seen) = slow_server(h2).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.yaml"), config(port, protocol, pool)).unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();
    // Warm up: the cluster and its route are known, one request is answered.
    let first = fire(&client, 1).await;
    assert_eq!(first[0].status, 200);

    let outcomes = fire(&client, 50).await;
    let ok = outcomes.iter().filter(|o| o.status == 200).count();
    let refused: Vec<_> = outcomes.iter().filter(|o| o.status == 503).collect();
    assert_eq!(ok + refused.len(), 50, "only 200s and 503s");
    assert!(
        (1..=admitted_max).contains(&ok),
        "{ok} admitted, at most {admitted_max}"
    );
    for r in &refused {
        assert!(r.overloaded, "a 503 without x-envoy-overloaded");
        // At once, not after waiting for the server (SERVICE_TIME).
        assert!(
            r.took < Duration::from_millis(200),
            "refused after {:?}",
            r.took
        );
    }
    assert!(seen.max_requests.load(Ordering::SeqCst) <= admitted_max);

    let mut registry = prometheus_client::registry::Registry::default();
    m.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert_eq!(
        metric(&text, "mesh_cluster_upstream_rq_pending_overflow_total"),
        refused.len() as f64,
        "{text}"
    );
    let uo: f64 = text
        .lines()
        .filter(|l| l.starts_with("istio_requests_total") && l.contains("response_flags=\"UO\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(uo, refused.len() as f64, "istio_requests_total with UO");
    if !h2 {
        assert!(seen.max_connections.load(Ordering::SeqCst) <= 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pool_holds_max_connections_and_refuses_over_max_pending() {
    // 2 connections, 5 waiting for one: at most 7 admitted at a time, the rest refused.
    overload(
        false,
        "HTTP",
        "{tcp: {maxConnections: 2}, http: {http1MaxPendingRequests: 5}}",
        7,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pool_refuses_over_max_requests() {
    overload(true, "HTTP2", "{http: {http2MaxRequests: 4}}", 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_closes_spent_connections() {
    for (h2, protocol) in [(false, "HTTP"), (true, "HTTP2")] {
        let (port, seen) = slow_server(h2).await;
        let dir = tempfile::tempdir().unwrap();
        let pool = "{http: {maxRequestsPerConnection: 2}}";
        std::fs::write(dir.path().join("c.yaml"), config(port, protocol, pool)).unwrap();
        let m = mesh(dir.path()).await;
        let client = m.client();
        for _ in 0..6 {
            assert_eq!(fire(&client, 1).await[0].status, 200);
        }
        // Sequential requests share a connection, two requests each.
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 3, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connection_duration_retires_old_connections() {
    for (h2, protocol) in [(false, "HTTP"), (true, "HTTP2")] {
        let (port, seen) = slow_server(h2).await;
        let dir = tempfile::tempdir().unwrap();
        let pool = "{tcp: {maxConnectionDuration: 1s}}";
        std::fs::write(dir.path().join("c.yaml"), config(port, protocol, pool)).unwrap();
        let m = mesh(dir.path()).await;
        let client = m.client();
        // Each request takes 600 ms: the first two share a connection (younger than 1 s
        // when the second starts), the third needs a new one.
        for _ in 0..3 {
            assert_eq!(fire(&client, 1).await[0].status, 200);
        }
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 2, "{protocol}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_without_connections_gets_one_at_max_connections() {
    // Two endpoints, one connection for the whole cluster: as Envoy, the endpoint that
    // has none still gets one, or its requests would wait for the other's to close.
    let (a, seen_a) = slow_server(false).await;
    let (b, seen_b) = slow_server(false).await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(a, "HTTP", "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 10}}")
        .replace(
            "endpoints: [{address: 127.0.0.1, ports: {http: ",
            &format!("endpoints: [{{address: 127.0.0.1, ports: {{http: {b}}}}}, {{address: 127.0.0.1, ports: {{http: "),
        )
        .replace("    tls: {mode: DISABLE}", "    tls: {mode: DISABLE}\n    loadBalancer: {simple: ROUND_ROBIN}");
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();
    let outcomes = fire(&client, 4).await;
    assert!(outcomes.iter().all(|o| o.status == 200));
    assert!(outcomes.iter().all(|o| o.took < Duration::from_secs(5)));
    assert_eq!(seen_a.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(seen_b.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeouts_close_unused_connections() {
    // (pool, protocol, connections the server accepts for two requests 1.5 s apart): an
    // idle timeout of 1 s closes the first connection before the second request; without
    // one (Envoy's default is an hour) the second request reuses it.
    let rows = [
        ("{http: {idleTimeout: 1s}}", "HTTP", false, 2),
        ("{http: {idleTimeout: 1s}}", "HTTP2", true, 2),
        ("{tcp: {idleTimeout: 1s}}", "HTTP", false, 2),
        ("{http: {maxRetries: 3}}", "HTTP", false, 1),
    ];
    for (pool, protocol, h2, connections) in rows {
        let (port, seen) = slow_server(h2).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), config(port, protocol, pool)).unwrap();
        let m = mesh(dir.path()).await;
        let client = m.client();
        assert_eq!(fire(&client, 1).await[0].status, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(fire(&client, 1).await[0].status, 200);
        assert_eq!(
            seen.accepted.load(Ordering::SeqCst),
            connections,
            "{pool} {protocol}"
        );
    }
}

/// A port whose connections never complete: a listener that never accepts, with its
/// backlog filled, so the kernel drops further SYNs and a connect hangs until timed out.
async fn black_hole() -> (u16, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the accept queue; once it is full a connect no longer completes.
    while let Ok(Ok(s)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        held.push(s);
    }
    std::mem::forget(listener);
    (addr.port(), held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_bounds_each_connection_attempt() {
    let (port, _held) = black_hole().await;
    // (connectTimeout, the least and most a failed request may take). Istio's default
    // retry policy makes three attempts on connect failure, each bounded by the timeout;
    // without it the default (10 s) would hold the first attempt past the bound.
    for (timeout, least, most) in [
        (
            "250ms",
            Duration::from_millis(250),
            Duration::from_millis(2500),
        ),
        ("1s", Duration::from_secs(1), Duration::from_secs(6)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pool = format!("{{tcp: {{connectTimeout: {timeout}}}}}");
        std::fs::write(dir.path().join("c.yaml"), config(port, "HTTP", &pool)).unwrap();
        let m = mesh(dir.path()).await;
        let outcome = fire(&m.client(), 1).await.remove(0);
        assert_eq!(outcome.status, 503, "{timeout}");
        assert!(
            (least..most).contains(&outcome.took),
            "{timeout}: failed after {:?}",
            outcome.took
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_spreads_requests_over_connections() {
    // (pool, HTTP/2 connections the server accepts for 8 concurrent requests): two streams
    // per connection need four; without a limit they share one per worker thread (two), as
    // Envoy's per-worker pools do (see mesh-route's pool docs).
    for (pool, connections) in [
        ("{http: {maxConcurrentStreams: 2}}", 4),
        ("{http: {maxRetries: 3}}", 2),
    ] {
        let (port, seen) = slow_server(true).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), config(port, "HTTP2", pool)).unwrap();
        let m = mesh(dir.path()).await;
        let client = m.client();
        // One connection first, as a warm pool holds.
        assert_eq!(fire(&client, 1).await[0].status, 200);
        assert!(fire(&client, 8).await.iter().all(|o| o.status == 200));
        assert_eq!(seen.accepted.load(Ordering::SeqCst), connections, "{pool}");
    }
}

/// A server speaking HTTP/1.1 and HTTP/2 (prior knowledge) that answers with the version
/// the request reached it in.
async fn version_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let v = format!("{:?}", req.version());
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(v))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_client_protocol_forwards_in_the_callers_version() {
    let port = version_server().await;
    // (pool, the caller's version, the version the server sees).
    for (pool, caller, seen) in [
        (
            "{http: {useClientProtocol: true}}",
            http::Version::HTTP_2,
            "HTTP/2.0",
        ),
        (
            "{http: {useClientProtocol: true}}",
            http::Version::HTTP_11,
            "HTTP/1.1",
        ),
        ("{http: {maxRetries: 3}}", http::Version::HTTP_2, "HTTP/1.1"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), config(port, "HTTP", pool)).unwrap();
        let m = mesh(dir.path()).await;
        let req = http::Request::get(format!("http://{HOST}:8080/"))
            .version(caller)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = m.client().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{pool} {caller:?}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, seen.as_bytes(), "{pool} {caller:?}");
    }
}

/// [`config`] with the pool on a subset (`v1`) that a VirtualService routes to, as
/// `merged_policy` merges subset settings over the host's.
fn subset_config(port: u16, protocol: &str, pool: &str) -> String {
    config(port, protocol, "{http: {maxRetries: 3}}")
        + &format!(
            r#"  subsets: [{{name: v1, labels: {{}}, trafficPolicy: {{connectionPool: {pool}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: slow, namespace: default}}
spec:
  hosts: [{HOST}]
  http: [{{route: [{{destination: {{host: {HOST}, subset: v1}}}}]}}]
"#
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_connection_pools_apply_to_their_subset() {
    // As idle_timeouts_close_unused_connections, with the pool on the routed subset.
    for pool in ["{http: {idleTimeout: 1s}}", "{tcp: {idleTimeout: 1s}}"] {
        let (port, seen) = slow_server(false).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.yaml"), subset_config(port, "HTTP", pool)).unwrap();
        let m = mesh(dir.path()).await;
        let client = m.client();
        assert_eq!(fire(&client, 1).await[0].status, 200);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(fire(&client, 1).await[0].status, 200);
        assert_eq!(seen.accepted.load(Ordering::SeqCst), 2, "{pool}");
    }
    // As connect_timeout_bounds_each_connection_attempt.
    let (port, _held) = black_hole().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = "{tcp: {connectTimeout: 250ms}}";
    std::fs::write(dir.path().join("c.yaml"), subset_config(port, "HTTP", pool)).unwrap();
    let m = mesh(dir.path()).await;
    let outcome = fire(&m.client(), 1).await.remove(0);
    assert_eq!(outcome.status, 503);
    assert!(
        (Duration::from_millis(250)..Duration::from_millis(2500)).contains(&outcome.took),
        "failed after {:?}",
        outcome.took
    );
}

/// The subset copies of `connectionPool.http.useClientProtocol` and `maxConcurrentStreams`
/// act on their subset as the top-level ones do (the tests above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_protocol_settings_apply_to_their_subset() {
    // As use_client_protocol_forwards_in_the_callers_version.
    let port = version_server().await;
    let dir = tempfile::tempdir().unwrap();
    let pool = "{http: {useClientProtocol: true}}";
    std::fs::write(dir.path().join("c.yaml"), subset_config(port, "HTTP", pool)).unwrap();
    let m = mesh(dir.path()).await;
    let req = http::Request::get(format!("http://{HOST}:8080/"))
        .version(http::Version::HTTP_2)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = m.client().oneshot(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "HTTP/2.0");
    // As max_concurrent_streams_spreads_requests_over_connections.
    let (port, seen) = slow_server(true).await;
    let dir = tempfile::tempdir().unwrap();
    let pool = "{http: {maxConcurrentStreams: 2}}";
    std::fs::write(
        dir.path().join("c.yaml"),
        subset_config(port, "HTTP2", pool),
    )
    .unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();
    assert_eq!(fire(&client, 1).await[0].status, 200);
    assert!(fire(&client, 8).await.iter().all(|o| o.status == 200));
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 4);
}
