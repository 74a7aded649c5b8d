//! The same config directory in a real istiod: `pilot-discovery discovery --registries=
//! --configDir=examples/config/bookinfo` (Istio 1.31, `MESH_ISTIOD_BIN`, built by
//! scripts/peers/istiod.sh) loads every resource we load, and derives the same services and
//! endpoints (address, port, identity) as our `MeshConfig`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mesh_control::istio::{LoadReport, MeshConfig};
use mesh_test_support::require_peer;
use serde_json::Value;

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo")
}

/// Kills istiod when the test ends, however it ends.
struct Istiod(Child);

impl Drop for Istiod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use mesh_test_support::free_port;

/// A plain HTTP/1.0 GET; `None` while istiod is not listening yet.
fn get_json(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return None;
    }
    serde_json::from_str(body).ok()
}

#[test]
fn istiod_loads_the_bookinfo_directory_with_the_same_meaning() {
    let bin = require_peer!("MESH_ISTIOD_BIN");
    let ours = LoadReport::from_dir(&bookinfo()).unwrap();
    assert!(ours.errors.is_empty());
    let (config, _) = MeshConfig::load_dir(bookinfo()).unwrap();

    let work = tempfile::tempdir().unwrap();
    let http = free_port();
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let istiod = Istiod(
        Command::new(bin)
            .current_dir(work.path())
            .env("ISTIOD_CUSTOM_HOST", "localhost")
            .args(["discovery", "--registries=", "--configDir"])
            .arg(bookinfo())
            .arg(format!("--httpAddr={}", addr(http)))
            .arg(format!("--grpcAddr={}", addr(free_port())))
            .arg(format!("--secureGRPCAddr={}", addr(free_port())))
            .arg(format!("--httpsAddr={}", addr(free_port())))
            .arg(format!("--monitoringAddr={}", addr(free_port())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Every resource we load, istiod loads (and nothing else).
    let want: BTreeSet<(String, String, String)> = ours
        .resources
        .iter()
        .map(|r| {
            let k = r.key();
            (k.kind.to_string(), k.namespace, k.name)
        })
        .collect();
    assert_eq!(want.len(), 22);
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got: BTreeSet<(String, String, String)> = get_json(http, "/debug/configz")
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
                (
                    s(&c["kind"]),
                    s(&c["metadata"]["namespace"]),
                    s(&c["metadata"]["name"]),
                )
            })
            .collect();
        if got.len() >= want.len() || Instant::now() > deadline {
            break got;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(got, want);

    // The same endpoints: service, address, port and identity of every workload.
    let mut ours_eps = BTreeSet::new();
    for (host, svc) in &config.services {
        for w in &svc.workloads {
            for p in &svc.ports {
                ours_eps.insert((
                    host.clone(),
                    w.entry.address.clone(),
                    u64::from(w.port_for(p)),
                    format!("spiffe://cluster.local/{}", w.identity_path()),
                ));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let istiod_eps = loop {
        let shards = get_json(http, "/debug/endpointShardz").unwrap_or_default();
        let mut eps = BTreeSet::new();
        for (host, by_ns) in shards.as_object().into_iter().flatten() {
            for ns in by_ns.as_object().into_iter().flatten().map(|(_, v)| v) {
                for shard in ns["Shards"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, v)| v)
                {
                    for ep in shard.as_array().into_iter().flatten() {
                        for a in ep["Addresses"].as_array().into_iter().flatten() {
                            eps.insert((
                                host.clone(),
                                a.as_str().unwrap_or_default().to_string(),
                                ep["EndpointPort"].as_u64().unwrap_or_default(),
                                ep["ServiceAccount"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                            ));
                        }
                    }
                }
            }
        }
        if eps.len() >= ours_eps.len() || Instant::now() > deadline {
            break eps;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(istiod_eps, ours_eps);
    drop(istiod);
}
