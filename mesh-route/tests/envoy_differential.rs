//! Differential test against Envoy 1.40: one RouteConfiguration proto is served to Envoy (in
//! a binary bootstrap, with static clusters pointing at a local backend that answers its
//! cluster's name) and translated through mesh-xds into our Router; for thousands of
//! generated requests (authorities, paths, query strings, headers) both must pick the same
//! cluster, or both find no route (404).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::bootstrap::v3::{Bootstrap, bootstrap::StaticResources};
use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, DataSource, HeaderValue, HeaderValueOption, SocketAddress, address, data_source,
    header_value_option, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, header_matcher, query_parameter_matcher,
    redirect_action, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher,
};
use envoy_types::pb::envoy::r#type::v3::Int64Range;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_route::{Action, HostPortMode, HostRewriteDecision, RequestView, Router, RouterOptions};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const REQUESTS: usize = 3000;

fn route_to(m: RouteMatch, cluster: &str) -> Route {
    Route {
        r#match: Some(m),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    }
}

fn sm(p: string_matcher::MatchPattern) -> header_matcher::HeaderMatchSpecifier {
    header_matcher::HeaderMatchSpecifier::StringMatch(StringMatcher {
        match_pattern: Some(p),
        ignore_case: false,
    })
}

fn with_header(
    mut m: RouteMatch,
    name: &str,
    spec: header_matcher::HeaderMatchSpecifier,
    invert: bool,
) -> RouteMatch {
    m.headers.push(HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    });
    m
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn route_config() -> RouteConfiguration {
    use string_matcher::MatchPattern as P;
    let regex = |r: &str| RegexMatcher {
        regex: r.into(),
        ..Default::default()
    };
    let api = vhost(
        "api",
        &["api.example.com", "api.example.com:8080"],
        vec![
            route_to(
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Path("/exact".into())),
                    ..Default::default()
                },
                "c-exact",
            ),
            route_to(
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::SafeRegex(regex(
                        "/users/[0-9]+",
                    ))),
                    ..Default::default()
                },
                "c-regex",
            ),
            route_to(
                RouteMatch {
                    case_sensitive: Some(BoolValue { value: false }),
                    ..prefix("/CI/")
                },
                "c-ci",
            ),
            route_to(
                with_header(prefix("/h"), "x-env", sm(P::Exact("canary".into())), false),
                "c-hdr-exact",
            ),
            route_to(
                with_header(
                    prefix("/h"),
                    "x-ver",
                    header_matcher::HeaderMatchSpecifier::RangeMatch(Int64Range {
                        start: 1,
                        end: 5,
                    }),
                    false,
                ),
                "c-hdr-range",
            ),
            route_to(
                with_header(prefix("/h"), "x-user", sm(P::Prefix("adm".into())), true),
                "c-hdr-not-admin",
            ),
            route_to(
                RouteMatch {
                    query_parameters: vec![QueryParameterMatcher {
                        name: "debug".into(),
                        query_parameter_match_specifier: Some(
                            query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(
                                StringMatcher {
                                    match_pattern: Some(P::Exact("1".into())),
                                    ignore_case: false,
                                },
                            ),
                        ),
                    }],
                    ..prefix("/q")
                },
                "c-query",
            ),
            route_to(
                RouteMatch {
                    query_parameters: vec![QueryParameterMatcher {
                        name: "trace".into(),
                        query_parameter_match_specifier: Some(
                            query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(
                                true,
                            ),
                        ),
                    }],
                    ..prefix("/q")
                },
                "c-query-present",
            ),
            route_to(
                RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::PathSeparatedPrefix(
                        "/sep".into(),
                    )),
                    ..Default::default()
                },
                "c-sep",
            ),
            route_to(prefix("/static"), "c-api-static"),
        ],
    );
    let suffix = vhost(
        "suffix",
        &["*.example.com"],
        vec![
            route_to(
                with_header(prefix("/"), "x-tier", sm(P::Suffix("-gold".into())), false),
                "c-gold",
            ),
            route_to(
                with_header(prefix("/"), "x-tier", sm(P::Contains("beta".into())), false),
                "c-beta",
            ),
            route_to(
                with_header(
                    prefix("/"),
                    "x-tier",
                    sm(P::SafeRegex(regex("v[12]"))),
                    false,
                ),
                "c-ver",
            ),
            route_to(
                with_header(
                    prefix("/"),
                    "x-debug",
                    header_matcher::HeaderMatchSpecifier::PresentMatch(true),
                    false,
                ),
                "c-debug",
            ),
            route_to(prefix("/s"), "c-suffix"),
        ],
    );
    let canary = vhost(
        "canary",
        &["*-canary.example.com"],
        vec![route_to(prefix("/"), "c-canary")],
    );
    let internal = vhost(
        "internal",
        &["internal.*"],
        vec![route_to(prefix("/"), "c-internal")],
    );
    let fallback = vhost(
        "fallback",
        &["*"],
        vec![route_to(prefix("/static/"), "c-static")],
    );
    RouteConfiguration {
        name: "differential".into(),
        virtual_hosts: vec![
            api,
            suffix,
            canary,
            internal,
            rewrites(),
            weighted(),
            fallback,
        ],
        request_headers_to_add: vec![hv(
            "x-t-append",
            "config",
            header_value_option::HeaderAppendAction::AppendIfExistsOrAdd,
        )],
        ..Default::default()
    }
}

