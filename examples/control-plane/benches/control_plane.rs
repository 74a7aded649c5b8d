//! Control-plane scale: 1,000 services, 1,000 connected xDS clients (our ADS client, in
//! this process), the server in its own process (`control-plane serve`) so its memory can
//! be read from `/proc/<pid>/status`.
//!
//! Measures, for an edit of the watched directory that changes every service's endpoints,
//! and for one that changes a single service:
//! - the time from the file write until every client has applied the change, and until
//!   the server has every client's ACK (`/debug/syncz?summary`);
//! - the server's resident memory idle, with 1,000 clients, and after the pushes.
//!
//! `cargo bench -p control-plane --bench control_plane` (env `SERVICES`, `CLIENTS` to scale).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_xds::client::{Protocol, XdsClient, XdsClientConfig, channel};

fn services_yaml(n: usize, port_base: u32) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: svc{i}, namespace: default}}\nspec:\n  hosts: [svc{i}.default.svc.cluster.local]\n  \
             location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  \
             endpoints: [{{address: 10.0.{}.{}, ports: {{http: {}}}, serviceAccount: svc{i}}}]\n",
            i / 250,
            i % 250 + 1,
            port_base + (i as u32 % 1000),
        ));
    }
    out
}

struct Server {
    child: Child,
    debug: SocketAddr,
    xds: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_mib(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    /// (generation, clients, synced, nacks)
    fn summary(&self) -> (u64, u64, u64, u64) {
        let mut s = std::net::TcpStream::connect(self.debug).unwrap();
        write!(
            s,
            "GET /debug/syncz?summary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("{}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        (g("generation"), g("clients"), g("synced"), g("nacks"))
    }
}

fn start_server(dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["serve", "--config-dir"])
        .arg(dir)
        .args([
            "--xds-addr",
            "127.0.0.1:0",
            "--debug-addr",
            "127.0.0.1:0",
            "--ca-addr",
            "off",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "serving xds=A ca=off debug=B"
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    Server {
        xds: field("xds="),
        debug: field("debug="),
        child,
    }
}

fn node(i: usize) -> Node {
    Node {
        id: format!("sidecar~10.1.0.1~client{i}.default~default.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [(
                "GENERATOR".to_string(),
                Value {
                    kind: Some(Kind::StringValue("grpc".into())),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

fn endpoint_port(c: &XdsClient, cluster: &str) -> Option<u16> {
    let snap = c.snapshot();
    let cla = snap.endpoints.get(cluster)?;
    match &cla.localities.first()?.endpoints.first()?.address {
        mesh_core::model::EndpointAddress::Socket(a) => Some(a.port()),
        mesh_core::model::EndpointAddress::Dns { port, .. } => Some(*port),
    }
}

async fn wait_all(
    server: &Server,
    clients: &[XdsClient],
    expect: impl Fn(usize, &XdsClient) -> bool,
    generation: u64,
) -> (Duration, Duration, Duration) {
    let start = Instant::now();
    let (mut applied, mut acked, mut loaded) = (None, None, None);
    while applied.is_none() || acked.is_none() {
        if applied.is_none() && clients.iter().enumerate().all(|(i, c)| expect(i, c)) {
            applied = Some(start.elapsed());
        }
        if acked.is_none() {
            let (g, n, synced, _) = server.summary();
            if g > generation && loaded.is_none() {
                loaded = Some(start.elapsed());
            }
            if g > generation && synced == n {
                acked = Some(start.elapsed());
            }
        }
        assert!(start.elapsed() < Duration::from_secs(120), "no convergence");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (
        loaded.unwrap_or_default(),
        applied.unwrap_or_default(),
        acked.unwrap_or_default(),
    )
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` probes with --list
    }
    let n_services: usize = std::env::var("SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let n_clients: usize = std::env::var("CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("services.yaml");
    std::fs::write(&file, services_yaml(n_services, 20000)).unwrap();
    let server = start_server(dir.path());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = server.rss_mib();

    let url = format!("http://{}", server.xds);
    let start = Instant::now();
    let clients: Vec<XdsClient> = (0..n_clients)
        .map(|i| {
            let protocol = if i % 2 == 0 {
                Protocol::StateOfTheWorld
            } else {
                Protocol::Delta
            };
            XdsClient::new(
                XdsClientConfig {
                    node: node(i),
                    protocol,
                    ..Default::default()
                },
                channel::insecure(&url).unwrap(),
            )
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.subscribe_target(&format!(
            "xds:///svc{}.default.svc.cluster.local:8080",
            i % n_services
        ))
        .await
        .unwrap();
    }
    for c in &clients {
        c.ready().await.unwrap();
    }
    let connected = start.elapsed();
    let with_clients = server.rss_mib();
    let cluster = |i: usize| {
        format!(
            "outbound|8080||svc{}.default.svc.cluster.local",
            i % n_services
        )
    };

    // Edit 1: every service's endpoint port changes.
    let g = server.summary().0;
    std::fs::write(&file, services_yaml(n_services, 30000)).unwrap();
    let (all_loaded, all_applied, all_acked) = wait_all(
        &server,
        &clients,
        |i, c| endpoint_port(c, &cluster(i)) == Some(30000 + (i % n_services) as u16 % 1000),
        g,
    )
    .await;
    let after_push = server.rss_mib();

    // Edit 2: one service changes (only its client is pushed to).
    let g = server.summary().0;
    let text = services_yaml(n_services, 30000).replacen(
        "ports: {http: 30000}",
        "ports: {http: 31999}",
        1,
    );
    std::fs::write(&file, text).unwrap();
    let (one_loaded, one_applied, one_acked) = wait_all(
        &server,
        &clients,
        |i, c| i != 0 || endpoint_port(c, &cluster(0)) == Some(31999),
        g,
    )
    .await;
    let (_, n, synced, nacks) = server.summary();

    println!(
        "control plane: {n_services} services, {n_clients} clients (half SotW, half delta), server in its own process"
    );
    println!("  clients connected and ready:          {connected:?}");
    println!(
        "  edit of all services: new config loaded {all_loaded:?}; all clients applied {all_applied:?}; all ACKed at server {all_acked:?}"
    );
    println!(
        "  edit of one service:  new config loaded {one_loaded:?}; its client applied {one_applied:?}; all ACKed at server {one_acked:?}"
    );
    println!(
        "  server RSS: idle {idle:.1} MiB; {n_clients} clients {with_clients:.1} MiB; after push {after_push:.1} MiB"
    );
    println!("  final: {synced}/{n} clients synced, {nacks} NACKs");
    println!(
        "  (times from the file write; `loaded` is the watcher: 300 ms poll, applied once two reads agree)"
    );
}
