//! source_workload / destination_workload labels on the in-process mesh: the client's
//! directory follows xDS (service hosts and the SPIFFE IDs their clusters accept) plus what
//! the application registers, the server's verified identity refines the destination per
//! response, and the server resolves its caller from the caller's SPIFFE ID.

mod support;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_telemetry::metrics::directory::{DirectoryBuilder, follow_config};
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, MeteredBody, ServiceInfo};
use prometheus_client::registry::Registry;
use support::{Service, TestMesh, free_port, series, serve, workload_info};
use tower::{Layer, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_labels_from_xds_directory_and_peer_identity() {
    let svc = Service {
        name: "echo",
        port: free_port(),
    };
    let mesh = TestMesh::start(&[Service {
        name: svc.name,
        port: svc.port,
    }])
    .await;
    let metrics = IstioMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);

    // Server: knows its callers' workloads only from its directory.
    let server = mesh.workload("echo");
    let inbound = IstioMetricsLayer::destination(
        &metrics,
        workload_info("echo"),
        ServiceInfo::from_host(&svc.host()),
    );
    inbound.resolver().set_directory(
        DirectoryBuilder::new()
            .workload(workload_info("caller"))
            .build(),
    );
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
    serve(&server.identity, svc.port, inbound.layer(app)).await;

    // Client: its directory follows xDS; the application registered the echo workload.
    let client = mesh.workload("caller");
    client.client.resolve(&svc.target()).await.unwrap();
    let outbound = IstioMetricsLayer::source(&metrics, workload_info("caller"));
    let base = DirectoryBuilder::new()
        .workload(workload_info("echo"))
        .build();
    let follow = follow_config(outbound.resolver().clone(), &client.xds, base);
    let mut settled = false;
    for _ in 0..100 {
        // The directory arrives asynchronously after the snapshot.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if !client.xds.snapshot().clusters.is_empty() {
            settled = true;
            break;
        }
    }
    assert!(settled, "clusters arrived");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let svc_client = outbound.layer(client.client.clone());
    for _ in 0..3 {
        let req = http::Request::get(format!("http://{}/", svc.target()))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = svc_client.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    follow.abort();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let source = series(
        &text,
        "istio_requests_total",
        &["reporter=\"source\"", "response_code=\"200\""],
    )
    .unwrap_or_else(|| panic!("no source series in\n{text}"));
    for want in [
        "source_workload=\"caller-v1\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/caller\"",
        "destination_workload=\"echo-v1\"",
        "destination_workload_namespace=\"default\"",
        "destination_principal=\"spiffe://cluster.local/ns/default/sa/echo\"",
        "destination_app=\"echo\"",
        "destination_service=\"echo.default.svc.cluster.local\"",
        "destination_service_name=\"echo\"",
        "destination_service_namespace=\"default\"",
    ] {
        assert!(source.contains(want), "{want} missing in {source}");
    }
    assert!(source.ends_with(" 3"), "{source}");
    let dest = series(
        &text,
        "istio_requests_total",
        &["reporter=\"destination\"", "response_code=\"200\""],
    )
    .unwrap_or_else(|| panic!("no destination series in\n{text}"));
    for want in [
        "source_workload=\"caller-v1\"",
        "source_workload_namespace=\"default\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/caller\"",
        "source_app=\"caller\"",
        "destination_workload=\"echo-v1\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(dest.contains(want), "{want} missing in {dest}");
    }
}

#[tokio::test]
async fn the_server_identity_of_a_response_names_the_destination() {
    use mesh_core::extensions::PeerIdentity;
    let metrics = IstioMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    // Nothing known about the host: only the response's verified identity tells.
    let outbound = IstioMetricsLayer::source(&metrics, workload_info("caller"));
    let svc = outbound.layer(tower::service_fn(
        |_req: http::Request<MeteredBody<Empty<Bytes>>>| async {
            let mut resp = http::Response::new(Empty::<Bytes>::new());
            resp.extensions_mut().insert(PeerIdentity(
                "spiffe://cluster.local/ns/shop/sa/cart".parse().unwrap(),
            ));
            Ok::<_, tower::BoxError>(resp)
        },
    ));
    let req = http::Request::get("http://cart.shop.svc.cluster.local:8080/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let s = series(&text, "istio_requests_total", &["reporter=\"source\""]).unwrap();
    assert!(
        s.contains("destination_principal=\"spiffe://cluster.local/ns/shop/sa/cart\""),
        "{s}"
    );
    assert!(s.contains("destination_workload_namespace=\"shop\""), "{s}");
    assert!(s.contains("destination_workload=\"unknown\""), "{s}");
}

