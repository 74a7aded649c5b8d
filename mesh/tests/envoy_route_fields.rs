//! Envoy route, virtual host and connection manager fields on real traffic (issue #16):
//! hand-written Envoy resources served by our xDS server, applied by `Mesh::client()`, and
//! requests to real HTTP/1.1 backends that record what they saw. Each test is a table: one
//! listener per field family, one case per field (a route tweak, a request, the effect).

#![allow(deprecated)] // exact_match, append, max_grpc_timeout...: deprecated fields are read too

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, LoadBalancingPolicy, OutlierDetection, cluster, load_balancing_policy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, DataSource, HeaderValue, HeaderValueOption,
    HealthStatus, Locality, Node, RuntimeFractionalPercent, SocketAddress, TypedExtensionConfig,
    address, config_source, data_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, FilterConfig, HeaderMatcher, QueryParameterMatcher, RedirectAction,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route, route_action,
    route_match, weighted_cluster,
};
use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::common::v3::{
    LocalityLbConfig, locality_lb_config,
};
use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
use envoy_types::pb::envoy::extensions::load_balancing_policies::random::v3::Random;
use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
use envoy_types::pb::envoy::extensions::load_balancing_policies::wrr_locality::v3::WrrLocality;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, Int64Range, Percent, fractional_percent,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh::Mesh;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_core::TrustDomain;
use mesh_tls::dev_ca::DevCa;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

// ---- backends ----

/// One request as a backend saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
    at: Instant,
}

/// A plaintext HTTP/1.1 backend. It answers 200 with `x-backend: <tag>`, `x-host: <Host>`
/// and, as body, the request's `x-route` header (else its path), unless the request says
/// otherwise: `x-fail: N` fails its first N calls (counted by `calls`) with `x-fail-status`
/// (503 by default) and `x-failed: 1`; `x-delay-ms` waits before the headers (for the
/// first `x-slow` calls only when that is set); `x-body-gap-ms` sends the body in two parts
/// that far apart. `always` makes it answer every request with that status.
#[derive(Clone)]
struct Backend {
    port: u16,
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

impl Backend {
    async fn start(tag: &'static str, always: Option<u16>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = Backend {
            port: listener.local_addr().unwrap().port(),
            calls: Arc::default(),
            seen: Arc::default(),
        };
        let shared = b.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let b = shared.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let b = b.clone();
                        async move { Ok::<_, Infallible>(b.answer(tag, always, req).await) }
                    });
                    // HTTP/1.1 and, for gRPC requests, HTTP/2 (prior knowledge).
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        b
    }

    async fn answer(
        &self,
        tag: &str,
        always: Option<u16>,
        req: Request<hyper::body::Incoming>,
    ) -> Response<Body> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let h = req.headers().clone();
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        self.seen.lock().unwrap().push(Seen {
            path: path.clone(),
            headers: h.clone(),
            at: Instant::now(),
        });
        if let Some(ms) = num("x-delay-ms") {
            if num("x-slow").is_none_or(|slow| n as u64 <= slow) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        let failing = num("x-fail").is_some_and(|f| n as u64 <= f);
        let status = match always {
            Some(s) => s,
            None if failing => num("x-fail-status").unwrap_or(503) as u16,
            None => 200,
        };
        let body = h
            .get("x-route")
            .map_or(path, |v| v.to_str().unwrap_or("").to_owned());
        let host = h
            .get(http::header::HOST)
            .cloned()
            .unwrap_or(http::HeaderValue::from_static(""));
        let mut resp = Response::builder()
            .status(status)
            .header("x-backend", tag)
            .header("x-host", host)
            .header("x-backend-extra", "1")
            .header("x-vh-extra", "1");
        if status != 200 {
            resp = resp.header("x-failed", "1");
        }
        let body: Body = match num("x-body-gap-ms") {
            Some(gap) => {
                let parts = futures::stream::iter([0u8, 1]).then(move |i| async move {
                    if i == 1 {
                        tokio::time::sleep(Duration::from_millis(gap)).await;
                    }
                    Ok::<_, Infallible>(Frame::data(Bytes::from(format!("part{i}"))))
                });
                BodyExt::boxed_unsync(StreamBody::new(parts))
            }
            None => BodyExt::boxed_unsync(Full::new(Bytes::from(body))),
        };
        resp.body(body).unwrap()
    }

    fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

// ---- resources ----

/// What the xDS server serves: these listeners and clusters, as they are.
#[derive(Clone, Default)]
struct Scenario {
    listeners: Vec<Listener>,
    route_configs: Vec<RouteConfiguration>,
    clusters: Vec<Cluster>,
}

struct Serve;
impl Generator<Scenario> for Serve {
    fn node_key(&self, _: &Node) -> String {
        String::new()
    }
    fn generate(&self, _: &Node, s: &Scenario) -> Result<Resources, GenerateError> {
        let mut r = Resources::default();
        for l in &s.listeners {
            r.add(l.name.clone(), l.clone());
        }
        for c in &s.clusters {
            r.add(c.name.clone(), c.clone());
        }
        for rc in &s.route_configs {
            r.add(rc.name.clone(), rc.clone());
        }
        Ok(r)
    }
}

fn ms(ms: u64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A connection manager with the router filter and `rc` inline.
fn hcm(rc: RouteConfiguration) -> HttpConnectionManager {
    HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(rc)),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                RouterFilter::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The client listener `name` (`host:port`) with connection manager `hcm`.
fn listener(name: &str, hcm: HttpConnectionManager) -> Listener {
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// A route configuration of one virtual host for every domain.
fn routes(vh: VirtualHost) -> RouteConfiguration {
    RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            ..vh
        }],
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

fn to(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

fn forward(m: RouteMatch, action: RouteAction) -> Route {
    Route {
        r#match: Some(m),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

fn add(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(header(key, value)),
        ..Default::default()
    }
}

/// A static cluster over `ports` on 127.0.0.1 (random picks: retries may reach either),
/// each endpoint with `hostname`, if any.
fn cluster(name: &str, ports: &[u16], hostname: Option<&str>) -> Cluster {
    let lb_endpoints = ports
        .iter()
        .map(|port| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(
                            (*port).into(),
                        )),
                        ..Default::default()
                    })),
                }),
                hostname: hostname.unwrap_or_default().into(),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        lb_policy: cluster::LbPolicy::Random as i32,
        connect_timeout: ms(1000),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

// ---- the fixture ----

struct Fixture {
    mesh: Mesh,
    a: Backend,
    b: Backend,
    _config: watch::Sender<Arc<Scenario>>,
}

/// Backends `a` and `b` (clusters `a`, `b`; `named`: `a` with endpoint hostname
/// `named-backend.internal`; `pair`: `a` and a backend that always answers 503), our xDS
/// server serving `listeners` and those clusters, and a mesh that resolved every listener.
async fn start(listeners: Vec<Listener>) -> Fixture {
    start_with(listeners, |_| Vec::new()).await
}

