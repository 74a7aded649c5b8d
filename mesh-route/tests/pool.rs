//! `UpstreamPool` against a real local server: how many connections it opens to one
//! endpoint for HTTP/2 and HTTP/1.1 clusters, under concurrent and sequential load, and that
//! broken connections are replaced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::model::{
    Cluster, ClusterLoadAssignment, CommonLbConfig, Discovery, EndpointAddress,
    HttpProtocolOptions, LbPolicy, UpstreamProtocol,
};
use mesh_route::pool::{PoolConfig, UpstreamPool};
use mesh_tls::IdentityStore;
use mesh_tls::verify::PeerPolicy;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// A local server counting the connections it accepts; every answer waits `delay`.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(h2: bool, delay: Duration) -> Self {
        Self::start_with(h2, delay, None).await
    }

    /// An HTTP/2 server advertising `SETTINGS_MAX_CONCURRENT_STREAMS` when `max_streams` is
    /// set.
    async fn start_with(h2: bool, delay: Duration, max_streams: Option<u32>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (a, c) = (accepted.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let svc = hyper::service::service_fn(move |req: http::Request<_>| async move {
                    tokio::time::sleep(delay).await;
                    // What arrived: the request target and Host (HTTP/1.1) or :authority.
                    let host = req.headers().get(http::header::HOST).cloned();
                    let authority = req.uri().authority().map(|a| a.to_string());
                    let target = req.uri().to_string();
                    let mut resp = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                    let h = resp.headers_mut();
                    h.insert("x-target", target.parse().unwrap());
                    if let Some(v) = host.or_else(|| authority.and_then(|a| a.parse().ok())) {
                        h.insert("x-host", v);
                    }
                    Ok::<_, Infallible>(resp)
                });
                let io = TokioIo::new(tcp);
                let conn = tokio::spawn(async move {
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .max_concurrent_streams(max_streams)
                            .serve_connection(io, svc)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await
                    };
                });
                c.lock().unwrap().push(conn.abort_handle());
            }
        });
        Self {
            addr,
            accepted,
            conns,
            task,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Drops every open connection (the client sees them break).
    fn break_connections(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
        self.break_connections();
    }
}

fn cluster(protocol: UpstreamProtocol, max_concurrent_streams: Option<u32>) -> Cluster {
    let mut c = Cluster {
        name: "test".into(),
        discovery: Discovery::Static(Arc::new(ClusterLoadAssignment {
            cluster_name: "test".into(),
            ..Default::default()
        })),
        lb_policy: LbPolicy::RoundRobin,
        common_lb: CommonLbConfig::default(),
        connect_timeout: Duration::from_secs(5),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: None,
        http_protocol: HttpProtocolOptions {
            protocol,
            max_concurrent_streams,
            ..Default::default()
        },
    };
    c.circuit_breakers.default.max_connections = 1024;
    c
}

fn with_idle_timeout(mut c: Cluster, idle: Duration) -> Cluster {
    c.http_protocol.idle_timeout = Some(idle);
    c
}

fn pool(cluster: &Cluster, http2_connections: Option<usize>) -> UpstreamPool {
    UpstreamPool::with_config(
        cluster,
        &IdentityStore::new(),
        PeerPolicy::default(),
        PoolConfig {
            http2_connections,
            ..Default::default()
        },
    )
}

/// Sends `n` requests to the server's endpoint at once (each picks its connection when
/// sent, before any answer) and checks every answer.
async fn concurrent(pool: &UpstreamPool, server: &Server, n: usize) {
    let key: Arc<str> = server.addr.to_string().into();
    let address = EndpointAddress::Socket(server.addr);
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(pool.send(&key, &address, request())))
        .collect();
    for task in tasks {
        let resp = task.await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }
}

async fn sequential(pool: &UpstreamPool, server: &Server, n: usize) {
    for _ in 0..n {
        concurrent(pool, server, 1).await;
    }
}

fn request() -> http::Request<mesh_route::pool::RequestBody> {
    http::Request::get("http://svc.test:80/x")
        .body(Empty::<Bytes>::new().map_err(Into::into).boxed_unsync())
        .unwrap()
}

/// A local address nothing listens on.
async fn unused_addr() -> SocketAddr {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    closed.local_addr().unwrap()
}

