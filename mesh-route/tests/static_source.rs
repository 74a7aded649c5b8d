//! `MeshClient` configured by hand-made snapshots through a `StaticSource`: no control plane,
//! no gRPC. Real local servers (plaintext hyper, or mTLS with identities from a dev CA)
//! answer with their name and the client connection's port, so each test sees where a
//! request went and on which connection.

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use mesh_core::config::{ConfigSnapshot, StaticSource};
use mesh_core::extensions::ConnectionAddrs;
use mesh_core::model::*;
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::IdentityStore;
use mesh_tls::config::ServerSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::MeshAcceptor;
use tower::ServiceExt;

const LISTENER: &str = "web.test:80";

/// A local server answering `<name> <client port>`.
struct Backend {
    addr: SocketAddr,
    _task: tokio::task::JoinHandle<()>,
}

fn answer(
    name: &'static str,
) -> impl Fn(
    http::Request<hyper::body::Incoming>,
) -> std::future::Ready<Result<http::Response<Full<Bytes>>, Infallible>>
+ Clone {
    move |req| {
        let port = req
            .extensions()
            .get::<ConnectionAddrs>()
            .map_or(0, |a| a.remote.port());
        let body = Bytes::from(format!("{name} {port}"));
        std::future::ready(Ok(http::Response::new(Full::new(body))))
    }
}

impl Backend {
    /// Plaintext HTTP/1.1.
    async fn plain(name: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, remote)) = listener.accept().await else {
                    continue;
                };
                let addrs = ConnectionAddrs {
                    remote,
                    local: addr,
                };
                let answer = answer(name);
                let svc = hyper::service::service_fn(move |mut req: http::Request<_>| {
                    req.extensions_mut().insert(addrs);
                    answer(req)
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Self { addr, _task: task }
    }

    /// mTLS as `identity`.
    async fn mtls(name: &'static str, identity: IdentityStore) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = MeshAcceptor::new(identity, ServerSettings::default());
        let svc = tower::service_fn(answer(name));
        let task = tokio::spawn(async move {
            let _ = mesh_tls::server::serve(listener, acceptor, svc).await;
        });
        Self { addr, _task: task }
    }
}

fn identity(ca: &DevCa, sa: &str) -> IdentityStore {
    let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap()
}

fn route(
    name: &str,
    prefix: &str,
    headers: Vec<HeaderMatcher>,
    cluster: ClusterSpecifier,
) -> Route {
    Route {
        name: name.into(),
        route_match: RouteMatch {
            path: PathMatch::Prefix(prefix.into()),
            headers,
            ..Default::default()
        },
        action: RouteAction::Forward(Box::new(ForwardAction {
            cluster,
            ..Default::default()
        })),
        headers: HeaderOps::default(),
        filter_overrides: Default::default(),
    }
}

fn cluster(name: &str, lb: LbPolicy, expected_server: Option<&str>) -> Cluster {
    Cluster {
        name: name.into(),
        discovery: Discovery::Eds { service_name: None },
        lb_policy: lb,
        common_lb: CommonLbConfig::default(),
        connect_timeout: Duration::from_secs(2),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: expected_server.map(|sa| UpstreamTls {
            validation: CertificateValidation {
                ca_certificate: Some(CertificateProviderInstance::default()),
                san_matchers: vec![SanMatcher {
                    san_type: SanType::Uri,
                    matcher: StringMatcher::Exact {
                        value: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
                        ignore_case: false,
                    },
                }],
            },
            identity_certificate: Some(CertificateProviderInstance::default()),
            ..Default::default()
        }),
        http_protocol: HttpProtocolOptions::default(),
    }
}

fn endpoints(cluster: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        localities: vec![LocalityEndpoints {
            locality: Arc::new(Locality::default()),
            priority: 0,
            load_balancing_weight: None,
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    address: EndpointAddress::Socket(*a),
                    health: HealthStatus::Healthy,
                    weight: 1,
                    hostname: None,
                    tls_mode: TlsMode::default(),
                })
                .collect(),
        }],
        ..Default::default()
    }
}

