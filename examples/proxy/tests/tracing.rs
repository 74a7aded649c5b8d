//! The proxy traces like the in-process mesh, configured only by OpenTelemetry's
//! variables or by flags: two `mesh-proxy` processes (the binary, as users run it) and
//! the real OpenTelemetry Collector (`MESH_OTELCOL_BIN`),
//!
//! ```text
//! test (traceparent) -> web's outbound -> mTLS -> api's inbound -> app (echoes its traceparent)
//! ```
//!
//! `web` exports by `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_SERVICE_NAME`; `api` by
//! `--otlp-endpoint` and `--service-name`, which win over the variables it is also given
//! (a dead endpoint, another name). The collector receives web's client span, child of the
//! caller's, and api's server span, child of web's, each with Istio's attributes under
//! its `service.name`; the app receives api's span as its parent; an unsampled caller's
//! trace is not exported (`OTEL_TRACES_SAMPLER=parentbased_always_on`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use mesh_telemetry::trace::TraceContext;
use mesh_test_support::otelcol::{CLIENT, Collector, SERVER};
use mesh_tls::dev_ca::DevCa;
use tokio::process::{Child, Command};

use mesh_test_support::free_port;

/// `web` and `api`, one workload each on loopback; api's at its proxy's inbound port, the
/// service port too (so Envoy's `inbound|<port>||` is the same either way).
fn write_config(dir: &Path, api_in: u16) {
    let entry = |name: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1
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
metadata: {{name: {name}-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: {name}, version: v1}}
  serviceAccount: {name}
---
"
        )
    };
    let yaml = entry("web", free_port()) + &entry("api", api_in);
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
}

/// The app behind api's proxy: answers with the `traceparent` it received.
async fn app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    let seen = req
                        .headers()
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        seen,
                    ))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

/// `mesh-proxy` for workload `name` with `flags` and `env` (and no other `OTEL_*`).
fn proxy(name: &str, dir: &Path, flags: &[String], env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
    cmd.args(["--admin", "off", "--mesh-config"])
        .arg(dir.join("config"))
        .args(["--name", &format!("{name}-v1"), "--namespace", "default"])
        .args(["--service-account", name, "--ip", "127.0.0.1"])
        .args(["--label", &format!("app={name}"), "--label", "version=v1"])
        .arg("--identity")
        .arg(format!("ca:{}", dir.join("ca").display()))
        .args(flags);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied())
        .env("OTEL_TRACES_SAMPLER", "parentbased_always_on")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn mesh-proxy")
}

