//! Issue #6's chaos, budget and overload runs through the composed client
//! (`Mesh::client()`: Istio metrics -> MeshClient -> fault, timeout, retry, circuit
//! breaker, outlier detection -> LB -> pool), configured the Istio way (ServiceEntry,
//! WorkloadEntries, DestinationRule, VirtualService) by the embedded control plane, against
//! real HTTP servers on 127.0.0.1.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh::{ClusterResilience, Mesh, ResilienceStack};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use tokio::net::TcpListener;
use tower::ServiceExt;

const HOST: &str = "chaos.default.svc.cluster.local";
const CLUSTER: &str = "outbound|8080||chaos.default.svc.cluster.local";

#[derive(Clone, Copy)]
enum Behaviour {
    /// 503 every other request.
    HalfUnavailable,
    /// Accepts and closes every connection before any response.
    Reset,
    /// Healthy but slow (5 ms).
    Slow,
    /// Always 503.
    AlwaysUnavailable,
    /// Healthy, 200 ms per request, one request per connection.
    VerySlow,
    /// Always 500 (a 5xx that is not a gateway error).
    AlwaysInternalError,
}

async fn serve(b: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            if let Behaviour::Reset = b {
                drop(stream);
                continue;
            }
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let status = match b {
                                Behaviour::HalfUnavailable if n.is_multiple_of(2) => 503,
                                Behaviour::AlwaysUnavailable => 503,
                                Behaviour::AlwaysInternalError => 500,
                                Behaviour::Slow => {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                    200
                                }
                                Behaviour::VerySlow => {
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    200
                                }
                                _ => 200,
                            };
                            let mut r = Response::new(Full::new(Bytes::from_static(b"hello")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                let mut builder = hyper::server::conn::http1::Builder::new();
                // The overload server closes each connection after its response, so that
                // connection tasks end and task counts return to their baseline.
                builder.keep_alive(!matches!(b, Behaviour::VerySlow));
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

fn workloads(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: chaos-{i}, namespace: default}}\n\
spec:\n  address: 127.0.0.1\n  ports: {{http: {}}}\n  labels: {{app: chaos}}\n  serviceAccount: chaos\n",
                a.port()
            )
        })
        .collect()
}

/// ServiceEntry + DestinationRule (`traffic_policy` YAML) + VirtualService (`retries`).
fn services(traffic_policy: &str, retries: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: chaos, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: chaos}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: chaos, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {traffic_policy}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: chaos, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route: [{{destination: {{host: {HOST}}}}}]
    retries: {retries}
"#
    )
}

struct Fixture {
    _cp: ControlPlane,
    _dir: tempfile::TempDir,
    mesh: Mesh,
    clusters: Arc<Mutex<HashMap<String, ClusterResilience>>>,
}

impl Fixture {
    /// The mesh with a ResilienceStack whose clusters the test reads.
    async fn start(services: &str, addrs: &[SocketAddr]) -> Self {
        Self::build(services, addrs, true).await
    }

    /// The mesh with the facade's default stack (feeding `Mesh::upstream_metrics`).
    async fn start_default(services: &str, addrs: &[SocketAddr]) -> Self {
        Self::build(services, addrs, false).await
    }

    async fn build(services: &str, addrs: &[SocketAddr], observe: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.yaml"), services).unwrap();
        std::fs::write(dir.path().join("workloads.yaml"), workloads(addrs)).unwrap();
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: dir.path().into(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: None,
            debug_addr: None,
            watch_interval: Duration::from_millis(100),
            ..Default::default()
        })
        .await
        .unwrap();
        let node = IstioNode {
            pod_name: "caller".into(),
            service_account: "caller".into(),
            labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
            ..Default::default()
        };
        let uri = format!("http://{}", cp.xds_addr());
        let bootstrap = Bootstrap::istio_proxyless(node, &uri);
        let xds = XdsClient::new(
            XdsClientConfig {
                node: bootstrap.node_proto(),
                ..Default::default()
            },
            channel::insecure(&uri).unwrap(),
        );
        let clusters = Arc::new(Mutex::new(HashMap::new()));
        let seen = clusters.clone();
        let stack = ResilienceStack::new().observe(move |name, state| {
            seen.lock().unwrap().insert(name.to_owned(), state);
        });
        let builder = Mesh::builder()
            .dev_ca(
                cp.ca(),
                &"spiffe://cluster.local/ns/default/sa/caller"
                    .parse()
                    .unwrap(),
            )
            .unwrap()
            .xds_client(xds);
        let builder = if observe {
            builder.cluster_stack(stack)
        } else {
            builder
        };
        let mesh = builder.build().unwrap();
        mesh.resolve(&format!("{HOST}:8080")).await.unwrap();
        Self {
            _cp: cp,
            _dir: dir,
            mesh,
            clusters,
        }
    }

    fn cluster(&self) -> ClusterResilience {
        self.clusters.lock().unwrap()[CLUSTER].clone()
    }
}

