//! Istio's standard metrics from both sides of a call: names, label sets and bucket bounds
//! checked against Istio's documentation, and the exposition validated by `promtool`.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_core::SpiffeId;
use mesh_core::extensions::PeerIdentity;
use mesh_telemetry::metrics::library::{FnCollector, Kind};
use mesh_telemetry::metrics::{
    IstioMetrics, IstioMetricsLayer, PeerDirectory, ServiceInfo, WorkloadInfo,
};
use prometheus_client::registry::Registry;
use tower::{BoxError, Layer, Service, ServiceExt};

/// The labels of Istio's standard metrics, from istio.io "Istio Standard Metrics"
/// (istio/proxy `source/extensions/filters/http/istio_stats`), written out here
/// independently of the crate's own list.
const DOCUMENTED_HTTP_LABELS: &[&str] = &[
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
];

/// Envoy's default histogram buckets, which Istio's histograms use.
const DOCUMENTED_BUCKETS: &[&str] = &[
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000", "+Inf",
];

fn workload(name: &str, ns: &str, sa: &str) -> WorkloadInfo {
    WorkloadInfo {
        workload: name.into(),
        namespace: ns.into(),
        principal: format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"),
        app: name.into(),
        version: "v1".into(),
        canonical_service: name.into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    }
}

async fn app(req: Request<impl http_body::Body>) -> Result<Response<Full<Bytes>>, BoxError> {
    let grpc = req.headers().contains_key("content-type");
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| "body")?
        .to_bytes();
    let mut resp = Response::new(Full::new(Bytes::from(vec![b'x'; 100 + body.len()])));
    if grpc {
        resp.headers_mut()
            .insert("content-type", "application/grpc".parse().unwrap());
        resp.headers_mut()
            .insert("grpc-status", "5".parse().unwrap());
    }
    Ok(resp)
}

/// Runs one HTTP and one gRPC call through a client (source) and server (destination)
/// stack and returns the Prometheus text exposition.
async fn exposition() -> String {
    let mut registry = Registry::default();
    let metrics = IstioMetrics::new();
    metrics.register(&mut registry);
    let mesh = registry.sub_registry_with_prefix("mesh");
    mesh.register_collector(Box::new(FnCollector::new(
        "endpoints_ejected",
        "Endpoints ejected by outlier detection",
        Kind::Gauge,
        || {
            vec![(
                vec![(
                    "cluster",
                    "outbound|9080||reviews.default.svc.cluster.local".into(),
                )],
                1.0,
            )]
        },
    )));

    let reviews = workload("reviews-v1", "default", "reviews");
    let server = IstioMetricsLayer::destination(
        &metrics,
        reviews.clone(),
        ServiceInfo::from_host("reviews.default.svc.cluster.local"),
    );
    let mut directory = PeerDirectory::default();
    directory.workloads.insert(
        "spiffe://cluster.local/ns/default/sa/productpage".into(),
        workload("productpage-v1", "default", "productpage"),
    );
    server.resolver().set_directory(directory);
    let server = server.layer(tower::service_fn(app));

    let client = IstioMetricsLayer::source(
        &metrics,
        workload("productpage-v1", "default", "productpage"),
    );
    let mut directory = PeerDirectory::default();
    directory.services.insert(
        "reviews.default.svc.cluster.local".into(),
        (
            ServiceInfo::from_host("reviews.default.svc.cluster.local"),
            reviews,
        ),
    );
    client.resolver().set_directory(directory);
    // The "network": the server sees the client's identity as mTLS would put it there.
    let peer =
        PeerIdentity(SpiffeId::new("spiffe://cluster.local/ns/default/sa/productpage").unwrap());
    let mut client = client.layer(tower::service_fn(move |mut req: Request<_>| {
        req.extensions_mut().insert(peer.clone());
        let mut server = server.clone();
        async move { server.ready().await?.call(req).await }
    }));

    for grpc in [false, true] {
        let mut req = Request::builder().uri("http://reviews.default.svc.cluster.local:9080/r");
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let req = req.body(Full::new(Bytes::from_static(b"hello"))).unwrap();
        let resp = client.ready().await.unwrap().call(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), 105);
    }
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
    text
}

fn label_names(line: &str) -> BTreeSet<String> {
    let inner = &line[line.find('{').unwrap() + 1..line.rfind('}').unwrap()];
    inner
        .split("\",")
        .map(|kv| kv.split('=').next().unwrap().trim().to_string())
        .collect()
}

fn sample<'a>(text: &'a str, name: &str, needles: &[&str]) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no {name} sample with {needles:?} in:\n{text}"))
}