/// GET /hello of `api` (its authority) through web's outbound with `traceparent`: status and body.
async fn call(outbound: SocketAddr, api: &str, traceparent: &str) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(outbound)
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/hello")
        .header("host", api)
        .header("traceparent", traceparent)
        .header("x-request-id", "trace-test-1")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_pair_exports_one_linked_trace_configured_by_env_or_flags() {
    let bin = mesh_test_support::require_peer!("MESH_OTELCOL_BIN");
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start(&bin, dir.path());
    DevCa::new(mesh_core::TrustDomain::new("cluster.local").unwrap())
        .unwrap()
        .save(&dir.path().join("ca"))
        .unwrap();
    let (api_in, web_out) = (free_port(), free_port());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    write_config(&dir.path().join("config"), api_in);
    let app = app().await;

    let _web = proxy(
        "web",
        dir.path(),
        &[
            "--inbound".into(),
            "off".into(),
            "--outbound".into(),
            format!("127.0.0.1:{web_out}"),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.endpoint),
            ("OTEL_SERVICE_NAME", "web-from-env"),
        ],
    );
    let _api = proxy(
        "api",
        dir.path(),
        &[
            "--inbound".into(),
            format!("127.0.0.1:{api_in}"),
            "--app".into(),
            app.to_string(),
            "--outbound".into(),
            "off".into(),
            "--otlp-endpoint".into(),
            collector.endpoint.clone(),
            "--service-name".into(),
            "api-from-flag".into(),
        ],
        // Both lose to the flags: spans sent here would never arrive.
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_SERVICE_NAME", "api-from-env"),
        ],
    );
    let web_out = SocketAddr::from(([127, 0, 0, 1], web_out));
    let api = format!("api.default.svc.cluster.local:{api_in}");

    // Unsampled calls (exported by nobody) until both proxies serve.
    let unsampled = TraceContext {
        sampled: false,
        ..TraceContext::new_root()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call(web_out, &api, &unsampled.traceparent()).await {
            Ok((200, _)) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the proxies never served: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let caller = TraceContext::new_root();
    let (status, app_saw) = call(web_out, &api, &caller.traceparent()).await.unwrap();
    assert_eq!(status, 200, "{app_saw}");

    let trace = caller.trace_id_hex();
    let spans = tokio::task::spawn_blocking({
        let trace = trace.clone();
        move || {
            (
                collector.wait_for(&trace, 2, Duration::from_secs(20)),
                collector,
            )
        }
    })
    .await
    .unwrap();
    let (spans, collector) = spans;
    assert_eq!(spans.len(), 2, "spans of trace {trace}: {spans:#?}");
    let one = |kind: i64| {
        spans
            .iter()
            .find(|s| s.kind == kind)
            .unwrap_or_else(|| panic!("no span of kind {kind}: {spans:#?}"))
            .clone()
    };
    let (client, server) = (one(CLIENT), one(SERVER));
    // Named by the variable (web) and by the flag over the variable (api).
    assert_eq!(client.service, "web-from-env");
    assert_eq!(server.service, "api-from-flag");
    // Linked: caller -> web's client span -> api's server span -> the app.
    assert_eq!(client.parent, caller.span_id_hex());
    assert_eq!(server.parent, client.id);
    assert_eq!(app_saw, format!("00-{trace}-{}-01", server.id));
    // Istio's span attributes.
    for (s, svc) in [(&client, "web"), (&server, "api")] {
        let a = |k: &str| s.attrs.get(k).map(String::as_str);
        assert_eq!(a("istio.canonical_service"), Some(svc), "{s:#?}");
        assert_eq!(a("istio.canonical_revision"), Some("v1"), "{s:#?}");
        assert_eq!(a("istio.namespace"), Some("default"), "{s:#?}");
        assert!(s.attrs.contains_key("istio.mesh_id"), "{s:#?}");
        assert_eq!(a("component"), Some("proxy"));
        assert_eq!(a("http.method"), Some("GET"));
        assert_eq!(a("http.status_code"), Some("200"), "{s:#?}");
        assert_eq!(a("guid:x-request-id"), Some("trace-test-1"), "{s:#?}");
    }
    assert_eq!(
        client.attrs.get("upstream_cluster").map(String::as_str),
        Some(format!("outbound|{api_in}||api.default.svc.cluster.local").as_str())
    );
    assert_eq!(client.name, format!("{api}/*"));
    assert_eq!(
        server.attrs.get("upstream_cluster"),
        Some(&format!("inbound|{api_in}||"))
    );
    // The unsampled caller's trace: exported by neither.
    let quiet = unsampled.trace_id_hex();
    assert!(
        collector.spans().iter().all(|s| s.trace != quiet),
        "a trace the caller did not sample was exported"
    );
}

#[test]
fn refused_tracing_settings_stop_the_proxy_naming_them() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        let out = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run mesh-proxy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let node = [
        "--mesh-config",
        "/nonexistent",
        "--name",
        "web-v1",
        "--namespace",
        "default",
        "--service-account",
        "web",
    ];
    let flags = [
        &node[..],
        &["--otlp-endpoint", "http://127.0.0.1:4317"],
        &["--trace-sampler", "jaeger_remote"],
    ]
    .concat();
    let (code, text) = run(&flags, &[]);
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("--trace-sampler \"jaeger_remote\""), "{text}");
    let (code, text) = run(
        &node,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ],
    );
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("OTEL_TRACES_SAMPLER_ARG=\"2\""), "{text}");
    let (code, text) = run(&["--help"], &[]);
    assert_eq!(code, Some(0));
    for flag in [
        "--otlp-endpoint",
        "--service-name",
        "--trace-sampler",
        "--trace-sampler-arg",
    ] {
        assert!(text.contains(flag), "{flag}: {text}");
    }
}
