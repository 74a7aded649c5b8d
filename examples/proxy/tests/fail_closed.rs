//! The proxy's inbound fails closed (issue 21): with its xDS from go-control-plane
//! (interop/xds-go-server, a real peer), a plaintext caller and an mTLS caller with a valid
//! mesh identity are both refused before the control plane answers, when it has no
//! inbound listener for us, and when the listener it sends is NACKed; after a good
//! listener, a NACKed update keeps the good one acting. And its inbound connection limits:
//! connections over `--max-connections` are closed at once and counted, idle ones are
//! closed after `--header-read-timeout`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::ClientSettings;
use mesh_tls::dev_ca::DevCa;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);

use mesh_test_support::free_port;

/// go-control-plane's SnapshotCache behind ADS, driven by JSON lines (see its main.go).
struct GoServer {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl GoServer {
    async fn start(bin: &Path) -> GoServer {
        let mut child = Command::new(bin)
            .args(["-port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn xds-go-server");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let hello = tokio::time::timeout(WAIT, stdout.next_line())
            .await
            .expect("xds-go-server did not start")
            .expect("read")
            .expect("xds-go-server exited");
        let hello: Value = serde_json::from_str(&hello).expect("json");
        let port = hello["port"].as_u64().expect("port") as u16;
        GoServer {
            _child: child,
            stdin,
            stdout,
            port,
        }
    }

    async fn cmd(&mut self, cmd: Value) -> Value {
        let line = format!("{cmd}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write");
        let reply = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("xds-go-server did not answer")
            .expect("read")
            .expect("xds-go-server exited");
        let reply: Value = serde_json::from_str(&reply).expect("json");
        assert_eq!(reply["ok"], true, "{cmd} -> {reply}");
        reply
    }

    async fn set(&mut self, version: &str, listeners: Vec<Value>) {
        self.cmd(json!({"cmd": "set", "version": version, "raw_listeners": listeners}))
            .await;
    }

    /// LDS requests: (version_info, NACKed).
    async fn lds_requests(&mut self) -> Vec<(String, bool)> {
        let reply = self.cmd(json!({"cmd": "requests"})).await;
        reply["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|r| {
                r["type_url"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("Listener"))
            })
            .map(|r| {
                (
                    r["version_info"].as_str().unwrap_or_default().to_owned(),
                    r["has_error_detail"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    /// Waits until the proxy has answered LDS version `version`: ACKed it (`nack` false:
    /// a request with that version) or NACKed it (a request with an error detail).
    async fn wait_lds(&mut self, version: &str, nack: bool) {
        for _ in 0..100 {
            let seen = self.lds_requests().await;
            let done = if nack {
                seen.iter().any(|(_, n)| *n)
            } else {
                seen.iter().any(|(v, n)| v == version && !n)
            };
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "LDS version {version} was never {}",
            if nack { "NACKed" } else { "ACKed" }
        );
    }
}

/// The inbound listener istiod would send for a PERMISSIVE port without policies, in
/// Envoy's JSON: one plaintext chain, every request to the app. `broken` adds a field our
/// xDS client NACKs.
fn inbound_listener(name: &str, port: u16, broken: bool) -> Value {
    let mut l = json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{
            "name": "plaintext",
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "inbound",
                    "route_config": {"name": "inbound", "virtual_hosts": [{
                        "name": "inbound", "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "non_forwarding_action": {}}]
                    }]},
                    "http_filters": [{
                        "name": "envoy.filters.http.router",
                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                    }]
                }
            }]
        }]
    });
    if broken {
        l["use_original_dst"] = json!(true);
    }
    l
}

/// A plain HTTP/1 app answering 200 "app".
async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"app")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

struct Proxy {
    inbound: SocketAddr,
    /// The listener name the proxy subscribes to.
    listener: String,
    /// A mesh identity in the proxy's trust domain (not the proxy's own).
    caller: IdentityStore,
    _running: mesh_proxy::Running,
    _dir: tempfile::TempDir,
}

/// A proxy whose xDS server is `go` and whose certificate comes from a local CA.
async fn proxy(go: &GoServer) -> Proxy {
    proxy_with(go.port, &[]).await
}

/// A proxy whose xDS server is on `xds_port`, with `extra` flags.
async fn proxy_with(xds_port: u16, extra: &[&str]) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = DevCa::new(td.clone()).unwrap();
    ca.save(dir.path()).unwrap();
    let caller: SpiffeId = "spiffe://cluster.local/ns/default/sa/caller"
        .parse()
        .unwrap();
    let caller =
        IdentityStore::from_credentials(ca.issue(&caller, Duration::from_secs(600)).unwrap())
            .unwrap();
    let port = free_port();
    let app = app().await;
    let args: Vec<String> = [
        "--inbound",
        &format!("127.0.0.1:{port}"),
        "--app",
        &app.to_string(),
        "--outbound",
        "off",
        "--admin",
        "off",
        "--xds",
        &format!("http://127.0.0.1:{xds_port}"),
        "--name",
        "web-0",
        "--namespace",
        "default",
        "--service-account",
        "web",
        "--ip",
        "127.0.0.1",
        "--identity",
        &format!("ca:{}", dir.path().display()),
    ]
    .iter()
    .chain(extra)
    .map(|s| s.to_string())
    .collect();
    let opts = mesh_proxy::parse_args(&args, |p| {
        std::fs::read_to_string(p).map_err(|e| e.to_string())
    })
    .expect("options");
    let running = mesh_proxy::start(opts, None).await.expect("proxy starts");
    Proxy {
        inbound: running.inbound.expect("inbound"),
        listener: format!("xds.istio.io/grpc/lds/inbound/127.0.0.1:{port}"),
        caller,
        _running: running,
        _dir: dir,
    }
}