/// A snapshot with the client listener `web.test:80`, its inline routes, and the clusters
/// with their endpoints.
fn snapshot(routes: Vec<Route>, clusters: Vec<(Cluster, Vec<SocketAddr>)>) -> ConfigSnapshot {
    let routes = RouteConfig {
        name: "web".into(),
        virtual_hosts: vec![VirtualHost {
            name: "web".into(),
            domains: vec!["web.test".into(), LISTENER.into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    };
    let mut s = ConfigSnapshot::default();
    s.insert_listener(Listener {
        name: LISTENER.into(),
        kind: ListenerKind::Client(HttpConnectionManager {
            route_source: RouteSource::Inline(Arc::new(routes)),
            http_filters: vec![],
            max_stream_duration: None,
            idle_timeout: None,
            xff_num_trusted_hops: 0,
            path_normalization: Default::default(),
        }),
    });
    for (c, addrs) in clusters {
        s.insert_endpoints(endpoints(&c.name, &addrs));
        s.insert_cluster(c);
    }
    s
}

/// GET `path` with `headers`: the status and body.
async fn get(client: &MeshClient, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = http::Request::get(format!("http://{LISTENER}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .clone()
        .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn name(body: &str) -> &str {
    body.split(' ').next().unwrap_or("")
}

fn user_is(value: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: "x-user".into(),
        rule: HeaderMatchRule::String(StringMatcher::Exact {
            value: value.into(),
            ignore_case: false,
        }),
        invert_match: false,
        treat_missing_header_as_empty: false,
    }
}

fn weighted(split: &[(&str, u32)]) -> ClusterSpecifier {
    ClusterSpecifier::Weighted(
        split
            .iter()
            .map(|(n, w)| WeightedCluster {
                name: (*n).into(),
                weight: *w,
                headers: HeaderOps::default(),
                filter_overrides: Default::default(),
            })
            .collect(),
    )
}

#[tokio::test]
async fn routes_by_header_and_splits_by_weight() {
    let (v1, v2) = (Backend::plain("v1").await, Backend::plain("v2").await);
    let source = StaticSource::new(snapshot(
        vec![
            route(
                "jason",
                "/",
                vec![user_is("jason")],
                ClusterSpecifier::Cluster("v2".into()),
            ),
            route(
                "split",
                "/split",
                vec![],
                weighted(&[("v1", 75), ("v2", 25)]),
            ),
            route(
                "default",
                "/",
                vec![],
                ClusterSpecifier::Cluster("v1".into()),
            ),
        ],
        vec![
            (cluster("v1", LbPolicy::RoundRobin, None), vec![v1.addr]),
            (cluster("v2", LbPolicy::RoundRobin, None), vec![v2.addr]),
        ],
    ));
    let client = MeshClient::new(source, IdentityStore::new(), MeshClientConfig::default());
    let (code, body) = get(&client, "/reviews", &[]).await;
    assert_eq!((code, name(&body)), (200, "v1"));
    let (code, body) = get(&client, "/reviews", &[("x-user", "jason")]).await;
    assert_eq!((code, name(&body)), (200, "v2"));
    let mut v2_share = 0;
    for _ in 0..800 {
        let (code, body) = get(&client, "/split", &[]).await;
        assert_eq!(code, 200);
        v2_share += usize::from(name(&body) == "v2");
    }
    assert!(
        (150..250).contains(&v2_share),
        "v2 got {v2_share} of 800, expected ~200"
    );
    // A path no route matches: Envoy's 404.
    let client_without_default = MeshClient::new(
        StaticSource::new(snapshot(
            vec![route(
                "only",
                "/only",
                vec![],
                ClusterSpecifier::Cluster("v1".into()),
            )],
            vec![(cluster("v1", LbPolicy::RoundRobin, None), vec![v1.addr])],
        )),
        IdentityStore::new(),
        MeshClientConfig::default(),
    );
    assert_eq!(get(&client_without_default, "/other", &[]).await.0, 404);
}

#[tokio::test]
async fn round_robin_spreads_evenly_over_endpoints() {
    let backends = [
        Backend::plain("a").await,
        Backend::plain("b").await,
        Backend::plain("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let source = StaticSource::new(snapshot(
        vec![route(
            "all",
            "/",
            vec![],
            ClusterSpecifier::Cluster("web".into()),
        )],
        vec![(cluster("web", LbPolicy::RoundRobin, None), addrs)],
    ));
    let client = MeshClient::new(source, IdentityStore::new(), MeshClientConfig::default());
    let mut counts = BTreeMap::new();
    for _ in 0..30 {
        let (code, body) = get(&client, "/", &[]).await;
        assert_eq!(code, 200);
        *counts.entry(name(&body).to_owned()).or_insert(0) += 1;
    }
    assert_eq!(
        counts,
        BTreeMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );
}

#[tokio::test]
async fn mtls_reuses_one_connection_and_checks_the_server_identity() {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let reviews = Backend::mtls("reviews", identity(&ca, "reviews")).await;
    let source = StaticSource::new(snapshot(
        vec![
            route(
                "wrong",
                "/wrong",
                vec![],
                ClusterSpecifier::Cluster("expects-ratings".into()),
            ),
            route(
                "all",
                "/",
                vec![],
                ClusterSpecifier::Cluster("reviews".into()),
            ),
        ],
        vec![
            (
                cluster("reviews", LbPolicy::RoundRobin, Some("reviews")),
                vec![reviews.addr],
            ),
            // The same server, but the cluster expects another identity.
            (
                cluster("expects-ratings", LbPolicy::RoundRobin, Some("ratings")),
                vec![reviews.addr],
            ),
        ],
    ));
    let client = MeshClient::new(
        source,
        identity(&ca, "productpage"),
        MeshClientConfig::default(),
    );
    let mut ports = HashSet::new();
    for _ in 0..20 {
        let (code, body) = get(&client, "/", &[]).await;
        assert_eq!((code, name(&body)), (200, "reviews"), "{body}");
        ports.insert(body.split(' ').nth(1).unwrap().to_owned());
    }
    assert_eq!(
        ports.len(),
        1,
        "sequential requests share one pooled connection: {ports:?}"
    );
    let (code, body) = get(&client, "/wrong", &[]).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("connection failure"), "{body}");
    assert!(
        body.contains("ratings"),
        "the error names the expected identity: {body}"
    );
}

/// Forwards each TCP connection to `to`, counting them.
async fn counting_proxy(to: SocketAddr) -> (SocketAddr, Arc<AtomicUsize>, Backend) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(to).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tcp, &mut up).await;
            });
        }
    });
    (addr, accepted, Backend { addr, _task: task })
}

