//! Locality load balancing as Istio users write it: endpoints with a `locality` (inline in
//! a ServiceEntry or in WorkloadEntries), a DestinationRule's `localityLbSetting`, and a
//! client whose node says where it runs, on a workload configured by the embedded control
//! plane in process. Each endpoint is a real HTTP server answering with its name.

#[path = "support/sticky.rs"]
mod sticky;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::Mesh;
use mesh::xds::bootstrap::{IstioNode, LocalityConfig};
use tower::ServiceExt;

use sticky::{HOST, cart_service};

/// Outlier detection that ejects an endpoint at its first 5xx, for a minute.
const OUTLIER: &str = "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, \
                       baseEjectionTime: 60s, maxEjectionPercent: 100}";

/// A server answering 200 with `name`, or 503 while `failing` is set.
async fn server(name: &'static str, failing: Arc<AtomicBool>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || {
        let failing = failing.clone();
        async move {
            if failing.load(Ordering::Relaxed) {
                (http::StatusCode::SERVICE_UNAVAILABLE, name)
            } else {
                (http::StatusCode::OK, name)
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// Servers `name -> (locality, labels)`, each healthy; their ports and failure switches.
struct Servers {
    endpoints: Vec<String>,
    failing: HashMap<&'static str, Arc<AtomicBool>>,
}

async fn servers(list: &[(&'static str, &str, &str)]) -> Servers {
    let mut s = Servers {
        endpoints: Vec::new(),
        failing: HashMap::new(),
    };
    for (name, locality, labels) in list {
        let failing = Arc::new(AtomicBool::new(false));
        let port = server(name, failing.clone()).await;
        s.failing.insert(name, failing);
        s.endpoints.push(format!(
            "{{address: 127.0.0.1, ports: {{http: {port}}}, locality: {locality}, labels: {{{labels}}}}}"
        ));
    }
    s
}

/// The ServiceEntry with inline `endpoints` and a DestinationRule with `policy`.
fn config(endpoints: &[String], policy: &str) -> String {
    cart_service(endpoints, &format!("tls: {{mode: DISABLE}}, {policy}"))
}

/// A client workload in `region/zone` with `labels`, configured from `yaml`.
async fn client_mesh(
    dir: &tempfile::TempDir,
    yaml: &str,
    region: &str,
    zone: &str,
    labels: &[(&str, &str)],
) -> Mesh {
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let node = IstioNode {
        pod_name: "shop-0".into(),
        service_account: "shop".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain([("app".to_owned(), "shop".to_owned())])
            .collect(),
        locality: Some(LocalityConfig {
            region: region.into(),
            zone: zone.into(),
            sub_zone: String::new(),
        }),
        ..Default::default()
    };
    support::local_mesh(&support::dev_ca(), dir.path(), node).await
}

/// The name of the server that answered, or the status when it failed.
async fn call(client: &mesh::Client, path: &str) -> String {
    let req = http::Request::get(format!("http://{HOST}:8080{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    if status == 200 {
        String::from_utf8_lossy(&body).into_owned()
    } else {
        status.to_string()
    }
}

/// Requests per answering server over `n` requests.
async fn spread(client: &mesh::Client, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        *seen.entry(call(client, "/").await).or_default() += 1;
    }
    seen
}

/// Calls until `name` answers (after the others failed and were ejected).
async fn until(client: &mesh::Client, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(client, "/").await != name {
        assert!(Instant::now() < deadline, "{name} never answered");
    }
}

fn only(name: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(name.to_owned(), n)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stays_in_its_zone_and_fails_over_when_its_endpoints_are_ejected() {
    let s = servers(&[("zone-a", "us/a", ""), ("zone-b", "us/b", "")]).await;
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &config(&s.endpoints, OUTLIER), "us", "a", &[]).await;
    let client = m.client();
    assert_eq!(spread(&client, 100).await, only("zone-a", 100));

    // Zone A fails: its endpoint answers 503 once, is ejected, and zone B takes over.
    s.failing["zone-a"].store(true, Ordering::Relaxed);
    until(&client, "zone-b").await;
    assert_eq!(spread(&client, 100).await, only("zone-b", 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_outlier_detection_or_with_enabled_false_localities_are_ignored() {
    let s = servers(&[("zone-a", "us/a", ""), ("zone-b", "us/b", "")]).await;
    for policy in [
        "loadBalancer: {simple: ROUND_ROBIN}".to_owned(),
        format!("{OUTLIER}, loadBalancer: {{localityLbSetting: {{enabled: false}}}}"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = client_mesh(&dir, &config(&s.endpoints, &policy), "us", "a", &[]).await;
        let seen = spread(&m.client(), 100).await;
        assert_eq!(seen.get("zone-a"), Some(&50), "{policy}: {seen:?}");
        assert_eq!(seen.get("zone-b"), Some(&50), "{policy}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distribute_splits_traffic_by_the_given_weights() {
    let s = servers(&[
        ("zone-a", "us/a", ""),
        ("zone-b", "us/b", ""),
        ("eu", "eu/c", ""),
    ])
    .await;
    let policy = "loadBalancer: {localityLbSetting: {distribute: [
        {from: eu/*, to: {eu/*: 100}},
        {from: us/a/*, to: {us/a/*: 80, us/b/*: 20}}]}}";
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &config(&s.endpoints, policy), "us", "a", &[]).await;
    let seen = spread(&m.client(), 1000).await;
    eprintln!("distribute 80/20 over 1,000 requests: {seen:?}");
    // 80/20 within 3 points; `eu` is named by no `to` of the client's entry: no traffic.
    let a = seen.get("zone-a").copied().unwrap_or(0);
    let b = seen.get("zone-b").copied().unwrap_or(0);
    assert!((770..=830).contains(&a), "{seen:?}");
    assert_eq!(a + b, 1000, "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_from_a_region_goes_to_its_target_region_first() {
    let s = servers(&[("eu", "eu/a", ""), ("ap", "ap/a", "")]).await;
    // Without `failover` both other regions share the lowest priority.
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &config(&s.endpoints, OUTLIER), "us", "a", &[]).await;
    let seen = spread(&m.client(), 100).await;
    assert_eq!((seen.get("eu"), seen.get("ap")), (Some(&50), Some(&50)));

    let policy = format!(
        "{OUTLIER}, loadBalancer: {{localityLbSetting: {{failover: [{{from: us, to: ap}}]}}}}"
    );
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &config(&s.endpoints, &policy), "us", "a", &[]).await;
    let client = m.client();
    assert_eq!(spread(&client, 100).await, only("ap", 100));
    // And on to the other region when the target fails.
    s.failing["ap"].store(true, Ordering::Relaxed);
    until(&client, "eu").await;
    assert_eq!(spread(&client, 100).await, only("eu", 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_priority_prefers_endpoints_with_the_clients_labels() {
    let s = servers(&[
        ("canary", "us/a", "track: canary"),
        ("stable", "us/a", "track: stable"),
    ])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let policy =
        format!("{OUTLIER}, loadBalancer: {{localityLbSetting: {{failoverPriority: [track]}}}}");
    let m = client_mesh(
        &dir,
        &config(&s.endpoints, &policy),
        "us",
        "a",
        &[("track", "canary")],
    )
    .await;
    assert_eq!(spread(&m.client(), 100).await, only("canary", 100));

    // `label=value` prefers that value whatever the client's label.
    let dir = tempfile::tempdir().unwrap();
    let policy = format!(
        "{OUTLIER}, loadBalancer: {{localityLbSetting: {{failoverPriority: [track=stable]}}}}"
    );
    let m = client_mesh(
        &dir,
        &config(&s.endpoints, &policy),
        "us",
        "a",
        &[("track", "canary")],
    )
    .await;
    assert_eq!(spread(&m.client(), 100).await, only("stable", 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_entrys_locality_decides_its_priority() {
    let failing = Arc::new(AtomicBool::new(false));
    let (a, b) = (
        server("zone-a", failing.clone()).await,
        server("zone-b", failing).await,
    );
    let entry = |name: &str, port: u16, locality: &str| {
        format!(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec: {{address: 127.0.0.1, ports: {{http: {port}}}, labels: {{app: cart}}, locality: {locality}}}
---
"
        )
    };
    let yaml = format!(
        "{}{}apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: cart}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cart, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: DISABLE}}, {OUTLIER}}}
",
        entry("cart-a", a, "us/a"),
        entry("cart-b", b, "us/b"),
    );
    // The same endpoints, two clients: each stays in its own zone.
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &yaml, "us", "b", &[]).await;
    assert_eq!(spread(&m.client(), 50).await, only("zone-b", 50));
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &yaml, "us", "a", &[]).await;
    assert_eq!(spread(&m.client(), 50).await, only("zone-a", 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subsets_locality_setting_overrides_the_rules() {
    let s = servers(&[("zone-a", "us/a", "v: one"), ("zone-b", "us/b", "v: one")]).await;
    let yaml = format!(
        "{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: cart, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - match: [{{uri: {{prefix: /one}}}}]
    route: [{{destination: {{host: {HOST}, subset: one}}}}]
  - route: [{{destination: {{host: {HOST}}}}}]
",
        config(
            &s.endpoints,
            "loadBalancer: {localityLbSetting: {distribute: [{from: us/*, to: {us/a: 100}}]}}}
  subsets:
  - name: one
    labels: {v: one}
    trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: us/*, to: {us/b: 100}}]}}"
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let m = client_mesh(&dir, &yaml, "us", "a", &[]).await;
    let client = m.client();
    let mut seen = BTreeMap::<String, usize>::new();
    for _ in 0..50 {
        *seen.entry(call(&client, "/one").await).or_default() += 1;
    }
    assert_eq!(seen, only("zone-b", 50));
    assert_eq!(spread(&client, 50).await, only("zone-a", 50));
}