fn request() -> Request<Full<Bytes>> {
    Request::post(format!("http://{HOST}:8080/"))
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_outlier_detection_keep_requests_succeeding() {
    let half = serve(Behaviour::HalfUnavailable).await;
    let reset = serve(Behaviour::Reset).await;
    let slow = serve(Behaviour::Slow).await;
    let f = Fixture::start(
        &services(
            "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {http: {maxRetries: 1000}}, \
             outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, \
             maxEjectionPercent: 100, minHealthPercent: 0}}",
            "{attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,reset,connect-failure\"}",
        ),
        &[half, reset, slow],
    )
    .await;
    let client = f.mesh.client();
    let ok = Arc::new(AtomicU64::new(0));
    let total = 5_000u64;
    let workers = 50;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / workers {
                if let Ok(resp) = client.clone().oneshot(request()).await
                    && resp.status() == 200
                    && resp.into_body().collect().await.is_ok()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ok = ok.load(Ordering::Relaxed);
    let od = f.cluster().outlier.expect("outlier detection configured");
    eprintln!(
        "chaos: {ok}/{total} succeeded; endpoints: {:#?}",
        od.endpoints()
    );
    assert!(ok * 1000 >= total * 999, "{ok} of {total} succeeded");
    assert!(
        od.is_ejected(&half.to_string()),
        "the 503 endpoint is ejected"
    );
    assert!(
        od.is_ejected(&reset.to_string()),
        "the resetting endpoint is ejected"
    );
    assert!(!od.is_ejected(&slow.to_string()), "the healthy one stays");
    // The ejections reached the balancer the client picks from: everything goes to `slow`.
    for _ in 0..20 {
        let resp = client.clone().oneshot(request()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let up = resp.extensions().get::<mesh::Upstream>().unwrap();
        assert_eq!(&*up.endpoint, slow.to_string());
    }
}

/// The value of the series `series` (name and labels) in the exposition `text`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_metrics_show_membership_health_ejections_and_retries() {
    let bad = serve(Behaviour::AlwaysUnavailable).await;
    let good = serve(Behaviour::Slow).await;
    let f = Fixture::start_default(
        &services(
            "{loadBalancer: {simple: ROUND_ROBIN}, connectionPool: {http: {maxRetries: 1000}}, \
             outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 60s, \
             maxEjectionPercent: 100, minHealthPercent: 0}}",
            "{attempts: 3, retryOn: 5xx}",
        ),
        &[bad, good],
    )
    .await;
    let client = f.mesh.client();
    for _ in 0..30 {
        let resp = client.clone().oneshot(request()).await.unwrap();
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
    }

    let mut registry = prometheus_client::registry::Registry::default();
    f.mesh.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let c = format!("{{cluster_name=\"{CLUSTER}\"}}");
    assert_eq!(
        sample(&text, &format!("mesh_cluster_membership_total{c}")),
        2.0
    );
    // The 503 endpoint is ejected: one endpoint takes new requests.
    assert_eq!(
        sample(&text, &format!("mesh_cluster_membership_healthy{c}")),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("mesh_cluster_outlier_detection_ejections_active{c}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("mesh_cluster_outlier_detection_ejections_enforced_total{c}")
        ),
        1.0
    );
    let retries = sample(&text, &format!("mesh_cluster_upstream_rq_retry_total{c}"));
    assert!(retries >= 1.0, "{retries} retries");
    assert_eq!(f.mesh.upstream_metrics().retries_total() as f64, retries);
    assert!(
        text.contains("istio_requests_total{reporter=\"source\""),
        "{text}"
    );
    // The pool's counters: both endpoints dialled once each (requests one at a time
    // reuse the connections), no failed attempt.
    assert_eq!(
        sample(&text, &format!("mesh_cluster_pool_endpoints{c}")),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("mesh_cluster_upstream_cx_total{c}")),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("mesh_cluster_upstream_cx_active{c}")),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("mesh_cluster_upstream_cx_connect_fail_total{c}")
        ),
        0.0
    );

    let json = f.mesh.upstream_metrics().clusters_json();
    let cluster = json["cluster_statuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == CLUSTER)
        .unwrap_or_else(|| panic!("{CLUSTER} missing: {json}"));
    let host = |addr: SocketAddr| {
        cluster["host_statuses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"]["socket_address"]["port_value"] == addr.port())
            .unwrap_or_else(|| panic!("{addr} missing: {cluster}"))
            .clone()
    };
    assert_eq!(host(bad)["health_status"]["failed_outlier_check"], true);
    assert_eq!(host(good)["health_status"]["failed_outlier_check"], false);
    assert_eq!(host(good)["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_retries_when_everything_fails() {
    let addrs = [
        serve(Behaviour::AlwaysUnavailable).await,
        serve(Behaviour::AlwaysUnavailable).await,
        serve(Behaviour::AlwaysUnavailable).await,
    ];
    let f = Fixture::start(
        &services(
            "{connectionPool: {http: {maxRetries: 3}}}",
            "{attempts: 5, retryOn: 5xx}",
        ),
        &addrs,
    )
    .await;
    let client = f.mesh.client();
    // The cluster's stack is built by its first request.
    let resp = client.clone().oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 503);
    let budget = f
        .cluster()
        .breaker
        .retry_budget(mesh::resilience::policy::Priority::Default);
    let max_seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (budget, max_seen, done) = (budget.clone(), max_seen.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                max_seen.fetch_max(budget.active_retries(), Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        })
    };
    let total = 1_000u64;
    let workers = 50u64;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / workers {
                let resp = client.clone().oneshot(request()).await.unwrap();
                assert_eq!(resp.status(), 503);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    let retries = budget.retries_total();
    let max = max_seen.load(Ordering::Relaxed);
    eprintln!(
        "budget: {total} requests, {retries} retries, {} refused, max {max} in flight",
        budget.overflow_total()
    );
    assert!(max <= 3, "{max} retries in flight, max_retries is 3");
    assert!(budget.overflow_total() > 0, "the budget refused retries");
    // Without the budget every request would make 5 retries.
    assert!(
        retries < total * 5 / 2,
        "{retries} retries for {total} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_fast_503s_without_leaking_tasks() {
    let addr = serve(Behaviour::VerySlow).await;
    let f = Fixture::start(
        &services(
            "{connectionPool: {http: {http2MaxRequests: 10, maxRetries: 1000}}}",
            "{attempts: 2, retryOn: 5xx}",
        ),
        &[addr],
    )
    .await;
    let client = f.mesh.client();
    // Warm up (cluster state, metrics series), then let the connection close.
    let resp = client.clone().oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();

    let burst = 1_000;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..burst {
        let client = client.clone();
        set.spawn(async move {
            let start = tokio::time::Instant::now();
            let resp = client.oneshot(request()).await.unwrap();
            let overloaded = resp.headers().contains_key("x-envoy-overloaded");
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            (status, overloaded, start.elapsed())
        });
    }
    let (mut ok, mut fast_503) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (status, overloaded, took) = r.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                assert!(overloaded, "a 503 from the breaker is flagged");
                // The slow server takes 200 ms; an overflow never waits for it.
                assert!(took < Duration::from_millis(150), "overflow took {took:?}");
                fast_503 += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    let stats = f
        .cluster()
        .breaker
        .stats(mesh::resilience::policy::Priority::Default);
    eprintln!("overload: {ok} ok, {fast_503} fast 503s; breaker {stats:?}");
    assert!(ok >= 10, "{ok} requests got through");
    assert!(fast_503 >= burst / 2, "{fast_503} overflowed");
    assert_eq!(stats.requests, 0, "every slot was released");
    assert_eq!(stats.retries, 0);
    // Closed connections end their tasks; nothing else may be left behind.
    let mut tasks_after = metrics.num_alive_tasks();
    for _ in 0..50 {
        if tasks_after <= tasks_before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        tasks_after = metrics.num_alive_tasks();
    }
    assert_eq!(tasks_after, tasks_before, "no task leak");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_service_fault_abort_is_injected() {
    let addr = serve(Behaviour::Slow).await;
    let f = Fixture::start(
        &services(
            "{loadBalancer: {simple: ROUND_ROBIN}}",
            "{attempts: 0}\n    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}",
        ),
        &[addr],
    )
    .await;
    let client = f.mesh.client();
    for _ in 0..5 {
        let resp = client.clone().oneshot(request()).await.unwrap();
        assert_eq!(resp.status(), 418, "the route's fault aborts every request");
        assert!(resp.extensions().get::<mesh::Upstream>().is_some());
    }
}

/// `outlierDetection.consecutiveGatewayErrors` counts 502, 503 and 504 only: with the 5xx
/// rule off, the endpoint answering 503 is ejected after two in a row, the one answering
/// 500 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_gateway_errors_eject_on_gateway_errors_only() {
    let gateway = serve(Behaviour::AlwaysUnavailable).await;
    let internal = serve(Behaviour::AlwaysInternalError).await;
    let good = serve(Behaviour::Slow).await;
    let f = Fixture::start(
        &services(
            "{loadBalancer: {simple: ROUND_ROBIN}, \
             outlierDetection: {consecutiveGatewayErrors: 2, consecutive5xxErrors: 0, \
             interval: 1s, baseEjectionTime: 60s, maxEjectionPercent: 100, minHealthPercent: 0}}",
            "{attempts: 0}",
        ),
        &[gateway, internal, good],
    )
    .await;
    let client = f.mesh.client();
    for _ in 0..30 {
        let _ = client.clone().oneshot(request()).await;
    }
    let od = f.cluster().outlier.expect("outlier detection configured");
    assert!(od.is_ejected(&gateway.to_string()), "{:#?}", od.endpoints());
    assert!(
        !od.is_ejected(&internal.to_string()),
        "{:#?}",
        od.endpoints()
    );
    assert!(!od.is_ejected(&good.to_string()), "{:#?}", od.endpoints());
}
