//! What the tests share: recording backends, builders of Envoy resources, and a mesh whose
//! client is configured by our xDS server serving those resources.

pub use std::collections::BTreeMap;
pub use std::convert::Infallible;
pub use std::sync::atomic::{AtomicUsize, Ordering};
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use bytes::Bytes;
pub use envoy_types::pb::envoy::config::cluster::v3::{
    Cluster, LoadBalancingPolicy, OutlierDetection, cluster, load_balancing_policy,
};
pub use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, DataSource, HeaderValue, HeaderValueOption,
    HealthStatus, Locality, Node, RuntimeFractionalPercent, SocketAddress, TypedExtensionConfig,
    address, config_source, data_source, socket_address,
};
pub use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, cluster_load_assignment,
    lb_endpoint,
};
pub use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
pub use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, FilterConfig, HeaderMatcher, QueryParameterMatcher, RedirectAction,
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
    header_matcher, query_parameter_matcher, redirect_action, retry_policy, route, route_action,
    route_match, weighted_cluster,
};
pub use envoy_types::pb::envoy::extensions::filters::common::fault::v3::{FaultDelay, fault_delay};
pub use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{
    FaultAbort, HttpFault, fault_abort,
};
pub use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterFilter;
pub use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
pub use envoy_types::pb::envoy::extensions::load_balancing_policies::common::v3::{
    LocalityLbConfig, locality_lb_config,
};
pub use envoy_types::pb::envoy::extensions::load_balancing_policies::least_request::v3::LeastRequest;
pub use envoy_types::pb::envoy::extensions::load_balancing_policies::random::v3::Random;
pub use envoy_types::pb::envoy::extensions::load_balancing_policies::round_robin::v3::RoundRobin;
pub use envoy_types::pb::envoy::extensions::load_balancing_policies::wrr_locality::v3::WrrLocality;
pub use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
pub use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
pub use envoy_types::pb::envoy::r#type::v3::{
    FractionalPercent, Int64Range, Percent, fractional_percent,
};
pub use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
pub use envoy_types::util::pack_any;
pub use futures::StreamExt;
pub use http::{Request, Response};
pub use http_body_util::combinators::UnsyncBoxBody;
pub use http_body_util::{BodyExt, Empty, Full, StreamBody};
pub use hyper::body::Frame;
pub use hyper_util::rt::{TokioExecutor, TokioIo};
pub use mesh::Mesh;
pub use mesh::xds::bootstrap::{Bootstrap, IstioNode};
pub use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
pub use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
pub use mesh_core::TrustDomain;
pub use mesh_tls::dev_ca::DevCa;
pub use tokio::net::TcpListener;
pub use tokio::sync::watch;
pub use tower::ServiceExt;

// ---- backends ----

/// One request as a backend saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub version: http::Version,
    pub path: String,
    pub headers: http::HeaderMap,
    pub at: Instant,
}

/// A plaintext HTTP/1.1 backend. It answers 200 with `x-backend: <tag>`, `x-host: <Host>`
/// and, as body, the request's `x-route` header (else its path), unless the request says
/// otherwise: `x-fail: N` fails its first N calls (counted by `calls`) with `x-fail-status`
/// (503 by default) and `x-failed: 1`; `x-delay-ms` waits before the headers (for the
/// first `x-slow` calls only when that is set); `x-body-gap-ms` sends the body in two parts
/// that far apart. `always` makes it answer every request with that status.
#[derive(Clone)]
pub struct Backend {
    pub port: u16,
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

impl Backend {
    pub async fn start(tag: &'static str, always: Option<u16>) -> Self {
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

    pub async fn answer(
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
            version: req.version(),
            path: path.clone(),
            headers: h.clone(),
            at: Instant::now(),
        });
        if let Some(ms) = num("x-delay-ms")
            && num("x-slow").is_none_or(|slow| n as u64 <= slow)
        {
            tokio::time::sleep(Duration::from_millis(ms)).await;
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

    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        self.seen.lock().unwrap().clear();
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

// ---- resources ----

/// What the xDS server serves: these listeners, route configurations and clusters, as they
/// are, except that an EDS cluster's `load_assignment` is served as its own
/// ClusterLoadAssignment resource (under its `cluster_name`) instead.
#[derive(Clone, Default)]
pub struct Scenario {
    pub listeners: Vec<Listener>,
    pub route_configs: Vec<RouteConfiguration>,
    pub clusters: Vec<Cluster>,
}

pub struct Serve;
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
            let mut c = c.clone();
            if c.eds_cluster_config.is_some()
                && let Some(cla) = c.load_assignment.take()
            {
                r.add(cla.cluster_name.clone(), cla);
            }
            r.add(c.name.clone(), c);
        }
        for rc in &s.route_configs {
            r.add(rc.name.clone(), rc.clone());
        }
        Ok(r)
    }
}

pub fn ms(ms: u64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    })
}

/// A connection manager with the router filter and `rc` inline.
pub fn hcm(rc: RouteConfiguration) -> HttpConnectionManager {
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
pub fn listener(name: &str, hcm: HttpConnectionManager) -> Listener {
    Listener {
        name: name.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

/// A route configuration of one virtual host for every domain.
pub fn routes(vh: VirtualHost) -> RouteConfiguration {
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

pub fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

pub fn to(cluster: &str) -> RouteAction {
    RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

pub fn forward(m: RouteMatch, action: RouteAction) -> Route {
    Route {
        r#match: Some(m),
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

pub fn header(key: &str, value: &str) -> HeaderValue {
    HeaderValue {
        key: key.into(),
        value: value.into(),
        ..Default::default()
    }
}

pub fn add(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(header(key, value)),
        ..Default::default()
    }
}

/// A static cluster over `ports` on 127.0.0.1 (random picks: retries may reach either),
/// each endpoint with `hostname`, if any.
pub fn cluster(name: &str, ports: &[u16], hostname: Option<&str>) -> Cluster {
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

pub struct Fixture {
    pub mesh: Mesh,
    pub a: Backend,
    pub b: Backend,
    pub _config: watch::Sender<Arc<Scenario>>,
    /// The xDS server (its status shows the client's ACKs and NACKs).
    pub xds: XdsServer<Scenario>,
}

/// Backends `a` and `b` (clusters `a`, `b`; `named`: `a` with endpoint hostname
/// `named-backend.internal`; `pair`: `a` and a backend that always answers 503), our xDS
/// server serving `listeners` and those clusters, and a mesh that resolved every listener.
pub async fn start(listeners: Vec<Listener>) -> Fixture {
    start_with(listeners, |_| Vec::new()).await
}

/// The ports of backends `a`, `b` and the one that always answers 503.
pub struct Ports {
    pub a: u16,
    pub b: u16,
    pub broken: u16,
}

/// [`start`], with more clusters, made knowing the backends' ports.
pub async fn start_with(
    listeners: Vec<Listener>,
    more: impl FnOnce(&Ports) -> Vec<Cluster>,
) -> Fixture {
    start_full(listeners, Vec::new(), false, more).await
}

/// [`start_with`], also serving `route_configs` over RDS; with `wildcard_clusters` the
/// client subscribes to every cluster, not only those its routes name.
pub async fn start_full(
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
    tokio::spawn(xds.clone().serve(tcp, std::future::pending()));
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
        xds,
    }
}

/// What the caller got.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Result<String, String>,
    pub took: Duration,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
    pub fn body(&self) -> &str {
        self.body.as_deref().expect("a whole body")
    }
}

impl Fixture {
    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Got {
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

    pub fn reset(&self) {
        self.a.reset();
        self.b.reset();
    }
}
