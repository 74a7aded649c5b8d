//! Interop with go-control-plane v0.14 (interop/xds-go-server, a SnapshotCache behind ADS),
//! for state-of-the-world and delta: initial fetch, update, removal, a NACK the server sees
//! with our reason while the valid resources apply, a server restart mid-stream, and a
//! server down for longer than a backoff cycle.
//!
//! The peer comes from `MESH_XDS_GO_SERVER_BIN` (scripts/peers/xds-go-server.sh).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_core::model::EndpointAddress;
use mesh_xds::client::{
    BackoffConfig, ConfigSnapshot, Protocol, ResourceState, XdsClient, XdsClientConfig, channel,
};
use mesh_xds::resource::ResourceType;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const WAIT: Duration = Duration::from_secs(10);
const TARGET: &str = "xds:///reviews.default.svc.cluster.local:9080";
const LISTENER: &str = "reviews.default.svc.cluster.local:9080";
const C1: &str = "outbound|9080||reviews.default.svc.cluster.local";
const C2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

/// The Go control plane, driven by JSON lines on stdin; killed on drop.
struct GoServer {
    bin: PathBuf,
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    port: u16,
}

impl GoServer {
    async fn start(bin: &Path, port: u16) -> GoServer {
        let mut child = Command::new(bin)
            .arg("-port")
            .arg(port.to_string())
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
        assert_eq!(hello["ready"], true, "{hello}");
        let port = hello["port"].as_u64().expect("port") as u16;
        GoServer {
            bin: bin.to_owned(),
            child,
            stdin,
            stdout,
            port,
        }
    }