/// An Istio cluster of `host` whose TLS accepts exactly `principal`.
fn mtls_cluster(host: &str, principal: &str) -> mesh_core::model::Cluster {
    use mesh_core::model::*;
    use std::sync::Arc;
    let name = format!("outbound|8080||{host}");
    Cluster {
        name: name.clone(),
        discovery: Discovery::Static(Arc::new(ClusterLoadAssignment {
            cluster_name: name,
            ..Default::default()
        })),
        lb_policy: LbPolicy::RoundRobin,
        common_lb: CommonLbConfig::default(),
        connect_timeout: std::time::Duration::from_secs(5),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: Some(UpstreamTls {
            validation: CertificateValidation {
                ca_certificate: None,
                san_matchers: vec![SanMatcher {
                    san_type: SanType::Uri,
                    matcher: StringMatcher::Exact {
                        value: principal.into(),
                        ignore_case: false,
                    },
                }],
            },
            // mTLS: an identity instance means the workload certificate is presented.
            identity_certificate: Some(Default::default()),
            ..Default::default()
        }),
        http_protocol: HttpProtocolOptions::default(),
    }
}

/// The directory follows any config source, here a static one built in code (no xDS, no
/// gRPC): the cluster's single SAN names the destination before any response, and a new
/// snapshot replaces it.
#[tokio::test]
async fn directory_follows_a_static_config_source() {
    use mesh_core::config::{ConfigSnapshot, StaticSource};
    let host = "echo.default.svc.cluster.local";
    let echo = "spiffe://cluster.local/ns/default/sa/echo";
    let mut snapshot = ConfigSnapshot::default();
    snapshot.insert_cluster(mtls_cluster(host, echo));
    let source = StaticSource::new(snapshot);

    let metrics = IstioMetrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let outbound = IstioMetricsLayer::source(&metrics, workload_info("caller"));
    let base = DirectoryBuilder::new()
        .workload(workload_info("echo"))
        .build();
    let follow = follow_config(outbound.resolver().clone(), &source, base);
    let svc = outbound.layer(tower::service_fn(
        |_req: http::Request<MeteredBody<Empty<Bytes>>>| async {
            Ok::<_, tower::BoxError>(http::Response::new(Empty::<Bytes>::new()))
        },
    ));
    let call = || {
        let req = http::Request::get(format!("http://{host}:8080/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        svc.clone().oneshot(req)
    };
    // The first directory is in place when follow_config returns.
    call().await.unwrap().into_body().collect().await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let s = series(&text, "istio_requests_total", &["reporter=\"source\""])
        .unwrap_or_else(|| panic!("no source series in\n{text}"));
    for want in [
        format!("destination_principal=\"{echo}\""),
        "destination_workload=\"echo-v1\"".into(),
        "destination_service=\"echo.default.svc.cluster.local\"".into(),
    ] {
        assert!(s.contains(&want), "{want} missing in {s}");
    }

    // The service moves to another service account: the next snapshot says so.
    let other = "spiffe://cluster.local/ns/default/sa/echo-canary";
    source.update(|s| {
        s.insert_cluster(mtls_cluster(host, other));
    });
    let want = format!("destination_principal=\"{other}\"");
    let mut seen = false;
    for _ in 0..100 {
        call().await.unwrap().into_body().collect().await.unwrap();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        if series(&text, "istio_requests_total", &[&want]).is_some() {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(seen, "the directory did not follow the new snapshot");
    follow.abort();
}