#[tokio::test]
async fn names_labels_and_buckets_match_istio() {
    let text = exposition().await;
    for (name, ty) in [
        ("istio_requests_total", "counter"),
        ("istio_request_duration_milliseconds", "histogram"),
        ("istio_request_bytes", "histogram"),
        ("istio_response_bytes", "histogram"),
    ] {
        assert!(
            text.contains(&format!("# TYPE {name} {ty}\n")),
            "{name} {ty}\n{text}"
        );
    }
    let documented: BTreeSet<String> = DOCUMENTED_HTTP_LABELS
        .iter()
        .map(|s| s.to_string())
        .collect();
    let line = sample(&text, "istio_requests_total", &["reporter=\"source\""]);
    assert_eq!(label_names(line), documented, "{line}");

    // Both sides of the same call, with the labels Kiali joins on.
    for reporter in ["source", "destination"] {
        let line = sample(
            &text,
            "istio_requests_total",
            &[
                &format!("reporter=\"{reporter}\""),
                "request_protocol=\"http\"",
            ],
        );
        for needle in [
            "source_workload=\"productpage-v1\"",
            "source_workload_namespace=\"default\"",
            "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
            "destination_workload=\"reviews-v1\"",
            "destination_service=\"reviews.default.svc.cluster.local\"",
            "destination_service_name=\"reviews\"",
            "destination_service_namespace=\"default\"",
            "response_code=\"200\"",
            "grpc_response_status=\"\"",
            "response_flags=\"-\"",
        ] {
            assert!(line.contains(needle), "{needle} missing in {line}");
        }
        assert!(line.ends_with(" 1"), "{line}");
    }
    let dest = sample(&text, "istio_requests_total", &["reporter=\"destination\""]);
    assert!(
        dest.contains("connection_security_policy=\"mutual_tls\""),
        "{dest}"
    );
    let src = sample(&text, "istio_requests_total", &["reporter=\"source\""]);
    assert!(
        src.contains("connection_security_policy=\"unknown\""),
        "{src}"
    );
    let grpc = sample(
        &text,
        "istio_requests_total",
        &["request_protocol=\"grpc\""],
    );
    assert!(grpc.contains("grpc_response_status=\"5\""), "{grpc}");

    for hist in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let les: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{hist}_bucket{{"))
                    && l.contains("reporter=\"source\"")
                    && l.contains("request_protocol=\"http\"")
            })
            .map(|l| {
                let i = l.find("le=\"").unwrap() + 4;
                &l[i..i + l[i..].find('"').unwrap()]
            })
            .collect();
        let les: Vec<String> = les
            .iter()
            .map(|le| {
                if *le == "+Inf" {
                    le.to_string()
                } else {
                    le.parse::<f64>().unwrap().to_string()
                }
            })
            .collect();
        assert_eq!(les, DOCUMENTED_BUCKETS, "{hist}");
    }
    // Body sizes: 5 request bytes, 105 response bytes.
    let sum = sample(
        &text,
        "istio_request_bytes_sum",
        &["reporter=\"source\"", "request_protocol=\"http\""],
    );
    assert!(sum.ends_with(" 5.0") || sum.ends_with(" 5"), "{sum}");
    let sum = sample(
        &text,
        "istio_response_bytes_sum",
        &["reporter=\"destination\"", "request_protocol=\"http\""],
    );
    assert!(sum.ends_with(" 105.0") || sum.ends_with(" 105"), "{sum}");
    // Scrape-time collectors live under the `mesh_` prefix (mesh-admin's identity, xDS and
    // upstream collectors are checked, promtool included, in mesh-admin/tests).
    assert!(text.contains("mesh_endpoints_ejected{cluster="), "{text}");
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let promtool = mesh_test_support::require_peer!("MESH_PROMTOOL_BIN");
    let text = exposition().await;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool parses the exposition (a parse error is "error while linting", exit 1) and
    // then lints names (exit 3). Istio's own name `istio_request_duration_milliseconds`
    // breaks the "base unit" lint; Istio's dashboards need that name, so that one finding
    // is expected and every other finding fails the test.
    const ISTIO_NAME_LINT: &str =
        "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\"";
    let findings: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
    let only_istio_lint = findings.iter().all(|l| *l == ISTIO_NAME_LINT);
    assert!(
        out.status.success() || (out.status.code() == Some(3) && only_istio_lint),
        "promtool check metrics failed ({:?}):\n{report}\n{text}",
        out.status
    );
    // And it really does parse and lint: a broken line is rejected.
    let mut child = Command::new(mesh_test_support::peer("MESH_PROMTOOL_BIN").unwrap())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"istio_requests_total{a=\"b 1\n")
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(1));
}
