//! Tunnels that `mesh.client()` opens to an HBONE endpoint (a WorkloadEntry labelled
//! `networking.istio.io/tunnel: http`, configured by the embedded control plane) are the
//! facade's tunnels: they carry the workload's `baggage` to the server, as ztunnel does,
//! and count in the client's `istio_tcp_*` (`reporter="source"`, `destination_service` the
//! cluster's service), as `mesh.hbone_client()`'s do.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::core::SpiffeId;
use mesh::hbone::{Baggage, HboneServer, TunnelInfo, TunnelMeter};
use mesh::telemetry::metrics::WorkloadInfo;
use mesh::xds::bootstrap::IstioNode;
use mesh::{IdentityStore, Mesh};
use mesh_control::istio::WatchOptions;
use mesh_control::local::{LocalOptions, LocalSource};
use tower::ServiceExt;

const HOST: &str = "reviews.default.svc.cluster.local";
const WORKLOAD: [u8; 4] = [127, 0, 18, 61];

fn config() -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ambient, namespace: default}}
spec:
  address: 127.0.18.61
  labels: {{app: reviews, networking.istio.io/tunnel: http, security.istio.io/tlsMode: disabled}}
  serviceAccount: reviews
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"#
    )
}

struct Uncounted;

impl TunnelMeter for Uncounted {
    fn received(&self, _: u64) {}
    fn sent(&self, _: u64) {}
}

fn scrape(mesh: &Mesh) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    mesh.metrics().register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

/// The sum of the `name` series carrying every label of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_tunnels_send_baggage_and_count_in_istio_tcp() {
    let ca = support::dev_ca();
    let reviews = SpiffeId::istio(ca.trust_domain(), "default", "reviews").unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&reviews, Duration::from_secs(3600)).unwrap())
            .unwrap();
    // The workload's HBONE server, remembering the baggage of each tunnel.
    let seen = Arc::new(Mutex::new(Vec::<(Baggage, Option<String>)>::new()));
    let record = seen.clone();
    let server = HboneServer::builder(store)
        .http(
            9080,
            axum::Router::new().fallback(|| async { "through hbone" }),
        )
        .observe(move |t: &TunnelInfo| {
            record
                .lock()
                .unwrap()
                .push((t.baggage.clone(), t.service_host.clone()));
            Box::new(Uncounted) as Box<dyn TunnelMeter>
        })
        .build();
    let l = tokio::net::TcpListener::bind(SocketAddr::from((WORKLOAD, 15008)))
        .await
        .unwrap();
    tokio::spawn(server.serve(l, std::future::pending()));

    // The client workload, productpage-v1, configured from the YAML.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("reviews.yaml"), config()).unwrap();
    let node = IstioNode {
        pod_name: "productpage-v1-1".into(),
        namespace: "default".into(),
        service_account: "productpage".into(),
        ..Default::default()
    };
    let id = node.spiffe_id().unwrap();
    let source = LocalSource::watch_dir(
        dir.path(),
        WatchOptions {
            interval: Duration::from_millis(50),
        },
        node.node_proto(),
        LocalOptions::default(),
    )
    .await
    .unwrap();
    let workload = WorkloadInfo {
        workload: "productpage-v1".into(),
        namespace: "default".into(),
        principal: id.to_string(),
        app: "productpage".into(),
        version: "v1".into(),
        canonical_service: "productpage".into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    };
    let m = Mesh::builder()
        .dev_ca(&ca, &id)
        .unwrap()
        .config_source(source)
        .workload(workload)
        .build()
        .unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let req = http::Request::get(format!("http://{HOST}:9080/"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        if let Ok(resp) = m.client().oneshot(req).await
            && resp.status() == 200
        {
            break resp.into_body().collect().await.unwrap().to_bytes();
        }
        assert!(tokio::time::Instant::now() < deadline, "never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, "through hbone");

    // The server read the client's workload from the tunnel's baggage.
    let (baggage, service) = seen.lock().unwrap().first().cloned().expect("a tunnel");
    assert_eq!(baggage.workload.as_deref(), Some("productpage-v1"));
    assert_eq!(baggage.namespace.as_deref(), Some("default"));
    assert_eq!(baggage.service.as_deref(), Some("productpage"));
    assert_eq!(baggage.version.as_deref(), Some("v1"));
    // ... and the service it was for from its `forwarded` header, as ztunnel sends it.
    assert_eq!(service.as_deref(), Some(HOST));

    // The client counted the tunnel and its bytes as ambient traffic it sent.
    let text = scrape(&m);
    let labels = [
        r#"reporter="source""#,
        r#"source_workload="productpage-v1""#,
        r#"destination_principal="spiffe://cluster.local/ns/default/sa/reviews""#,
        r#"destination_workload_namespace="default""#,
        r#"destination_service="reviews.default.svc.cluster.local""#,
        r#"destination_service_name="reviews""#,
        r#"destination_service_namespace="default""#,
        r#"connection_security_policy="mutual_tls""#,
    ];
    assert!(
        sum(&text, "istio_tcp_connections_opened_total", &labels) >= 1,
        "{text}"
    );
    assert!(
        sum(&text, "istio_tcp_sent_bytes_total", &labels) > 0,
        "{text}"
    );
    assert!(
        sum(&text, "istio_tcp_received_bytes_total", &labels) > "through hbone".len() as u64,
        "{text}"
    );
}