/// An endpoint that an EDS update adds is connected (mTLS handshake done) before the
/// client routes with the update, so no request waits for that handshake; the connection
/// to the endpoint the update keeps stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_endpoint_is_connected_before_requests_reach_it() {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let a = Backend::mtls("a", identity(&ca, "web")).await;
    let b = Backend::mtls("b", identity(&ca, "web")).await;
    let (a_addr, a_conns, _a) = counting_proxy(a.addr).await;
    let (b_addr, b_conns, _b) = counting_proxy(b.addr).await;
    let mut web = cluster("web", LbPolicy::RoundRobin, Some("web"));
    web.http_protocol.protocol = UpstreamProtocol::Http2;
    let all = route("all", "/", vec![], ClusterSpecifier::Cluster("web".into()));
    let source = StaticSource::new(snapshot(vec![all], vec![(web, vec![a_addr])]));
    let client = MeshClient::new(
        source.clone(),
        identity(&ca, "productpage"),
        MeshClientConfig::default(),
    );
    let (code, body) = get(&client, "/", &[]).await;
    assert_eq!((code, name(&body)), (200, "a"), "{body}");

    source.update(|s| {
        s.insert_endpoints(endpoints("web", &[a_addr, b_addr]));
    });
    client.caught_up().await;
    assert_eq!(
        b_conns.load(Ordering::SeqCst),
        1,
        "the added endpoint is connected by the time the client routes with the update"
    );
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let (code, body) = get(&client, "/", &[]).await;
        assert_eq!(code, 200, "{body}");
        seen.insert(name(&body).to_owned());
    }
    assert_eq!(seen, HashSet::from(["a".to_owned(), "b".to_owned()]));
    assert_eq!(
        (
            a_conns.load(Ordering::SeqCst),
            b_conns.load(Ordering::SeqCst)
        ),
        (1, 1),
        "requests went over the kept and the warmed connections, none opened another"
    );
}

