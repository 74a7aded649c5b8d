//! Envoy's local rate limit filter (`envoy.filters.http.local_ratelimit`) served by our xDS
//! server as hand-written Envoy resources and applied by `Mesh::client()` on real traffic:
//! a listener-level bucket shared by its routes, per-route buckets, `filter_enabled` and
//! `filter_enforced`, refills, and buckets that survive unrelated config pushes; and the
//! same filter config in a real Envoy 1.40 (`MESH_ENVOY_BIN`) answers the same sequence.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, HeaderValue, HeaderValueOption, Node, RuntimeFractionalPercent,
    SocketAddress, address, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, HttpStatus, TokenBucket};
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use mesh::Mesh;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_core::TrustDomain;
use mesh_core::config::ConfigSnapshot;
use mesh_core::model::{HttpFilterConfig, ListenerKind, RouteSource};
use mesh_route::client::MeshClient;
use mesh_tls::dev_ca::DevCa;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

const TARGET: &str = "svc.test:8080";
const FILTER: &str = "envoy.filters.http.local_ratelimit";

/// What the xDS server serves: the listener's filter config, per-route overrides by path
/// prefix (routes without one use the listener's), and the cluster's connect timeout (to
/// push a change that has nothing to do with rate limits).
#[derive(Clone)]
struct Scenario {
    filter: LocalRateLimit,
    routes: Vec<(&'static str, Option<LocalRateLimit>)>,
    /// Routes whose override is keyed by a filter name the listener does not have.
    stray: Vec<(&'static str, LocalRateLimit)>,
    /// Routes answered without the backend, first: a redirect for prefixes starting
    /// `/redirect`, a direct response otherwise; with their override, if any.
    local: Vec<(&'static str, Option<LocalRateLimit>)>,
    connect_timeout_ms: i64,
    backend_port: u16,
}

struct Serve;
impl Generator<Scenario> for Serve {
    fn node_key(&self, _: &Node) -> String {
        String::new()
    }
    fn generate(&self, _: &Node, s: &Scenario) -> Result<Resources, GenerateError> {
        let mut r = Resources::default();
        r.add(TARGET, listener(s));
        r.add("backend", backend(s));
        Ok(r)
    }
}

fn listener(s: &Scenario) -> Listener {
    let stray = s
        .stray
        .iter()
        .map(|(p, l)| (*p, Some(l.clone()), "envoy.filters.http.not_in_the_chain"));
    let local = s.local.iter().map(|(p, l)| (*p, l.clone(), FILTER));
    let routes = local
        .chain(stray)
        .chain(s.routes.iter().map(|(p, l)| (*p, l.clone(), FILTER)))
        .map(|(prefix, over, key)| Route {
            name: (*prefix).into(),
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix((*prefix).into())),
                ..Default::default()
            }),
            action: Some(action(s, prefix)),
            typed_per_filter_config: over
                .iter()
                .map(|o| (key.to_owned(), pack_any(o.clone())))
                .collect(),
            ..Default::default()
        })
        .collect();
    let hcm = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            RouteConfiguration {
                name: "routes".into(),
                virtual_hosts: vec![VirtualHost {
                    name: "svc".into(),
                    domains: vec!["*".into()],
                    routes,
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![
            HttpFilter {
                name: FILTER.into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    s.filter.clone(),
                ))),
                ..Default::default()
            },
            HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    RouterFilter::default(),
                ))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    Listener {
        name: TARGET.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// What the route for `prefix` does: answer locally (see [`Scenario::local`]) or forward.
fn action(s: &Scenario, prefix: &str) -> route::Action {
    if !s.local.iter().any(|(p, _)| *p == prefix) {
        return route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("backend".into())),
            ..Default::default()
        });
    }
    if prefix.starts_with("/redirect") {
        return route::Action::Redirect(RedirectAction {
            path_rewrite_specifier: Some(redirect_action::PathRewriteSpecifier::PathRedirect(
                "/elsewhere".into(),
            )),
            response_code: redirect_action::RedirectResponseCode::Found as i32,
            ..Default::default()
        });
    }
    route::Action::DirectResponse(DirectResponseAction {
        status: 200,
        body: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString("here".into())),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn backend(s: &Scenario) -> Cluster {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: "127.0.0.1".into(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(
                        s.backend_port.into(),
                    )),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    Cluster {
        name: "backend".into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        connect_timeout: Some(PbDuration {
            seconds: 0,
            nanos: (s.connect_timeout_ms * 1_000_000) as i32,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "backend".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn percent(n: u32) -> Option<RuntimeFractionalPercent> {
    Some(RuntimeFractionalPercent {
        default_value: Some(FractionalPercent {
            numerator: n,
            denominator: 0,
        }),
        runtime_key: "unused".into(),
    })
}

/// A filter config: a bucket of `max` tokens refilled with `max` every `fill`, enabled and
/// enforced for `enabled`/`enforced` percent of requests.
fn limit(max: u32, fill: Duration, enabled: u32, enforced: u32) -> LocalRateLimit {
    LocalRateLimit {
        stat_prefix: "http_local_rate_limiter".into(),
        token_bucket: Some(TokenBucket {
            max_tokens: max,
            tokens_per_fill: Some(UInt32Value { value: max }),
            fill_interval: Some(PbDuration {
                seconds: fill.as_secs() as i64,
                nanos: fill.subsec_nanos() as i32,
            }),
        }),
        filter_enabled: percent(enabled),
        filter_enforced: percent(enforced),
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: "x-local-rate-limit".into(),
                value: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A plaintext HTTP/1.1 backend counting the requests it answers.
async fn backend_server() -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        count.fetch_add(1, Ordering::SeqCst);
                        async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (port, served)
}

struct Fixture {
    mesh: Mesh,
    config: watch::Sender<Arc<Scenario>>,
    served: Arc<AtomicU64>,
}

/// Starts a backend, our xDS server serving `scenario` for it, and a mesh subscribed to
/// [`TARGET`].
async fn start(
    filter: LocalRateLimit,
    routes: Vec<(&'static str, Option<LocalRateLimit>)>,
) -> Fixture {
    let (backend_port, served) = backend_server().await;
    let scenario = Scenario {
        filter,
        routes,
        stray: Vec::new(),
        local: Vec::new(),
        connect_timeout_ms: 500,
        backend_port,
    };
    let (config, rx) = watch::channel(Arc::new(scenario));
    let xds = XdsServer::new(Serve, rx, ServerOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(xds.serve(listener, std::future::pending()));
    let node = IstioNode {
        pod_name: "caller".into(),
        service_account: "caller".into(),
        labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
        ..Default::default()
    };
    let client = XdsClient::new(
        XdsClientConfig {
            node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let mesh = Mesh::builder()
        .dev_ca(
            &ca,
            &"spiffe://cluster.local/ns/default/sa/caller"
                .parse()
                .unwrap(),
        )
        .unwrap()
        .xds_client(client)
        .build()
        .unwrap();
    mesh.resolve(TARGET).await.unwrap();
    Fixture {
        mesh,
        config,
        served,
    }
}

/// Status, `x-envoy-ratelimited`, `x-local-rate-limit` and body of a GET to `path`.
async fn get(mesh: &Mesh, path: &str) -> (u16, Option<String>, Option<String>, String) {
    let req = Request::get(format!("http://{TARGET}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = mesh.client().oneshot(req).await.unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, limited, added) = (
        resp.status().as_u16(),
        header("x-envoy-ratelimited"),
        header("x-local-rate-limit"),
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        limited,
        added,
        String::from_utf8_lossy(&body).into(),
    )
}

async fn statuses(mesh: &Mesh, path: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(mesh, path).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_per_second_answers_five_then_429_at_once_and_refills() {
    let f = start(
        limit(5, Duration::from_secs(1), 100, 100),
        vec![("/", None)],
    )
    .await;
    let start = std::time::Instant::now();
    assert_eq!(statuses(&f.mesh, "/", 5).await, [200; 5]);
    let limited = get(&f.mesh, "/").await;
    assert_eq!(
        limited,
        (429, None, Some("true".into()), "local_rate_limited".into()),
        "refused locally with Envoy's body and added header (Envoy 1.40 sends no x-envoy-ratelimited)"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "all within one fill interval"
    );
    assert_eq!(
        f.served.load(Ordering::SeqCst),
        5,
        "the 6th never left the client"
    );
    // After the fill interval the bucket holds `tokens_per_fill` (5) again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        statuses(&f.mesh, "/", 6).await,
        [200, 200, 200, 200, 200, 429]
    );
    assert_eq!(f.served.load(Ordering::SeqCst), 10);
    // Both refusals are in istio_requests_total as local 429s with Envoy's `RL` flag.
    let mut registry = prometheus_client::registry::Registry::default();
    f.mesh.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let rl: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total")
                && l.contains("response_flags=\"RL\"")
                && l.contains("response_code=\"429\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(rl, 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_bucket_is_shared_by_routes_and_a_route_override_has_its_own() {
    let minute = Duration::from_secs(60);
    let f = start(
        limit(4, minute, 100, 100),
        vec![
            ("/big", Some(limit(10, minute, 100, 100))),
            ("/a", None),
            ("/b", None),
        ],
    )
    .await;
    // /a and /b share the listener's 4 tokens.
    assert_eq!(statuses(&f.mesh, "/a", 2).await, [200; 2]);
    assert_eq!(statuses(&f.mesh, "/b", 3).await, [200, 200, 429]);
    assert_eq!(get(&f.mesh, "/a").await.0, 429);
    // /big has its own 10, untouched by the others.
    let mut want = vec![200; 10];
    want.push(429);
    assert_eq!(statuses(&f.mesh, "/big", 11).await, want);
    assert_eq!(f.served.load(Ordering::SeqCst), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_enabled_zero_or_not_enforced_lets_every_request_pass() {
    let minute = Duration::from_secs(60);
    let f = start(
        limit(1, minute, 0, 100),
        vec![
            ("/unenforced", Some(limit(1, minute, 100, 0))),
            ("/on", Some(limit(1, minute, 100, 100))),
            ("/", None),
        ],
    )
    .await;
    assert_eq!(statuses(&f.mesh, "/", 10).await, [200; 10], "enabled 0%");
    assert_eq!(
        statuses(&f.mesh, "/unenforced", 10).await,
        [200; 10],
        "enforced 0%"
    );
    // The same bucket, enabled and enforced, does limit.
    assert_eq!(statuses(&f.mesh, "/on", 2).await, [200, 429]);
    assert_eq!(f.served.load(Ordering::SeqCst), 21);
}

fn timeout_is(s: &ConfigSnapshot, ms: u64) -> bool {
    s.clusters
        .get("backend")
        .is_some_and(|b| b.connect_timeout == Duration::from_millis(ms))
}

/// Waits until the client routes with a snapshot that satisfies `done`.
async fn applied(client: &MeshClient, done: impl Fn(&ConfigSnapshot) -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done(&client.applied()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the push is applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrelated_config_push_does_not_refill_the_bucket() {
    let minute = Duration::from_secs(60);
    let f = start(limit(3, minute, 100, 100), vec![("/", None)]).await;
    assert_eq!(statuses(&f.mesh, "/", 4).await, [200, 200, 200, 429]);
    let client = f.mesh.mesh_client();
    // A new version of the cluster: the route table and the filter are unchanged.
    f.config
        .send_modify(|s| Arc::make_mut(s).connect_timeout_ms = 700);
    applied(&client, |s| timeout_is(s, 700)).await;
    assert_eq!(get(&f.mesh, "/").await.0, 429, "still empty after the push");
    // A new filter config is a new bucket (as in Envoy), which shows the pushes do land.
    f.config.send_modify(|s| {
        let s = Arc::make_mut(s);
        s.filter = limit(2, minute, 100, 100);
        s.connect_timeout_ms = 800;
    });
    applied(&client, |s| {
        timeout_is(s, 800)
            && s.listeners.get(TARGET).is_some_and(|l| match &l.kind {
                ListenerKind::Client(hcm) => hcm.http_filters.iter().any(|f| {
                    matches!(&f.config, HttpFilterConfig::LocalRateLimit(c)
                        if c.token_bucket.is_some_and(|b| b.max_tokens == 2))
                }),
                _ => false,
            })
    })
    .await;
    assert_eq!(statuses(&f.mesh, "/", 3).await, [200, 200, 429]);
}

/// The same listener for Envoy, as YAML: `limit(3, 60s)` on the listener, `/big` overridden
/// by `limit(5, 60s)` with status 503, every fraction 100%.
fn envoy_yaml(listen: u16, backend: u16) -> String {
    let limit = |max: u32, status: u32| {
        format!(
            r#"{{"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit,
  stat_prefix: http_local_rate_limiter, status: {{code: {status}}},
  token_bucket: {{max_tokens: {max}, tokens_per_fill: {max}, fill_interval: 60s}},
  filter_enabled: {{runtime_key: e, default_value: {{numerator: 100, denominator: HUNDRED}}}},
  filter_enforced: {{runtime_key: f, default_value: {{numerator: 100, denominator: HUNDRED}}}},
  response_headers_to_add: [{{header: {{key: x-local-rate-limit, value: "true"}}}}]}}"#
        )
    };
    format!(
        r#"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - name: rl
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listen}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: rl
          route_config:
            name: routes
            virtual_hosts:
            - name: svc
              domains: ["*"]
              routes:
              - match: {{prefix: /big}}
                route: {{cluster: backend}}
                typed_per_filter_config:
                  {FILTER}: {big}
              - match: {{prefix: /}}
                route: {{cluster: backend}}
          http_filters:
          - name: {FILTER}
            typed_config: {listener}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}}}]}}]
"#,
        big = limit(5, 503),
        listener = limit(3, 429),
    )
}

/// Status, `x-envoy-ratelimited`, `x-local-rate-limit` and body of a GET to Envoy.
async fn envoy_get(port: u16, path: &str) -> (u16, Option<String>, Option<String>, String) {
    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let req = Request::get(format!("http://127.0.0.1:{port}{path}"))
        .header("host", TARGET)
        .body(Empty::new())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (status, limited, added) = (
        resp.status().as_u16(),
        header("x-envoy-ratelimited"),
        header("x-local-rate-limit"),
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        limited,
        added,
        String::from_utf8_lossy(&body).into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_answers_the_same_sequence() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let minute = Duration::from_secs(60);
    let big = LocalRateLimit {
        status: Some(HttpStatus { code: 503 }),
        ..limit(5, minute, 100, 100)
    };
    let f = start(
        limit(3, minute, 100, 100),
        vec![("/big", Some(big)), ("/", None)],
    )
    .await;
    let (envoy_backend, envoy_served) = backend_server().await;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let _envoy = mesh_test_support::EnvoyProcess::start_live(
        &bin,
        dir.path(),
        &envoy_yaml(listen, envoy_backend),
    );
    let sequence = [
        "/a", "/big", "/a", "/b", "/big", "/a", "/big", "/big", "/big", "/big",
    ];
    let mut ours = Vec::new();
    let mut envoys = Vec::new();
    for path in sequence {
        ours.push(get(&f.mesh, path).await);
        envoys.push(envoy_get(listen, path).await);
    }
    for ((path, o), e) in sequence.iter().zip(&ours).zip(&envoys) {
        assert_eq!(o, e, "{path}: ours vs Envoy's");
    }
    let statuses: Vec<u16> = ours.iter().map(|r| r.0).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 200, 200, 200, 503]);
    assert_eq!(
        f.served.load(Ordering::SeqCst),
        envoy_served.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_bucket() {
    let f = start(
        limit(5, Duration::from_secs(60), 100, 100),
        vec![("/", None)],
    )
    .await;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mesh = f.mesh.clone();
        set.spawn(async move {
            let req = Request::get(format!("http://{TARGET}/"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            mesh.client().oneshot(req).await.unwrap().status().as_u16()
        });
    }
    let mut statuses = set.join_all().await;
    statuses.sort_unstable();
    let mut want = vec![200; 5];
    want.extend([429; 15]);
    assert_eq!(statuses, want);
    assert_eq!(f.served.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_for_a_filter_not_in_the_chain_does_nothing() {
    let minute = Duration::from_secs(60);
    let f = start(limit(2, minute, 0, 100), vec![("/", None)]).await;
    // Served as a new version with a route whose override names another filter: Envoy
    // looks per-route configs up only for the filters in the chain.
    f.config.send_modify(|s| {
        Arc::make_mut(s)
            .stray
            .push(("/stray", limit(1, minute, 100, 100)))
    });
    let client = f.mesh.mesh_client();
    applied(&client, |s| {
        s.listeners.get(TARGET).is_some_and(|l| match &l.kind {
            ListenerKind::Client(hcm) => matches!(&hcm.route_source,
                RouteSource::Inline(rc) if rc.virtual_hosts[0].routes.len() == 2),
            _ => false,
        })
    })
    .await;
    assert_eq!(statuses(&f.mesh, "/stray", 5).await, [200; 5]);
}

/// Envoy runs the local rate limit filter before its router answers, so redirect and
/// direct-response routes take tokens too: the listener's bucket, shared with forwarded
/// requests, or a route override's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_direct_response_routes_are_limited_too() {
    let minute = Duration::from_secs(60);
    let f = start(limit(3, minute, 100, 100), vec![("/", None)]).await;
    f.config.send_modify(|s| {
        Arc::make_mut(s).local = vec![
            ("/redirect", None),
            ("/direct", None),
            ("/own", Some(limit(1, minute, 100, 100))),
        ]
    });
    let client = f.mesh.mesh_client();
    applied(&client, |s| {
        s.listeners.get(TARGET).is_some_and(|l| match &l.kind {
            ListenerKind::Client(hcm) => matches!(&hcm.route_source,
                RouteSource::Inline(rc) if rc.virtual_hosts[0].routes.len() == 4),
            _ => false,
        })
    })
    .await;
    let (status, _, _, body) = get(&f.mesh, "/direct").await;
    assert_eq!((status, body.as_str()), (200, "here"));
    assert_eq!(statuses(&f.mesh, "/redirect", 3).await, [302, 302, 429]);
    assert_eq!(get(&f.mesh, "/direct").await.0, 429);
    assert_eq!(get(&f.mesh, "/").await.0, 429);
    assert_eq!(statuses(&f.mesh, "/own", 2).await, [200, 429]);
    assert_eq!(f.served.load(Ordering::SeqCst), 0);
}
