//! gRPC between our tonic workloads and proxyless grpc-go (`MESH_GRPC_GO_XDS_BIN`, built
//! from interop/grpc-go-xds by scripts/peers/grpc-go-xds.sh) under a real istiod
//! (`MESH_ISTIOD_BIN`): both sides get their config from istiod's proxyless (`grpc`)
//! generator and their certificates from istiod's CA, with DestinationRule ISTIO_MUTUAL,
//! PeerAuthentication STRICT and an AuthorizationPolicy.
//!
//! The grpc-go side is a separate process bootstrapped as Istio's agent does it
//! (`GRPC_XDS_BOOTSTRAP`: istiod's TLS xDS port, `file_watcher` certificate provider over
//! `cert-chain.pem`/`key.pem`/`root-cert.pem` written here from istiod's CA).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh_core::TrustDomain;
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions, free_port};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_tls::ca::IstioCaClient;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::{CertProvider, Credentials, IdentityStore};
use rustls::pki_types::PrivateKeyDer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const GO_SERVER: &str = "gogrpc.default.svc.cluster.local";
const TONIC_SERVER: &str = "tonicgrpc.default.svc.cluster.local";
const WAIT: Duration = Duration::from_secs(30);

/// Both services (port 7070, GRPC), their workloads, mTLS and the tonic server's policy:
/// Health/Check allowed, everything else (Health/Watch) denied.
fn config(go_port: u16, tonic_port: u16) -> String {
    let service = |name: &str, host: &str, ip: &str, port: u16| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 7070, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: {ip}
  ports: {{grpc: {port}}}
  labels: {{app: {name}}}
  serviceAccount: {name}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
"#
        )
    };
    format!(
        r#"{}{}apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: default}}
spec: {{mtls: {{mode: STRICT}}}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: check-only, namespace: default}}
spec:
  selector: {{matchLabels: {{app: tonicgrpc}}}}
  action: ALLOW
  rules:
  - to:
    - operation: {{paths: [/grpc.health.v1.Health/Check]}}
"#,
        service("gogrpc", GO_SERVER, "127.0.0.31", go_port),
        service("tonicgrpc", TONIC_SERVER, "127.0.0.32", tonic_port),
    )
}

struct Setup {
    istiod: Istiod,
    issuer: TestIssuer,
    work: tempfile::TempDir,
    go_bin: PathBuf,
    go_port: u16,
    tonic_port: u16,
}

/// istiod on [`config`]; `None` without the peers.
async fn setup() -> Option<Setup> {
    let go_bin = mesh_test_support::peer("MESH_GRPC_GO_XDS_BIN")?;
    let bin = mesh_test_support::peer("MESH_ISTIOD_BIN")?;
    let work = tempfile::tempdir().unwrap();
    let (go_port, tonic_port) = (free_port().unwrap().port(), free_port().unwrap().port());
    let config_dir = work.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("grpc.yaml"), config(go_port, tonic_port)).unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let options = IstiodOptions {
        config_dir: Some(config_dir),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Some(Setup {
        istiod,
        issuer,
        work,
        go_bin,
        go_port,
        tonic_port,
    })
}

impl Setup {
    fn node(&self, app: &str, ip: [u8; 4]) -> IstioNode {
        IstioNode {
            ip: IpAddr::from(ip),
            pod_name: format!("{app}-0"),
            namespace: "default".into(),
            service_account: app.into(),
            labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
            istio_version: "1.31.0".into(),
            ..Default::default()
        }
    }

