//! Interop with a real SPIRE server and agent (v1.13.3, scripts/peers/spire.sh): our
//! Workload API source receives the SVID, serves mTLS with it, and picks up a rotation.
//!
//! Setup: trust domain `cluster.local`, sqlite datastore, join_token node attestation,
//! unix workload attestation of this test process's uid, 20 s workload SVIDs (the agent
//! renews at half life, so a second SVID arrives within ~15 s).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_core::SpiffeId;
use mesh_test_support::require_peer;
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ClientSettings, ServerSettings};
use mesh_tls::server::MeshAcceptor;
use mesh_tls::source::SpireSource;
use mesh_tls::verify::PeerPolicy;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WORKLOAD_ID: &str = "spiffe://cluster.local/ns/default/sa/test";
const SVID_TTL_SECS: u32 = 20;

/// Kills the SPIRE processes when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

use mesh_test_support::free_port;

fn log_file(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn uid() -> String {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Retries `f` (blocking) every 200 ms for up to `limit`.
fn retry<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Spire {
    procs: Procs,
    agent_socket: PathBuf,
    dir: tempfile::TempDir,
}

fn start_spire(server_bin: &Path, agent_bin: &Path) -> Spire {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let port = free_port();
    let server_socket = d.join("server.sock");
    let agent_socket = d.join("agent.sock");
    std::fs::write(
        d.join("server.conf"),
        format!(
            r#"
server {{
    bind_address = "127.0.0.1"
    bind_port = "{port}"
    socket_path = "{server_socket}"
    trust_domain = "cluster.local"
    data_dir = "{data}"
    log_level = "DEBUG"
    ca_ttl = "1h"
    default_x509_svid_ttl = "{SVID_TTL_SECS}s"
}}
plugins {{
    DataStore "sql" {{
        plugin_data {{
            database_type = "sqlite3"
            connection_string = "{data}/datastore.sqlite3"
        }}
    }}
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
}}
"#,
            server_socket = server_socket.display(),
            data = d.join("server-data").display(),
        ),
    )
    .unwrap();
    let server = Command::new(server_bin)
        .args(["run", "-config"])
        .arg(d.join("server.conf"))
        .stdout(log_file(d, "server.log"))
        .stderr(log_file(d, "server.err"))
        .spawn()
        .unwrap();
    let mut procs = Procs(vec![server]);

    let healthy = retry(Duration::from_secs(30), || {
        Command::new(server_bin)
            .args(["healthcheck", "-socketPath"])
            .arg(&server_socket)
            .output()
            .ok()
            .filter(|o| o.status.success())
    });
    assert!(
        healthy.is_some(),
        "spire-server did not become healthy: {}",
        std::fs::read_to_string(d.join("server.err")).unwrap_or_default()
    );

    let out = run(Command::new(server_bin)
        .args(["token", "generate", "-socketPath"])
        .arg(&server_socket)
        .args([
            "-spiffeID",
            "spiffe://cluster.local/agent/test",
            "-ttl",
            "600",
        ]));
    let token = out
        .split_whitespace()
        .last()
        .expect("no join token in output")
        .to_string();
    run(Command::new(server_bin)
        .args(["entry", "create", "-socketPath"])
        .arg(&server_socket)
        .args([
            "-parentID",
            "spiffe://cluster.local/agent/test",
            "-spiffeID",
            WORKLOAD_ID,
            "-selector",
            &format!("unix:uid:{}", uid()),
            "-x509SVIDTTL",
            &SVID_TTL_SECS.to_string(),
        ]));

    std::fs::write(
        d.join("agent.conf"),
        format!(
            r#"
agent {{
    data_dir = "{data}"
    log_level = "DEBUG"
    server_address = "127.0.0.1"
    server_port = "{port}"
    socket_path = "{agent_socket}"
    trust_domain = "cluster.local"
    insecure_bootstrap = true
}}
plugins {{
    NodeAttestor "join_token" {{
        plugin_data {{}}
    }}
    KeyManager "memory" {{
        plugin_data {{}}
    }}
    WorkloadAttestor "unix" {{
        plugin_data {{}}
    }}
}}
"#,
            agent_socket = agent_socket.display(),
            data = d.join("agent-data").display(),
        ),
    )
    .unwrap();
    let agent = Command::new(agent_bin)
        .args(["run", "-config"])
        .arg(d.join("agent.conf"))
        .args(["-joinToken", &token])
        .stdout(log_file(d, "agent.log"))
        .stderr(log_file(d, "agent.err"))
        .spawn()
        .unwrap();
    procs.0.push(agent);
    Spire {
        procs,
        agent_socket,
        dir,
    }
}

/// One mTLS connection from a client to a server that both take their credentials from
/// `store` (as two workloads with this identity would), through mesh-tls's acceptor and
/// connector, with a byte echoed over it. Returns (identity the server saw, identity the
/// client saw, leaf the server presented).
async fn mtls_round_trip(store: &IdentityStore) -> (SpiffeId, SpiffeId, CertificateDer<'static>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = MeshAcceptor::new(store.clone(), ServerSettings::default());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, peer) = acceptor.accept(tcp).await.unwrap();
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        tls.write_all(&byte).await.unwrap();
        tls.flush().await.unwrap();
        peer.id().clone()
    });
    let want = SpiffeId::new(WORKLOAD_ID).unwrap();
    let connector = MeshConnector::new(
        store.clone(),
        ClientSettings {
            peers: PeerPolicy::identities([want]),
            ..Default::default()
        },
    );
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    let stream = connector.connect(&uri).await.unwrap();
    let client_saw = stream.peer().id().clone();
    let mut tls = stream.into_inner();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    tls.write_all(b"x").await.unwrap();
    // A TLS stream may hold written bytes until flushed (a socket just registered with
    // this runtime has no readiness yet, and the record waits in rustls).
    tls.flush().await.unwrap();
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.unwrap();
    assert_eq!(&byte, b"x");
    (server.await.unwrap(), client_saw, leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spire_workload_api_svid_serves_mtls_and_rotates() {
    let server_bin = require_peer!("MESH_SPIRE_SERVER_BIN");
    let agent_bin = require_peer!("MESH_SPIRE_AGENT_BIN");
    let spire = tokio::task::spawn_blocking(move || start_spire(&server_bin, &agent_bin))
        .await
        .unwrap();
    let logs = |spire: &Spire| {
        let read = |n: &str| std::fs::read_to_string(spire.dir.path().join(n)).unwrap_or_default();
        format!(
            "--- agent.err\n{}\n--- server.err\n{}",
            read("agent.err"),
            read("server.err")
        )
    };

    let source = SpireSource::new(format!("unix://{}", spire.agent_socket.display()));
    let (store, task) = IdentityStore::spawn(source);
    let Ok(first) = tokio::time::timeout(Duration::from_secs(60), store.ready()).await else {
        panic!(
            "no SVID from the Workload API; last error {:?}\n{}",
            store.stats().last_error,
            logs(&spire)
        );
    };
    let want = SpiffeId::new(WORKLOAD_ID).unwrap();
    assert_eq!(first.id, want);
    assert!(!first.roots.is_empty(), "no trust bundle");
    let lifetime = first.not_after.duration_since(first.not_before).unwrap();
    assert!(
        lifetime <= Duration::from_secs(u64::from(SVID_TTL_SECS) + 60),
        "SVID lifetime {lifetime:?}: TTL not applied"
    );

    // mTLS with the SPIRE-issued SVID, verified against SPIRE's bundle.
    let (seen_by_server, seen_by_client, leaf) = mtls_round_trip(&store).await;
    assert_eq!(seen_by_server, want);
    assert_eq!(seen_by_client, want);
    assert_eq!(leaf, first.chain[0]);

    // The agent rotates at half life; the source publishes the new SVID.
    let rotated = common::wait_for(Duration::from_secs(60), || {
        store
            .current()
            .is_some_and(|c| c.chain[0] != first.chain[0])
    })
    .await;
    assert!(
        rotated,
        "no rotated SVID within 60 s; stats {:?}\n{}",
        store.stats(),
        logs(&spire)
    );
    let second = store.current().unwrap();
    assert_eq!(second.id, want);
    assert!(second.not_after > first.not_after);
    let (seen_by_server, seen_by_client, leaf) = mtls_round_trip(&store).await;
    assert_eq!(seen_by_server, want);
    assert_eq!(seen_by_client, want);
    assert_eq!(
        leaf, second.chain[0],
        "new connections must use the new SVID"
    );

    // The agent goes away: the error is reported, the still-valid SVID stays in use.
    let mut spire = spire;
    let failures = store.stats().failures;
    let agent = &mut spire.procs.0[1];
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        common::wait_for(Duration::from_secs(10), || store.stats().failures
            > failures)
        .await,
        "agent loss not reported"
    );
    let kept = store
        .current()
        .expect("still-valid SVID dropped when the agent went away");
    assert!(kept.not_after >= second.not_after);
    task.abort();
}

#[tokio::test(start_paused = true)]
async fn unreachable_workload_api_is_reported_and_retried_with_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-agent.sock");
    let (store, task) =
        IdentityStore::spawn(SpireSource::new(format!("unix://{}", socket.display())));
    // Connection attempts at ~0, 1, 3, 7 s (backoff 1, 2, 4 s +-20%).
    tokio::time::sleep(Duration::from_millis(7_500)).await;
    let stats = store.stats();
    assert!(
        (3..=5).contains(&stats.failures),
        "{} attempts in 7.5 s",
        stats.failures
    );
    let err = stats.last_error.unwrap();
    assert!(err.contains("no-agent.sock"), "{err}");
    assert_eq!(store.status(), mesh_tls::IdentityStatus::Initializing);
    assert!(store.current().is_none());
    task.abort();
}