#[tokio::test]
async fn endpoint_change_under_traffic_loses_no_request() {
    let (old, new) = (Backend::plain("old").await, Backend::plain("new").await);
    let source = StaticSource::new(snapshot(
        vec![route(
            "all",
            "/",
            vec![],
            ClusterSpecifier::Cluster("web".into()),
        )],
        vec![(cluster("web", LbPolicy::RoundRobin, None), vec![old.addr])],
    ));
    let client = MeshClient::new(
        source.clone(),
        IdentityStore::new(),
        MeshClientConfig::default(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, seen_new) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, stop, sent, seen_new) =
            (client.clone(), stop.clone(), sent.clone(), seen_new.clone());
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (code, body) = get(&client, "/", &[]).await;
                assert_eq!(code, 200, "{body}");
                sent.fetch_add(1, Ordering::Relaxed);
                if name(&body) == "new" {
                    seen_new.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen_new.load(Ordering::Relaxed), 0);
    source.update(|s| {
        s.insert_endpoints(endpoints("web", &[new.addr]));
    });
    client.caught_up().await;
    let at_switch = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("no request failed during the change");
    }
    // Once caught up, only in-flight requests may still have gone to the old endpoint.
    let (code, body) = get(&client, "/", &[]).await;
    assert_eq!((code, name(&body)), (200, "new"));
    assert!(
        sent.load(Ordering::Relaxed) > at_switch,
        "traffic went on after the change"
    );
    assert!(seen_new.load(Ordering::Relaxed) > 0);
}