    async fn cmd(&mut self, cmd: Value) -> Value {
        let mut line = cmd.to_string();
        line.push('\n');
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

    async fn set(&mut self, snapshot: Value) {
        let mut cmd = snapshot;
        cmd["cmd"] = json!("set");
        self.cmd(cmd).await;
    }

    async fn nacks(&mut self) -> Vec<Value> {
        let reply = self.cmd(json!({"cmd": "nacks"})).await;
        reply["nacks"].as_array().cloned().unwrap_or_default()
    }

    async fn requests(&mut self) -> Vec<Value> {
        let reply = self.cmd(json!({"cmd": "requests"})).await;
        reply["requests"].as_array().cloned().unwrap_or_default()
    }

    /// Kills the process (a real crash: streams are cut, the cache is lost).
    async fn kill(mut self) -> (PathBuf, u16) {
        let _ = self.child.kill().await;
        (self.bin, self.port)
    }
}

/// A snapshot: the listener routes to `clusters` (first one by default), each cluster with
/// its endpoints (`host:port` strings).
fn snapshot(version: &str, clusters: &[(&str, &[&str])]) -> Value {
    json!({
        "version": version,
        "listeners": [{"name": LISTENER, "route_config": "reviews-routes"}],
        "routes": [{"name": "reviews-routes", "vhosts": clusters.iter().enumerate().map(|(i, (c, _))| json!({
            "name": format!("vh{i}"),
            "domains": [if i == 0 { "*".to_string() } else { format!("v{i}.example") }],
            "cluster": c,
        })).collect::<Vec<_>>()}],
        "clusters": clusters.iter().map(|(c, _)| json!({"name": c})).collect::<Vec<_>>(),
        "endpoints": clusters.iter().map(|(c, eps)| json!({"cluster": c, "addrs": eps})).collect::<Vec<_>>(),
    })
}

fn client(server: &GoServer, protocol: Protocol) -> XdsClient {
    client_with(server, protocol, false)
}

fn client_with(server: &GoServer, protocol: Protocol, wildcard_clusters: bool) -> XdsClient {
    let config = XdsClientConfig {
        wildcard_clusters,
        node: Node {
            id: "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local".into(),
            ..Default::default()
        },
        protocol,
        backoff: BackoffConfig {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(300),
            multiplier: 2.0,
            jitter: 0.2,
        },
        resource_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let uri = format!("http://127.0.0.1:{}", server.port);
    XdsClient::new(config, channel::insecure(&uri).expect("uri"))
}

/// Waits until the snapshot satisfies `cond`.
async fn wait_for(client: &XdsClient, what: &str, cond: impl Fn(&ConfigSnapshot) -> bool) {
    let mut rx = client.watch();
    let ok = tokio::time::timeout(WAIT, async {
        loop {
            if cond(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(
        ok.is_ok(),
        "timed out waiting for {what}; snapshot: {:#?}",
        client.snapshot()
    );
}

fn ports(s: &ConfigSnapshot, cluster: &str) -> Vec<u16> {
    let mut out: Vec<u16> = s
        .endpoints
        .get(cluster)
        .map(|cla| {
            cla.localities
                .iter()
                .flat_map(|l| l.endpoints.iter())
                .filter_map(|e| match &e.address {
                    EndpointAddress::Socket(a) => Some(a.port()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn full_chain(s: &ConfigSnapshot, cluster: &str) -> bool {
    s.listeners.contains_key(LISTENER)
        && s.route_configs.contains_key("reviews-routes")
        && s.clusters.contains_key(cluster)
        && s.endpoints.contains_key(cluster)
}

async fn start(protocol: Protocol) -> Option<(GoServer, XdsClient)> {
    let bin = mesh_test_support::peer("MESH_XDS_GO_SERVER_BIN")?;
    let mut server = GoServer::start(&bin, 0).await;
    server
        .set(snapshot(
            "1",
            &[(C1, &["127.0.0.1:8001", "127.0.0.1:8002"])],
        ))
        .await;
    let client = client(&server, protocol);
    client.subscribe_target(TARGET).await.expect("subscribe");
    tokio::time::timeout(WAIT, client.ready())
        .await
        .expect("ready in time")
        .expect("client running");
    Some((server, client))
}

async fn initial_fetch(protocol: Protocol) {
    let Some((mut server, client)) = start(protocol).await else {
        return;
    };
    let snap = client.snapshot();
    assert!(full_chain(&snap, C1), "{snap:#?}");
    assert_eq!(ports(&snap, C1), [8001, 8002]);
    let status = client.status().await.expect("status");
    for (ty, name) in [
        (ResourceType::Listener, LISTENER),
        (ResourceType::RouteConfiguration, "reviews-routes"),
        (ResourceType::Cluster, C1),
        (ResourceType::ClusterLoadAssignment, C1),
    ] {
        let st = status
            .get(ty, name)
            .unwrap_or_else(|| panic!("{ty} {name}"));
        assert_eq!(st.state, ResourceState::Acked, "{st:?}");
    }
    assert!(status.connected && status.ready);
    // The server saw our node and ACKs (requests carrying a nonce, no error).
    let requests = server.requests().await;
    assert!(requests.iter().any(|r| {
        r["node_id"]
            .as_str()
            .is_some_and(|n| n.starts_with("sidecar~"))
    }));
    assert!(
        requests
            .iter()
            .any(|r| r["nonce"] != "" && r["has_error_detail"] == false)
    );
    assert!(server.nacks().await.is_empty());
}

async fn update(protocol: Protocol) {
    let Some((mut server, client)) = start(protocol).await else {
        return;
    };
    let before = client.snapshot();
    server
        .set(snapshot(
            "2",
            &[(C1, &["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"])],
        ))
        .await;
    wait_for(&client, "the third endpoint", |s| {
        ports(s, C1) == [8001, 8002, 8003]
    })
    .await;
    let after = client.snapshot();
    // Only the endpoints changed: the listener is the same Arc.
    assert!(Arc::ptr_eq(
        &before.listeners[LISTENER],
        &after.listeners[LISTENER]
    ));
    assert!(server.nacks().await.is_empty());
}

async fn removal(protocol: Protocol) {
    let Some((mut server, client)) = start(protocol).await else {
        return;
    };
    // Route now sends to C2; C1 leaves the snapshot (CDS full state / delta removal, and
    // no longer referenced).
    server
        .set(snapshot("2", &[(C2, &["127.0.0.1:9001"])]))
        .await;
    wait_for(&client, "C2 in, C1 out", |s| {
        full_chain(s, C2) && !s.clusters.contains_key(C1) && !s.endpoints.contains_key(C1)
    })
    .await;
    // Listener removed: everything goes, and the listener is DOES_NOT_EXIST.
    server
        .set(json!({"version": "3", "clusters": [{"name": C2}], "endpoints": [{"cluster": C2, "addrs": ["127.0.0.1:9001"]}]}))
        .await;
    wait_for(&client, "the listener gone", |s| {
        !s.listeners.contains_key(LISTENER) && s.clusters.is_empty()
    })
    .await;
    let status = client.status().await.expect("status");
    let l = status.get(ResourceType::Listener, LISTENER);
    if protocol == Protocol::StateOfTheWorld {
        assert_eq!(l.map(|l| l.state), Some(ResourceState::DoesNotExist));
    } else {
        // Delta: go-control-plane removes it explicitly (removed_resources).
        assert_eq!(
            l.map(|l| l.state),
            Some(ResourceState::DoesNotExist),
            "{l:?}"
        );
    }
}

async fn nack(protocol: Protocol) {
    let Some((mut server, client)) = start(protocol).await else {
        return;
    };
    // Two clusters; C2's endpoints carry a port out of range: rejected, while C1's new
    // endpoint set applies.
    server
        .set(snapshot(
            "2",
            &[
                (C1, &["127.0.0.1:8001", "127.0.0.1:8005"]),
                (C2, &["127.0.0.1:70000"]),
            ],
        ))
        .await;
    wait_for(&client, "C1's update despite C2's rejection", |s| {
        ports(s, C1) == [8001, 8005] && s.clusters.contains_key(C2)
    })
    .await;
    assert!(!client.snapshot().endpoints.contains_key(C2));
    let nacks = tokio::time::timeout(WAIT, async {
        loop {
            let nacks = server.nacks().await;
            if !nacks.is_empty() {
                return nacks;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the server sees a NACK");
    let nack = &nacks[0];
    assert_eq!(
        nack["type_url"],
        "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
    );
    assert_eq!(nack["error_code"], 3, "INVALID_ARGUMENT: {nack}");
    let message = nack["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains(C2) && message.contains("70000") && message.contains("out of range"),
        "{message}"
    );
    assert!(
        !message.contains(&format!("\"{C1}\"")),
        "C1 was valid: {message}"
    );
    if protocol == Protocol::StateOfTheWorld {
        // NACK = previous good version (that of the last EDS ACK before it) + the nonce.
        let requests = server.requests().await;
        let eds = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
        let last_ack = requests
            .iter()
            .take_while(|r| r["has_error_detail"] == false)
            .filter(|r| r["type_url"] == eds && r["nonce"] != "")
            .last()
            .expect("an EDS ACK before the NACK");
        assert_eq!(nack["version_info"], last_ack["version_info"], "{nack}");
        assert_ne!(nack["nonce"], last_ack["nonce"]);
    }
    assert_ne!(nack["nonce"], "");
    let status = client.status().await.expect("status");
    let c2 = status
        .get(ResourceType::ClusterLoadAssignment, C2)
        .expect("C2 status");
    assert_eq!(c2.state, ResourceState::Nacked);
    assert!(
        c2.last_error
            .as_deref()
            .unwrap_or_default()
            .contains("70000")
    );
}

async fn restart_mid_stream(protocol: Protocol) {
    let Some((server, client)) = start(protocol).await else {
        return;
    };
    let before = client.snapshot();
    let (bin, port) = server.kill().await;
    let mut server = GoServer::start(&bin, port).await;
    assert_eq!(server.port, port);
    server
        .set(snapshot(
            "1",
            &[(C1, &["127.0.0.1:8001", "127.0.0.1:8002"])],
        ))
        .await;
    // The client reconnects and resubscribes everything it watches.
    let requests = tokio::time::timeout(WAIT, async {
        loop {
            let requests = server.requests().await;
            let types: std::collections::HashSet<String> = requests
                .iter()
                .filter_map(|r| r["type_url"].as_str().map(str::to_owned))
                .collect();
            if types.len() == 4 {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("resubscribed to all four types");
    let lds = requests
        .iter()
        .find(|r| r["type_url"] == "type.googleapis.com/envoy.config.listener.v3.Listener")
        .expect("LDS request");
    assert_eq!(lds["names"], json!([LISTENER]));
    if protocol == Protocol::Delta {
        // initial_resource_versions tells the server what we already hold.
        assert!(
            lds["initial_versions"]
                .as_object()
                .is_some_and(|m| m.contains_key(LISTENER)),
            "{lds}"
        );
    }
    // Same state, and (identical resources) the very same Arcs.
    wait_for(&client, "status connected", |_| true).await;
    let status = tokio::time::timeout(WAIT, async {
        loop {
            let st = client.status().await.expect("status");
            if st.connected && st.resources.iter().all(|r| r.state == ResourceState::Acked) {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("all ACKED again");
    assert_eq!(status.resources.len(), 4);
    let after = client.snapshot();
    assert!(Arc::ptr_eq(&before.clusters[C1], &after.clusters[C1]));
    assert_eq!(ports(&after, C1), [8001, 8002]);
    // And updates flow on the new stream.
    server
        .set(snapshot("2", &[(C1, &["127.0.0.1:8009"])]))
        .await;
    wait_for(&client, "update after restart", |s| ports(s, C1) == [8009]).await;
}

async fn stream_cut_cache_kept(protocol: Protocol) {
    let Some((mut server, client)) = start(protocol).await else {
        return;
    };
    // The server stops serving (open streams are cut) but keeps its cache, then serves
    // again on the same port: the client resumes and takes updates made while it was away.
    server.cmd(json!({"cmd": "stop"})).await;
    server
        .set(snapshot("2", &[(C1, &["127.0.0.1:8011"])]))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(ports(&client.snapshot(), C1), [8001, 8002], "fail-static");
    server.cmd(json!({"cmd": "start"})).await;
    wait_for(&client, "the update made while disconnected", |s| {
        ports(s, C1) == [8011]
    })
    .await;
    let streams: std::collections::HashSet<i64> = server
        .requests()
        .await
        .iter()
        .filter_map(|r| r["stream"].as_i64())
        .collect();
    assert!(streams.len() >= 2, "a second stream: {streams:?}");
}

async fn wildcard_clusters(protocol: Protocol) {
    let Some(bin) = mesh_test_support::peer("MESH_XDS_GO_SERVER_BIN") else {
        return;
    };
    let mut server = GoServer::start(&bin, 0).await;
    let mut snap = snapshot("1", &[(C1, &["127.0.0.1:8001"]), (C2, &["127.0.0.1:8002"])]);
    snap["listeners"] = json!([]);
    snap["routes"] = json!([]);
    server.set(snap).await;
    // No target: every cluster (and through them their endpoints) is watched.
    let client = client_with(&server, protocol, true);
    tokio::time::timeout(WAIT, client.ready())
        .await
        .expect("ready in time")
        .expect("client running");
    wait_for(&client, "both clusters and their endpoints", |s| {
        ports(s, C1) == [8001] && ports(s, C2) == [8002] && s.listeners.is_empty()
    })
    .await;
    let requests = server.requests().await;
    let cds = requests
        .iter()
        .find(|r| r["type_url"] == "type.googleapis.com/envoy.config.cluster.v3.Cluster")
        .expect("a CDS request");
    let expected = if protocol == Protocol::Delta {
        json!(["*"])
    } else {
        json!(null)
    };
    assert_eq!(cds["names"], expected, "{cds}");
    // A cluster removed on the server leaves, with its endpoints.
    server
        .set(json!({"version": "2", "clusters": [{"name": C1}],
                    "endpoints": [{"cluster": C1, "addrs": ["127.0.0.1:8001"]}]}))
        .await;
    wait_for(&client, "C2 gone", |s| {
        !s.clusters.contains_key(C2) && !s.endpoints.contains_key(C2) && ports(s, C1) == [8001]
    })
    .await;
}

async fn down_longer_than_backoff(protocol: Protocol) {
    let Some((server, client)) = start(protocol).await else {
        return;
    };
    let before = client.snapshot();
    let (bin, port) = server.kill().await;
    // Several backoff cycles (50 ms .. 300 ms) with nobody listening.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = client.status().await.expect("status");
    assert!(!status.connected);
    let during = client.snapshot();
    assert!(
        Arc::ptr_eq(&before, &during),
        "last good config still served"
    );
    assert!(full_chain(&during, C1));
    assert!(client.is_ready());
    // Back: the client reconnects by itself.
    let mut server = GoServer::start(&bin, port).await;
    server
        .set(snapshot("5", &[(C1, &["127.0.0.1:8007"])]))
        .await;
    wait_for(&client, "reconnect and update", |s| ports(s, C1) == [8007]).await;
}

macro_rules! both_protocols {
    ($($name:ident),* $(,)?) => {
        mod sotw {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(mesh_xds::client::Protocol::StateOfTheWorld).await })*
        }
        mod delta {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(mesh_xds::client::Protocol::Delta).await })*
        }
    };
}

both_protocols!(
    initial_fetch,
    update,
    removal,
    nack,
    restart_mid_stream,
    stream_cut_cache_kept,
    wildcard_clusters,
    down_longer_than_backoff,
);