/// The ports of backends `a`, `b` and the one that always answers 503.
struct Ports {
    a: u16,
    b: u16,
    broken: u16,
}

/// [`start`], with more clusters, made knowing the backends' ports.
async fn start_with(
    listeners: Vec<Listener>,
    more: impl FnOnce(&Ports) -> Vec<Cluster>,
) -> Fixture {
    start_full(listeners, Vec::new(), false, more).await
}

/// [`start_with`], also serving `route_configs` over RDS; with `wildcard_clusters` the
/// client subscribes to every cluster, not only those its routes name.
async fn start_full(
    listeners: Vec<Listener>,
    route_configs: Vec<RouteConfiguration>,
    wildcard_clusters: bool,
    more: impl FnOnce(&Ports) -> Vec<Cluster>,
) -> Fixture {
    let a = Backend::start("a", None).await;
    let b = Backend::start("b", None).await;
    let broken = Backend::start("broken", Some(503)).await;
    let mut clusters = vec![
        cluster("a", &[a.port], None),
        cluster("b", &[b.port], None),
        cluster("named", &[a.port], Some("named-backend.internal")),
        cluster("pair", &[a.port, broken.port], None),
    ];
    clusters.extend(more(&Ports {
        a: a.port,
        b: b.port,
        broken: broken.port,
    }));
    let scenario = Scenario {
        clusters,
        listeners,
        route_configs,
    };
    let names: Vec<String> = scenario.listeners.iter().map(|l| l.name.clone()).collect();
    let (config, rx) = watch::channel(Arc::new(scenario));
    let xds = XdsServer::new(Serve, rx, ServerOptions::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(xds.serve(tcp, std::future::pending()));
    let node = IstioNode {
        pod_name: "caller".into(),
        service_account: "caller".into(),
        labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
        ..Default::default()
    };
    let client = XdsClient::new(
        XdsClientConfig {
            node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
            wildcard_clusters,
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
    for name in names {
        mesh.resolve(&name).await.unwrap();
    }
    Fixture {
        mesh,
        a,
        b,
        _config: config,
    }
}

/// What the caller got.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Result<String, String>,
    took: Duration,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    fn body(&self) -> &str {
        self.body.as_deref().expect("a whole body")
    }
}

impl Fixture {
    async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Got {
        let mut req = Request::get(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let started = Instant::now();
        let resp = self
            .mesh
            .client()
            .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = match body.collect().await {
            Ok(b) => Ok(String::from_utf8_lossy(&b.to_bytes()).into_owned()),
            Err(e) => Err(e.to_string()),
        };
        Got {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
            took: started.elapsed(),
        }
    }

    fn reset(&self) {
        self.a.reset();
        self.b.reset();
    }
}

// ---- route match fields ----

fn header_route(path: &str, spec: header_matcher::HeaderMatchSpecifier) -> Route {
    let mut m = prefix(path);
    m.headers = vec![HeaderMatcher {
        name: "x-v".into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }];
    named(m, path)
}

/// A route to `a` that tells the backend (in `x-route`) which route matched.
fn named(m: RouteMatch, name: &str) -> Route {
    Route {
        request_headers_to_add: vec![add("x-route", name)],
        ..forward(m, to("a"))
    }
}

fn string_match(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_match_fields_pick_routes_on_real_requests() {
    use header_matcher::HeaderMatchSpecifier as H;
    use string_matcher::MatchPattern as P;
    let regex = RegexMatcher {
        regex: "^ab+c$".into(),
        ..Default::default()
    };
    let query = {
        let mut m = prefix("/q");
        m.query_parameters = vec![QueryParameterMatcher {
            name: "debug".into(),
            query_parameter_match_specifier: Some(
                query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
            ),
        }];
        named(m, "/q")
    };
    let grpc = {
        let mut m = prefix("/grpc");
        m.grpc = Some(Default::default());
        named(m, "/grpc")
    };
    // 100 in ten thousand: 1% of requests.
    let fraction = {
        let mut m = prefix("/frac");
        m.runtime_fraction = Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: 100,
                denominator: fractional_percent::DenominatorType::TenThousand as i32,
            }),
            runtime_key: "unused".into(),
        });
        named(m, "/frac")
    };
    let segment = named(
        RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
                "/seg".into(),
            )),
            ..Default::default()
        },
        "/seg",
    );
    let vh = VirtualHost {
        routes: vec![
            header_route("/h-exact", H::ExactMatch("yes".into())),
            header_route("/h-regex", H::SafeRegexMatch(regex)),
            header_route("/h-range", H::RangeMatch(Int64Range { start: 10, end: 20 })),
            header_route("/h-present", H::PresentMatch(true)),
            header_route("/h-prefix", H::PrefixMatch("pre".into())),
            header_route("/h-suffix", H::SuffixMatch("suf".into())),
            header_route("/h-contains", H::ContainsMatch("mid".into())),
            header_route(
                "/s-suffix",
                H::StringMatch(string_match(P::Suffix(".COM".into()), true)),
            ),
            header_route(
                "/s-contains",
                H::StringMatch(string_match(P::Contains("mid".into()), false)),
            ),
            query,
            grpc,
            fraction,
            segment,
            named(prefix("/"), "none"),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("match.test:80", hcm(routes(vh)))]).await;
    let grpc_ct = ("content-type", "application/grpc");
    #[rustfmt::skip]
    let cases: &[(&str, &[(&str, &str)], &str)] = &[
        // HeaderMatcher.exact_match
        ("/h-exact", &[("x-v", "yes")], "/h-exact"),
        ("/h-exact", &[("x-v", "yess")], "none"),
        // HeaderMatcher.safe_regex_match: the whole value
        ("/h-regex", &[("x-v", "abbbc")], "/h-regex"),
        ("/h-regex", &[("x-v", "abcd")], "none"),
        // HeaderMatcher.range_match, Int64Range.start (inclusive) and end (exclusive)
        ("/h-range", &[("x-v", "10")], "/h-range"),
        ("/h-range", &[("x-v", "19")], "/h-range"),
        ("/h-range", &[("x-v", "9")], "none"),
        ("/h-range", &[("x-v", "20")], "none"),
        ("/h-range", &[("x-v", "1x")], "none"),
        // HeaderMatcher.present_match
        ("/h-present", &[("x-v", "")], "/h-present"),
        ("/h-present", &[], "none"),
        // HeaderMatcher.prefix_match, suffix_match, contains_match
        ("/h-prefix", &[("x-v", "prefix")], "/h-prefix"),
        ("/h-prefix", &[("x-v", "xpre")], "none"),
        ("/h-suffix", &[("x-v", "a-suf")], "/h-suffix"),
        ("/h-suffix", &[("x-v", "sufa")], "none"),
        ("/h-contains", &[("x-v", "amidb")], "/h-contains"),
        ("/h-contains", &[("x-v", "mi-d")], "none"),
        // StringMatcher.suffix with ignore_case; StringMatcher.contains
        ("/s-suffix", &[("x-v", "host.com")], "/s-suffix"),
        ("/s-suffix", &[("x-v", "host.CoM")], "/s-suffix"),
        ("/s-suffix", &[("x-v", "host.org")], "none"),
        ("/s-contains", &[("x-v", "xmidx")], "/s-contains"),
        ("/s-contains", &[("x-v", "xMIDx")], "none"),
        // QueryParameterMatcher.present_match
        ("/q?debug", &[], "/q"),
        ("/q?a=1&debug=0", &[], "/q"),
        ("/q?x=1", &[], "none"),
        // RouteMatch.path_separated_prefix: on segment boundaries
        ("/seg", &[], "/seg"),
        ("/seg/x", &[], "/seg"),
        ("/seg?x=1", &[], "/seg"),
        ("/segment", &[], "none"),
        // RouteMatch.grpc: only gRPC requests
        ("/grpc", &[grpc_ct], "/grpc"),
        ("/grpc", &[], "none"),
    ];
    for (path, headers, want) in cases {
        let got = f.get(&format!("http://match.test:80{path}"), headers).await;
        assert_eq!(got.status, 200, "{path} {headers:?}: {got:?}");
        assert_eq!(got.body(), *want, "{path} with {headers:?}");
    }
    // RouteMatch.runtime_fraction, RuntimeFractionalPercent.default_value and
    // FractionalPercent.denominator: 100 in TEN_THOUSAND is 1% (100 in HUNDRED would be all).
    let mut matched = 0;
    for _ in 0..300 {
        let got = f.get("http://match.test:80/frac", &[]).await;
        matched += usize::from(got.body() == "/frac");
    }
    assert!(matched <= 15, "1% of 300 matched, not {matched}");
}

