//! The facade's HBONE server and client (`Mesh::hbone_server`, `Mesh::hbone_client`) over
//! real sockets, with Istio's request metrics on the HTTP service inside the tunnel.

use std::time::Duration;

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh::core::config::StaticSource;
use mesh::core::{SpiffeId, TrustDomain};
use mesh::telemetry::metrics::ServiceInfo;
use mesh::tls::dev_ca::DevCa;
use mesh::{IdentityStore, Mesh, PeerIdentity};

fn mesh_for(ca: &DevCa, sa: &str) -> Mesh {
    let id = SpiffeId::istio(ca.trust_domain(), "default", sa).unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    Mesh::builder()
        .identity_store(store)
        .config_source(StaticSource::new(Default::default()))
        .build()
        .unwrap()
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
    assert!(line.ends_with(" 1"), "{line}");
}
