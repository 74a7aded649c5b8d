//! The standard Kubernetes proxyless deployment, outside Kubernetes: Istio's agent
//! (`pilot-agent proxy sidecar` as the `grpc-agent` injection template runs it,
//! `MESH_PILOT_AGENT_BIN`) next to each workload, istiod (`MESH_ISTIOD_BIN`) behind them.
//! Each agent gets its workload certificate from istiod's CA with the pod's token, writes it
//! to `OUTPUT_CERTS` and renews it, writes the gRPC bootstrap (`GRPC_XDS_BOOTSTRAP`: its own
//! xDS socket, a `file_watcher` provider over those files) and proxies the workload's xDS
//! stream to istiod.
//!
//! The workloads are `grpc-agent-workload` processes (src/bin) whose mesh is built with
//! `Mesh::builder().bootstrap_from_env()?.build()?` only: a tonic health server behind
//! `Mesh::serve` and a client opening a channel per call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_core::TrustDomain;
use mesh_interop_tests::istiod::{Istiod, IstiodOptions, free_port};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_tls::dev_ca::DevCa;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

const FRONT: &str = "front.default.svc.cluster.local";
const BACKEND: &str = "backend.default.svc.cluster.local";
const BACKEND_IP: [u8; 4] = [127, 0, 0, 41];
const CLIENT_IP: [u8; 4] = [127, 0, 0, 42];
const WAIT: Duration = Duration::from_secs(30);
/// The agents' certificate lifetime (`SECRET_TTL`): they renew at half of it.
const CERT_TTL: Duration = Duration::from_secs(20);

/// `front` has no workloads: a VirtualService sends its calls to `backend`, whose policy
/// allows only the client's identity, and only `Health/Check` (`watch` widens it).
fn config(backend_port: u16, watch: bool) -> String {
    let paths = if watch {
        "[/grpc.health.v1.Health/Check, /grpc.health.v1.Health/Watch]"
    } else {
        "[/grpc.health.v1.Health/Check]"
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: default}}
spec:
  hosts: [{BACKEND}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: backend}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: backend, namespace: default}}
spec:
  address: 127.0.0.41
  ports: {{grpc: {backend_port}}}
  labels: {{app: backend}}
  serviceAccount: backend
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: front, namespace: default}}
spec:
  hosts: [{FRONT}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: front}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: front, namespace: default}}
spec:
  hosts: [{FRONT}]
  http:
  - route:
    - destination: {{host: {BACKEND}, port: {{number: 7070}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend, namespace: default}}
spec:
  host: {BACKEND}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: backend, namespace: default}}
spec:
  selector: {{matchLabels: {{app: backend}}}}
  action: ALLOW
  rules:
  - from:
    - source: {{principals: [cluster.local/ns/default/sa/client]}}
    to:
    - operation: {{paths: {paths}}}
"#
    )
}

/// A running pilot-agent: its directory (the pod's filesystem) and log.
struct Agent {
    dir: PathBuf,
    _child: Child,
}

