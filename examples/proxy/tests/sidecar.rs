//! The proxy in front of non-Rust apps (issue 9): the embedded control plane on a config
//! with two services, Python apps behind `mesh-proxy` processes, and
//!
//! ```text
//! test client -> web's outbound listener -> mTLS (h2) -> api v1|v2 inbound -> python app
//! ```
//!
//! with the VirtualService's header route and weighted split observed, AuthorizationPolicy
//! enforced, Istio metrics read from the admin ports, plaintext refused by a STRICT inbound,
//! TCP passthrough counted, and SIGTERM draining in-flight requests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_control::server::{CaAuth, ControlPlane, ControlPlaneOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const API: &str = "api.default.svc.cluster.local:8080";

use mesh_test_support::free_port;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// python3 (`MESH_PYTHON_BIN` or the one on PATH): a peer like the others, required under
/// scripts/test.
fn python() -> Option<PathBuf> {
    let bin = std::env::var_os("MESH_PYTHON_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "python3".into());
    let ok = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(bin);
    }
    if std::env::var("MESH_REQUIRE_PEERS").is_ok_and(|v| v == "1") {
        panic!("python3 is required for the proxy tests");
    }
    eprintln!("SKIPPED: python3 not found");
    None
}

/// Two services: `web` (the caller) and `api` v1 + v2, all behind proxies, STRICT mTLS; the
/// api route sends `x-canary: "true"` to v2 and splits the rest 75/25; api takes calls from
/// web only, and nobody may call its `/admin*` paths.
fn write_config(dir: &Path, web_in: u16, api1_in: u16, api2_in: u16) {
    let service = |name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
"
        )
    };
    let workload = |name: &str, app: &str, version: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {app}, version: {version}}}
  serviceAccount: {app}
---
"
        )
    };
    let mut yaml = service("web") + &service("api");
    yaml += &workload("web-v1", "web", "v1", web_in);
    yaml += &workload("api-v1", "api", "v1", api1_in);
    yaml += &workload("api-v2", "api", "v2", api2_in);
    yaml += "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.default.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: \"true\"}}}]
    route: [{destination: {host: api.default.svc.cluster.local, subset: v2}}]
  - name: split
    route:
    - {destination: {host: api.default.svc.cluster.local, subset: v1}, weight: 75}
    - {destination: {host: api.default.svc.cluster.local, subset: v2}, weight: 25}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-from-web, namespace: default}
spec:
  selector: {matchLabels: {app: api}}
  action: ALLOW
  rules: [{from: [{source: {principals: [cluster.local/ns/default/sa/web]}}]}]
";
    std::fs::write(dir.join("mesh.yaml"), yaml).expect("write config");
}

struct Mesh {
    _dir: tempfile::TempDir,
    cp: ControlPlane,
    root: PathBuf,
    python: PathBuf,
    children: Vec<Child>,
}

/// One sidecar's ports.
#[derive(Clone, Copy)]
struct Sidecar {
    inbound: u16,
    outbound: Option<u16>,
    admin: u16,
    app: u16,
}

impl Mesh {
    async fn start(python: PathBuf, web_in: u16, api1_in: u16, api2_in: u16) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        write_config(dir.path(), web_in, api1_in, api2_in);
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: dir.path().into(),
            xds_addr: local(0),
            ca_addr: Some(local(0)),
            debug_addr: None,
            ca_auth: CaAuth {
                open: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .expect("control plane");
        let root = dir.path().join("root-cert.pem");
        std::fs::write(&root, cp.root_pem()).expect("root");
        Self {
            _dir: dir,
            cp,
            root,
            python,
            children: Vec::new(),
        }
    }

    fn app(&mut self, name: &str, port: u16) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/echo.py");
        let child = Command::new(&self.python)
            .args([script, name, &port.to_string()])
            .kill_on_drop(true)
            .spawn()
            .expect("python app");
        self.children.push(child);
    }

    /// Starts a proxy process getting xDS and its certificate from the control plane;
    /// returns its index in `children`.
    fn proxy(&mut self, s: Sidecar, app: &str, version: &str, extra: &[String]) -> usize {
        let ca = self.cp.ca_addr().expect("CA");
        let mut args = node_args(s, app, version);
        args.extend([
            "--xds".into(),
            format!("http://{}", self.cp.xds_addr()),
            "--identity".into(),
            format!("istio-ca:https://{ca}"),
            "--ca-root".into(),
            self.root.display().to_string(),
        ]);
        args.extend(extra.iter().cloned());
        let log = self._dir.path().join(format!("{app}-{version}.log"));
        self.children.push(spawn_proxy_logged(&args, &log));
        self.children.len() - 1
    }

    /// A proxy's log so far.
    fn log(&self, app: &str, version: &str) -> String {
        std::fs::read_to_string(self._dir.path().join(format!("{app}-{version}.log")))
            .unwrap_or_default()
    }
}