const SLOW: Duration = Duration::from_millis(200);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_opens_more_connections() {
    let server = Server::start(true, SLOW).await;
    let c = cluster(UpstreamProtocol::Http2, Some(1));
    let p = pool(&c, Some(1));
    concurrent(&p, &server, 4).await;
    assert_eq!(server.accepted(), 4, "one connection per stream");
    // Reused afterwards, one stream each.
    concurrent(&p, &server, 4).await;
    assert_eq!(server.accepted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_max_concurrent_streams_opens_more_connections() {
    // gRFC A105: a connection the server's SETTINGS fill takes no more streams.
    let server = Server::start_with(true, SLOW, Some(2)).await;
    let c = cluster(UpstreamProtocol::Http2, None);
    let p = pool(&c, Some(1));
    // The first connection; the server's SETTINGS are read by the time the second
    // request is dispatched.
    sequential(&p, &server, 2).await;
    concurrent(&p, &server, 6).await;
    assert_eq!(server.accepted(), 3, "two streams per connection");
    // Below the server's limit one connection does.
    let roomy = Server::start_with(true, SLOW, Some(8)).await;
    sequential(&p, &roomy, 2).await;
    concurrent(&p, &roomy, 6).await;
    assert_eq!(roomy.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_closes_connections_idle_for_the_idle_timeout() {
    let server = Server::start(true, SLOW).await;
    let c = with_idle_timeout(
        cluster(UpstreamProtocol::Http2, None),
        Duration::from_millis(300),
    );
    let p = pool(&c, Some(2));
    concurrent(&p, &server, 2).await;
    assert_eq!(p.counters().connections_active, 2);
    // A stream longer than the idle timeout keeps its connection.
    let slow = Server::start(true, Duration::from_millis(900)).await;
    let key: Arc<str> = slow.addr.to_string().into();
    let address = EndpointAddress::Socket(slow.addr);
    let long = tokio::spawn(p.send(&key, &address, request()));
    // Sweeps run every 75 ms: idle 300 ms is closed by about 450 ms.
    tokio::time::sleep(Duration::from_millis(650)).await;
    assert_eq!(
        p.counters().connections_active,
        1,
        "idle connections closed, the one carrying a stream kept"
    );
    assert_eq!(long.await.unwrap().unwrap().status(), 200);
    sequential(&p, &server, 1).await;
    assert_eq!(
        server.accepted(),
        3,
        "a new connection after the idle close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connect_failures_reach_every_waiting_stream() {
    let addr = unused_addr().await;
    let p = pool(&cluster(UpstreamProtocol::Http2, None), Some(1));
    let key: Arc<str> = addr.to_string().into();
    let address = EndpointAddress::Socket(addr);
    let sends: Vec<_> = (0..3).map(|_| p.send(&key, &address, request())).collect();
    for send in sends {
        let err = send.await.unwrap_err();
        assert!(
            err.is::<mesh_route::pool::ConnectError>(),
            "a connect error, got {err}"
        );
    }
    assert_eq!(
        p.counters().connect_failures,
        1,
        "one attempt for the three"
    );
    // The failed connection is not reused: the next request dials again.
    assert!(p.send(&key, &address, request()).await.is_err());
    assert_eq!(p.counters().connect_failures, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_caps_the_connections() {
    let server = Server::start(true, SLOW).await;
    let mut c = cluster(UpstreamProtocol::Http2, Some(1));
    c.circuit_breakers.default.max_connections = 3;
    concurrent(&pool(&c, Some(1)), &server, 6).await;
    assert_eq!(
        server.accepted(),
        3,
        "streams share the connections at the cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_streams_spread_over_http2_connections() {
    let server = Server::start(true, SLOW).await;
    let c = cluster(UpstreamProtocol::Http2, None);
    concurrent(&pool(&c, Some(3)), &server, 8).await;
    assert_eq!(server.accepted(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn default_is_one_connection_per_worker_thread() {
    let server = Server::start(true, SLOW).await;
    let c = cluster(UpstreamProtocol::Http2, None);
    concurrent(&pool(&c, None), &server, 8).await;
    assert_eq!(server.accepted(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn one_connection_on_a_current_thread_runtime() {
    let server = Server::start(true, SLOW).await;
    let c = cluster(UpstreamProtocol::Http2, None);
    concurrent(&pool(&c, None), &server, 8).await;
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_connection() {
    let server = Server::start(true, Duration::ZERO).await;
    let c = cluster(UpstreamProtocol::Http2, None);
    sequential(&pool(&c, None), &server, 50).await;
    assert_eq!(server.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_connections_are_replaced() {
    let server = Server::start(true, Duration::ZERO).await;
    let c = cluster(UpstreamProtocol::Http2, Some(1));
    let p = pool(&c, Some(1));
    concurrent(&p, &server, 1).await;
    assert_eq!(server.accepted(), 1);
    server.break_connections();
    // Let the client see the connection end.
    tokio::time::sleep(Duration::from_millis(100)).await;
    concurrent(&p, &server, 1).await;
    assert_eq!(
        server.accepted(),
        2,
        "a new connection replaces the broken one"
    );
    // Every connection of a set is replaced the same way.
    let slow = Server::start(true, SLOW).await;
    concurrent(&p, &slow, 2).await;
    assert_eq!(slow.accepted(), 2);
    slow.break_connections();
    tokio::time::sleep(Duration::from_millis(100)).await;
    concurrent(&p, &slow, 2).await;
    assert_eq!(slow.accepted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_opens_a_connection_per_concurrent_request_and_reuses_them() {
    let server = Server::start(false, SLOW).await;
    let c = cluster(UpstreamProtocol::Http1, None);
    let p = pool(&c, None);
    concurrent(&p, &server, 4).await;
    assert_eq!(server.accepted(), 4);
    sequential(&p, &server, 3).await;
    concurrent(&p, &server, 4).await;
    assert_eq!(server.accepted(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_follow_connections_and_failed_attempts() {
    use mesh_route::pool::PoolCounters;
    let server = Server::start(true, SLOW).await;
    let c = cluster(UpstreamProtocol::Http2, Some(1));
    let p = pool(&c, Some(1));
    let weak = p.downgrade();
    assert_eq!(p.counters(), PoolCounters::default());
    concurrent(&p, &server, 3).await;
    let open = PoolCounters {
        endpoints: 1,
        connections_active: 3,
        connections_total: 3,
        connect_failures: 0,
    };
    assert_eq!(p.counters(), open);
    assert_eq!(weak.counters(), Some(open));

    server.break_connections();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        p.counters().connections_active,
        0,
        "closed connections are inactive"
    );

    // Nothing listens there: the attempt fails and is counted.
    let addr = unused_addr().await;
    let key: Arc<str> = addr.to_string().into();
    let err = p
        .send(&key, &EndpointAddress::Socket(addr), request())
        .await;
    assert!(err.is_err());
    let after = p.counters();
    assert_eq!((after.endpoints, after.connections_total), (2, 3));
    assert_eq!(after.connect_failures, 1);

    drop(p);
    assert_eq!(weak.counters(), None, "the handle does not keep the pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_sends_origin_form_with_the_authority_as_host() {
    let server = Server::start(false, Duration::ZERO).await;
    let p = pool(&cluster(UpstreamProtocol::Http1, None), None);
    let key: Arc<str> = server.addr.to_string().into();
    let resp = p
        .send(&key, &EndpointAddress::Socket(server.addr), request())
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-target"], "/x");
    assert_eq!(
        resp.headers()["x-host"],
        "svc.test:80",
        "the authority the caller asked for, not the endpoint's address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_replaces_connections_the_server_closed() {
    let server = Server::start(false, Duration::ZERO).await;
    let p = pool(&cluster(UpstreamProtocol::Http1, None), None);
    concurrent(&p, &server, 2).await;
    assert_eq!(server.accepted(), 2);
    server.break_connections();
    tokio::time::sleep(Duration::from_millis(100)).await;
    concurrent(&p, &server, 2).await;
    assert_eq!(
        server.accepted(),
        4,
        "new connections replace the closed ones"
    );
    assert_eq!(p.counters().connections_active, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_closes_connections_idle_for_the_idle_timeout() {
    let server = Server::start(false, Duration::ZERO).await;
    let c = with_idle_timeout(
        cluster(UpstreamProtocol::Http1, None),
        Duration::from_millis(300),
    );
    let p = pool(&c, None);
    concurrent(&p, &server, 3).await;
    assert_eq!(p.counters().connections_active, 3);
    // Still in use within the timeout: kept.
    tokio::time::sleep(Duration::from_millis(100)).await;
    sequential(&p, &server, 1).await;
    assert_eq!(server.accepted(), 3);
    // Sweeps run every 75 ms: idle 300 ms is closed by about 400 ms.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        p.counters().connections_active,
        0,
        "idle connections closed"
    );
    sequential(&p, &server, 1).await;
    assert_eq!(
        server.accepted(),
        4,
        "a new connection after the idle close"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connect_failures_are_connect_errors() {
    let addr = unused_addr().await;
    let p = pool(&cluster(UpstreamProtocol::Http1, None), None);
    let key: Arc<str> = addr.to_string().into();
    let err = p
        .send(&key, &EndpointAddress::Socket(addr), request())
        .await
        .unwrap_err();
    assert!(
        err.is::<mesh_route::pool::ConnectError>(),
        "a connect error, got {err}"
    );
    assert_eq!(p.counters().connect_failures, 1);
}