impl Agent {
    /// Starts `bin` for the pod `app` (service account `app`) at `ip` with the environment
    /// the `grpc-agent` template gives it, and waits for its bootstrap and certificate.
    async fn start(
        bin: &Path,
        istiod: &Istiod,
        issuer: &TestIssuer,
        work: &Path,
        app: &str,
        ip: [u8; 4],
    ) -> Agent {
        let dir = work.join(app);
        let tokens = dir.join("var/run/secrets/tokens");
        let ca = dir.join("var/run/secrets/istio");
        // The template mounts emptyDirs there; the agent does not create them.
        let data = dir.join("var/lib/istio/data");
        for d in [&tokens, &ca, &data] {
            std::fs::create_dir_all(d).unwrap();
        }
        let token = issuer
            .token("default", app, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(tokens.join("istio-token"), token).unwrap();
        std::fs::write(ca.join("root-cert.pem"), pem_root(istiod)).unwrap();
        // Absolute paths: the bootstrap names the socket as `unix:///<configPath>/XDS`.
        let proxy_config = serde_json::json!({
            "discoveryAddress": format!("localhost:{}", istiod.addrs().secure_grpc.port()),
            "configPath": dir.join("etc/istio/proxy"),
            "statusPort": free_port().unwrap().port(),
        });
        let ip = std::net::Ipv4Addr::from(ip).to_string();
        let log = std::fs::File::create(dir.join("agent.log")).unwrap();
        let child = Command::new(bin)
            .args(["proxy", "sidecar", "--domain", "default.svc.cluster.local"])
            .current_dir(&dir)
            .env("PROXY_CONFIG", proxy_config.to_string())
            .env("ISTIO_META_GENERATOR", "grpc")
            .env("OUTPUT_CERTS", dir.join("var/lib/istio/data"))
            .env(
                "GRPC_XDS_BOOTSTRAP",
                dir.join("etc/istio/proxy/grpc-bootstrap.json"),
            )
            .env("DISABLE_ENVOY", "true")
            .env("ISTIO_META_DNS_CAPTURE", "false")
            .env("POD_NAME", format!("{app}-0"))
            .env("POD_NAMESPACE", "default")
            .env("INSTANCE_IP", &ip)
            .env("SERVICE_ACCOUNT", app)
            .env("ISTIO_META_CLUSTER_ID", "Kubernetes")
            .env("TRUST_DOMAIN", "cluster.local")
            .env("ISTIO_METAJSON_LABELS", format!(r#"{{"app":"{app}"}}"#))
            .env("SECRET_TTL", format!("{}s", CERT_TTL.as_secs()))
            .env("KUBECONFIG", "/nonexistent")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let agent = Agent { dir, _child: child };
        let files = [
            agent.bootstrap(),
            agent.dir.join("var/lib/istio/data/cert-chain.pem"),
        ];
        let deadline = Instant::now() + WAIT;
        while !files.iter().all(|f| f.exists()) {
            assert!(
                Instant::now() < deadline,
                "agent {app} wrote no bootstrap and certificate:\n{}",
                agent.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        agent
    }

    fn bootstrap(&self) -> PathBuf {
        self.dir.join("etc/istio/proxy/grpc-bootstrap.json")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// A `grpc-agent-workload` process with only `GRPC_XDS_BOOTSTRAP` pointing at the
    /// agent's bootstrap, as the template sets up the application container.
    fn workload(&self, args: &[&str]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_grpc-agent-workload"))
            .args(args)
            .env("GRPC_XDS_BOOTSTRAP", self.bootstrap())
            .env_remove("GRPC_XDS_BOOTSTRAP_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }
}

/// The logs' last lines, for failure messages.
fn context(agent: &Agent, istiod: &Istiod) -> String {
    format!(
        "client agent:\n{}\nistiod:\n{}",
        agent.log_tail(20),
        istiod.log_tail(20)
    )
}

fn pem_root(istiod: &Istiod) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(istiod.ca_root());
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// The client workload: one command in, one line out.
struct Client {
    _child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Client {
    async fn ask(&mut self, command: &str) -> String {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("no answer to {command:?}"))
            .unwrap()
            .unwrap_or_else(|| panic!("client exited on {command:?}"))
    }

    /// Asks `command` until it answers `want` (config still on its way), for up to
    /// [`WAIT`]; the last answer when it never does.
    async fn ask_until(&mut self, command: &str, want: &str) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            let got = self.ask(command).await;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("{command}: {got}, want {want}"));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// `(generation, seconds left)` of the workload's loaded certificate.
    async fn identity(&mut self) -> (u64, u64) {
        let line = self.ask("identity").await;
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.get(2),
            Some(&"spiffe://cluster.local/ns/default/sa/client"),
            "{line}"
        );
        (words[1].parse().unwrap(), words[3].parse().unwrap())
    }
}

/// Under pilot-agent and istiod, a workload built with `bootstrap_from_env()` alone calls
/// another (also under its agent) through a VirtualService, over mTLS (STRICT, a policy
/// naming the caller's identity), with a new channel per call; it keeps working across the
/// agents' certificate renewals (20 s certificates, used past their expiry) and an istiod
/// restart after which a policy change still arrives; and its channels never opened a
/// second xDS stream through the agent (which closes the previous one when they do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_from_env_workloads_under_pilot_agent() {
    let Some(istiod_bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let Some(agent_bin) = mesh_test_support::peer("MESH_PILOT_AGENT_BIN") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let backend_port = free_port().unwrap().port();
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config_file = config_dir.join("grpc.yaml");
    std::fs::write(&config_file, config(backend_port, false)).unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let options = IstiodOptions {
        config_dir: Some(config_dir),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let mut istiod = Istiod::start(&istiod_bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let backend_agent = Agent::start(
        &agent_bin,
        &istiod,
        &issuer,
        work.path(),
        "backend",
        BACKEND_IP,
    )
    .await;
    let mut server = backend_agent.workload(&["serve", &format!("127.0.0.41:{backend_port}")]);
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let serving = tokio::time::timeout(WAIT, lines.next_line()).await;
    assert!(
        matches!(&serving, Ok(Ok(Some(l))) if l == "SERVING"),
        "server: {serving:?}\n{}",
        backend_agent.log_tail(30)
    );

    let client_agent = Agent::start(
        &agent_bin,
        &istiod,
        &issuer,
        work.path(),
        "client",
        CLIENT_IP,
    )
    .await;
    let mut child = client_agent.workload(&["client"]);
    let mut client = Client {
        stdin: child.stdin.take().unwrap(),
        stdout: BufReader::new(child.stdout.take().unwrap()).lines(),
        _child: child,
    };
    let front = format!("xds:///{FRONT}:7070");

    // Routed to backend over mTLS: the policy allows the client's SPIFFE ID, Check only.
    client
        .ask_until(&format!("check {front}"), "check OK")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", context(&client_agent, &istiod)));
    let watch = client.ask(&format!("watch {front}")).await;
    assert!(watch.starts_with("watch PermissionDenied"), "{watch}");

    // A channel per call, many in a row: one xDS stream through the agent throughout.
    for i in 0..20 {
        assert_eq!(
            client.ask(&format!("check {front}")).await,
            "check OK",
            "call {i}"
        );
    }

    // Certificate renewal: past the first certificates' expiry, calls still pass (both
    // sides present renewed certificates, or the handshake would fail).
    let (generation, left) = client.identity().await;
    tokio::time::sleep(Duration::from_secs(left + 2)).await;
    let (renewed, _) = client.identity().await;
    assert!(
        renewed > generation,
        "the workload loaded no renewed certificate ({generation} -> {renewed})"
    );
    client
        .ask_until(&format!("check {front}"), "check OK")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", context(&client_agent, &istiod)));

    // istiod restarts; config changes made afterwards still reach the workloads through the
    // agents: the widened policy lets Watch through.
    istiod.restart().await.unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&config_file, config(backend_port, true)).unwrap();
    client
        .ask_until(&format!("watch {front}"), "watch OK")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", context(&client_agent, &istiod)));
    assert_eq!(client.ask(&format!("check {front}")).await, "check OK");

    for agent in [&client_agent, &backend_agent] {
        let log = agent.log();
        assert!(
            !log.contains("registered overlapping stream"),
            "a second xDS stream displaced the first:\n{}",
            agent.log_tail(40)
        );
    }
    // One downstream stream before the restart, one (reconnected) after it.
    let streams = client_agent
        .log()
        .matches("connected to upstream XDS server")
        .count();
    assert!(
        streams <= 2,
        "{streams} xDS streams through the client's agent:\n{}",
        client_agent.log_tail(40)
    );
    eprintln!(
        "client agent xDS streams: {streams}; certificate generations {generation} -> {renewed}"
    );
}