/// Listener and node flags of one sidecar.
fn node_args(s: Sidecar, app: &str, version: &str) -> Vec<String> {
    vec![
        "--inbound".into(),
        local(s.inbound).to_string(),
        "--app".into(),
        local(s.app).to_string(),
        "--outbound".into(),
        s.outbound.map_or("off".into(), |p| local(p).to_string()),
        "--admin".into(),
        local(s.admin).to_string(),
        "--name".into(),
        format!("{app}-{version}-0"),
        "--namespace".into(),
        "default".into(),
        "--service-account".into(),
        app.into(),
        "--label".into(),
        format!("app={app}"),
        "--label".into(),
        format!("version={version}"),
        "--workers".into(),
        "1".into(),
    ]
}

fn spawn_proxy(args: &[String]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mesh-proxy")
}

/// Like [`spawn_proxy`], with the log (stderr) in `log`.
fn spawn_proxy_logged(args: &[String], log: &Path) -> Child {
    let file = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("mesh-proxy")
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` from `addr` with `Host: host` and extra headers; (status, body).
async fn get(
    c: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let mut req = http::Request::get(format!("http://{addr}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = c.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn wait_ready(c: &Client<HttpConnector, Empty<Bytes>>, admin: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        match get(c, local(admin), "admin", "/ready", &[]).await {
            Ok((200, _)) => return,
            Ok((s, b)) => last = format!("{s} {b}"),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} not ready: {last}");
}

/// Waits until the echo app `name` answers on `port`: the app itself, not whatever else
/// might hold the port.
async fn wait_app(port: u16, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let expected = format!("\"name\": \"{name}\"");
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio::net::TcpStream::connect(local(port)).await {
            Ok(mut tcp) => {
                let mut answer = String::new();
                let asked = tcp.write_all(b"GET / HTTP/1.0\r\n\r\n").await;
                if asked.is_ok() && tcp.read_to_string(&mut answer).await.is_ok() {
                    if answer.contains(&expected) {
                        return;
                    }
                    last = answer;
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the {name} app does not answer on {port}: {last}");
}

/// The value of the first series of `name` whose labels include every `k="v"` of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn stats(c: &Client<HttpConnector, Empty<Bytes>>, admin: u16) -> String {
    let (status, body) = get(c, local(admin), "admin", "/stats/prometheus", &[])
        .await
        .expect("stats");
    assert_eq!(status, 200);
    body
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -TERM {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_apps_behind_proxies_route_mtls_with_metrics_and_drain() {
    let Some(python) = python() else { return };
    let web = Sidecar {
        inbound: free_port(),
        outbound: Some(free_port()),
        admin: free_port(),
        app: free_port(),
    };
    let side = || Sidecar {
        inbound: free_port(),
        outbound: None,
        admin: free_port(),
        app: free_port(),
    };
    let (api1, api2) = (side(), side());
    let tcp = free_port();
    let mut mesh = Mesh::start(python, web.inbound, api1.inbound, api2.inbound).await;
    mesh.app("web", web.app);
    mesh.app("api-v1", api1.app);
    mesh.app("api-v2", api2.app);
    let tcp_flag = [
        "--tcp".to_string(),
        format!("{}={}", local(tcp), local(web.app)),
        "--drain-timeout".into(),
        "1s".into(),
    ];
    mesh.proxy(web, "web", "v1", &tcp_flag);
    mesh.proxy(api1, "api", "v1", &["--access-log".into(), "json".into()]);
    let api2_proxy = mesh.proxy(api2, "api", "v2", &["--drain-timeout".into(), "5s".into()]);
    let c = client();
    for (s, app, what) in [
        (web, "web", "web"),
        (api1, "api-v1", "api v1"),
        (api2, "api-v2", "api v2"),
    ] {
        wait_app(s.app, app).await;
        wait_ready(&c, s.admin, what).await;
    }
    let out = local(web.outbound.expect("web outbound"));

    // The header route: always v2, over mTLS with web's identity, the caller's authority kept.
    for _ in 0..20 {
        let (status, body) = get(&c, out, API, "/hello", &[("x-canary", "true")])
            .await
            .expect("canary request");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["name"], "api-v2", "{body}");
        assert_eq!(v["host"], API);
        let xfcc = v["xfcc"].as_str().unwrap_or_default();
        assert!(
            xfcc.contains("URI=spiffe://cluster.local/ns/default/sa/web")
                && xfcc.contains("By=spiffe://cluster.local/ns/default/sa/api"),
            "{xfcc}"
        );
    }
    // The weighted split: 75/25 over 200 requests (binomial sd ~6 requests).
    let mut seen: HashMap<String, u32> = HashMap::new();
    for _ in 0..200 {
        let (status, body) = get(&c, out, API, "/split", &[])
            .await
            .expect("split request");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        *seen
            .entry(v["name"].as_str().unwrap_or("?").into())
            .or_default() += 1;
    }
    let v1 = seen.get("api-v1").copied().unwrap_or(0);
    let v2 = seen.get("api-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 200, "{seen:?}");
    assert!(
        (120..=180).contains(&v1),
        "75/25 split not observed: {seen:?}"
    );

    // An app using the proxy as its http_proxy sends the absolute form.
    let mut s = tokio::net::TcpStream::connect(out).await.expect("connect");
    s.write_all(
        format!("GET http://{API}/abs HTTP/1.1\r\nhost: {API}\r\nconnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\"path\": \"/abs\""), "{raw}");

    // The DestinationRule's h2UpgradePolicy: the proxies talk HTTP/2 to each other (the
    // access log of api v1's inbound shows the protocol it received).
    let api1_log = mesh.log("api", "v1");
    assert!(
        api1_log.contains("\"protocol\":\"HTTP/2.0\"") && api1_log.contains("\"path\":\"/split\""),
        "api v1 inbound did not log HTTP/2 requests:\n{api1_log}"
    );

    // Authorization from the control plane's RBAC: the DENY policy wins over the ALLOW one.
    let (status, body) = get(&c, out, API, "/admin/users", &[("x-canary", "true")])
        .await
        .expect("admin request");
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    // Issue #21: the bypasses an attacker tried are normalized before routing and RBAC.
    for path in [
        "/x/../admin/users",
        "/./admin",
        "/%61dmin/users",
        "/x/%2e%2e/admin",
    ] {
        let (status, body) = get(&c, out, API, path, &[("x-canary", "true")])
            .await
            .expect("admin request");
        assert_eq!(
            (status, body.as_str()),
            (403, "RBAC: access denied"),
            "{path}"
        );
    }

    // Plaintext to a STRICT inbound gets no HTTP answer: the connection is closed.
    let mut s = tokio::net::TcpStream::connect(local(api1.inbound))
        .await
        .expect("connect");
    let _ = s
        .write_all(b"GET /hello HTTP/1.1\r\nhost: api\r\n\r\n")
        .await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1"),
        "STRICT inbound answered plaintext: {:?}",
        String::from_utf8_lossy(&buf)
    );

    // TCP passthrough to web's app, counted in istio_tcp_*.
    let mut s = tokio::net::TcpStream::connect(local(tcp))
        .await
        .expect("connect");
    s.write_all(b"GET /tcp HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.expect("read");
    assert!(raw.contains("\"name\": \"web\""), "{raw}");

    // The admin port shows the routing state: api's subsets with their sidecars' addresses.
    let (status, clusters) = get(&c, local(web.admin), "admin", "/clusters", &[])
        .await
        .expect("clusters");
    assert_eq!(status, 200);
    let clusters: serde_json::Value = serde_json::from_str(&clusters).expect("json");
    let v2 = &clusters["outbound|8080|v2|api.default.svc.cluster.local"];
    assert_eq!(v2["mtls"], true, "{clusters}");
    assert_eq!(
        v2["endpoints"][0],
        local(api2.inbound).to_string(),
        "{clusters}"
    );
    let (status, dump) = get(&c, local(web.admin), "admin", "/config_dump", &[])
        .await
        .expect("config_dump");
    assert_eq!(status, 200);
    assert!(
        dump.contains("\"api.default.svc.cluster.local:8080\""),
        "{dump}"
    );

    // Istio metrics from both reporters, with principals.
    let sa = |s: &str| format!("spiffe://cluster.local/ns/default/sa/{s}");
    let (web_sa, api_sa) = (sa("web"), sa("api"));
    let web_stats = stats(&c, web.admin).await;
    let source = metric(
        &web_stats,
        "istio_requests_total",
        &[
            ("reporter", "source"),
            ("source_principal", &web_sa),
            ("source_workload", "web-v1"),
            ("destination_service", "api.default.svc.cluster.local"),
            ("response_code", "200"),
        ],
    );
    assert_eq!(source, Some(221.0), "source series:\n{web_stats}");
    let source_denied = metric(
        &web_stats,
        "istio_requests_total",
        &[("reporter", "source"), ("response_code", "403")],
    );
    // /admin/users and the four normalization bypasses.
    assert_eq!(source_denied, Some(5.0), "{web_stats}");
    let opened = metric(
        &web_stats,
        "istio_tcp_connections_opened_total",
        &[("source_principal", &web_sa)],
    );
    assert_eq!(opened, Some(1.0), "{web_stats}");
    let mut by_version = 0.0;
    for s in [api1, api2] {
        let text = stats(&c, s.admin).await;
        let n = metric(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("source_principal", &web_sa),
                ("destination_principal", &api_sa),
                ("destination_service", "api.default.svc.cluster.local"),
                ("connection_security_policy", "mutual_tls"),
                ("response_code", "200"),
            ],
        )
        .unwrap_or_else(|| panic!("no destination series:\n{text}"));
        by_version += n;
    }
    assert_eq!(by_version, 221.0);
    let api2_stats = stats(&c, api2.admin).await;
    let denied = metric(
        &api2_stats,
        "istio_requests_total",
        &[("reporter", "destination"), ("response_code", "403")],
    );
    assert_eq!(denied, Some(5.0), "denials are counted:\n{api2_stats}");

    // SIGTERM drains: a request in flight to api v2 completes, then the proxy exits and its
    // port is closed.
    let slow = {
        let c = c.clone();
        tokio::spawn(
            async move { get(&c, out, API, "/slow?ms=1500", &[("x-canary", "true")]).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&mesh.children[api2_proxy]);
    let (status, body) = slow.await.expect("join").expect("slow request");
    assert_eq!(status, 200, "in-flight request cut by the drain: {body}");
    let exit = tokio::time::timeout(Duration::from_secs(10), mesh.children[api2_proxy].wait())
        .await
        .expect("api v2 proxy exits after draining")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    assert!(
        tokio::net::TcpStream::connect(local(api2.inbound))
            .await
            .is_err(),
        "the drained proxy still accepts"
    );

    // The drain timeout bounds the wait: a tunnel that outlives it is cut.
    let mut s = tokio::net::TcpStream::connect(local(tcp))
        .await
        .expect("connect");
    s.write_all(b"GET /slow?ms=20000 HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let web_proxy = 3; // children: 3 apps, then web's proxy
    sigterm(&mesh.children[web_proxy]);
    let exit = tokio::time::timeout(Duration::from_secs(10), mesh.children[web_proxy].wait())
        .await
        .expect("web proxy exits at its 1 s drain timeout, not after the 20 s request")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// The TCP ports process `pid` listens on (Linux: its socket inodes in `/proc/<pid>/fd`
/// matched against `/proc/net/tcp{,6}` entries in state LISTEN); `None` elsewhere.
fn listening_ports(pid: u32) -> Option<Vec<u16>> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let inodes: Vec<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address, rem_address, st, ..., inode (field 9).
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next()?;
                ports.push(u16::from_str_radix(port, 16).ok()?);
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    Some(ports)
}

/// Static mode: no control plane process. Each proxy generates its config from the same
/// Istio YAML in process (no xDS server: each listens on its own ports only) and signs its
/// own certificate with a shared CA directory; the api proxy takes its settings from a YAML
/// file. A caller that the ALLOW policy does not name is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_mesh_config_and_local_ca() {
    let Some(python) = python() else { return };
    let web = Sidecar {
        inbound: free_port(),
        outbound: Some(free_port()),
        admin: free_port(),
        app: free_port(),
    };
    let api2 = Sidecar {
        inbound: free_port(),
        outbound: None,
        admin: free_port(),
        app: free_port(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("mesh");
    let ca = dir.path().join("ca");
    std::fs::create_dir_all(&config).expect("mkdir");
    std::fs::create_dir_all(&ca).expect("mkdir");
    // api v1 is declared but not running: only the header route (to v2) is used.
    write_config(&config, web.inbound, free_port(), api2.inbound);
    let td = mesh_core::TrustDomain::new("cluster.local").expect("trust domain");
    mesh_tls::dev_ca::DevCa::new(td)
        .expect("CA")
        .save(&ca)
        .expect("save CA");
    let mut children = Vec::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apps/echo.py");
    for (name, port) in [("web", web.app), ("api-v2", api2.app)] {
        children.push(
            Command::new(&python)
                .args([script, name, &port.to_string()])
                .kill_on_drop(true)
                .spawn()
                .expect("python app"),
        );
    }
    let mut web_args = node_args(web, "web", "v1");
    web_args.extend([
        "--mesh-config".into(),
        config.display().to_string(),
        "--identity".into(),
        format!("ca:{}", ca.display()),
    ]);
    children.push(spawn_proxy(&web_args));
    let file = dir.path().join("api.yaml");
    std::fs::write(
        &file,
        format!(
            "inbound: {}\napp: {}\noutbound: \"off\"\nadmin: {}\nmesh_config: {}\n\
             identity: ca:{}\nname: api-v2-0\nnamespace: default\nservice_account: api\n\
             labels: {{app: api, version: v2}}\nworkers: 1\ndrain_timeout: 2s\n",
            local(api2.inbound),
            local(api2.app),
            local(api2.admin),
            config.display(),
            ca.display()
        ),
    )
    .expect("write proxy config");
    children.push(spawn_proxy(&[
        "--config".into(),
        file.display().to_string(),
    ]));
    // A caller the api's ALLOW policy does not name.
    let other = Sidecar {
        inbound: 0,
        outbound: Some(free_port()),
        admin: free_port(),
        app: 0,
    };
    let mut other_args = node_args(other, "other", "v1");
    other_args.extend([
        "--inbound".into(),
        "off".into(),
        "--mesh-config".into(),
        config.display().to_string(),
        "--identity".into(),
        format!("ca:{}", ca.display()),
    ]);
    children.push(spawn_proxy(&other_args));
    let c = client();
    wait_ready(&c, other.admin, "other").await;
    for (s, app, what) in [(web, "web", "web"), (api2, "api-v2", "api v2")] {
        wait_app(s.app, app).await;
        wait_ready(&c, s.admin, what).await;
    }
    // No loopback xDS server (nor any other port) beyond the configured ones.
    let web_pid = children[2].id().expect("web proxy pid");
    let ports = listening_ports(web_pid)
        .unwrap_or_else(|| panic!("cannot read the listening sockets of /proc/{web_pid}"));
    let mut expected = vec![web.inbound, web.outbound.expect("outbound"), web.admin];
    expected.sort_unstable();
    assert_eq!(
        ports, expected,
        "the web proxy listens on its own ports only"
    );
    // The admin shows the in-process source's status as an xDS client's.
    let (status, dump) = get(&c, local(web.admin), "admin", "/config_dump", &[])
        .await
        .expect("config_dump");
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).expect("json");
    let listener = format!("xds.istio.io/grpc/lds/inbound/127.0.0.1:{}", web.inbound);
    let acked = dump["xds_client"]["resources"]
        .as_array()
        .is_some_and(|rs| {
            rs.iter()
                .any(|r| r["name"] == listener.as_str() && r["client_status"] == "ACKED")
        });
    assert!(acked, "{dump:#}");
    assert_eq!(
        dump["config"]["mesh_config"]["rejected_edits"], 0,
        "{dump:#}"
    );
    let out = local(web.outbound.expect("outbound"));
    for _ in 0..10 {
        let (status, body) = get(&c, out, API, "/static", &[("x-canary", "true")])
            .await
            .expect("request");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["name"], "api-v2");
        assert!(
            v["xfcc"]
                .as_str()
                .unwrap_or_default()
                .contains("URI=spiffe://cluster.local/ns/default/sa/web"),
            "{body}"
        );
    }
    let other_out = local(other.outbound.expect("outbound"));
    let (status, body) = get(&c, other_out, API, "/static", &[("x-canary", "true")])
        .await
        .expect("request");
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let text = stats(&c, api2.admin).await;
    let n = metric(
        &text,
        "istio_requests_total",
        &[
            ("reporter", "destination"),
            ("destination_workload", "api-v2"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/default/sa/web",
            ),
            ("connection_security_policy", "mutual_tls"),
            ("response_code", "200"),
        ],
    );
    assert_eq!(n, Some(10.0), "{text}");
}
