//! Tracing by default, configured only by OpenTelemetry's environment variables: two
//! workloads in two processes (this test binary, run again as `frontend` and `backend`),
//! each a plain `Mesh` (embedded control plane's config, dev-CA identity) serving with
//! `Mesh::serve` and calling with `Mesh::client`, no tracing code at all. The real
//! OpenTelemetry Collector (`MESH_OTELCOL_BIN`) receives one trace: the frontend's server
//! and client spans and the backend's server span, linked parent to child, each with its
//! process's `service.name` and Istio's span attributes. A caller's "not sampled" decision
//! is honoured (`OTEL_TRACES_SAMPLER=parentbased_always_on`): nothing is exported for it.

#![cfg(feature = "otlp")]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::telemetry::metrics::WorkloadInfo;
use mesh::telemetry::trace::TraceContext;
use mesh::xds::bootstrap::IstioNode;
use mesh::{Mesh, tls::dev_ca::DevCa};
use mesh_control::istio::WatchOptions;
use mesh_control::local::{LocalOptions, LocalSource};
use mesh_test_support::otelcol::{CLIENT, Collector, SERVER};
use tower::{Service, ServiceExt};

const ROLE: &str = "MESH_TRACE_TEST_ROLE";
const DIR: &str = "MESH_TRACE_TEST_DIR";
const FRONT_PORT: &str = "MESH_TRACE_TEST_FRONTEND_PORT";
const BACK_PORT: &str = "MESH_TRACE_TEST_BACKEND_PORT";
const TEST: &str = "two_services_one_trace_at_the_collector";

use mesh_test_support::free_port;

fn config(front: u16, back: u16) -> String {
    let svc = |name: &str, port: u16| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: {name}}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {name}, version: v1}}
  serviceAccount: {name}
---
"#
        )
    };
    svc("frontend", front) + &svc("backend", back)
}

/// A workload's mesh, as an application builds it: identity, config, its labels.
async fn workload_mesh(dir: &Path, name: &str) -> Mesh {
    let ca = DevCa::load(
        &dir.join("ca"),
        mesh::core::TrustDomain::new("cluster.local").unwrap(),
    )
    .unwrap();
    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: format!("{name}-v1"),
        namespace: "default".into(),
        service_account: name.into(),
        labels: BTreeMap::from([
            ("app".to_owned(), name.to_owned()),
            ("version".to_owned(), "v1".to_owned()),
        ]),
        ..Default::default()
    };
    let id = node.spiffe_id().unwrap();
    let source = LocalSource::watch_dir(
        &dir.join("config"),
        WatchOptions {
            interval: Duration::from_millis(50),
        },
        node.node_proto(),
        LocalOptions::default(),
    )
    .await
    .unwrap();
    Mesh::builder()
        .dev_ca(&ca, &id)
        .unwrap()
        .config_source(source)
        .workload(WorkloadInfo {
            workload: format!("{name}-v1"),
            namespace: "default".into(),
            app: name.into(),
            version: "v1".into(),
            canonical_service: name.into(),
            canonical_revision: "v1".into(),
            ..Default::default()
        })
        .build()
        .unwrap()
}

