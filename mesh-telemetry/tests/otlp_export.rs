//! OTLP export against a real OpenTelemetry Collector (interop/otelcol, installed by
//! scripts/peers/otelcol.sh): a trace started by a client crosses two services over the
//! in-process mesh (client -> A -> B, MeshClient and mTLS servers) and arrives at the
//! collector with one trace id and correct parent links, with the ids the services
//! propagated.

#![cfg(feature = "otlp")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_telemetry::otlp::{OtlpConfig, OtlpExporter};
use mesh_telemetry::trace::{Propagation, TraceContext, TraceLayer, current};
use serde_json::Value;
use support::{Service, TestMesh, free_port, serve};
use tower::{Layer, ServiceExt};
use tracing_subscriber::prelude::*;

struct Collector {
    child: Child,
    out: PathBuf,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_collector(bin: &Path) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("traces.jsonl");
    let port = free_port();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{port}
exporters:
  file:
    path: {}
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
",
            out.display()
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the collector");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "collector did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Collector {
        child,
        out,
        endpoint: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

/// Every span the collector wrote: (trace id, span id, parent span id, kind, name).
fn exported_spans(file: &Path) -> Vec<(String, String, String, i64, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut spans = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).expect("the file exporter writes JSON lines");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let str_of = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
                    spans.push((
                        str_of("traceId"),
                        str_of("spanId"),
                        str_of("parentSpanId"),
                        s["kind"].as_i64().unwrap_or(0),
                        str_of("name"),
                    ));
                }
            }
        }
    }
    spans
}

const SERVER: i64 = 2;
const CLIENT: i64 = 3;

type Seen = Arc<Mutex<Vec<(&'static str, TraceContext)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_crosses_two_services_and_arrives_at_the_collector() {
    let bin = mesh_test_support::require_peer!("MESH_OTELCOL_BIN");
    let collector = start_collector(&bin);
    let exporter = OtlpExporter::new(&OtlpConfig {
        endpoint: collector.endpoint.clone(),
        service_name: "otlp-export-test".into(),
        ..Default::default()
    })
    .unwrap();
    let only_requests = tracing_subscriber::filter::Targets::new()
        .with_target("mesh_telemetry", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(exporter.layer().with_filter(only_requests))
        .init();

    let (a, b) = (
        Service {
            name: "svc-a",
            port: free_port(),
        },
        Service {
            name: "svc-b",
            port: free_port(),
        },
    );
    let mesh = TestMesh::start(&[
        Service {
            name: a.name,
            port: a.port,
        },
        Service {
            name: b.name,
            port: b.port,
        },
    ])
    .await;
    let seen: Seen = Arc::default();

    // B: records the context it serves in.
    let wb = mesh.workload(b.name);
    let s = seen.clone();
    let app_b = axum::Router::new().route(
        "/b",
        get(move || {
            let s = s.clone();
            async move {
                s.lock()
                    .unwrap()
                    .push(("b", current().expect("server context")));
                "b"
            }
        }),
    );
    serve(
        &wb.identity,
        b.port,
        TraceLayer::server(Propagation::W3c).layer(app_b),
    )
    .await;

    // A: records its context, then calls B through its MeshClient with a client trace layer.
    let wa = mesh.workload(a.name);
    wa.client.resolve(&b.target()).await.unwrap();
    let to_b = TraceLayer::client(Propagation::W3c).layer(wa.client.clone());
    let s = seen.clone();
    let b_url = format!("http://{}/b", b.target());
    let app_a = axum::Router::new().route(
        "/a",
        get(move || {
            let (s, to_b, b_url) = (s.clone(), to_b.clone(), b_url.clone());
            async move {
                s.lock()
                    .unwrap()
                    .push(("a", current().expect("server context")));
                let req = http::Request::get(b_url)
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                let Ok(resp) = to_b.oneshot(req).await;
                let status = resp.status();
                let body = resp.into_body().collect().await.unwrap().to_bytes();
                format!("{status} {}", String::from_utf8_lossy(&body))
            }
        }),
    );
    serve(
        &wa.identity,
        a.port,
        TraceLayer::server(Propagation::W3c).layer(app_a),
    )
    .await;

    // The client starts the trace.
    let caller = mesh.workload("caller");
    caller.client.resolve(&a.target()).await.unwrap();
    let req = http::Request::get(format!("http://{}/a", a.target()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let Ok(resp) = TraceLayer::client(Propagation::W3c)
        .layer(caller.client.clone())
        .oneshot(req)
        .await;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(&body[..], b"200 OK b");

    let seen = seen.lock().unwrap().clone();
    let ctx = |n| seen.iter().find(|(k, _)| *k == n).unwrap().1;
    let (in_a, in_b) = (ctx("a"), ctx("b"));
    assert_eq!(in_a.trace_id, in_b.trace_id, "one trace id across the hops");
    let trace = in_a.trace_id_hex();

    // Wait until the collector wrote all four spans of the trace.
    let e = exporter.clone();
    tokio::task::spawn_blocking(move || e.force_flush())
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<_> = exported_spans(&collector.out)
            .into_iter()
            .filter(|s| s.0 == trace)
            .collect();
        if spans.len() >= 4 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    exporter.shutdown().unwrap();
    assert_eq!(spans.len(), 4, "spans of trace {trace}: {spans:#?}");

    let hex = |id: [u8; 8]| {
        TraceContext {
            span_id: id,
            ..in_a
        }
        .span_id_hex()
    };
    let by_id = |id: &str| spans.iter().find(|s| s.1 == id).unwrap().clone();
    // B's server span: the span B served in, child of A's outbound span.
    let b_server = by_id(&hex(in_b.span_id));
    assert_eq!(b_server.3, SERVER);
    let a_out = by_id(&b_server.2);
    assert_eq!(a_out.3, CLIENT, "B's parent is A's outbound span");
    assert_eq!(Some(b_server.2.clone()), in_b.parent_span_id.map(hex));
    // A's outbound span is a child of A's server span, the span A served in.
    let a_server = by_id(&a_out.2);
    assert_eq!(a_server.1, hex(in_a.span_id));
    assert_eq!(a_server.3, SERVER);
    // A's server span is a child of the client's span, the root.
    let client = by_id(&a_server.2);
    assert_eq!(client.3, CLIENT);
    assert_eq!(Some(client.1.clone()), in_a.parent_span_id.map(hex));
    assert_eq!(client.2, "", "the client's span is the root of the trace");
    // Istio's operation names: `<host>:<port>/*` of the authority each span addressed.
    assert!(spans.iter().all(|s| s.4.ends_with("/*")), "{spans:#?}");
}
