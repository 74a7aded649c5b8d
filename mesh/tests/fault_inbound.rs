//! Fault matrix (docs/reliability.md), the inbound port of a workload configured by the
//! embedded control plane over real xDS (PERMISSIVE, plaintext callers; the app is axum):
//!
//! - the control plane is down when the workload starts: connections are closed at once
//!   (fail closed) while the xDS client retries, and the workload serves once the control
//!   plane comes up on its address;
//! - oversize requests: headers past hyper's limits get 431 (or a reset) and the connection
//!   ends; a body past the app's limit (axum's default 2 MiB) gets 413; others are served;
//! - 10,000 idle connections against a cap of 5,000: the cap holds, the rest are closed at
//!   once, memory stays bounded (RSS measured), a real client is served.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mesh::IdentityStore;
use mesh::core::TrustDomain;
use mesh::inbound::{ConnectionLimiter, ConnectionLimits, InboundServer, ServingStatus};
use mesh::tls::dev_ca::DevCa;
use support::xds::{control_plane, free_port, node, rss_kib, web_workload_yaml, xds_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The workload `web` on 127.0.0.1:`port`, PERMISSIVE.
fn write_config(dir: &Path, port: u16) {
    std::fs::write(
        dir.join("web.yaml"),
        web_workload_yaml(port, Some("PERMISSIVE")),
    )
    .unwrap();
}

struct Workload {
    addr: SocketAddr,
    limiter: ConnectionLimiter,
    status: watch::Receiver<ServingStatus>,
}

/// The inbound server of `web` on `port`, its xDS from `xds_addr` (up or not), the app
/// an axum router (`GET /`, `POST /upload` reading the whole body).
fn start_workload(port: u16, xds_addr: SocketAddr, limits: ConnectionLimits) -> Workload {
    let (bootstrap, xds) = xds_client(node("web"), xds_addr);
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let id = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
    let identity =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = InboundServer::from_bootstrap(xds, identity, &bootstrap, addr)
        .unwrap()
        .connection_limits(limits);
    let limiter = server.connection_limiter();
    let status = server.status();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .route(
            "/upload",
            axum::routing::post(|body: Bytes| async move { body.len().to_string() }),
        );
    tokio::spawn(server.serve(app));
    Workload {
        addr,
        limiter,
        status,
    }
}

async fn wait_serving(w: &mut Workload, limit: Duration) {
    tokio::time::timeout(limit, w.status.wait_for(ServingStatus::is_serving))
        .await
        .expect("the server serves once its listener arrives")
        .unwrap();
}

/// One HTTP/1.1 request on a new connection: the status, or the error text.
async fn request(addr: SocketAddr, req: http::Request<Full<Bytes>>) -> Result<u16, String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        Ok(resp.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(10), attempt)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s (hang)".into()))
}