#[tokio::test]
async fn an_aggregate_cluster_uses_its_first_healthy_child() {
    let (primary, fallback) = (
        Backend::plain("primary").await,
        Backend::plain("fallback").await,
    );
    let mut aggregate = cluster("agg", LbPolicy::RoundRobin, None);
    aggregate.discovery = Discovery::Aggregate(vec!["primary".into(), "fallback".into()]);
    let mut s = snapshot(
        vec![route(
            "all",
            "/",
            vec![],
            ClusterSpecifier::Cluster("agg".into()),
        )],
        vec![
            (
                cluster("primary", LbPolicy::RoundRobin, None),
                vec![primary.addr],
            ),
            (
                cluster("fallback", LbPolicy::RoundRobin, None),
                vec![fallback.addr],
            ),
        ],
    );
    s.insert_cluster(aggregate);
    let unhealthy = |s: &mut ConfigSnapshot| {
        let mut cla = endpoints("primary", &[primary.addr]);
        cla.localities[0].endpoints[0].health = HealthStatus::Unhealthy;
        s.insert_endpoints(cla);
    };
    unhealthy(&mut s);
    let source = StaticSource::new(s);
    let client = MeshClient::new(
        source.clone(),
        IdentityStore::new(),
        MeshClientConfig::default(),
    );
    // The first child has no healthy endpoint: the second serves.
    for _ in 0..5 {
        assert_eq!(name(&get(&client, "/", &[]).await.1), "fallback");
    }
    // The first child recovers and takes the traffic back.
    source.update(|s| {
        s.insert_endpoints(endpoints("primary", &[primary.addr]));
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while name(&get(&client, "/", &[]).await.1) != "primary" {
        assert!(
            std::time::Instant::now() < deadline,
            "never went back to primary"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_listener_level_fault_filter_acts_unless_a_route_overrides_it() {
    use mesh_route::client::ResilienceStack;
    let backend = Backend::plain("app").await;
    let plain = route(
        "plain",
        "/",
        vec![],
        ClusterSpecifier::Cluster("app".into()),
    );
    let mut exempt = route(
        "exempt",
        "/health",
        vec![],
        ClusterSpecifier::Cluster("app".into()),
    );
    exempt.filter_overrides = [(
        "envoy.filters.http.fault".to_owned(),
        FilterOverride::Disabled,
    )]
    .into();
    let mut s = snapshot(
        vec![exempt, plain],
        vec![(
            cluster("app", LbPolicy::RoundRobin, None),
            vec![backend.addr],
        )],
    );
    // The connection manager's own fault filter: abort every request with 418.
    let fault = FaultConfig {
        abort: Some(FaultAbort {
            kind: AbortKind::Http(418),
            percentage: Fraction {
                numerator: 100,
                denominator: 100,
            },
        }),
        ..Default::default()
    };
    let Some(ListenerKind::Client(hcm)) = s.listeners.get(LISTENER).map(|l| l.kind.clone()) else {
        panic!("no client listener")
    };
    let mut hcm = hcm;
    hcm.http_filters = vec![
        HttpFilter {
            name: "envoy.filters.http.fault".into(),
            config: HttpFilterConfig::Fault(fault),
        },
        HttpFilter {
            name: "envoy.filters.http.router".into(),
            config: HttpFilterConfig::Router(Default::default()),
        },
    ];
    s.insert_listener(Listener {
        name: LISTENER.into(),
        kind: ListenerKind::Client(hcm),
    });
    let client = MeshClient::with_stack(
        StaticSource::new(s),
        IdentityStore::new(),
        MeshClientConfig::default(),
        ResilienceStack::new(),
    );
    assert_eq!(get(&client, "/", &[]).await.0, 418);
    assert_eq!(get(&client, "/health", &[]).await.0, 200);
}

#[tokio::test]
async fn the_connection_managers_max_stream_duration_bounds_routes_that_set_none() {
    use mesh_route::client::ResilienceStack;
    // A server that answers after 3 s.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(|_req| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("late"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    let mut s = snapshot(
        vec![route(
            "all",
            "/",
            vec![],
            ClusterSpecifier::Cluster("slow".into()),
        )],
        vec![(cluster("slow", LbPolicy::RoundRobin, None), vec![addr])],
    );
    let Some(ListenerKind::Client(mut hcm)) = s.listeners.get(LISTENER).map(|l| l.kind.clone())
    else {
        panic!("no client listener")
    };
    hcm.max_stream_duration = Some(Duration::from_millis(200));
    s.insert_listener(Listener {
        name: LISTENER.into(),
        kind: ListenerKind::Client(hcm),
    });
    let client = MeshClient::with_stack(
        StaticSource::new(s),
        IdentityStore::new(),
        MeshClientConfig::default(),
        ResilienceStack::new(),
    );
    let started = std::time::Instant::now();
    let (status, _) = get(&client, "/", &[]).await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// Envoy's router headers (`suppress_envoy_headers` false, istiod's default): the upstream
/// sees the expected timeout and the path before the rewrite, the caller the upstream's
/// service time; with `suppress_envoy_headers` none of them.
#[tokio::test]
async fn the_router_adds_envoy_headers_unless_suppress_envoy_headers() {
    // Answers `<x-envoy-expected-rq-timeout-ms>|<x-envoy-original-path>|<path>`.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .map(|v| v.to_str().unwrap_or("?").to_owned())
                        .unwrap_or_default()
                };
                let body = format!(
                    "{}|{}|{}",
                    h("x-envoy-expected-rq-timeout-ms"),
                    h("x-envoy-original-path"),
                    req.uri().path()
                );
                async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body)))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc),
            );
        }
    });
    for suppress in [false, true] {
        let mut r = route(
            "old",
            "/old",
            vec![],
            ClusterSpecifier::Cluster("app".into()),
        );
        if let RouteAction::Forward(f) = &mut r.action {
            f.prefix_rewrite = Some("/new".into());
            f.timeout = Some(Duration::from_secs(2));
        }
        let mut s = snapshot(
            vec![r],
            vec![(cluster("app", LbPolicy::RoundRobin, None), vec![addr])],
        );
        let Some(ListenerKind::Client(mut hcm)) = s.listeners.get(LISTENER).map(|l| l.kind.clone())
        else {
            panic!("no client listener")
        };
        hcm.http_filters = vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config: HttpFilterConfig::Router(RouterFilter {
                suppress_envoy_headers: suppress,
            }),
        }];
        s.insert_listener(Listener {
            name: LISTENER.into(),
            kind: ListenerKind::Client(hcm),
        });
        let client = MeshClient::new(
            StaticSource::new(s),
            IdentityStore::new(),
            MeshClientConfig::default(),
        );
        let req = http::Request::get(format!("http://{LISTENER}/old/x"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = client.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let service_time = resp
            .headers()
            .get("x-envoy-upstream-service-time")
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        if suppress {
            assert_eq!(body, "||/new/x");
            assert_eq!(service_time, None);
        } else {
            assert_eq!(body, "2000|/old/x|/new/x");
            assert!(service_time.is_some_and(|ms| ms < 2000), "{service_time:?}");
        }
    }
}