    /// A certificate for `node` from istiod's CA (authenticated with its token).
    async fn certificate(&self, node: &IstioNode) -> Credentials {
        let token = self
            .work
            .path()
            .join(format!("{}.jwt", node.service_account));
        let jwt = self
            .issuer
            .token("default", &node.service_account, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(&token, jwt).unwrap();
        IstioCaClient::new(
            self.istiod.secure_url(),
            node.spiffe_id().unwrap(),
            vec![self.istiod.ca_root()],
        )
        .with_server_name(ISTIOD_SERVER_NAME)
        .with_token_file(&token)
        .fetch()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.istiod.log_tail(30)))
    }

    /// istiod's TLS xDS port by a name on its certificate.
    fn xds_address(&self) -> String {
        format!("localhost:{}", self.istiod.addrs().secure_grpc.port())
    }

    /// A mesh for `node` configured by istiod (its default proxyless bootstrap).
    async fn mesh(&self, node: IstioNode) -> mesh::Mesh {
        let creds = self.certificate(&node).await;
        mesh::Mesh::builder()
            .identity_store(IdentityStore::from_credentials(creds).unwrap())
            .bootstrap(Bootstrap::istio_proxyless(node, &self.xds_address()))
            .build()
            .unwrap()
    }

    /// The grpc-go peer as `node`: certificate files from istiod's CA in its cert dir, and
    /// the bootstrap Istio's agent writes (TLS to istiod with that certificate,
    /// `file_watcher` provider `default`).
    async fn go_command(&self, mut node: IstioNode, args: &[&str]) -> Command {
        let creds = self.certificate(&node).await;
        let dir = self.work.path().join(&node.pod_name);
        write_cert_dir(&dir, &creds);
        node.cert_dir = Some(dir.clone());
        let bootstrap = Bootstrap::istio_proxyless(node, &self.xds_address());
        let path = dir.join("bootstrap.json");
        std::fs::write(&path, bootstrap.to_json()).unwrap();
        let mut cmd = Command::new(&self.go_bin);
        cmd.args(args)
            .env("GRPC_XDS_BOOTSTRAP", path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// `cert-chain.pem`, `key.pem` and `root-cert.pem` as Istio's agent writes them.
fn write_cert_dir(dir: &Path, creds: &Credentials) {
    std::fs::create_dir_all(dir).unwrap();
    let chain: String = creds.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let roots: String = creds.roots.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let (label, der) = match &creds.key {
        PrivateKeyDer::Pkcs8(k) => ("PRIVATE KEY", k.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(k) => ("EC PRIVATE KEY", k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(k) => ("RSA PRIVATE KEY", k.secret_pkcs1_der()),
        other => panic!("unexpected key type {other:?}"),
    };
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    std::fs::write(dir.join("key.pem"), pem(label, der)).unwrap();
    std::fs::write(dir.join("root-cert.pem"), roots).unwrap();
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Starts the grpc-go xDS server and waits until it reports SERVING (its xDS listener
/// `xds.istio.io/grpc/lds/inbound/127.0.0.31:<port>` has arrived from istiod).
async fn start_go_server(s: &Setup) -> Child {
    let addr = SocketAddr::from(([127, 0, 0, 31], s.go_port)).to_string();
    let mut child = s
        .go_command(s.node("gogrpc", [127, 0, 0, 31]), &["server", &addr])
        .await
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let serving = tokio::time::timeout(WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line == "SERVING" {
                return true;
            }
            eprintln!("grpc-go server: {line}");
        }
        false
    })
    .await;
    assert_eq!(
        serving,
        Ok(true),
        "grpc-go server not serving\n{}",
        s.istiod.log_tail(30)
    );
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("grpc-go server: {line}");
        }
    });
    child
}

/// Hand-written `grpc.testing` messages (test.proto, messages.proto) for
/// `TestService/StreamingOutputCall`, called through tonic's codegen-free client.
mod testing {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseParameters {
        #[prost(int32, tag = "1")]
        pub size: i32,
        #[prost(int32, tag = "2")]
        pub interval_us: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamingOutputCallRequest {
        #[prost(message, repeated, tag = "2")]
        pub response_parameters: Vec<ResponseParameters>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(bytes = "vec", tag = "2")]
        pub body: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamingOutputCallResponse {
        #[prost(message, optional, tag = "1")]
        pub payload: Option<Payload>,
    }
}

/// Our tonic client (`mesh.channel`, configured by istiod) calls the grpc-go xDS server:
/// unary Health/Check calls succeed, and a server stream whose two messages come 8 s apart
/// (16 s in all, past Envoy's 15 s HTTP route default) completes. The server is STRICT:
/// a plaintext tonic client on the same address gets no answer, so the calls were mTLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_calls_grpc_go_xds_server_over_mtls() {
    let Some(s) = setup().await else { return };
    let _server = start_go_server(&s).await;
    let mesh = s.mesh(s.node("tonicclient", [127, 0, 0, 33])).await;
    let channel = mesh.channel(&format!("xds:///{GO_SERVER}:7070"));

    let mut health = HealthClient::new(channel.clone());
    for i in 0..5 {
        let resp = health
            .check(HealthCheckRequest::default())
            .await
            .unwrap_or_else(|e| panic!("check {i}: {e}\n{}", s.istiod.log_tail(30)));
        assert_eq!(resp.into_inner().status, 1, "SERVING");
    }

    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let req = testing::StreamingOutputCallRequest {
        response_parameters: vec![
            testing::ResponseParameters {
                size: 10,
                interval_us: 8_000_000,
            };
            2
        ],
    };
    let started = Instant::now();
    let mut stream = grpc
        .server_streaming(
            tonic::Request::new(req),
            http::uri::PathAndQuery::from_static("/grpc.testing.TestService/StreamingOutputCall"),
            tonic_prost::ProstCodec::<
                testing::StreamingOutputCallRequest,
                testing::StreamingOutputCallResponse,
            >::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = 0;
    while let Some(msg) = stream.message().await.unwrap() {
        assert_eq!(msg.payload.unwrap_or_default().body.len(), 10);
        got += 1;
    }
    let took = started.elapsed();
    assert_eq!(got, 2);
    assert!(took > Duration::from_secs(15), "{took:?}");

    let plain = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.31:{}", s.go_port))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    // The server drops the connection (hyper: broken pipe): no gRPC status of its own.
    let err = HealthClient::new(plain)
        .check(HealthCheckRequest::default())
        .await
        .expect_err("STRICT: plaintext refused");
    eprintln!("plaintext: {err}; stream took {took:?}");
}

/// The grpc-go xDS client calls our tonic server behind `Mesh::inbound_server`
/// (configured by istiod, STRICT): Health/Check is allowed by the AuthorizationPolicy and
/// answers OK, Health/Watch is not and grpc-go sees PERMISSION_DENIED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_go_xds_client_calls_tonic_server_with_authz() {
    let Some(s) = setup().await else { return };
    let mesh = s.mesh(s.node("tonicgrpc", [127, 0, 0, 32])).await;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let inbound = mesh
        .inbound_server(([127, 0, 0, 32], s.tonic_port).into())
        .unwrap();
    let mut status = inbound.status();
    tokio::spawn(inbound.serve(tonic::service::Routes::new(health)));
    tokio::time::timeout(WAIT, status.wait_for(|s| s.is_serving()))
        .await
        .unwrap_or_else(|_| panic!("not serving\n{}", s.istiod.log_tail(30)))
        .unwrap();

    let target = format!("xds:///{TONIC_SERVER}:7070");
    let out = s
        .go_command(
            s.node("goclient", [127, 0, 0, 34]),
            &["client", &target, "3"],
        )
        .await
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        ["check OK", "check OK", "check OK", "watch PermissionDenied"],
        "stderr: {stderr}\n{}",
        s.istiod.log_tail(30)
    );
}