/// GET / over `io`: the status, or why there was none.
async fn get<IO>(io: IO) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "web")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

async fn plaintext(p: &Proxy) -> Result<u16, String> {
    let tcp = TcpStream::connect(p.inbound)
        .await
        .map_err(|e| e.to_string())?;
    get(tcp).await
}

async fn mtls(p: &Proxy) -> Result<u16, String> {
    let connector = MeshConnector::new(p.caller.clone(), ClientSettings::default());
    let uri: http::Uri = format!("https://{}/", p.inbound).parse().unwrap();
    let stream = connector.connect(&uri).await.map_err(|e| e.to_string())?;
    get(stream.into_inner()).await
}

/// Both callers are refused (no response at all, or anything but a 2xx).
async fn assert_refused(p: &Proxy, when: &str) {
    for (who, r) in [("plaintext", plaintext(p).await), ("mTLS", mtls(p).await)] {
        assert!(
            !matches!(r, Ok(s) if (200..300).contains(&s)),
            "{when}: a {who} caller got {r:?}"
        );
    }
}

async fn assert_served(p: &Proxy, when: &str) {
    assert_eq!(plaintext(p).await, Ok(200), "{when}: plaintext");
    assert_eq!(mtls(p).await, Ok(200), "{when}: mTLS");
}

fn go_bin() -> Option<PathBuf> {
    mesh_test_support::peer("MESH_XDS_GO_SERVER_BIN")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_before_the_control_plane_answers() {
    let Some(bin) = go_bin() else { return };
    // No snapshot: the server never answers the proxy's LDS request.
    let go = GoServer::start(&bin).await;
    let p = proxy(&go).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_refused(&p, "before the first answer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_when_the_control_plane_has_no_inbound_listener() {
    let Some(bin) = go_bin() else { return };
    let mut go = GoServer::start(&bin).await;
    let p = proxy(&go).await;
    // Another node's listener only.
    let other = inbound_listener("xds.istio.io/grpc/lds/inbound/127.0.0.1:1", 1, false);
    go.set("1", vec![other]).await;
    go.wait_lds("1", false).await;
    assert_refused(&p, "no inbound listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_when_the_inbound_listener_is_nacked() {
    let Some(bin) = go_bin() else { return };
    let mut go = GoServer::start(&bin).await;
    let p = proxy(&go).await;
    let port = p.inbound.port();
    go.set("1", vec![inbound_listener(&p.listener, port, true)])
        .await;
    go.wait_lds("1", true).await;
    assert_refused(&p, "NACKed inbound listener").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_update_keeps_the_last_good_listener() {
    let Some(bin) = go_bin() else { return };
    let mut go = GoServer::start(&bin).await;
    let p = proxy(&go).await;
    let port = p.inbound.port();
    go.set("1", vec![inbound_listener(&p.listener, port, false)])
        .await;
    go.wait_lds("1", false).await;
    // The listener reaches the proxy's policy task just after the ACK.
    for _ in 0..50 {
        if plaintext(&p).await == Ok(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_served(&p, "good listener").await;
    go.set("2", vec![inbound_listener(&p.listener, port, true)])
        .await;
    go.wait_lds("2", true).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_served(&p, "after a NACKed update").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_connections_over_the_cap_are_closed_and_idle_ones_time_out() {
    use tokio::io::AsyncReadExt;
    // A fixed mode: no control plane needed (the xDS address has nothing behind it).
    let admin = free_port();
    let admin_flag = format!("127.0.0.1:{admin}");
    let p = proxy_with(
        free_port(),
        &[
            "--mtls",
            "disable",
            "--max-connections",
            "3",
            "--header-read-timeout",
            "1s",
            "--admin",
            &admin_flag,
        ],
    )
    .await;
    assert_eq!(plaintext(&p).await, Ok(200));
    // That connection's slot is freed once the proxy sees it close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(p.inbound).await.unwrap());
    }
    // The cap is reached: the next connection is closed at once, without an answer.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut over = TcpStream::connect(p.inbound).await.unwrap();
    let mut buf = [0u8; 64];
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_millis(500), over.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", started.elapsed());
    // The idle ones are closed by the header-read timeout, and the port serves again.
    for mut c in idle {
        let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
            .await
            .expect("idle connection closed by the timeout")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    assert_eq!(plaintext(&p).await, Ok(200));
    let stats = TcpStream::connect(("127.0.0.1", admin)).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stats))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/stats/prometheus")
        .header("host", "admin")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let body = http_body_util::BodyExt::collect(send.send_request(req).await.unwrap().into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("mesh_inbound_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(refused, Some(1.0), "{text}");
}