// ---- header edits ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_edits_of_route_configuration_and_virtual_host_act() {
    let overwrite = HeaderValueOption {
        append: Some(BoolValue { value: false }),
        ..add("x-over", "vh")
    };
    let append = HeaderValueOption {
        append: Some(BoolValue { value: true }),
        ..add("x-more", "vh")
    };
    let kept_empty = HeaderValueOption {
        keep_empty_value: true,
        ..add("x-empty-kept", "")
    };
    let raw = HeaderValueOption {
        header: Some(HeaderValue {
            key: "x-raw".into(),
            raw_value: b"raw-bytes".to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let vh = VirtualHost {
        routes: vec![forward(prefix("/"), to("a"))],
        request_headers_to_add: vec![
            add("x-vh", "vh"),
            overwrite,
            append,
            kept_empty,
            add("x-empty-dropped", ""),
            raw,
        ],
        request_headers_to_remove: vec!["x-drop-vh".into()],
        response_headers_to_add: vec![add("x-vh-resp", "vh")],
        response_headers_to_remove: vec!["x-vh-extra".into()],
        ..Default::default()
    };
    let rc = RouteConfiguration {
        request_headers_to_add: vec![add("x-rc", "rc")],
        request_headers_to_remove: vec!["x-drop-rc".into()],
        response_headers_to_add: vec![add("x-rc-resp", "rc")],
        response_headers_to_remove: vec!["x-backend-extra".into()],
        ..routes(vh)
    };
    let f = start(vec![listener("headers.test:80", hcm(rc))]).await;
    let got = f
        .get(
            "http://headers.test:80/",
            &[
                ("x-drop-vh", "1"),
                ("x-drop-rc", "1"),
                ("x-over", "client"),
                ("x-more", "client"),
            ],
        )
        .await;
    assert_eq!(got.status, 200, "{got:?}");
    let seen = f.a.last().headers;
    let all = |n: &str| -> Vec<&str> {
        seen.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    };
    // RouteConfiguration.request_headers_to_add / _remove
    assert_eq!(all("x-rc"), ["rc"]);
    assert!(all("x-drop-rc").is_empty());
    // VirtualHost.request_headers_to_add / _remove
    assert_eq!(all("x-vh"), ["vh"]);
    assert!(all("x-drop-vh").is_empty());
    // HeaderValueOption.append: false overwrites, true appends
    assert_eq!(all("x-over"), ["vh"]);
    assert_eq!(all("x-more"), ["client", "vh"]);
    // HeaderValueOption.keep_empty_value: an empty value is sent only when kept
    assert_eq!(all("x-empty-kept"), [""]);
    assert!(all("x-empty-dropped").is_empty());
    // HeaderValue.raw_value
    assert_eq!(all("x-raw"), ["raw-bytes"]);
    // response_headers_to_add / _remove at both levels
    assert_eq!(got.header("x-rc-resp"), Some("rc"));
    assert_eq!(got.header("x-vh-resp"), Some("vh"));
    assert_eq!(
        got.header("x-backend-extra"),
        None,
        "removed by the route configuration"
    );
    assert_eq!(
        got.header("x-vh-extra"),
        None,
        "removed by the virtual host"
    );
    assert_eq!(got.header("x-backend"), Some("a"));
}

// ---- redirects ----

fn redirect(path: &str, r: RedirectAction) -> Route {
    Route {
        r#match: Some(prefix(path)),
        action: Some(route::Action::Redirect(r)),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_fields_shape_the_location() {
    use redirect_action::{PathRewriteSpecifier as Path, SchemeRewriteSpecifier as Scheme};
    let host = |h: &str| RedirectAction {
        host_redirect: h.into(),
        ..Default::default()
    };
    let vh = VirtualHost {
        routes: vec![
            redirect(
                "/https",
                RedirectAction {
                    scheme_rewrite_specifier: Some(Scheme::HttpsRedirect(true)),
                    ..Default::default()
                },
            ),
            redirect("/host", host("elsewhere.test")),
            redirect(
                "/port",
                RedirectAction {
                    port_redirect: 8443,
                    ..host("elsewhere.test")
                },
            ),
            redirect(
                "/prefix/",
                RedirectAction {
                    path_rewrite_specifier: Some(Path::PrefixRewrite("/new/".into())),
                    ..host("elsewhere.test")
                },
            ),
            redirect(
                "/regex/",
                RedirectAction {
                    path_rewrite_specifier: Some(Path::RegexRewrite(RegexMatchAndSubstitute {
                        pattern: Some(RegexMatcher {
                            regex: "^/regex/([a-z]+)$".into(),
                            ..Default::default()
                        }),
                        substitution: "/r/\\1/done".into(),
                    })),
                    ..host("elsewhere.test")
                },
            ),
            redirect(
                "/strip",
                RedirectAction {
                    strip_query: true,
                    ..host("elsewhere.test")
                },
            ),
            redirect("/keep", host("elsewhere.test")),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("redir.test:80", hcm(routes(vh)))]).await;
    let cases: &[(&str, &str)] = &[
        // RedirectAction.https_redirect (port 80 is not kept for https)
        ("/https?x=1", "https://redir.test/https?x=1"),
        // RedirectAction.host_redirect
        ("/host", "http://elsewhere.test/host"),
        // RedirectAction.port_redirect
        ("/port", "http://elsewhere.test:8443/port"),
        // RedirectAction.prefix_rewrite
        ("/prefix/a/b", "http://elsewhere.test/new/a/b"),
        // RedirectAction.regex_rewrite
        ("/regex/abc", "http://elsewhere.test/r/abc/done"),
        // RedirectAction.strip_query
        ("/strip?q=1", "http://elsewhere.test/strip"),
        ("/keep?q=1", "http://elsewhere.test/keep?q=1"),
    ];
    for (path, want) in cases {
        let got = f.get(&format!("http://redir.test:80{path}"), &[]).await;
        assert_eq!(got.status, 301, "{path}: {got:?}");
        assert_eq!(got.header("location"), Some(*want), "{path}");
    }
    assert_eq!(f.a.calls(), 0, "redirects never reach a backend");
}

// ---- retries ----

fn retry(on: &str, n: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: n }),
        ..Default::default()
    }
}

fn with_retry(path: &str, cluster: &str, r: RetryPolicy) -> Route {
    forward(
        prefix(path),
        RouteAction {
            retry_policy: Some(r),
            ..to(cluster)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_fields_act_on_real_failures() {
    let codes = RetryPolicy {
        retriable_status_codes: vec![418],
        ..retry("retriable-status-codes", 2)
    };
    let headers = RetryPolicy {
        retriable_headers: vec![HeaderMatcher {
            name: "x-failed".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        }],
        ..retry("retriable-headers", 2)
    };
    let idle = RetryPolicy {
        per_try_idle_timeout: ms(150),
        ..retry("5xx", 1)
    };
    let vh = VirtualHost {
        routes: vec![
            with_retry("/codes", "a", codes),
            with_retry("/headers", "a", headers),
            with_retry("/idle", "a", idle),
            // No retry policy of its own: the virtual host's.
            forward(prefix("/vh"), to("a")),
        ],
        retry_policy: Some(retry("5xx", 2)),
        ..Default::default()
    };
    let f = start(vec![listener("retry.test:80", hcm(routes(vh)))]).await;
    let url = |p: &str| format!("http://retry.test:80{p}");

    // RetryPolicy.retriable_status_codes: 418 is retried, 419 is not.
    f.reset();
    let got = f
        .get(&url("/codes"), &[("x-fail", "2"), ("x-fail-status", "418")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");
    f.reset();
    let got = f
        .get(&url("/codes"), &[("x-fail", "2"), ("x-fail-status", "419")])
        .await;
    assert_eq!((got.status, f.a.calls()), (419, 1), "{got:?}");

    // RetryPolicy.retriable_headers: a 400 carrying x-failed is retried.
    f.reset();
    let got = f
        .get(
            &url("/headers"),
            &[("x-fail", "2"), ("x-fail-status", "400")],
        )
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");

    // VirtualHost.retry_policy: for a route that sets none.
    f.reset();
    let got = f.get(&url("/vh"), &[("x-fail", "2")]).await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");

    // RetryPolicy.per_try_idle_timeout: the first attempt, silent for 1 s, is abandoned
    // after 150 ms and the retry answers at once.
    f.reset();
    let got = f
        .get(&url("/idle"), &[("x-delay-ms", "1000"), ("x-slow", "1")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 2), "{got:?}");
    assert!(got.took < Duration::from_millis(700), "{:?}", got.took);
}

/// The gaps between a backend's consecutive requests.
fn gaps(b: &Backend) -> Vec<Duration> {
    let seen = b.seen.lock().unwrap();
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_back_off_sets_the_wait_between_attempts() {
    use retry_policy::RetryBackOff;
    let backoff = |base, max| RetryPolicy {
        retry_back_off: Some(RetryBackOff {
            base_interval: ms(base),
            max_interval: ms(max),
        }),
        ..retry("5xx", 6)
    };
    let vh = VirtualHost {
        routes: vec![
            with_retry("/slow", "a", backoff(1000, 1000)),
            with_retry("/capped", "a", backoff(40, 40)),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("backoff.test:80", hcm(routes(vh)))]).await;
    // RetryBackOff.base_interval: waits drawn from [0, 1 s); the default (25 ms, at most
    // 250 ms) never waits 300 ms. All six below 300 ms: 0.3^6, under one in a thousand.
    f.reset();
    let got = f
        .get("http://backoff.test:80/slow", &[("x-fail", "6")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 7), "{got:?}");
    let waits = gaps(&f.a);
    assert!(
        waits.iter().any(|g| *g >= Duration::from_millis(300)),
        "{waits:?}"
    );
    // RetryBackOff.max_interval: every wait at most 40 ms (the default cap would be 400 ms).
    f.reset();
    let got = f
        .get("http://backoff.test:80/capped", &[("x-fail", "6")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 7), "{got:?}");
    let waits = gaps(&f.a);
    assert!(
        waits.iter().all(|g| *g < Duration::from_millis(40 + 60)),
        "{waits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_host_predicate_moves_retries_to_another_endpoint() {
    use retry_policy::RetryHostPredicate;
    // Cluster `pair`: backend a and one that always answers 503, picked at random.
    let predicate = RetryPolicy {
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: Some(retry_policy::retry_host_predicate::ConfigType::TypedConfig(
                pack_any(PreviousHostsPredicate::default()),
            )),
        }],
        host_selection_retry_max_attempts: 30,
        ..retry("5xx", 1)
    };
    let vh = VirtualHost {
        routes: vec![with_retry("/", "pair", predicate)],
        ..Default::default()
    };
    let f = start(vec![listener("hosts.test:80", hcm(routes(vh)))]).await;
    // RetryPolicy.retry_host_predicate (previous_hosts) and
    // host_selection_retry_max_attempts: the one retry never goes back to the failed
    // endpoint. Without the predicate a quarter of requests would fail (503 twice); with
    // Envoy's default of one re-pick, one in eight.
    let mut failed = 0;
    for _ in 0..60 {
        let got = f.get("http://hosts.test:80/", &[]).await;
        failed += usize::from(got.status != 200);
    }
    assert_eq!(failed, 0);
    assert_eq!(f.a.calls(), 60, "each request reached a once");
}

// ---- timeouts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_end_slow_requests() {
    use route_action::MaxStreamDuration;
    let no_timeout = |action: RouteAction| RouteAction {
        timeout: ms(0),
        ..action
    };
    let vh = VirtualHost {
        routes: vec![
            forward(
                prefix("/route"),
                RouteAction {
                    timeout: ms(200),
                    ..to("a")
                },
            ),
            forward(
                prefix("/idle"),
                no_timeout(RouteAction {
                    idle_timeout: ms(150),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/grpc-max"),
                no_timeout(RouteAction {
                    max_stream_duration: Some(MaxStreamDuration {
                        grpc_timeout_header_max: ms(100),
                        ..Default::default()
                    }),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/grpc-offset"),
                no_timeout(RouteAction {
                    max_stream_duration: Some(MaxStreamDuration {
                        grpc_timeout_header_max: ms(0),
                        grpc_timeout_header_offset: ms(450),
                        ..Default::default()
                    }),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/old-grpc-max"),
                no_timeout(RouteAction {
                    max_grpc_timeout: ms(100),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/old-grpc-offset"),
                no_timeout(RouteAction {
                    max_grpc_timeout: ms(0),
                    grpc_timeout_offset: ms(450),
                    ..to("a")
                }),
            ),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("timeout.test:80", hcm(routes(vh)))]).await;
    let url = |p: &str| format!("http://timeout.test:80{p}");

    // RouteAction.timeout: 504 after 200 ms, not the backend's answer after 2 s.
    let got = f.get(&url("/route"), &[("x-delay-ms", "2000")]).await;
    assert_eq!(got.status, 504, "{got:?}");
    assert!(
        got.took >= Duration::from_millis(190) && got.took < Duration::from_millis(1000),
        "{:?}",
        got.took
    );

    // RouteAction.idle_timeout: 150 ms without a byte ends the stream (headers late) and
    // a body that stops for 1 s.
    let got = f.get(&url("/idle"), &[("x-delay-ms", "2000")]).await;
    assert_ne!(got.status, 200, "{got:?}");
    assert!(got.took < Duration::from_millis(1000), "{:?}", got.took);
    let got = f.get(&url("/idle"), &[("x-body-gap-ms", "1500")]).await;
    assert!(got.body.is_err(), "{got:?}");
    assert!(got.took < Duration::from_millis(1200), "{:?}", got.took);

    // MaxStreamDuration.grpc_timeout_header_max and the deprecated max_grpc_timeout: the
    // caller's 5 s grpc-timeout is cut to 100 ms; grpc_timeout_header_offset and the
    // deprecated grpc_timeout_offset: 600 ms less 450 ms.
    for (path, grpc_timeout, max) in [
        ("/grpc-max", "5S", 600),
        ("/old-grpc-max", "5S", 600),
        ("/grpc-offset", "600m", 450),
        ("/old-grpc-offset", "600m", 450),
    ] {
        let got = f
            .get(
                &url(path),
                &[
                    ("content-type", "application/grpc"),
                    ("grpc-timeout", grpc_timeout),
                    ("x-delay-ms", "2000"),
                ],
            )
            .await;
        assert_eq!(got.header("x-backend"), None, "{path}: {got:?}");
        assert!(
            got.took >= Duration::from_millis(90) && got.took < Duration::from_millis(max),
            "{path}: {:?}",
            got.took
        );
    }
}

// ---- cluster choice and host rewrites ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_real_requests() {
    use weighted_cluster::ClusterWeight;
    let split = |wa: u32, wb: u32| RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: vec![
                    ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: wa }),
                        ..Default::default()
                    },
                    ClusterWeight {
                        name: "b".into(),
                        weight: Some(UInt32Value { value: wb }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let vh = VirtualHost {
        routes: vec![
            forward(prefix("/quarter"), split(1, 3)),
            forward(prefix("/only-b"), split(0, 5)),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("weighted.test:80", hcm(routes(vh)))]).await;
    // WeightedCluster.clusters, ClusterWeight.name and ClusterWeight.weight.
    for _ in 0..400 {
        let got = f.get("http://weighted.test:80/quarter", &[]).await;
        assert_eq!(got.status, 200);
    }
    let (a, b) = (f.a.calls(), f.b.calls());
    assert_eq!(a + b, 400);
    assert!((60..=140).contains(&a), "a got {a} of 400 (weight 1 of 4)");
    f.reset();
    for _ in 0..20 {
        let got = f.get("http://weighted.test:80/only-b", &[]).await;
        assert_eq!(got.header("x-backend"), Some("b"));
    }
    assert_eq!(f.a.calls(), 0, "weight 0 gets nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_header_and_host_rewrites_act() {
    use route_action::{ClusterSpecifier, HostRewriteSpecifier as Host};
    let vh = VirtualHost {
        routes: vec![
            forward(
                prefix("/by-header"),
                RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::ClusterHeader("x-cluster".into())),
                    ..Default::default()
                },
            ),
            forward(
                prefix("/host-header"),
                RouteAction {
                    host_rewrite_specifier: Some(Host::HostRewriteHeader("x-host-from".into())),
                    ..to("a")
                },
            ),
            forward(
                prefix("/auto"),
                RouteAction {
                    host_rewrite_specifier: Some(Host::AutoHostRewrite(BoolValue { value: true })),
                    ..to("named")
                },
            ),
        ],
        ..Default::default()
    };
    // Only clusters the client subscribed to can be named by a header: every cluster,
    // here, as Envoy's wildcard CDS (without it, only those other routes name).
    let f = start_full(
        vec![listener("rewrite.test:80", hcm(routes(vh)))],
        Vec::new(),
        true,
        |_| Vec::new(),
    )
    .await;
    let url = |p: &str| format!("http://rewrite.test:80{p}");
    // RouteAction.cluster_header
    for want in ["a", "b", "a"] {
        let got = f.get(&url("/by-header"), &[("x-cluster", want)]).await;
        assert_eq!(got.header("x-backend"), Some(want), "{got:?}");
    }
    // RouteAction.host_rewrite_header
    let got = f
        .get(&url("/host-header"), &[("x-host-from", "other.example")])
        .await;
    assert_eq!(got.header("x-host"), Some("other.example"), "{got:?}");
    let got = f.get(&url("/host-header"), &[]).await;
    assert_eq!(got.header("x-host"), Some("rewrite.test:80"), "{got:?}");
    // RouteAction.auto_host_rewrite with Endpoint.hostname
    let got = f.get(&url("/auto"), &[]).await;
    assert_eq!(got.header("x-backend"), Some("a"));
    assert_eq!(
        got.header("x-host"),
        Some("named-backend.internal"),
        "{got:?}"
    );
}

// ---- connection manager path normalization ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_normalization_fields_of_the_connection_manager_act() {
    use http_connection_manager::PathWithEscapedSlashesAction as A;
    let vh = || VirtualHost {
        routes: vec![forward(prefix("/"), to("a"))],
        ..Default::default()
    };
    let with = |name: &str, merge: bool, action: A| {
        listener(
            name,
            HttpConnectionManager {
                merge_slashes: merge,
                path_with_escaped_slashes_action: action as i32,
                ..hcm(routes(vh()))
            },
        )
    };
    let f = start(vec![
        with("keep.test:80", false, A::KeepUnchanged),
        with("merge.test:80", true, A::KeepUnchanged),
        with("reject.test:80", false, A::RejectRequest),
        with("redirect.test:80", false, A::UnescapeAndRedirect),
        with("unescape.test:80", false, A::UnescapeAndForward),
    ])
    .await;
    // HttpConnectionManager.merge_slashes
    let got = f.get("http://merge.test:80//x//y", &[]).await;
    assert_eq!(got.body(), "/x/y");
    let got = f.get("http://keep.test:80//x//y", &[]).await;
    assert_eq!(got.body(), "//x//y");
    // HttpConnectionManager.path_with_escaped_slashes_action
    let got = f.get("http://keep.test:80/x%2Fy", &[]).await;
    assert_eq!(got.body(), "/x%2Fy");
    let got = f.get("http://unescape.test:80/x%2Fy", &[]).await;
    assert_eq!(got.body(), "/x/y");
    f.reset();
    let got = f.get("http://reject.test:80/x%2Fy", &[]).await;
    assert_eq!(got.status, 400);
    let got = f.get("http://redirect.test:80/x%2Fy", &[]).await;
    assert_eq!(got.status, 307);
    assert_eq!(got.header("location"), Some("/x/y"));
    assert_eq!(f.a.calls(), 0, "refused and redirected requests never left");
}

// ---- cluster and endpoint fields ----

/// The listener `<cluster>.test:80`, every request to `cluster`.
fn via(cluster: &str) -> Listener {
    let vh = VirtualHost {
        routes: vec![forward(prefix("/"), to(cluster))],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

/// An endpoint on 127.0.0.1:`port` with `health` and `weight` (0: unset).
fn endpoint(port: u16, health: HealthStatus, weight: u32) -> LbEndpoint {
    let mut e = cluster("x", &[port], None)
        .load_assignment
        .unwrap()
        .endpoints
        .remove(0)
        .lb_endpoints
        .remove(0);
    e.health_status = health as i32;
    e.load_balancing_weight = (weight > 0).then_some(UInt32Value { value: weight });
    e
}

/// Endpoints of one locality (`zone`) at `priority`, with locality `weight` (0: unset).
fn locality(zone: &str, priority: u32, weight: u32, eps: Vec<LbEndpoint>) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: Some(Locality {
            zone: zone.into(),
            ..Default::default()
        }),
        lb_endpoints: eps,
        priority,
        load_balancing_weight: (weight > 0).then_some(UInt32Value { value: weight }),
        ..Default::default()
    }
}

/// A static cluster `name` with these endpoints, round robin.
fn with_endpoints(name: &str, endpoints: Vec<LocalityLbEndpoints>) -> Cluster {
    let mut c = cluster(name, &[], None);
    c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    let cla = c.load_assignment.as_mut().unwrap();
    cla.endpoints = endpoints;
    c
}

impl Fixture {
    /// How many of `n` requests to `<cluster>.test:80` backend `b` answered (the rest: `a`
    /// or the broken one).
    async fn to_b(&self, cluster: &str, n: usize) -> usize {
        let mut b = 0;
        for _ in 0..n {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            b += usize::from(got.header("x-backend") == Some("b"));
        }
        b
    }

    /// How many of `n` requests to `<cluster>.test:80` failed.
    async fn failures(&self, cluster: &str, n: usize) -> usize {
        let mut failed = 0;
        for _ in 0..n {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            failed += usize::from(got.status != 200);
        }
        failed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_load_balancing_fields_steer_real_requests() {
    use HealthStatus::{Draining, Healthy, Unhealthy};
    let names = [
        "unhealthy",
        "draining",
        "weights",
        "priorities",
        "overprovisioned",
        "localities",
        "panic",
        "wrr-locality",
        "round-robin-localities",
        "random-localities",
        "least-request-localities",
    ];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        let one = |zone: &str, prio: u32, eps: Vec<LbEndpoint>| vec![locality(zone, prio, 0, eps)];
        // Zones weighted 1 (backend a) to 3 (backend b), picked by a typed policy.
        let typed = |name: &str, policy: Any| {
            let mut c = with_endpoints(
                name,
                vec![
                    locality("zone-a", 0, 1, vec![endpoint(p.a, Healthy, 0)]),
                    locality("zone-b", 0, 3, vec![endpoint(p.b, Healthy, 0)]),
                ],
            );
            c.load_balancing_policy = Some(lb_policy(name, policy));
            c
        };
        let weighted = || {
            Some(LocalityLbConfig {
                locality_config_specifier: Some(
                    locality_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                        Default::default(),
                    ),
                ),
            })
        };
        let wrr = WrrLocality {
            endpoint_picking_policy: Some(lb_policy("rr", pack_any(RoundRobin::default()))),
            ..Default::default()
        };
        let rr = RoundRobin {
            locality_lb_config: weighted(),
            ..Default::default()
        };
        let random = Random {
            locality_lb_config: weighted(),
        };
        let least = LeastRequest {
            locality_lb_config: weighted(),
            ..Default::default()
        };
        let mut overprovisioned = with_endpoints(
            "overprovisioned",
            vec![
                locality(
                    "z",
                    0,
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.broken, Unhealthy, 0)],
                ),
                locality("z", 1, 0, vec![endpoint(p.b, Healthy, 0)]),
            ],
        );
        overprovisioned.load_assignment.as_mut().unwrap().policy =
            Some(cluster_load_assignment::Policy {
                overprovisioning_factor: Some(UInt32Value { value: 200 }),
                ..Default::default()
            });
        let mut localities = with_endpoints(
            "localities",
            vec![
                locality("zone-a", 0, 1, vec![endpoint(p.a, Healthy, 0)]),
                locality("zone-b", 0, 3, vec![endpoint(p.b, Healthy, 0)]),
            ],
        );
        localities.common_lb_config = Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        });
        let mut panic = with_endpoints(
            "panic",
            one(
                "z",
                0,
                vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Unhealthy, 0)],
            ),
        );
        panic.common_lb_config = Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 60.0 }),
            ..Default::default()
        });
        vec![
            with_endpoints(
                "unhealthy",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Unhealthy, 0)],
                ),
            ),
            with_endpoints(
                "draining",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Draining, 0)],
                ),
            ),
            with_endpoints(
                "weights",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 1), endpoint(p.b, Healthy, 3)],
                ),
            ),
            with_endpoints(
                "priorities",
                vec![
                    locality("z", 0, 0, vec![endpoint(p.a, Healthy, 0)]),
                    locality("z", 1, 0, vec![endpoint(p.b, Healthy, 0)]),
                ],
            ),
            overprovisioned,
            localities,
            panic,
            typed("wrr-locality", pack_any(wrr)),
            typed("round-robin-localities", pack_any(rr)),
            typed("random-localities", pack_any(random)),
            typed("least-request-localities", pack_any(least)),
        ]
    })
    .await;
    // LbEndpoint.health_status: unhealthy and draining endpoints get no requests.
    assert_eq!(f.to_b("unhealthy", 40).await, 0);
    assert_eq!(f.to_b("draining", 40).await, 0);
    // LbEndpoint.load_balancing_weight: 3 of every 4 round-robin picks.
    let b = f.to_b("weights", 400).await;
    assert!(
        (280..=320).contains(&b),
        "b got {b} of 400 at weight 3 of 4"
    );
    // LocalityLbEndpoints.priority: priority 1 only when priority 0 cannot take the load.
    assert_eq!(f.to_b("priorities", 40).await, 0);
    // ClusterLoadAssignment.policy, Policy.overprovisioning_factor: half of priority 0 is
    // healthy; times 2.0 it keeps all the load (Envoy's default 1.4 would send 30% on).
    assert_eq!(f.to_b("overprovisioned", 100).await, 0);
    // LocalityLbEndpoints.load_balancing_weight, Locality and
    // CommonLbConfig.locality_weighted_lb_config: zone-b takes 3 of 4.
    let b = f.to_b("localities", 400).await;
    assert!(
        (260..=340).contains(&b),
        "zone-b got {b} of 400 at weight 3 of 4"
    );
    // CommonLbConfig.healthy_panic_threshold: 50% healthy is below 60%: panic mode spreads
    // over every endpoint, the unhealthy one too (the default, 50%, would not panic).
    let b = f.to_b("panic", 100).await;
    assert!(
        (25..=75).contains(&b),
        "the unhealthy endpoint got {b} of 100"
    );
    // Cluster.load_balancing_policy, LoadBalancingPolicy.policies,
    // Policy.typed_extension_config, TypedExtensionConfig.name and typed_config:
    // WrrLocality.endpoint_picking_policy, and the locality_lb_config
    // (LocalityLbConfig.locality_weighted_lb_config) of RoundRobin, Random and
    // LeastRequest: zone-b takes 3 of 4 (unweighted localities would split 1:1).
    for name in [
        "wrr-locality",
        "round-robin-localities",
        "random-localities",
        "least-request-localities",
    ] {
        let b = f.to_b(name, 400).await;
        assert!((250..=350).contains(&b), "{name}: zone-b got {b} of 400");
    }
}

