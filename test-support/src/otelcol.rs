//! The real OpenTelemetry Collector (`MESH_OTELCOL_BIN`) as a span sink: an OTLP/gRPC
//! receiver on a free loopback port, spans written as OTLP JSON lines to a file, and a
//! reader of that file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// OTLP `SPAN_KIND_SERVER`.
pub const SERVER: i64 = 2;
/// OTLP `SPAN_KIND_CLIENT`.
pub const CLIENT: i64 = 3;

/// A running collector, killed on drop.
pub struct Collector {
    child: Child,
    out: PathBuf,
    /// Its OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One exported span: its ids (lower-case hex), kind, name, service and attributes.
#[derive(Clone, Debug)]
pub struct Span {
    /// Trace id.
    pub trace: String,
    /// Span id.
    pub id: String,
    /// Parent span id (empty for a root).
    pub parent: String,
    /// OTLP span kind ([`SERVER`], [`CLIENT`], ...).
    pub kind: i64,
    /// Span name.
    pub name: String,
    /// The resource's `service.name`.
    pub service: String,
    /// Span attributes, values as text.
    pub attrs: BTreeMap<String, String>,
}

impl Collector {
    /// Starts `bin` with its config and output in `dir`; waits until it listens.
    pub fn start(bin: &Path, dir: &Path) -> Collector {
        let out = dir.join("traces.jsonl");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let config = dir.join("otelcol.yaml");
        std::fs::write(
            &config,
            format!(
                "receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{port}\n\
                 exporters:\n  file:\n    path: {}\n    flush_interval: 100ms\n\
                 service:\n  telemetry:\n    metrics:\n      level: none\n    logs:\n      level: warn\n\
                 \x20 pipelines:\n    traces:\n      receivers: [otlp]\n      exporters: [file]\n",
                out.display()
            ),
        )
        .expect("write the collector config");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the collector");
        let collector = Collector {
            child,
            out,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "collector did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        collector
    }

    /// Every span exported so far.
    pub fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut spans = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = attrs(&rs["resource"]["attributes"])
                    .remove("service.name")
                    .unwrap_or_default();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        let str_of = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
                        spans.push(Span {
                            trace: str_of("traceId"),
                            id: str_of("spanId"),
                            parent: str_of("parentSpanId"),
                            kind: s["kind"].as_i64().unwrap_or(0),
                            name: s["name"].as_str().unwrap_or_default().to_string(),
                            service: service.clone(),
                            attrs: attrs(&s["attributes"]),
                        });
                    }
                }
            }
        }
        spans
    }

    /// The spans of `trace`, once there are at least `n` of them or `wait` has passed.
    pub fn wait_for(&self, trace: &str, n: usize, wait: Duration) -> Vec<Span> {
        let deadline = Instant::now() + wait;
        loop {
            let spans: Vec<Span> = self
                .spans()
                .into_iter()
                .filter(|s| s.trace == trace)
                .collect();
            if spans.len() >= n || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn attr_value(v: &Value) -> String {
    for k in ["stringValue", "boolValue", "intValue", "doubleValue"] {
        if let Some(x) = v.get(k) {
            return x
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| x.to_string());
        }
    }
    v.to_string()
}

fn attrs(list: &Value) -> BTreeMap<String, String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["key"].as_str().unwrap_or_default().to_string(),
                attr_value(&a["value"]),
            )
        })
        .collect()
}