/// `dns_lookup_family` on a `STRICT_DNS` cluster of `localhost` (IPv4 only here, as on
/// most CI machines): `V4_ONLY` and `AUTO` (IPv6 if any, else IPv4) reach the server;
/// `V6_ONLY` leaves the cluster without endpoints once resolved, as Envoy: 503.
#[tokio::test]
async fn dns_lookup_family_picks_the_addresses_of_a_dns_cluster() {
    let backend = Backend::plain("dns").await;
    let has_v6 = tokio::net::lookup_host(("localhost", 1))
        .await
        .unwrap()
        .any(|a| a.is_ipv6());
    for (family, expect) in [
        (DnsLookupFamily::V4Only, 200),
        (DnsLookupFamily::Auto, if has_v6 { 503 } else { 200 }),
        (DnsLookupFamily::V6Only, 503),
    ] {
        let mut c = cluster("dns", LbPolicy::RoundRobin, None);
        let mut assignment = endpoints("dns", &[]);
        assignment.localities[0].endpoints = vec![Endpoint {
            address: EndpointAddress::Dns {
                host: "localhost".into(),
                port: backend.addr.port(),
            },
            health: HealthStatus::Healthy,
            weight: 1,
            hostname: None,
            tls_mode: TlsMode::default(),
        }];
        c.discovery = Discovery::StrictDns {
            assignment: Arc::new(assignment),
            refresh: Duration::from_secs(60),
            jitter: Duration::ZERO,
            lookup_family: family,
        };
        let s = snapshot(
            vec![route(
                "all",
                "/",
                vec![],
                ClusterSpecifier::Cluster("dns".into()),
            )],
            vec![(c, vec![])],
        );
        let client = MeshClient::new(
            StaticSource::new(s),
            IdentityStore::new(),
            MeshClientConfig::default(),
        );
        // The first resolution replaces the name (which the pool would dial) at once.
        let mut status = 0;
        for _ in 0..50 {
            status = get(&client, "/", &[]).await.0;
            if status == expect {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, expect, "{family:?}");
        // And stays so.
        for _ in 0..5 {
            assert_eq!(get(&client, "/", &[]).await.0, expect, "{family:?}");
        }
    }
}

/// What the HTTP/2 server of [`H2Backend`] does with the streams it receives.
#[derive(Clone, Copy)]
enum Streams {
    /// Resets the first `n` streams with `REFUSED_STREAM` before reading them (it did not
    /// process them), answers the others with their body.
    Refuse(usize),
    /// Reads each request whole, then resets its stream with `INTERNAL_ERROR`.
    ResetAfterReading,
}

/// A plaintext HTTP/2 server on h2's own API, counting connections and streams.
struct H2Backend {
    addr: SocketAddr,
    conns: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl H2Backend {
    async fn start(mode: Streams) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (conns, streams) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (c, s) = (conns.clone(), streams.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(tcp).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        let n = s.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(h2_answer(mode, n, req, respond));
                    }
                });
            }
        });
        Self {
            addr,
            conns,
            streams,
            _task: task,
        }
    }
}