/// A cluster's load-balancing policy: `policy` alone.
fn lb_policy(name: &str, policy: Any) -> LoadBalancingPolicy {
    LoadBalancingPolicy {
        policies: vec![load_balancing_policy::Policy {
            typed_extension_config: Some(TypedExtensionConfig {
                name: name.into(),
                typed_config: Some(policy),
            }),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_fields_eject_or_spare_a_failing_endpoint() {
    let pct = |v: u32| Some(UInt32Value { value: v });
    // Cluster `pair` behind each: backend a and one that always answers 503, at random.
    let detector = |name: &str, od: OutlierDetection, p: &Ports| {
        let mut c = cluster(name, &[p.a, p.broken], None);
        c.outlier_detection = Some(OutlierDetection {
            interval: ms(150),
            base_ejection_time: ms(60_000),
            max_ejection_percent: pct(50),
            ..od
        });
        c
    };
    // Only the detector under test enforces.
    let quiet = OutlierDetection {
        enforcing_consecutive_5xx: pct(0),
        enforcing_success_rate: pct(0),
        enforcing_consecutive_gateway_failure: pct(0),
        ..Default::default()
    };
    let failure_percentage = |volume: u32, hosts: u32| OutlierDetection {
        failure_percentage_threshold: pct(50),
        enforcing_failure_percentage: pct(100),
        failure_percentage_minimum_hosts: pct(hosts),
        failure_percentage_request_volume: pct(volume),
        ..quiet.clone()
    };
    let success_rate = |stdev: u32, enforcing: u32| OutlierDetection {
        enforcing_success_rate: pct(enforcing),
        success_rate_minimum_hosts: pct(2),
        success_rate_request_volume: pct(5),
        success_rate_stdev_factor: pct(stdev),
        ..quiet.clone()
    };
    let names = [
        "consecutive-unenforced",
        "fp",
        "fp-low-volume",
        "fp-few-hosts",
        "sr",
        "sr-wide",
        "sr-unenforced",
    ];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        vec![
            detector(
                "consecutive-unenforced",
                OutlierDetection {
                    consecutive_5xx: pct(3),
                    ..quiet.clone()
                },
                p,
            ),
            detector("fp", failure_percentage(5, 2), p),
            detector("fp-low-volume", failure_percentage(1000, 2), p),
            detector("fp-few-hosts", failure_percentage(5, 3), p),
            detector("sr", success_rate(500, 100), p),
            detector("sr-wide", success_rate(1900, 100), p),
            detector("sr-unenforced", success_rate(500, 0), p),
        ]
    })
    .await;
    // Traffic to every cluster, then three intervals for the detectors to run.
    for name in names {
        f.failures(name, 40).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = BTreeMap::new();
    for name in names {
        after.insert(name, f.failures(name, 40).await);
    }
    // Ejected: failure_percentage_threshold, enforcing_failure_percentage,
    // failure_percentage_minimum_hosts (2) and failure_percentage_request_volume (5) met;
    // success_rate_stdev_factor 0.5 puts the 0% endpoint below mean - 0.5 stdev, with
    // success_rate_minimum_hosts 2 and success_rate_request_volume 5 met.
    assert_eq!(after["fp"], 0, "{after:?}");
    assert_eq!(after["sr"], 0, "{after:?}");
    // Spared (about half the requests still fail): enforcing_consecutive_5xx 0;
    // request volume 1000 not reached; 3 hosts needed; Envoy's stdev factor 1.9 puts the
    // threshold below 0%; enforcing_success_rate 0.
    for spared in [
        "consecutive-unenforced",
        "fp-low-volume",
        "fp-few-hosts",
        "sr-wide",
        "sr-unenforced",
    ] {
        assert!(after[spared] >= 8, "{spared}: {after:?}");
    }
}

// ---- listener-level HTTP filters and their per-route overrides ----

const FAULT: &str = "envoy.filters.http.fault";

fn all() -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator: 100,
        denominator: 0,
    })
}

