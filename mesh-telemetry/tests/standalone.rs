//! The metrics layer alone, as a user without the rest of the mesh takes it: on an axum
//! `Router` served by hyper-util (`reporter="destination"`) and on a hyper-util client
//! (`reporter="source"`), both with `tower::ServiceBuilder`, over real HTTP on loopback.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_telemetry::metrics::{
    IstioMetrics, IstioMetricsLayer, PeerDirectory, ServiceInfo, WorkloadInfo,
};
use prometheus_client::registry::Registry;
use tower::{ServiceBuilder, ServiceExt};

const HOST: &str = "echo.default.svc.cluster.local";

fn workload(name: &str, app: &str) -> WorkloadInfo {
    WorkloadInfo {
        workload: name.into(),
        namespace: "default".into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{app}"),
        app: app.into(),
        version: "v1".into(),
        canonical_service: app.into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    }
}

/// Serves the axum app behind the destination metrics layer on 127.0.0.1.
async fn serve(metrics: &IstioMetrics) -> SocketAddr {
    let app = ServiceBuilder::new()
        .layer(IstioMetricsLayer::destination(
            metrics,
            workload("echo-v1", "echo"),
            ServiceInfo::from_host(HOST),
        ))
        .service(Router::new().route("/echo", post(|body: String| async move { body })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = conn.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn scrape(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

/// The value of the `istio_requests_total` series with every one of `labels`.
fn requests(text: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("istio_requests_total{") && labels.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_metrics_layer_alone_on_axum_and_hyper_util() {
    let metrics = IstioMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let addr = serve(&metrics).await;

    // The client knows which service the address is (without a directory the service
    // labels come from the request's host).
    let outbound = IstioMetricsLayer::source(&metrics, workload("caller-v1", "caller"));
    let mut directory = PeerDirectory::default();
    directory.services.insert(
        addr.ip().to_string(),
        (ServiceInfo::from_host(HOST), workload("echo-v1", "echo")),
    );
    outbound.resolver().set_directory(directory);
    let client = ServiceBuilder::new()
        .layer(outbound)
        .service(Client::builder(TokioExecutor::new()).build_http());

    for (path, code) in [("/echo", 200), ("/echo", 200), ("/missing", 404)] {
        let req = http::Request::post(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(b"hello")))
            .unwrap();
        let resp = client.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), code);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if code == 200 {
            assert_eq!(body, "hello");
        }
    }

    let source = [
        "reporter=\"source\"",
        "source_workload=\"caller-v1\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/caller\"",
        "destination_workload=\"echo-v1\"",
        "destination_service=\"echo.default.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"default\"",
        "request_protocol=\"http\"",
        "connection_security_policy=\"unknown\"",
    ];
    let destination = [
        "reporter=\"destination\"",
        "destination_workload=\"echo-v1\"",
        "destination_service=\"echo.default.svc.cluster.local\"",
        "request_protocol=\"http\"",
        // Plain HTTP: no verified caller, so no source workload and no mTLS.
        "source_workload=\"unknown\"",
        "connection_security_policy=\"none\"",
    ];
    // The server records when its response body has been written, which may be just
    // after the client has read it.
    let mut text = scrape(&registry);
    for _ in 0..100 {
        if requests(&text, &[destination[0], "response_code=\"404\""]) == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        text = scrape(&registry);
    }
    for (labels, code, n) in [
        (&source[..], "200", 2.0),
        (&source[..], "404", 1.0),
        (&destination[..], "200", 2.0),
        (&destination[..], "404", 1.0),
    ] {
        let code = format!("response_code=\"{code}\"");
        let mut want = labels.to_vec();
        want.push(&code);
        assert_eq!(requests(&text, &want), Some(n), "{want:?} in\n{text}");
    }
    // Request bodies are counted as they are read: the client sends 3 x 5 bytes; the
    // server reads the two bodies its handler takes and not the 404's.
    for (reporter, bytes) in [("source", 15.0), ("destination", 10.0)] {
        let sum: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("istio_request_bytes_sum{")
                    && l.contains(&format!("reporter=\"{reporter}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(sum, bytes, "{reporter}\n{text}");
    }
}
