//! 5,000 idle or trickling connections on an xDS-configured inbound port (PERMISSIVE, so
//! the sniff, the TLS handshake and the HTTP/1 header read are all exposed): memory stays
//! bounded, a real client keeps getting 200s during the flood, connections over the cap
//! are closed at once and the admitted slow ones are closed by the timeouts.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mesh::IdentityStore;
use mesh::inbound::{ConnectionLimits, InboundServer, ServingStatus};
use mesh::tls::config::ServerSettings;
use support::xds::{control_plane, free_port, node, rss_kib, web_workload_yaml, xds_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLOOD: usize = 5_000;
const CAP: usize = 1_000;
/// Sniff, handshake and header-read timeouts of the server under test.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Room for the flood's sockets on both ends.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = (3 * FLOOD as u64).min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        soft >= (2 * FLOOD + 200) as u64,
        "the open files limit ({soft}) is too low for the test"
    );
}

/// How one flooding connection behaves.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// Connects and sends nothing.
    Idle,
    /// A TLS record header, then the rest of a ClientHello one byte a second.
    SlowClientHello,
    /// An HTTP/1 request one byte a second.
    SlowHeaders,
}

/// What became of one flooding connection.
#[derive(Debug)]
enum Outcome {
    /// The server closed it this long after it was connected.
    Closed(Duration),
    /// Still open after the test's limit.
    Outlived(Kind),
    /// `connect` failed.
    ConnectFailed(String),
}

/// Connects and behaves as `kind` until the server closes the connection.
async fn flood_one(addr: SocketAddr, kind: Kind, limit: Duration) -> Outcome {
    let mut tcp = match TcpStream::connect(addr).await {
        Ok(t) => t,
        Err(e) => return Outcome::ConnectFailed(e.to_string()),
    };
    let start = Instant::now();
    let bytes: &[u8] = match kind {
        Kind::Idle => b"",
        Kind::SlowClientHello => &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03],
        Kind::SlowHeaders => b"GET / HTTP/1.1\r\nhost: flood\r\nx-slow: 1111111111\r\n",
    };
    if let Kind::SlowClientHello = kind {
        // The whole record header at once, so the sniff passes and the handshake waits.
        let _ = tcp.write_all(&bytes[..3]).await;
    }
    let mut next = if matches!(kind, Kind::SlowClientHello) {
        3
    } else {
        0
    };
    let mut buf = [0u8; 512];
    loop {
        if start.elapsed() > limit {
            return Outcome::Outlived(kind);
        }
        tokio::select! {
            r = tcp.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Outcome::Closed(start.elapsed()),
                // An error response (e.g. 408): keep reading until the close.
                Ok(_) => {}
            },
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                if next < bytes.len() {
                    if tcp.write_all(&bytes[next..next + 1]).await.is_err() {
                        return Outcome::Closed(start.elapsed());
                    }
                    next += 1;
                }
            }
        }
    }
}

struct Server {
    addr: SocketAddr,
    limiter: mesh::inbound::ConnectionLimiter,
    _cp: mesh_control::server::ControlPlane,
    _dir: tempfile::TempDir,
}

/// The embedded control plane (PERMISSIVE) and a server on its inbound listener with a
/// cap of [`CAP`] and [`TIMEOUT`]s.
async fn start() -> Server {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("web.yaml"),
        web_workload_yaml(port, Some("PERMISSIVE")),
    )
    .unwrap();
    let cp = control_plane(dir.path(), ([127, 0, 0, 1], 0).into()).await;
    let (bootstrap, xds) = xds_client(node("web"), cp.xds_addr());
    let id = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
    let identity =
        IdentityStore::from_credentials(cp.ca().issue(&id, Duration::from_secs(3600)).unwrap())
            .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = InboundServer::from_bootstrap(xds, identity, &bootstrap, addr)
        .unwrap()
        .server_settings(ServerSettings {
            handshake_timeout: TIMEOUT,
            ..ServerSettings::default()
        })
        .connection_limits(ConnectionLimits {
            max_connections: CAP,
            sniff_timeout: TIMEOUT,
            header_read_timeout: TIMEOUT,
            ..ConnectionLimits::default()
        });
    let limiter = server.connection_limiter();
    let mut status = server.status();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    tokio::spawn(server.serve(app));
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(ServingStatus::is_serving),
    )
    .await
    .expect("the server serves once its listener arrives")
    .unwrap();
    Server {
        addr,
        limiter,
        _cp: cp,
        _dir: dir,
    }
}

