//! The facade's HBONE server and client (`Mesh::hbone_server`, `Mesh::hbone_client`) over
//! real sockets, with Istio's request metrics on the HTTP service inside the tunnel and
//! `istio_tcp_*` for each tunnel on both sides (source labels from the client's baggage,
//! in `istio_requests_total` for the HTTP inside too).

use std::time::Duration;

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh::core::config::StaticSource;
use mesh::core::{SpiffeId, TrustDomain};
use mesh::hbone::HboneTarget;
use mesh::telemetry::metrics::{ServiceInfo, WorkloadInfo};
use mesh::tls::dev_ca::DevCa;
use mesh::{IdentityStore, Mesh, PeerIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn mesh_for(ca: &DevCa, sa: &str) -> Mesh {
    let id = SpiffeId::istio(ca.trust_domain(), "default", sa).unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    let workload = WorkloadInfo {
        workload: format!("{sa}-v1"),
        namespace: "default".into(),
        principal: id.to_string(),
        app: sa.into(),
        version: "v1".into(),
        canonical_service: sa.into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    };
    Mesh::builder()
        .identity_store(store)
        .config_source(StaticSource::new(Default::default()))
        .workload(workload)
        .build()
        .unwrap()
}

fn scrape(mesh: &Mesh) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    mesh.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The value of the one `name` series carrying every label of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> u64 {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .collect();
    assert_eq!(lines.len(), 1, "{name} {labels:?} in\n{text}");
    lines[0].rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn each_tunnel_counts_in_istio_tcp_metrics_on_both_sides() {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let reviews = mesh_for(&ca, "reviews");
    let productpage = mesh_for(&ca, "productpage");
    let server = reviews
        .hbone_server()
        .tcp(9000, |mut io, _| async move {
            let mut buf = [0u8; 5];
            if io.read_exact(&mut buf).await.is_ok() {
                let _ = io.write_all(b"pong!").await;
                let _ = io.flush().await;
            }
        })
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    let reviews_id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
    let target = HboneTarget::new("127.0.0.1:9000".parse().unwrap(), reviews_id)
        .via(hbone)
        .service("reviews.default.svc.cluster.local");
    let client = productpage.hbone_client();
    let mut stream = client.connect(&target).await.unwrap();
    stream.write_all(b"ping!").await.unwrap();
    let mut buf = [0u8; 5];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong!");
    drop(stream);

    let common = [
        r#"connection_security_policy="mutual_tls""#,
        r#"request_protocol="tcp""#,
        r#"source_principal="spiffe://cluster.local/ns/default/sa/productpage""#,
        r#"destination_principal="spiffe://cluster.local/ns/default/sa/reviews""#,
        r#"destination_service="reviews.default.svc.cluster.local""#,
    ];
    // The server: source labels from the client's certificate and baggage.
    let dest: Vec<&str> = common
        .iter()
        .copied()
        .chain([
            r#"reporter="destination""#,
            r#"source_workload="productpage-v1""#,
            r#"source_canonical_service="productpage""#,
            r#"source_canonical_revision="v1""#,
            r#"source_cluster="Kubernetes""#,
            r#"destination_workload="reviews-v1""#,
        ])
        .collect();
    let src: Vec<&str> = common
        .iter()
        .copied()
        .chain([
            r#"reporter="source""#,
            r#"source_workload="productpage-v1""#,
        ])
        .collect();
    for (mesh, labels) in [(&reviews, &dest), (&productpage, &src)] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !scrape(mesh).contains("istio_tcp_connections_closed_total{") {
            assert!(tokio::time::Instant::now() < deadline, "never closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let text = scrape(mesh);
        assert_eq!(
            value(&text, "istio_tcp_connections_opened_total", labels),
            1
        );
        assert_eq!(
            value(&text, "istio_tcp_connections_closed_total", labels),
            1
        );
        assert_eq!(value(&text, "istio_tcp_sent_bytes_total", labels), 5);
        assert_eq!(value(&text, "istio_tcp_received_bytes_total", labels), 5);
    }
}

#[tokio::test]
async fn http_through_the_facade_tunnel_is_counted_as_mutual_tls() {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let reviews = mesh_for(&ca, "reviews");
    let productpage = mesh_for(&ca, "productpage");

    let service = ServiceInfo {
        host: "reviews.default.svc.cluster.local".into(),
        name: "reviews".into(),
        namespace: "default".into(),
    };
    let app = Router::new().route(
        "/",
        get(|Extension(p): Extension<PeerIdentity>| async move { p.to_string() }),
    );
    // As the docs show for `Mesh::serve`: the layer inside the (here: HBONE) server.
    let app = tower::ServiceBuilder::new()
        .layer(reviews.inbound_metrics(service))
        .service(app);
    let server = reviews.hbone_server().http(9080, app).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    let reviews_id = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
    let connector = productpage
        .hbone_client()
        .connector(reviews_id)
        .hbone_port(hbone.port());
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let resp = http
        .get("http://127.0.0.1:9080/".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "spiffe://cluster.local/ns/default/sa/productpage");

    let mut registry = prometheus_client::registry::Registry::default();
    reviews.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(r#"reporter="destination""#), "{line}");
    assert!(
        line.contains(r#"connection_security_policy="mutual_tls""#),
        "{line}"
    );
    assert!(
        line.contains(r#"source_principal="spiffe://cluster.local/ns/default/sa/productpage""#),
        "{line}"
    );
    // The rest of the source from the tunnel's baggage (the certificate names no workload).
    for label in [
        r#"source_workload="productpage-v1""#,
        r#"source_workload_namespace="default""#,
        r#"source_app="productpage""#,
        r#"source_version="v1""#,
        r#"source_canonical_service="productpage""#,
        r#"source_canonical_revision="v1""#,
        r#"source_cluster="Kubernetes""#,
    ] {
        assert!(line.contains(label), "{label} in {line}");
    }
    assert!(line.ends_with(" 1"), "{line}");
}