/// A fault that aborts every request with `status`.
fn abort(status: u32) -> HttpFault {
    HttpFault {
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(status)),
            percentage: all(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A connection manager whose chain is: the fault filter (`fault`), an unknown optional
/// filter, the router.
fn with_fault(rc: RouteConfiguration, fault: HttpFault) -> HttpConnectionManager {
    let mut h = hcm(rc);
    let unknown = HttpFilter {
        name: "envoy.filters.http.not_known_here".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/not.known.Here".into(),
                value: Vec::new(),
            },
        )),
        is_optional: true,
        ..Default::default()
    };
    let fault = HttpFilter {
        name: FAULT.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(fault))),
        ..Default::default()
    };
    h.http_filters.splice(0..0, [fault, unknown]);
    h
}

fn fault_override(o: FilterConfig) -> std::collections::HashMap<String, Any> {
    std::collections::HashMap::from([(FAULT.to_owned(), pack_any(o))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_filter_fields_and_overrides_act_on_real_requests() {
    use weighted_cluster::ClusterWeight;
    // The listener's fault: delay and abort as the request's headers say, only for
    // requests with `x-fault`, one delayed request at a time.
    let by_header = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::HeaderDelay(
                fault_delay::HeaderDelay {},
            )),
            percentage: all(),
            ..Default::default()
        }),
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HeaderAbort(
                fault_abort::HeaderAbort {},
            )),
            percentage: all(),
            ..Default::default()
        }),
        headers: vec![HeaderMatcher {
            name: "x-fault".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        }],
        max_active_faults: Some(UInt32Value { value: 1 }),
        ..Default::default()
    };
    let wrapped = |config: Any| FilterConfig {
        config: Some(config),
        ..Default::default()
    };
    let route_with = |path: &str, o: FilterConfig| Route {
        typed_per_filter_config: fault_override(o),
        ..forward(prefix(path), to("a"))
    };
    let weighted = Route {
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters: vec![ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 1 }),
                        typed_per_filter_config: std::collections::HashMap::from([(
                            FAULT.to_owned(),
                            pack_any(abort(421)),
                        )]),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })),
        ..forward(prefix("/weighted"), to("a"))
    };
    let vh = VirtualHost {
        routes: vec![
            route_with(
                "/off",
                FilterConfig {
                    disabled: true,
                    ..Default::default()
                },
            ),
            route_with("/wrapped", wrapped(pack_any(abort(420)))),
            route_with(
                "/optional",
                FilterConfig {
                    is_optional: true,
                    ..wrapped(Any {
                        type_url: "type.googleapis.com/not.known.Here".into(),
                        value: Vec::new(),
                    })
                },
            ),
            weighted,
            forward(prefix("/"), to("a")),
        ],
        ..Default::default()
    };
    let vh_level = VirtualHost {
        routes: vec![forward(prefix("/"), to("a"))],
        typed_per_filter_config: fault_override(wrapped(pack_any(abort(418)))),
        ..Default::default()
    };
    let rc_level = RouteConfiguration {
        typed_per_filter_config: fault_override(wrapped(pack_any(abort(419)))),
        ..routes(VirtualHost {
            routes: vec![forward(prefix("/"), to("a"))],
            ..Default::default()
        })
    };
    let f = start(vec![
        listener("faults.test:80", with_fault(routes(vh), by_header.clone())),
        listener(
            "faults-vh.test:80",
            with_fault(routes(vh_level), by_header.clone()),
        ),
        listener("faults-rc.test:80", with_fault(rc_level, by_header)),
    ])
    .await;
    let url = |p: &str| format!("http://faults.test:80{p}");
    let abort_418 = ("x-envoy-fault-abort-request", "418");
    // HttpFilter.is_optional: the unknown optional filter is skipped (else no listener).
    assert_eq!(f.get(&url("/"), &[]).await.status, 200);
    // FaultAbort.header_abort and HTTPFault.headers: the status the request names, only
    // for requests with x-fault.
    assert_eq!(
        f.get(&url("/"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        418
    );
    assert_eq!(f.get(&url("/"), &[abort_418]).await.status, 200);
    // FaultDelay.header_delay and HTTPFault.max_active_faults: of two concurrent requests
    // asking for 400 ms, one is delayed, the other (over the limit of 1) is not.
    let delayed = [("x-envoy-fault-delay-request", "400"), ("x-fault", "1")];
    let root = url("/");
    let (one, two) = tokio::join!(f.get(&root, &delayed), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        f.get(&root, &delayed).await
    });
    assert_eq!((one.status, two.status), (200, 200));
    assert!(one.took >= Duration::from_millis(390), "{:?}", one.took);
    assert!(two.took < Duration::from_millis(300), "{:?}", two.took);
    // FilterConfig.disabled: no fault on this route.
    assert_eq!(
        f.get(&url("/off"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        200
    );
    // FilterConfig.config: the wrapped override replaces the listener's fault.
    assert_eq!(f.get(&url("/wrapped"), &[]).await.status, 420);
    // FilterConfig.is_optional: an unknown optional override is skipped: the listener's
    // fault still acts.
    assert_eq!(
        f.get(&url("/optional"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        418
    );
    assert_eq!(f.get(&url("/optional"), &[]).await.status, 200);
    // ClusterWeight.typed_per_filter_config: the picked cluster's override.
    assert_eq!(f.get(&url("/weighted"), &[]).await.status, 421);
    // VirtualHost.typed_per_filter_config and RouteConfiguration.typed_per_filter_config.
    assert_eq!(f.get("http://faults-vh.test:80/", &[]).await.status, 418);
    assert_eq!(f.get("http://faults-rc.test:80/", &[]).await.status, 419);
}

// ---- RDS, direct responses, mirrors ----

fn mirror(cluster: &str) -> route_action::RequestMirrorPolicy {
    route_action::RequestMirrorPolicy {
        cluster: cluster.into(),
        ..Default::default()
    }
}

/// Waits up to 2 s for backend `b` to have seen `n` requests.
async fn wait_calls(b: &Backend, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.calls() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rds_direct_responses_and_mirrors_act() {
    let direct = Route {
        r#match: Some(prefix("/direct")),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 203,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineBytes(b"raw body".to_vec())),
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    // Served over RDS, with a mirror for every route.
    let rds_routes = RouteConfiguration {
        name: "rds-routes".into(),
        request_mirror_policies: vec![mirror("b")],
        ..routes(VirtualHost {
            routes: vec![direct, forward(prefix("/"), to("a"))],
            ..Default::default()
        })
    };
    let rds = HttpConnectionManager {
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                ..Default::default()
            }),
            route_config_name: "rds-routes".into(),
        })),
        ..hcm(RouteConfiguration::default())
    };
    let vh_mirror = routes(VirtualHost {
        routes: vec![forward(prefix("/"), to("a"))],
        request_mirror_policies: vec![mirror("b")],
        ..Default::default()
    });
    let f = start_full(
        vec![
            listener("rds.test:80", rds),
            listener("mirror-vh.test:80", hcm(vh_mirror)),
        ],
        vec![rds_routes],
        false,
        |_| Vec::new(),
    )
    .await;
    // Rds.route_config_name, Rds.config_source and ConfigSource.ads: the routes came over
    // the ADS stream.
    let got = f.get("http://rds.test:80/x", &[]).await;
    assert_eq!((got.status, got.body()), (200, "/x"));
    // RouteConfiguration.request_mirror_policies: b got a copy.
    assert_eq!(wait_calls(&f.b, 1).await, 1);
    // DataSource.inline_bytes: the direct response's body.
    let got = f.get("http://rds.test:80/direct", &[]).await;
    assert_eq!((got.status, got.body()), (203, "raw body"));
    // VirtualHost.request_mirror_policies.
    f.reset();
    let got = f.get("http://mirror-vh.test:80/y", &[]).await;
    assert_eq!((got.status, got.body()), (200, "/y"));
    assert_eq!(wait_calls(&f.b, 1).await, 1);
    assert_eq!(f.b.last().path, "/y");
}
