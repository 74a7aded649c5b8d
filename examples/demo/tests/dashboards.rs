//! What Istio users look at, on the demo's own telemetry while Bookinfo runs:
//!
//! * Istio's Grafana dashboards (service, workload, mesh) and Kiali's service graph, on a
//!   real Prometheus server (Debian's `prometheus`, `MESH_PROMETHEUS_BIN`) scraping the
//!   demo's admin endpoint every second. Every PromQL query of those dashboards
//!   (`tests/dashboards/*.tsv`, extracted from istio/istio and kiali/kiali, with where they
//!   came from) must evaluate; the HTTP panels must show data, the panels of plaintext
//!   traffic must be empty (everything is mTLS), and the graph must hold the Bookinfo
//!   services and workloads with rates and latencies.
//! * The admin port's live graph (`/graph`) in a real headless browser (Debian's
//!   `chromium`, `MESH_CHROMIUM_BIN`): the page draws the Bookinfo graph and its numbers
//!   match `/stats/prometheus`. With `MESH_GRAPH_SCREENSHOT=path.png` the screenshot is kept
//!   (docs/graph.png was taken that way).
//!
//! One test: Bookinfo listens on fixed ports, so one demo runs at a time.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use demo::{DemoOptions, run};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISTIO_QUERIES: &str = include_str!("dashboards/istio-queries.tsv");
const KIALI_QUERIES: &str = include_str!("dashboards/kiali-queries.tsv");

const WORKLOADS: &[&str] = &[
    "productpage-v1",
    "details-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
    "ratings-v1",
];
const SERVICES: &[&str] = &["productpage", "details", "reviews", "ratings"];

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
}

/// GET over HTTP/1.0 (no chunked bodies): (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, body.to_string())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query: the result vector (or scalar, as one element).
async fn promql(prom: SocketAddr, expr: &str) -> Result<Vec<Value>, String> {
    let (code, body) = get(
        prom,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{code} {e}: {body}"))?;
    if v["status"] != "success" {
        return Err(format!("{code}: {body}"));
    }
    match &v["data"]["result"] {
        Value::Array(a) => Ok(a.clone()),
        other => Ok(vec![other.clone()]),
    }
}

/// (dashboard, panel, expr) lines of a query list.
fn queries(list: &str) -> Vec<(&str, &str, &str)> {
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap())
        })
        .collect()
}