/// Answers the `n`th stream (from 0) as `mode` says.
async fn h2_answer(
    mode: Streams,
    n: usize,
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    if let Streams::Refuse(refused) = mode
        && n < refused
    {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let mut body = req.into_body();
    let mut got = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    if let Streams::ResetAfterReading = mode {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    if let Ok(mut send) = respond.send_response(http::Response::new(()), false) {
        let _ = send.send_data(got.into(), true);
    }
}

/// A snapshot routing everything, with no retry policy, to the HTTP/2 cluster `h2` of
/// `backend`.
fn h2_client(backend: &H2Backend) -> MeshClient {
    h2_client_retrying(backend, None)
}

/// [`h2_client`] with the route's retry policy.
fn h2_client_retrying(backend: &H2Backend, retry: Option<RetryPolicy>) -> MeshClient {
    let mut c = cluster("h2", LbPolicy::RoundRobin, None);
    c.http_protocol.protocol = UpstreamProtocol::Http2;
    let mut r = route("all", "/", vec![], ClusterSpecifier::Cluster("h2".into()));
    if let RouteAction::Forward(f) = &mut r.action {
        f.retry_policy = retry;
    }
    let routes = vec![r];
    let source = StaticSource::new(snapshot(routes, vec![(c, vec![backend.addr])]));
    // The resilience stack: its retry layer acts on the policy.
    MeshClient::with_stack(
        source,
        IdentityStore::new(),
        MeshClientConfig::default(),
        mesh_route::client::ResilienceStack::new(),
    )
}

/// POST `body`: the status and the response body (empty when the request failed).
async fn post(client: &MeshClient, body: &'static str) -> (u16, String) {
    let req = http::Request::post(format!("http://{LISTENER}/echo"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
    (
        status,
        String::from_utf8_lossy(&body.unwrap_or_default()).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_on_another_connection_without_a_retry_policy() {
    let backend = H2Backend::start(Streams::Refuse(1)).await;
    let client = h2_client(&backend);
    // The route has no retry policy: the pool sends the refused stream again, its body
    // replayed, on a new connection (the refusing one may be at its limit).
    assert_eq!(post(&client, "hello").await, (200, "hello".into()));
    assert_eq!(backend.streams.load(Ordering::SeqCst), 2);
    assert_eq!(backend.conns.load(Ordering::SeqCst), 2);
    // Later requests are not refused and go on as usual.
    assert_eq!(post(&client, "again").await, (200, "again".into()));
    assert_eq!(backend.streams.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_sent_again_once() {
    let backend = H2Backend::start(Streams::Refuse(2)).await;
    let client = h2_client(&backend);
    let (status, _) = post(&client, "hello").await;
    assert_eq!(status, 503);
    assert_eq!(backend.streams.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_refused_stream_retry_policy_the_retry_layer_alone_sends_it_again() {
    // The route retries refused streams once: the retry layer sends the refused stream
    // again with its own copy, and the pool keeps none of its own (under both, a stream
    // refused twice would get a third try and be answered).
    let policy = || {
        Some(RetryPolicy {
            retry_on: vec![RetryOn::RefusedStream],
            num_retries: 1,
            ..Default::default()
        })
    };
    let once = H2Backend::start(Streams::Refuse(1)).await;
    assert_eq!(
        post(&h2_client_retrying(&once, policy()), "hello").await,
        (200, "hello".into())
    );
    assert_eq!(once.streams.load(Ordering::SeqCst), 2);
    let twice = H2Backend::start(Streams::Refuse(2)).await;
    let (status, _) = post(&h2_client_retrying(&twice, policy()), "hello").await;
    assert_eq!(status, 503);
    assert_eq!(twice.streams.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_server_processed_and_reset_is_not_sent_again() {
    let backend = H2Backend::start(Streams::ResetAfterReading).await;
    let client = h2_client(&backend);
    let (status, _) = post(&client, "hello").await;
    assert_eq!(status, 503);
    // Any attempt is made before the answer: one stream reached the server.
    assert_eq!(backend.streams.load(Ordering::SeqCst), 1);
}

/// An mTLS server as `web` offering `alpn`, answering `<version> <client port>` after
/// `delay`, behind a [`counting_proxy`]: the proxy's address and its connection count.
async fn alpn_backend(
    ca: &DevCa,
    alpn: &[&[u8]],
    delay: Duration,
) -> (SocketAddr, Arc<AtomicUsize>, [Backend; 2]) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = ServerSettings {
        alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        ..Default::default()
    };
    let acceptor = MeshAcceptor::new(identity(ca, "web"), settings);
    let svc = tower::service_fn(
        move |req: http::Request<hyper::body::Incoming>| async move {
            tokio::time::sleep(delay).await;
            let port = req
                .extensions()
                .get::<ConnectionAddrs>()
                .map_or(0, |a| a.remote.port());
            let body = Bytes::from(format!("{:?} {port}", req.version()));
            Ok::<_, Infallible>(http::Response::new(Full::new(body)))
        },
    );
    let task = tokio::spawn(async move {
        let _ = mesh_tls::server::serve(listener, acceptor, svc).await;
    });
    let (proxy, conns, p) = counting_proxy(addr).await;
    (proxy, conns, [Backend { addr, _task: task }, p])
}

/// A client of the ALPN cluster `web` (mTLS, `auto_config`: `h2` and `http/1.1` offered) to
/// `addr`, with `breakers` and one HTTP/2 connection per endpoint before sharing.
fn alpn_client(ca: &DevCa, addr: SocketAddr, breakers: Thresholds) -> MeshClient {
    let mut c = cluster("web", LbPolicy::RoundRobin, Some("web"));
    c.http_protocol.protocol = UpstreamProtocol::Auto;
    c.circuit_breakers.default = breakers;
    let routes = vec![route(
        "all",
        "/",
        vec![],
        ClusterSpecifier::Cluster("web".into()),
    )];
    let mut config = MeshClientConfig::default();
    config.pool.http2_connections = Some(1);
    let source = StaticSource::new(snapshot(routes, vec![(c, vec![addr])]));
    MeshClient::new(source, identity(ca, "productpage"), config)
}

/// `n` GETs at once: each answer's status and body.
async fn concurrent_gets(client: &MeshClient, n: usize) -> Vec<(u16, String)> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { get(&client, "/", &[]).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alpn_cluster_multiplexes_on_h2_and_pools_http1_connections() {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let slow = Duration::from_millis(300);
    for (alpn, version, conns_for_8) in [
        (&[b"http/1.1".as_slice()][..], "HTTP/1.1", 8),
        (&[b"h2".as_slice(), b"http/1.1"][..], "HTTP/2.0", 1),
    ] {
        let (addr, conns, _b) = alpn_backend(&ca, alpn, slow).await;
        let client = alpn_client(&ca, addr, Thresholds::default());
        // 8 at once: HTTP/1.1 takes a connection each, h2 multiplexes them on one.
        let answers = concurrent_gets(&client, 8).await;
        for (code, body) in &answers {
            assert_eq!(
                (*code, body.split(' ').next().unwrap()),
                (200, version),
                "{body}"
            );
        }
        assert_eq!(conns.load(Ordering::SeqCst), conns_for_8, "{version}");
        // Then sequential requests reuse those connections.
        for _ in 0..5 {
            assert_eq!(get(&client, "/", &[]).await.0, 200);
        }
        assert_eq!(conns.load(Ordering::SeqCst), conns_for_8, "{version}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alpn_clusters_breakers_hold_connections_and_refuse_over_max_pending() {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let (addr, conns, _b) = alpn_backend(&ca, &[b"http/1.1"], Duration::from_millis(500)).await;
    let breakers = Thresholds {
        max_connections: 1,
        max_pending_requests: 1,
        ..Thresholds::default()
    };
    let client = alpn_client(&ca, addr, breakers);
    // One request on the one connection, one pending for it, the others refused at once.
    let answers = concurrent_gets(&client, 4).await;
    let ok = answers.iter().filter(|(c, _)| *c == 200).count();
    let refused = answers.iter().filter(|(c, _)| *c == 503).count();
    assert_eq!((ok, refused), (2, 2), "{answers:?}");
    assert_eq!(conns.load(Ordering::SeqCst), 1);
}