/// A plaintext HTTP/1.1 keep-alive connection.
async fn client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>) -> u16 {
    let req = http::Request::get("/")
        .header("host", "web")
        .body(Empty::new())
        .unwrap();
    send.ready().await.expect("connection usable");
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .expect("answered within 5 s")
        .expect("response");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_slow_connections_are_bounded_and_real_clients_are_served() {
    raise_fd_limit();
    let server = start().await;
    let addr = server.addr;
    // The real client connects before the flood and keeps its connection.
    let mut real = client(addr).await;
    assert_eq!(get(&mut real).await, 200);
    let before = rss_kib();

    let flood_start = Instant::now();
    let kinds = [Kind::Idle, Kind::SlowClientHello, Kind::SlowHeaders];
    let limit = TIMEOUT * 4;
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..FLOOD {
        flood.spawn(flood_one(addr, kinds[i % 3], limit));
        if i % 100 == 99 {
            // Keep within the listen backlog (1,024): past it the kernel drops handshakes
            // before the server sees them, and an idle client never notices.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let connected_in = flood_start.elapsed();

    // During the flood: the real client is served, the cap holds, memory stays bounded.
    let mut statuses = Vec::new();
    let mut peak_active = 0;
    let mut peak_rss = before;
    while !flood.is_empty() && flood_start.elapsed() < limit + Duration::from_secs(2) {
        statuses.push(get(&mut real).await);
        peak_active = peak_active.max(server.limiter.active());
        peak_rss = peak_rss.max(rss_kib());
        tokio::time::sleep(Duration::from_millis(100)).await;
        if flood_start.elapsed() > TIMEOUT * 3 {
            break;
        }
    }
    let mut closed = Vec::new();
    let mut outlived = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = flood.join_next().await {
        match r.expect("flood task") {
            Outcome::Closed(d) => closed.push(d),
            Outcome::Outlived(kind) => outlived.push(kind),
            Outcome::ConnectFailed(e) => failed.push(e),
        }
    }
    let refused = server.limiter.refused();
    let fast = closed
        .iter()
        .filter(|d| **d < Duration::from_secs(1))
        .count();
    let slowest = closed.iter().max().copied().unwrap_or_default();
    let growth_mib = peak_rss.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "flood: {FLOOD} connections in {connected_in:?}; refused over the cap {refused}, \
         closed within 1 s {fast}, slowest close {slowest:?}, never closed {outlived:?}, connect failed {failed:?}; \
         peak admitted {peak_active}/{CAP}; RSS {before} KiB -> peak {peak_rss} KiB \
         (+{growth_mib:.1} MiB); real client: {} requests, all 200: {}",
        statuses.len(),
        statuses.iter().all(|s| *s == 200)
    );

    assert!(!statuses.is_empty());
    assert!(
        statuses.iter().all(|s| *s == 200),
        "the real client was not always served: {statuses:?}"
    );
    assert!(peak_active <= CAP, "{peak_active} connections admitted");
    assert!(
        outlived.is_empty(),
        "connections the server never closed: {outlived:?}"
    );
    assert!(
        failed.is_empty(),
        "connections that could not be made: {failed:?}"
    );
    assert_eq!(
        closed.len(),
        FLOOD,
        "every flooding connection was made and closed"
    );
    // Most of the flood was over the cap, refused at once.
    assert!(refused >= 2_000, "only {refused} refused");
    assert!(
        fast as u64 >= refused * 9 / 10,
        "{fast} closed fast, {refused} refused"
    );
    // The admitted ones were cut off by the timeouts (sniff or header read: TIMEOUT;
    // a trickled ClientHello: sniff then handshake), not left open.
    assert!(
        slowest <= TIMEOUT * 2 + Duration::from_secs(2),
        "{slowest:?}"
    );
    assert!(growth_mib < 64.0, "RSS grew by {growth_mib:.1} MiB");

    // Afterwards: the slots are free again and new clients are served.
    assert!(server.limiter.active() <= 1, "{}", server.limiter.active());
    let mut fresh = client(addr).await;
    assert_eq!(get(&mut fresh).await, 200);
}