async fn get(addr: SocketAddr) -> Result<u16, String> {
    let req = http::Request::get("/")
        .header("host", "web")
        .body(Full::default())
        .unwrap();
    request(addr, req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_control_plane_down_at_start_fails_closed_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port);
    let xds_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    // Nothing listens on the xDS address yet.
    let mut w = start_workload(port, xds_addr, ConnectionLimits::default());

    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!w.status.borrow().is_serving());
    for _ in 0..3 {
        let r = get(w.addr).await;
        assert!(
            r.is_err(),
            "served without a listener from the control plane: {r:?}"
        );
        assert!(
            !r.unwrap_err().contains("hang"),
            "a refused caller must not hang"
        );
    }

    // The control plane comes up on its address: the xDS client's next retry finds it.
    let started = Instant::now();
    let _cp = control_plane(dir.path(), xds_addr).await;
    wait_serving(&mut w, Duration::from_secs(15)).await;
    eprintln!(
        "serving {:?} after the control plane came up",
        started.elapsed()
    );
    assert_eq!(get(w.addr).await, Ok(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_oversize_headers_get_431_and_bodies_past_the_app_limit_413() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port);
    let cp = control_plane(dir.path(), ([127, 0, 0, 1], 0).into()).await;
    let mut w = start_workload(port, cp.xds_addr(), ConnectionLimits::default());
    wait_serving(&mut w, Duration::from_secs(15)).await;

    // One header of 512 KiB: past hyper's HTTP/1 read buffer (about 400 KiB). The server
    // answers 431 and closes with the rest unread, so the kernel may reset the connection
    // before the client reads the 431: either is the limit acting; a hang or a 200 is not.
    let big = http::Request::get("/")
        .header("host", "web")
        .header("x-big", "a".repeat(512 * 1024))
        .body(Full::default())
        .unwrap();
    let r = request(w.addr, big).await;
    eprintln!("512 KiB header: {r:?}");
    match &r {
        Ok(431) => {}
        Err(e) => assert!(!e.contains("hang"), "{e}"),
        Ok(other) => panic!("one huge header got {other}"),
    }

    // 200 headers: past hyper's default count (100).
    let mut many = http::Request::get("/").header("host", "web");
    for i in 0..200 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let many = many.body(Full::default()).unwrap();
    assert_eq!(request(w.addr, many).await, Ok(431), "200 headers");

    // A 3 MiB body: the mesh streams it to the app, whose limit (2 MiB) answers 413. Sent
    // by hand up to one byte past the limit, so the server has read everything sent when
    // it answers (no reset racing the 413).
    let mut tcp = TcpStream::connect(w.addr).await.unwrap();
    tcp.write_all(b"POST /upload HTTP/1.1\r\nhost: web\r\ncontent-length: 3145728\r\n\r\n")
        .await
        .unwrap();
    tcp.write_all(&vec![b'x'; (2 << 20) + 1]).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .expect("an answer to the oversize body, not a hang")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "3 MiB body");
    // Under the limit the body arrives whole.
    let small = http::Request::post("/upload")
        .header("host", "web")
        .body(Full::new(Bytes::from(vec![b'x'; 1 << 20])))
        .unwrap();
    assert_eq!(request(w.addr, small).await, Ok(200), "1 MB body");

    assert_eq!(get(w.addr).await, Ok(200), "others are served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_ten_thousand_idle_connections_are_bounded_by_the_cap() {
    const IDLE: usize = 10_000;
    const CAP: usize = 5_000;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = ((IDLE + CAP + 500) as u64).min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
    assert!(
        getrlimit(Resource::RLIMIT_NOFILE).unwrap().0 >= want,
        "the open files limit is too low for {IDLE} connections and a cap of {CAP}"
    );

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    write_config(dir.path(), port);
    let cp = control_plane(dir.path(), ([127, 0, 0, 1], 0).into()).await;
    let limits = ConnectionLimits {
        max_connections: CAP,
        // Longer than the test: the admitted idle connections stay for the whole test.
        sniff_timeout: Duration::from_secs(60),
        header_read_timeout: Duration::from_secs(60),
        ..ConnectionLimits::default()
    };
    let mut w = start_workload(port, cp.xds_addr(), limits);
    wait_serving(&mut w, Duration::from_secs(15)).await;
    assert_eq!(get(w.addr).await, Ok(200));
    let before = rss_kib();

    let started = Instant::now();
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        idle.push(TcpStream::connect(w.addr).await.expect("connect"));
        if i % 500 == 499 {
            // Within the listen backlog.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Let the server accept (and refuse) everything.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (w.limiter.active() + w.limiter.refused() as usize) < IDLE && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connected_in = started.elapsed();
    let peak = rss_kib();
    let active = w.limiter.active();
    let refused = w.limiter.refused();

    // The refused ones were closed by the server: they read EOF (or a reset) at once.
    let mut closed = 0;
    for tcp in idle.iter_mut().rev().take(100) {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut b)).await
        {
            closed += 1;
        }
    }
    // A real client: over the cap it is refused too, so free one slot first, as an
    // operator's cap leaves room for real traffic.
    let status_with_cap_full = get(w.addr).await;
    drop(idle.drain(..100).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let served = get(w.addr).await;

    let growth_kib = peak.saturating_sub(before);
    eprintln!(
        "{IDLE} idle connections in {connected_in:?}: admitted {active}/{CAP}, refused \
         {refused}; RSS {before} KiB -> {peak} KiB (+{:.1} MiB, {:.1} KiB per admitted \
         connection); last 100 closed by the server: {closed}; real client with the cap \
         full: {status_with_cap_full:?}, after 100 left: {served:?}",
        growth_kib as f64 / 1024.0,
        growth_kib as f64 / active.max(1) as f64
    );
    assert!(active <= CAP, "{active} admitted over a cap of {CAP}");
    assert!(
        refused as usize >= IDLE - CAP - 10,
        "only {refused} refused over the cap"
    );
    assert_eq!(closed, 100, "refused connections left open");
    // Bounded: a few KiB per admitted idle connection (both ends are in this process).
    assert!(
        growth_kib < 128 * 1024,
        "RSS grew by {} MiB",
        growth_kib / 1024
    );
    assert_eq!(served, Ok(200));
    drop(idle);
}