async fn get_via(
    mesh: &Mesh,
    url: &str,
    headers: &[(&str, &str)],
    parent: Option<TraceContext>,
) -> Result<(u16, String), String> {
    let mut req = http::Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Empty::<Bytes>::new()).unwrap();
    if let Some(p) = parent {
        req.extensions_mut().insert(p);
    }
    let mut client = mesh.client();
    let resp = ServiceExt::<http::Request<Empty<Bytes>>>::ready(&mut client)
        .await
        .map_err(|e| e.to_string())?
        .call(req)
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The child processes: one workload each, until killed.
async fn child(role: &str) {
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let port = |k: &str| std::env::var(k).unwrap().parse::<u16>().unwrap();
    let (front, back) = (port(FRONT_PORT), port(BACK_PORT));
    let mesh = workload_mesh(&dir, role).await;
    match role {
        "backend" => {
            let app = axum::Router::new().route("/hello", get(|| async { "hello from backend" }));
            mesh.serve(SocketAddr::from(([127, 0, 0, 1], back)), app)
                .await
                .unwrap();
        }
        "frontend" => {
            let m = mesh.clone();
            let app = axum::Router::new().route(
                "/",
                get(move || {
                    let m = m.clone();
                    async move {
                        let url = format!("http://backend.default.svc.cluster.local:{back}/hello");
                        match get_via(&m, &url, &[], None).await {
                            Ok((200, body)) => (http::StatusCode::OK, body),
                            other => (http::StatusCode::BAD_GATEWAY, format!("{other:?}")),
                        }
                    }
                }),
            );
            mesh.serve(SocketAddr::from(([127, 0, 0, 1], front)), app)
                .await
                .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_services_one_trace_at_the_collector() {
    if let Ok(role) = std::env::var(ROLE) {
        return child(&role).await;
    }
    let bin = mesh_test_support::require_peer!("MESH_OTELCOL_BIN");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&bin, dir.path());
    let endpoint = collector.endpoint.clone();
    let ca = support::dev_ca();
    ca.save(&dir.path().join("ca")).unwrap();
    let (front, back) = (free_port(), free_port());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/services.yaml"), config(front, back)).unwrap();

    // Each workload: only the environment tells it where to export and as whom.
    let spawn = |role: &str| {
        Proc(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
                .env(ROLE, role)
                .env(DIR, dir.path())
                .env(FRONT_PORT, front.to_string())
                .env(BACK_PORT, back.to_string())
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                .env("OTEL_SERVICE_NAME", role)
                .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
                .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn a workload"),
        )
    };
    let _backend = spawn("backend");
    let _frontend = spawn("frontend");

    // The caller: this process, a third workload that exports nothing (no OTEL_ variables).
    let caller = workload_mesh(dir.path(), "caller").await;
    let url = format!("http://frontend.default.svc.cluster.local:{front}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Warm-up calls (not sampled, so they export nothing) until both workloads serve.
        let unsampled = TraceContext {
            sampled: false,
            ..TraceContext::new_root()
        };
        match get_via(&caller, &url, &[], Some(unsampled)).await {
            Ok((200, body)) => {
                assert_eq!(body, "hello from backend");
                break;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the workloads never served: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let unsampled = TraceContext {
        sampled: false,
        ..TraceContext::new_root()
    };
    let sampled = TraceContext::new_root();
    let (trace, quiet) = (sampled.trace_id_hex(), unsampled.trace_id_hex());
    let request_id = "9f2c3a8e-trace-test";
    assert_eq!(
        get_via(
            &caller,
            &url,
            &[("x-request-id", request_id)],
            Some(unsampled)
        )
        .await,
        Ok((200, "hello from backend".to_string()))
    );
    assert_eq!(
        get_via(
            &caller,
            &url,
            &[("x-request-id", request_id)],
            Some(sampled)
        )
        .await,
        Ok((200, "hello from backend".to_string()))
    );

    let spans = collector.wait_for(&trace, 3, Duration::from_secs(20));
    assert_eq!(spans.len(), 3, "spans of trace {trace}: {spans:#?}");
    let one = |service: &str, kind: i64| {
        spans
            .iter()
            .find(|s| s.service == service && s.kind == kind)
            .unwrap_or_else(|| panic!("no {service} span of kind {kind}: {spans:#?}"))
            .clone()
    };
    let (f_server, f_client, b_server) = (
        one("frontend", SERVER),
        one("frontend", CLIENT),
        one("backend", SERVER),
    );
    // Linked: caller -> frontend server -> frontend client -> backend server.
    assert_eq!(b_server.parent, f_client.id);
    assert_eq!(f_client.parent, f_server.id);
    assert!(
        !f_server.parent.is_empty(),
        "the frontend continues the caller's trace"
    );
    assert!(
        spans.iter().all(|s| s.id != f_server.parent),
        "the caller exports nothing"
    );
    // Istio's attributes.
    for (s, svc) in [
        (&f_server, "frontend"),
        (&f_client, "frontend"),
        (&b_server, "backend"),
    ] {
        let a = &s.attrs;
        assert_eq!(
            a.get("istio.canonical_service").map(String::as_str),
            Some(svc),
            "{s:#?}"
        );
        assert_eq!(
            a.get("istio.canonical_revision").map(String::as_str),
            Some("v1")
        );
        assert_eq!(
            a.get("istio.namespace").map(String::as_str),
            Some("default")
        );
        assert!(
            a.contains_key("istio.mesh_id") && a.contains_key("istio.cluster_id"),
            "{s:#?}"
        );
        assert_eq!(a.get("component").map(String::as_str), Some("proxy"));
        assert_eq!(a.get("http.method").map(String::as_str), Some("GET"));
        assert_eq!(
            a.get("http.status_code").map(String::as_str),
            Some("200"),
            "{s:#?}"
        );
        assert_eq!(a.get("response_flags").map(String::as_str), Some("-"));
    }
    let backend_host = format!("backend.default.svc.cluster.local:{back}");
    assert_eq!(
        f_client.attrs.get("upstream_cluster"),
        Some(&format!(
            "outbound|{back}||backend.default.svc.cluster.local"
        ))
    );
    assert_eq!(
        f_client.attrs.get("http.url"),
        Some(&format!("http://{backend_host}/hello"))
    );
    assert_eq!(f_client.name, format!("{backend_host}/*"));
    assert_eq!(
        f_server.attrs.get("guid:x-request-id").map(String::as_str),
        Some(request_id)
    );
    assert_eq!(
        f_server.attrs.get("upstream_cluster"),
        Some(&format!("inbound|{front}||"))
    );
    // The unsampled call: parent-based sampling exported nothing for it.
    assert!(
        collector.spans().iter().all(|s| s.trace != quiet),
        "a trace the caller did not sample was exported"
    );
}