fn hv(
    key: &str,
    value: &str,
    action: header_value_option::HeaderAppendAction,
) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

fn forward(m: RouteMatch, cluster: &str, edit: impl FnOnce(&mut RouteAction)) -> Route {
    let mut a = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    };
    edit(&mut a);
    Route {
        r#match: Some(m),
        action: Some(route::Action::Route(a)),
        ..Default::default()
    }
}

fn redirect(p: &str, r: RedirectAction) -> Route {
    Route {
        r#match: Some(prefix(p)),
        action: Some(route::Action::Redirect(r)),
        ..Default::default()
    }
}

fn regex_sub(pattern: &str, substitution: &str) -> RegexMatchAndSubstitute {
    RegexMatchAndSubstitute {
        pattern: Some(RegexMatcher {
            regex: pattern.into(),
            ..Default::default()
        }),
        substitution: substitution.into(),
    }
}

/// Rewrites, host rewrites, redirects, a direct response, header edits at three levels and
/// `cluster_header`: the backend echoes what it received, so paths, hosts and headers are
/// compared too, and redirects by their `Location`.
fn rewrites() -> VirtualHost {
    use header_value_option::HeaderAppendAction as A;
    use redirect_action::PathRewriteSpecifier as PR;
    use redirect_action::RedirectResponseCode as Code;
    use route_action::HostRewriteSpecifier as H;
    let mut hdr = forward(prefix("/hdr"), "c-hdrs", |_| {});
    hdr.request_headers_to_add = vec![
        hv("x-t-level", "route", A::OverwriteIfExistsOrAdd),
        hv("x-t-append", "route", A::AppendIfExistsOrAdd),
        hv("x-t-only-if", "route", A::OverwriteIfExists),
    ];
    hdr.request_headers_to_remove = vec!["x-t-secret".into()];
    hdr.response_headers_to_add = vec![hv("x-t-resp", "route", A::AppendIfExistsOrAdd)];
    let routes = vec![
        forward(prefix("/old/"), "c-rw", |a| {
            a.prefix_rewrite = "/new/".into();
            a.host_rewrite_specifier = Some(H::HostRewriteLiteral("backend.internal".into()));
        }),
        forward(
            RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::SafeRegex(RegexMatcher {
                    regex: "/re/[^/]+/.*".into(),
                    ..Default::default()
                })),
                ..Default::default()
            },
            "c-rw",
            |a| {
                a.regex_rewrite = Some(regex_sub("^/re/([^/]+)/(.*)$", "/\\2/by/\\1"));
                a.host_rewrite_specifier = Some(H::HostRewriteHeader("x-host".into()));
            },
        ),
        forward(
            RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Path("/exact-rw".into())),
                ..Default::default()
            },
            "c-rw",
            |a| a.prefix_rewrite = "/other".into(),
        ),
        forward(
            RouteMatch {
                case_sensitive: Some(BoolValue { value: false }),
                ..prefix("/CASE/")
            },
            "c-rw",
            |a| {
                a.prefix_rewrite = "/lower/".into();
            },
        ),
        redirect(
            "/redir/https",
            RedirectAction {
                scheme_rewrite_specifier: Some(
                    redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true),
                ),
                ..Default::default()
            },
        ),
        redirect(
            "/redir/host",
            RedirectAction {
                host_redirect: "new.example.com".into(),
                response_code: Code::Found as i32,
                ..Default::default()
            },
        ),
        redirect(
            "/redir/port",
            RedirectAction {
                port_redirect: 8443,
                ..Default::default()
            },
        ),
        redirect(
            "/redir/path",
            RedirectAction {
                path_rewrite_specifier: Some(PR::PathRedirect("/new".into())),
                ..Default::default()
            },
        ),
        redirect(
            "/redir/pq",
            RedirectAction {
                path_rewrite_specifier: Some(PR::PathRedirect("/new?x=1".into())),
                strip_query: true,
                ..Default::default()
            },
        ),
        redirect(
            "/redir/strip",
            RedirectAction {
                strip_query: true,
                response_code: Code::TemporaryRedirect as i32,
                ..Default::default()
            },
        ),
        redirect(
            "/redir/old/",
            RedirectAction {
                path_rewrite_specifier: Some(PR::PrefixRewrite("/redir/new/".into())),
                response_code: Code::PermanentRedirect as i32,
                ..Default::default()
            },
        ),
        redirect(
            "/redir/v1/",
            RedirectAction {
                path_rewrite_specifier: Some(PR::RegexRewrite(regex_sub(
                    "^/redir/v1/(.*)$",
                    "/v2/\\1",
                ))),
                response_code: Code::SeeOther as i32,
                ..Default::default()
            },
        ),
        Route {
            r#match: Some(prefix("/direct")),
            action: Some(route::Action::DirectResponse(DirectResponseAction {
                status: 202,
                body: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString("hello".into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
            ..Default::default()
        },
        hdr,
        forward(prefix("/ch"), "", |a| {
            a.cluster_specifier = Some(route_action::ClusterSpecifier::ClusterHeader(
                "x-cluster".into(),
            ));
        }),
        route_to(prefix("/"), "c-rw"),
    ];
    let mut v = vhost("rewrites", &["rw.example.com"], routes);
    v.request_headers_to_add = vec![
        hv("x-t-level", "vhost", A::OverwriteIfExistsOrAdd),
        hv("x-t-append", "vhost", A::AppendIfExistsOrAdd),
        hv("x-t-absent", "vhost", A::AddIfAbsent),
    ];
    v.response_headers_to_add = vec![hv("x-t-resp", "vhost", A::OverwriteIfExistsOrAdd)];
    v
}

/// Weights 10 / 0 / 30 (Envoy picks `random % 40` against the cumulative weights).
const WEIGHTS: [(&str, u32); 3] = [("c-w-a", 10), ("c-w-b", 0), ("c-w-c", 30)];

fn weighted() -> VirtualHost {
    use envoy_types::pb::envoy::config::route::v3::{WeightedCluster, weighted_cluster};
    use envoy_types::pb::google::protobuf::UInt32Value;
    let split = WeightedCluster {
        clusters: WEIGHTS
            .iter()
            .map(|(name, w)| weighted_cluster::ClusterWeight {
                name: (*name).into(),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let route = forward(prefix("/"), "", |a| {
        a.cluster_specifier = Some(route_action::ClusterSpecifier::WeightedClusters(split));
    });
    vhost("weighted", &["weighted.example.com"], vec![route])
}

fn clusters(rc: &RouteConfiguration) -> Vec<String> {
    let mut names: Vec<String> = rc
        .virtual_hosts
        .iter()
        .flat_map(|v| &v.routes)
        .flat_map(|r| match &r.action {
            Some(route::Action::Route(a)) => match &a.cluster_specifier {
                Some(route_action::ClusterSpecifier::Cluster(c)) if !c.is_empty() => {
                    vec![c.clone()]
                }
                Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
                    w.clusters.iter().map(|c| c.name.clone()).collect()
                }
                _ => vec![],
            },
            _ => vec![],
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

fn socket(port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: "127.0.0.1".into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn bootstrap(rc: &RouteConfiguration, listen: u16, backends: &[(String, u16)]) -> Bootstrap {
    let hcm = HttpConnectionManager {
        stat_prefix: "diff".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::RouteConfig(
            rc.clone(),
        )),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                RouterFilter::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    let listener = Listener {
        name: "diff".into(),
        address: Some(socket(listen)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(pack_any(hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let clusters = backends
        .iter()
        .map(|(name, port)| Cluster {
            name: name.clone(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::Static as i32,
            )),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: 1,
                nanos: 0,
            }),
            load_assignment: Some(ClusterLoadAssignment {
                cluster_name: name.clone(),
                endpoints: vec![LocalityLbEndpoints {
                    lb_endpoints: vec![LbEndpoint {
                        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                            address: Some(socket(*port)),
                            ..Default::default()
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Bootstrap {
        static_resources: Some(StaticResources {
            listeners: vec![listener],
            clusters,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Kills Envoy when the test ends, however it ends.
struct EnvoyGuard(Child, std::path::PathBuf);

impl Drop for EnvoyGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

use mesh_test_support::free_port;

/// One task per cluster port, each answering with its cluster's name.
async fn start_backends(names: &[String]) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for name in names {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = Bytes::from(name.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let echo = format!(
                            "{}|{}|{}|{}",
                            String::from_utf8_lossy(&body),
                            req.uri().path_and_query().map_or("", |p| p.as_str()),
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or(""),
                            test_headers(req.headers()),
                        );
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                Bytes::from(echo),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        out.push((name.clone(), port));
    }
    out
}

/// The `x-t-*` headers, sorted by name, values in order: `name=v1,v2;...`.
fn test_headers(h: &http::HeaderMap) -> String {
    let mut names: Vec<&str> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("x-t-"))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .iter()
        .map(|n| {
            let vs: Vec<&str> = h
                .get_all(*n)
                .iter()
                .map(|v| v.to_str().unwrap_or("?"))
                .collect();
            format!("{n}={}", vs.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

struct Generated {
    authority: String,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
}

fn generate(rng: &mut StdRng) -> Generated {
    const AUTHORITIES: &[&str] = &[
        "api.example.com",
        "API.Example.COM",
        "api.example.com:8080",
        "api.example.com:9090",
        "www.example.com",
        "x.y.example.com",
        "a-canary.example.com",
        "-canary.example.com",
        "internal.corp",
        "internal.corp:81",
        "INTERNAL.x",
        "other.org",
        "example.com",
        "rw.example.com",
        "rw.example.com:80",
        "RW.example.com:8443",
        "rw.example.com",
    ];
    const PATHS: &[&str] = &[
        "/exact",
        "/exact/",
        "/Exact",
        "/users/12",
        "/users/x",
        "/users/12/x",
        "/ci/a",
        "/CI/b",
        "/Ci/",
        "/ci",
        "/h",
        "/h/x",
        "/q",
        "/q/x",
        "/sep",
        "/sep/a",
        "/separate",
        "/static",
        "/static/x",
        "/s",
        "/sx",
        "/",
        "/zzz",
    ];
    const QUERIES: &[&str] = &[
        "",
        "",
        "?debug=1",
        "?debug=2",
        "?trace",
        "?a=b&debug=1",
        "?debug=1&debug=2",
        "?debug=2&debug=1",
        "?trace=x",
        "?debug",
        "?x=1&trace",
    ];
    const HEADERS: &[(&str, &[&str])] = &[
        ("x-env", &["canary", "prod", "Canary"]),
        ("x-ver", &["0", "1", "4", "5", "abc", "-3"]),
        ("x-user", &["admin", "adm", "bob"]),
        ("x-tier", &["a-gold", "gold-a", "xbetax", "v1", "v12", "V2"]),
        ("x-debug", &["1", ""]),
        ("x-t-secret", &["s"]),
        ("x-t-absent", &["client"]),
        ("x-t-level", &["client"]),
        ("x-host", &["from-header", ""]),
        ("x-cluster", &["c-rw", "c-exact", "nope"]),
    ];
    const RW_PATHS: &[&str] = &[
        "/old/a",
        "/old/",
        "/re/alice/photos/1",
        "/re/x",
        "/exact-rw",
        "/case/A",
        "/Case/b",
        "/redir/https/a",
        "/redir/host/x",
        "/redir/port/x",
        "/redir/path/x",
        "/redir/pq",
        "/redir/strip/x",
        "/redir/old/deep",
        "/redir/v1/users",
        "/direct",
        "/hdr",
        "/ch",
        "/zzz",
    ];
    let authority = AUTHORITIES[rng.random_range(0..AUTHORITIES.len())].to_owned();
    let paths = if authority.to_ascii_lowercase().starts_with("rw.") {
        RW_PATHS
    } else {
        PATHS
    };
    let path = format!(
        "{}{}",
        paths[rng.random_range(0..paths.len())],
        QUERIES[rng.random_range(0..QUERIES.len())]
    );
    let mut headers = Vec::new();
    for (name, values) in HEADERS {
        // Each header absent half the time; sometimes twice (values joined with ',').
        let n = match rng.random_range(0..8) {
            0..4 => 0,
            4..7 => 1,
            _ => 2,
        };
        for _ in 0..n {
            headers.push((*name, values[rng.random_range(0..values.len())]));
        }
    }
    Generated {
        authority,
        path,
        headers,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_cluster_as_envoy() {
    let envoy_bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let rc = route_config();

    // Our side: the same proto through the xDS translation.
    let any = pack_any(rc.clone());
    let model = match mesh_xds::resource::decode(mesh_xds::ResourceType::RouteConfiguration, &any) {
        Ok(mesh_xds::Resource::RouteConfiguration(m)) => m,
        other => panic!("translation: {other:?}"),
    };
    let router = Router::with_options(
        &model,
        RouterOptions {
            host_port_mode: HostPortMode::AsIs,
            ..Default::default()
        },
    )
    .unwrap();

    // Envoy's side.
    let names = clusters(&rc);
    let backends = start_backends(&names).await;
    let listen = free_port();
    let dir = tempdir();
    let config_path = dir.join("config.pb");
    std::fs::write(
        &config_path,
        bootstrap(&rc, listen, &backends).encode_to_vec(),
    )
    .unwrap();
    let child = Command::new(&envoy_bin)
        .args([
            "-c",
            config_path.to_str().unwrap(),
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "-l",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start envoy");
    let _guard = EnvoyGuard(child, dir.clone());

    let client: hyper_util::client::legacy::Client<_, Empty<Bytes>> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let addr = SocketAddr::from(([127, 0, 0, 1], listen));
    let send = |g: &Generated| {
        let mut b = hyper::Request::get(format!("http://{addr}{}", g.path))
            .header("host", g.authority.as_str());
        for (k, v) in &g.headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Empty::<Bytes>::new()).unwrap();
        let client = client.clone();
        async move {
            let resp = client.request(req).await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, headers, body))
        }
    };
    // Wait for Envoy to listen.
    let probe = Generated {
        authority: "api.example.com".into(),
        path: "/exact".into(),
        headers: vec![],
    };
    let mut ready = false;
    for _ in 0..100 {
        if let Ok((s, _, _)) = send(&probe).await
            && s == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "envoy did not become ready");

    let mut rng = StdRng::seed_from_u64(0x5EED);
    let mut mismatches = Vec::new();
    let mut per_cluster = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..REQUESTS {
        let g = generate(&mut rng);
        let (status, resp_headers, body) = send(&g).await.expect("request through envoy");
        let body = String::from_utf8_lossy(&body).into_owned();
        let envoy = match status.as_u16() {
            404 if body.is_empty() => "404".to_owned(),
            503 => "503".to_owned(),
            s @ 300..=399 => format!(
                "{s} {}",
                resp_headers
                    .get("location")
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("")
            ),
            200 => format!("{body}|resp={}", test_headers(&resp_headers)),
            s => format!("direct {s} {body}"),
        };
        let mut hm = http::HeaderMap::new();
        for (k, v) in &g.headers {
            hm.append(*k, v.parse().unwrap());
        }
        let ours = match router.route_with_random(&RequestView::new(&g.authority, &g.path, &hm), 0)
        {
            None => "404".to_owned(),
            Some(d) => match d.action {
                Action::Forward(f) if !names.iter().any(|n| **n == *f.cluster) => "503".to_owned(),
                Action::Forward(f) => {
                    let mut upstream = hm.clone();
                    d.headers.apply_request(&mut upstream);
                    let mut response = http::HeaderMap::new();
                    d.headers.apply_response(&mut response);
                    let host = match &f.host {
                        Some(HostRewriteDecision::Set(h)) => h.clone(),
                        _ => g.authority.clone(),
                    };
                    format!(
                        "{}|{}|{host}|{}|resp={}",
                        f.cluster,
                        f.path.as_deref().unwrap_or(&g.path),
                        test_headers(&upstream),
                        test_headers(&response)
                    )
                }
                Action::Redirect { status, location } => format!("{status} {location}"),
                Action::DirectResponse { status, body } => format!(
                    "direct {status} {}",
                    String::from_utf8_lossy(body.as_deref().unwrap_or_default())
                ),
                Action::NonForwarding => "local".to_owned(),
            },
        };
        let envoy_cluster = envoy.split(['|', ' ']).next().unwrap_or("").to_owned();
        *per_cluster.entry(envoy_cluster).or_default() += 1;
        if envoy != ours {
            mismatches.push(format!(
                "{} {} {:?}: envoy {envoy}, ours {ours}",
                g.authority, g.path, g.headers
            ));
        }
    }
    eprintln!("{REQUESTS} requests, by Envoy's cluster: {per_cluster:?}");
    assert!(
        mismatches.is_empty(),
        "{} mismatches:\n{}",
        mismatches.len(),
        mismatches
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Weighted clusters are random in Envoy: compare the split statistically. 1,200
    // requests: c-w-a expects 300 (sd 15), c-w-c 900; the zero-weight cluster none.
    let mut envoy_split = std::collections::BTreeMap::<String, u32>::new();
    let mut our_split = std::collections::BTreeMap::<String, u32>::new();
    let empty = http::HeaderMap::new();
    for i in 0..1_200u64 {
        let g = Generated {
            authority: "weighted.example.com".into(),
            path: "/split".into(),
            headers: vec![],
        };
        let (status, _, body) = send(&g).await.expect("request through envoy");
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        let cluster = body.split('|').next().unwrap_or("").to_owned();
        *envoy_split.entry(cluster).or_default() += 1;
        let random = rng.random::<u64>() ^ i;
        let ours = match router
            .route_with_random(&RequestView::new(&g.authority, &g.path, &empty), random)
            .map(|d| d.action)
        {
            Some(Action::Forward(f)) => f.cluster.to_string(),
            other => format!("{other:?}"),
        };
        *our_split.entry(ours).or_default() += 1;
    }
    eprintln!("weighted split: envoy {envoy_split:?}, ours {our_split:?}");
    for split in [&envoy_split, &our_split] {
        let a = split.get("c-w-a").copied().unwrap_or(0);
        let c = split.get("c-w-c").copied().unwrap_or(0);
        assert!((240..=360).contains(&a), "{split:?}");
        assert_eq!(
            a + c,
            1_200,
            "the zero-weight cluster is never picked: {split:?}"
        );
    }
    // The generator must exercise every route and the no-route case.
    for name in names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with("c-w-"))
        .chain(["404", "503", "301", "302", "303", "307", "308", "direct"])
    {
        assert!(
            per_cluster.contains_key(name),
            "never routed to {name}: {per_cluster:?}"
        );
    }
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mesh-route-diff-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