fn sample(v: &Value) -> f64 {
    v["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN)
}

fn labels_of(result: &[Value], label: &str) -> BTreeSet<String> {
    result
        .iter()
        .filter_map(|r| r["metric"][label].as_str().map(String::from))
        .collect()
}

async fn wait_ready(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(admin, "/ready").await.0 != 200 {
        assert!(Instant::now() < deadline, "demo never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn dashboards(bin: &Path, admin: SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
             - job_name: demo\n  metrics_path: /stats/prometheus\n  static_configs:\n\
             \x20 - targets: ['{admin}']\n"
        ),
    )
    .unwrap();
    let prom = free_addr();
    let mut child = tokio::process::Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    // Enough scrapes for irate/rate and histogram_quantile over them.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = promql(prom, "count_over_time(up{job=\"demo\"}[1m])").await
            && r.first().map(sample).unwrap_or(0.0) >= 5.0
            && promql(prom, "up{job=\"demo\"}")
                .await
                .ok()
                .and_then(|r| r.first().map(sample))
                == Some(1.0)
        {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "prometheus never scraped the demo 5 times:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut failures = Vec::new();
    let mut shown = BTreeSet::new();
    let mut empty = BTreeSet::new();
    let all: Vec<_> = queries(ISTIO_QUERIES)
        .into_iter()
        .chain(queries(KIALI_QUERIES))
        .collect();
    for (board, panel, expr) in &all {
        let result = match promql(prom, expr).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{board} / {panel}: query failed: {e}\n  {expr}"));
                continue;
            }
        };
        // What Istio itself shows: the source reporter's connection_security_policy is
        // `unknown` (istio.io, "Istio Standard Metrics"), so the source-reported panels
        // split by it show every call under "not mutual_tls"; the destination-reported
        // plaintext panels and the principal-based ones (`!~"spiffe.*"`) must stay empty:
        // every call is mTLS. The demo has no TCP-proxied traffic and no istio_build.
        let source = expr.contains("reporter=\"source\"");
        let csp_mtls = expr.contains("connection_security_policy=\"mutual_tls\"");
        let csp_plain = expr.contains("connection_security_policy!=\"mutual_tls\"");
        let plaintext = expr.contains("principal!~\"spiffe.*\"") || (csp_plain && !source);
        let unknown = expr.contains("istio_tcp_") || expr.contains("istio_build");
        let has_data = result.iter().any(|r| !sample(r).is_nan());
        if plaintext || (source && csp_mtls) {
            if !result.is_empty() {
                failures.push(format!(
                    "{board} / {panel}: expected empty: {result:?}\n  {expr}"
                ));
            }
            empty.insert(format!("{board} / {panel}"));
        } else if !unknown {
            if has_data {
                shown.insert(format!("{board} / {panel}"));
            } else {
                failures.push(format!("{board} / {panel}: no data: {result:?}\n  {expr}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} queries evaluated; panels with data:", all.len());
    for p in &shown {
        eprintln!("  {p}");
    }
    eprintln!("panels (or their plaintext/source-mTLS series) checked empty:");
    for p in &empty {
        eprintln!("  {p}");
    }

    // What Kiali draws: the Bookinfo workloads and services, by both reporters.
    let (_, _, incoming) = all
        .iter()
        .find(|q| q.1 == "incoming traffic (destination)")
        .unwrap();
    let incoming = promql(prom, incoming).await.unwrap();
    let dst = labels_of(&incoming, "destination_workload");
    for w in WORKLOADS {
        assert!(dst.contains(*w), "Kiali's graph lacks {w}: {dst:?}");
    }
    let services = labels_of(&incoming, "destination_service_name");
    for s in SERVICES {
        assert!(
            services.contains(*s),
            "Kiali's graph lacks service {s}: {services:?}"
        );
    }
    assert!(labels_of(&incoming, "source_workload").contains("productpage-v1"));
    assert!(incoming.iter().all(|r| sample(r) > 0.0), "{incoming:?}");
    // mTLS on every edge Kiali's security appender sees.
    let (_, _, security) = all
        .iter()
        .find(|q| q.1 == "security policy (mTLS)")
        .unwrap();
    let security = promql(prom, security).await.unwrap();
    assert!(!security.is_empty());
    assert_eq!(
        labels_of(&security, "connection_security_policy"),
        BTreeSet::from(["mutual_tls".to_string()])
    );
    // Latencies: positive, finite.
    let (_, _, p95) = all
        .iter()
        .find(|q| q.1 == "response time p95 (incoming)")
        .unwrap();
    let p95 = promql(prom, p95).await.unwrap();
    assert!(
        labels_of(&p95, "destination_workload").contains("ratings-v1"),
        "{p95:?}"
    );
    assert!(
        p95.iter().all(|r| sample(r).is_finite() && sample(r) > 0.0),
        "{p95:?}"
    );
    // The mesh dashboard's workload table (source-reported): the callees the callers can
    // name. reviews v1-v3 share one service account, so their callers see `unknown`.
    let (_, _, table) = all
        .iter()
        .find(|q| q.0 == "istio-mesh-dashboard.gen" && q.1 == "HTTP/gRPC Workloads")
        .unwrap();
    let table = labels_of(&promql(prom, table).await.unwrap(), "destination_workload");
    for w in ["productpage-v1", "details-v1", "ratings-v1", "unknown"] {
        assert!(table.contains(w), "mesh dashboard lacks {w}: {table:?}");
    }
    // The service dashboard's callers of reviews, over mTLS.
    let callers = all
        .iter()
        .find(|q| {
            q.0 == "istio-service-dashboard"
                && q.1 == "Incoming Requests By Source And Response Code"
                && q.2.contains("connection_security_policy=\"mutual_tls\"")
        })
        .unwrap();
    let callers = promql(prom, callers.2).await.unwrap();
    assert_eq!(
        labels_of(&callers, "source_workload"),
        BTreeSet::from(["productpage-v1".to_string()])
    );
    let _ = child.start_kill();
}

/// Sum of `istio_requests_total` for one edge and reporter in an exposition.
fn requests(text: &str, reporter: &str, src: &str, dst: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(&format!("reporter=\"{reporter}\""))
                && l.contains(&format!("source_workload=\"{src}\""))
                && l.contains(&format!("destination_workload=\"{dst}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The `data-*` attributes of the page's edges: (source, target, attrs).
fn dom_edges(dom: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    dom.split("<g class=\"edge")
        .skip(1)
        .map(|chunk| {
            let tag = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
            tag.split(" data-")
                .skip(1)
                .filter_map(|kv| {
                    let (k, v) = kv.split_once("=\"")?;
                    Some((k.to_string(), v[..v.find('"')?].to_string()))
                })
                .collect()
        })
        .collect()
}

async fn browser(bin: &Path, admin: SocketAddr) {
    let url = format!("http://{admin}/graph");
    let chromium = |args: &[&str]| {
        let mut c = tokio::process::Command::new(bin);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=4000",
        ])
        .args(args)
        .arg(&url)
        .kill_on_drop(true);
        c
    };
    let before = get(admin, "/stats/prometheus").await.1;
    let out = tokio::time::timeout(Duration::from_secs(90), chromium(&["--dump-dom"]).output())
        .await
        .expect("chromium --dump-dom finishes")
        .expect("chromium runs");
    let after = get(admin, "/stats/prometheus").await.1;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never drew graph.json: {dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edges = dom_edges(&dom);
    let pairs: BTreeSet<(String, String)> = edges
        .iter()
        .map(|e| (e["source"].clone(), e["target"].clone()))
        .collect();
    for (s, t) in [
        ("loadgen-v1", "productpage-v1"),
        ("productpage-v1", "details-v1"),
        ("productpage-v1", "reviews-v1"),
        ("productpage-v1", "reviews-v2"),
        ("productpage-v1", "reviews-v3"),
    ] {
        assert!(
            pairs.contains(&(format!("{s}.default"), format!("{t}.default"))),
            "no edge {s} -> {t} drawn: {pairs:?}"
        );
    }
    assert!(
        pairs.iter().any(|(_, t)| t == "ratings-v1.default"),
        "no edge to ratings drawn: {pairs:?}"
    );
    for w in WORKLOADS {
        assert!(
            dom.contains(&format!("data-id=\"{w}.default\"")),
            "node {w} not drawn"
        );
    }
    // Numbers: the page's request counts lie between two scrapes of /stats/prometheus taken
    // around it; p99 is a positive latency; every call between Bookinfo workloads is mTLS.
    for e in &edges {
        let (s, t) = (
            e["source"].trim_end_matches(".default"),
            e["target"].trim_end_matches(".default"),
        );
        let shown: f64 = e["requests"].parse().unwrap();
        let reporter = e["reporter"].as_str();
        let (lo, hi) = (
            requests(&before, reporter, s, t),
            requests(&after, reporter, s, t),
        );
        assert!(
            lo <= shown && shown <= hi && hi > 0.0,
            "{s} -> {t}: page shows {shown} requests, /stats/prometheus {lo}..{hi}"
        );
        let p99: f64 = e["p99"].parse().unwrap_or(f64::NAN);
        assert!(p99 > 0.0 && p99.is_finite(), "{s} -> {t}: p99 {p99}");
        assert_eq!(e["mtls"], "true", "{s} -> {t} is not shown as mTLS");
        let rps: f64 = e["rps"].parse().unwrap();
        assert!(rps >= 0.0, "{s} -> {t}: rps {rps}");
    }
    assert!(dom.contains(">mTLS "), "no mTLS mark drawn");

    let shot = std::env::var_os("MESH_GRAPH_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("mesh-graph-{}.png", std::process::id()))
        });
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        chromium(&[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1140,640",
            "--hide-scrollbars",
        ])
        .output(),
    )
    .await
    .expect("chromium --screenshot finishes")
    .expect("chromium runs");
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {}: {e}\n{}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot: {} bytes",
        png.len()
    );
}

async fn checks(admin: SocketAddr) {
    wait_ready(admin).await;
    // /graph.json over a window: rates once two reads are a second apart.
    let (code, _) = get(admin, "/graph.json").await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, body) = get(admin, "/graph.json").await;
    let graph: Value = serde_json::from_str(&body).unwrap();
    let rps: f64 = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "loadgen-v1.default")
        .filter_map(|e| e["rps"].as_f64())
        .sum();
    // The driver sends 50 rps.
    assert!((25.0..=75.0).contains(&rps), "loadgen rps {rps}: {graph}");
    if let Some(bin) = mesh_test_support::peer("MESH_PROMETHEUS_BIN") {
        dashboards(&bin, admin).await;
    }
    if let Some(bin) = mesh_test_support::peer("MESH_CHROMIUM_BIN") {
        browser(&bin, admin).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_dashboards_kiali_and_the_live_graph_show_bookinfo() {
    let admin = free_addr();
    let opts = DemoOptions {
        duration: None,
        rate: 50,
        admin_addr: admin,
        admin_grpc_addr: free_addr(),
        quiet: true,
        ..Default::default()
    };
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let f = failure.clone();
    let checks = async move {
        if let Err(e) = tokio::spawn(checks(admin)).await {
            let msg = e
                .into_panic()
                .downcast::<String>()
                .map(|s| *s)
                .unwrap_or_else(|_| "check panicked".into());
            *f.lock().unwrap() = Some(msg);
        }
    };
    let _summary = run(opts, checks).await.expect("demo runs");
    if let Some(msg) = failure.lock().unwrap().take() {
        panic!("{msg}");
    }
}
