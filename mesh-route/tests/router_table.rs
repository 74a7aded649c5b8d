//! Table-driven tests for every match and action of the router, with Envoy's semantics.

use std::time::Duration;

use http::HeaderMap;
use mesh_core::model::*;
use mesh_route::{Action, HostPortMode, HostRewriteDecision, RequestView, Router, RouterOptions};

fn route(name: &str, m: RouteMatch, action: RouteAction) -> Route {
    Route {
        name: name.into(),
        route_match: m,
        action,
        headers: HeaderOps::default(),
        filter_overrides: Default::default(),
    }
}

fn to(cluster: &str) -> RouteAction {
    RouteAction::Forward(Box::new(ForwardAction {
        cluster: ClusterSpecifier::Cluster(cluster.into()),
        ..Default::default()
    }))
}

fn fwd(f: ForwardAction) -> RouteAction {
    RouteAction::Forward(Box::new(f))
}

fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix(p.into()),
        ..Default::default()
    }
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        ..Default::default()
    }
}

fn config(vhosts: Vec<VirtualHost>) -> RouteConfig {
    RouteConfig {
        name: "test".into(),
        virtual_hosts: vhosts,
        ..Default::default()
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

/// The cluster picked, the route name, or "404".
fn cluster_of(router: &Router, authority: &str, path: &str, hs: &[(&str, &str)]) -> String {
    let h = headers(hs);
    match router.route_with_random(&RequestView::new(authority, path, &h), 0) {
        None => "404".into(),
        Some(d) => match d.action {
            Action::Forward(f) => f.cluster.to_string(),
            Action::Redirect { status, location } => format!("{status} {location}"),
            Action::DirectResponse { status, .. } => format!("direct {status}"),
            Action::NonForwarding => "local".into(),
        },
    }
}

fn hm(name: &str, rule: HeaderMatchRule, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        rule,
        invert_match: invert,
        treat_missing_header_as_empty: false,
    }
}

fn s(kind: &str, v: &str) -> HeaderMatchRule {
    let value = v.to_string();
    HeaderMatchRule::String(match kind {
        "exact" => StringMatcher::Exact {
            value,
            ignore_case: false,
        },
        "prefix" => StringMatcher::Prefix {
            value,
            ignore_case: false,
        },
        "suffix" => StringMatcher::Suffix {
            value,
            ignore_case: false,
        },
        "contains" => StringMatcher::Contains {
            value,
            ignore_case: false,
        },
        "regex" => StringMatcher::Regex(Regex::full(v).unwrap()),
        _ => unreachable!(),
    })
}

#[test]
fn virtual_host_selection() {
    let r = Router::with_options(
        &config(vec![
            vhost(
                "exact",
                &["api.example.com", "api.example.com:8443"],
                vec![route("", prefix("/"), to("exact"))],
            ),
            vhost(
                "suffix",
                &["*.example.com"],
                vec![route("", prefix("/"), to("suffix"))],
            ),
            vhost(
                "longer",
                &["*-canary.example.com"],
                vec![route("", prefix("/"), to("longer"))],
            ),
            vhost(
                "prefix",
                &["internal.*"],
                vec![route("", prefix("/"), to("prefix"))],
            ),
            vhost("any", &["*"], vec![route("", prefix("/"), to("any"))]),
        ]),
        RouterOptions {
            host_port_mode: HostPortMode::AsIs,
            ..Default::default()
        },
    )
    .unwrap();
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8443", "exact"),
        ("api.example.com:80", "any"),
        ("www.example.com", "suffix"),
        ("a-canary.example.com", "longer"),
        ("-canary.example.com", "suffix"),
        ("internal.corp", "prefix"),
        ("example.com", "any"),
        ("", "any"),
    ];
    for (authority, want) in cases {
        assert_eq!(
            cluster_of(&r, authority, "/", &[]),
            want,
            "authority {authority:?}"
        );
    }
    // Envoy's default: the port takes part, so `:80` does not find `api.example.com`; the
    // port fallback mode retries without it.
    let vhosts = || {
        config(vec![
            vhost(
                "exact",
                &["api.example.com"],
                vec![route("", prefix("/"), to("exact"))],
            ),
            vhost("any", &["*"], vec![route("", prefix("/"), to("any"))]),
        ])
    };
    let envoy = Router::new(&vhosts()).unwrap();
    assert_eq!(cluster_of(&envoy, "api.example.com:80", "/", &[]), "any");
    let fb = Router::with_options(
        &vhosts(),
        RouterOptions {
            host_port_mode: HostPortMode::FallbackWithoutPort,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(cluster_of(&fb, "api.example.com:80", "/", &[]), "exact");
    // No `*` and no match: no route.
    let none = Router::new(&config(vec![vhost(
        "x",
        &["x"],
        vec![route("", prefix("/"), to("x"))],
    )]))
    .unwrap();
    assert_eq!(cluster_of(&none, "y", "/", &[]), "404");
}

#[test]
fn path_matches() {
    let ci = |m: RouteMatch| RouteMatch {
        case_sensitive: false,
        ..m
    };
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "",
                RouteMatch {
                    path: PathMatch::Exact("/exact".into()),
                    ..Default::default()
                },
                to("exact"),
            ),
            route(
                "",
                ci(RouteMatch {
                    path: PathMatch::Exact("/EXACT-CI".into()),
                    ..Default::default()
                }),
                to("exact-ci"),
            ),
            route(
                "",
                RouteMatch {
                    path: PathMatch::Regex(Regex::full("/re/[0-9]+").unwrap()),
                    ..Default::default()
                },
                to("regex"),
            ),
            route(
                "",
                RouteMatch {
                    path: PathMatch::PathSeparatedPrefix("/sep".into()),
                    ..Default::default()
                },
                to("sep"),
            ),
            route("", ci(prefix("/CI/")), to("prefix-ci")),
            route("", prefix("/api"), to("prefix")),
        ],
    )]))
    .unwrap();
    let cases = [
        ("/exact", "exact"),
        ("/exact?x=1", "exact"),
        ("/exact/", "404"),
        ("/Exact", "404"),
        ("/exact-ci", "exact-ci"),
        ("/re/123", "regex"),
        ("/re/123?q", "regex"),
        ("/re/12a", "404"),
        ("/re/1/2", "404"),
        ("/sep", "sep"),
        ("/sep/x", "sep"),
        ("/sep?x", "sep"),
        ("/separate", "404"),
        ("/ci/x", "prefix-ci"),
        ("/Ci/x", "prefix-ci"),
        ("/api", "prefix"),
        ("/apiv2", "prefix"),
        ("/API", "404"),
    ];
    for (path, want) in cases {
        assert_eq!(cluster_of(&r, "h", path, &[]), want, "path {path:?}");
    }
}

/// Path, request headers, expected cluster.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

#[test]
fn header_and_query_matches() {
    let with_headers = |hs: Vec<HeaderMatcher>, c: &str| {
        route(
            "",
            RouteMatch {
                headers: hs,
                ..prefix("/h")
            },
            to(c),
        )
    };
    let q = |name: &str, value: Option<StringMatcher>, c: &str| {
        route(
            "",
            RouteMatch {
                query_parameters: vec![QueryParameterMatcher {
                    name: name.into(),
                    value,
                }],
                ..prefix("/q")
            },
            to(c),
        )
    };
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            with_headers(vec![hm("x-exact", s("exact", "a"), false)], "exact"),
            with_headers(vec![hm("x-prefix", s("prefix", "pre"), false)], "prefix"),
            with_headers(vec![hm("x-suffix", s("suffix", "fix"), false)], "suffix"),
            with_headers(
                vec![hm("x-contains", s("contains", "mid"), false)],
                "contains",
            ),
            with_headers(vec![hm("x-regex", s("regex", "v[0-9]"), false)], "regex"),
            with_headers(
                vec![hm("x-present", HeaderMatchRule::Present(true), false)],
                "present",
            ),
            with_headers(
                vec![hm(
                    "x-range",
                    HeaderMatchRule::Range { start: 10, end: 20 },
                    false,
                )],
                "range",
            ),
            with_headers(vec![hm("x-inv", s("exact", "no"), true)], "invert"),
            with_headers(vec![hm("x-multi", s("exact", "b"), false)], "any-value"),
            with_headers(
                vec![hm("x-multi-inv", s("prefix", "adm"), true)],
                "inverted-any",
            ),
            with_headers(
                vec![
                    hm(":method", s("exact", "GET"), false),
                    hm("x-and", HeaderMatchRule::Present(true), false),
                ],
                "method-and",
            ),
            q(
                "exact",
                Some(StringMatcher::Exact {
                    value: "1".into(),
                    ignore_case: false,
                }),
                "q-exact",
            ),
            q("present", None, "q-present"),
            q(
                "ci",
                Some(StringMatcher::Exact {
                    value: "ABC".into(),
                    ignore_case: true,
                }),
                "q-ci",
            ),
            route("", prefix("/"), to("fallback")),
        ],
    )]))
    .unwrap();
    let cases: [Case<'_>; 25] = [
        ("/h", &[("x-exact", "a")], "exact"),
        ("/h", &[("x-exact", "ab")], "fallback"),
        ("/h", &[("x-prefix", "prefix")], "prefix"),
        ("/h", &[("x-suffix", "suffix")], "suffix"),
        ("/h", &[("x-contains", "amidst")], "contains"),
        ("/h", &[("x-regex", "v1")], "regex"),
        ("/h", &[("x-regex", "v12")], "fallback"),
        ("/h", &[("x-present", "")], "present"),
        ("/h", &[("x-range", "15")], "range"),
        ("/h", &[("x-range", "20")], "fallback"),
        ("/h", &[("x-range", "x")], "fallback"),
        ("/h", &[("x-inv", "yes")], "invert"),
        ("/h", &[("x-inv", "no")], "fallback"),
        ("/h", &[], "fallback"),
        // Several values (header lines): any value may satisfy the rule, as Envoy 1.40 does.
        ("/h", &[("x-multi", "a"), ("x-multi", "b")], "any-value"),
        ("/h", &[("x-multi", "a,b")], "fallback"),
        (
            "/h",
            &[("x-multi-inv", "bob"), ("x-multi-inv", "admin")],
            "fallback",
        ),
        (
            "/h",
            &[("x-multi-inv", "bob"), ("x-multi-inv", "carol")],
            "inverted-any",
        ),
        ("/h", &[("x-and", "1")], "method-and"),
        ("/q?exact=1", &[], "q-exact"),
        ("/q?a=2&exact=1&exact=2", &[], "q-exact"),
        ("/q?exact=2&exact=1", &[], "fallback"),
        ("/q?present", &[], "q-present"),
        ("/q?ci=abc", &[], "q-ci"),
        ("/q?other=1", &[], "fallback"),
    ];
    for (path, hs, want) in cases {
        assert_eq!(cluster_of(&r, "h", path, hs), want, "{path} {hs:?}");
    }
}

#[test]
fn runtime_fraction_and_grpc() {
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "",
                RouteMatch {
                    grpc: true,
                    ..prefix("/")
                },
                to("grpc"),
            ),
            route(
                "",
                RouteMatch {
                    fraction: Some(Fraction::new(25, 100)),
                    ..prefix("/")
                },
                to("quarter"),
            ),
            route("", prefix("/"), to("rest")),
        ],
    )]))
    .unwrap();
    let h = HeaderMap::new();
    let req = RequestView::new("h", "/", &h);
    let pick = |random| match r.route_with_random(&req, random).unwrap().action {
        Action::Forward(f) => f.cluster.to_string(),
        _ => unreachable!(),
    };
    // Envoy: random % 100 < 25.
    assert_eq!(pick(24), "quarter");
    assert_eq!(pick(25), "rest");
    assert_eq!(pick(124), "quarter");
    let hits = (0..10_000u64).filter(|r| pick(*r) == "quarter").count();
    assert_eq!(hits, 2_500);
    assert_eq!(
        cluster_of(&r, "h", "/", &[("content-type", "application/grpc")]),
        "grpc"
    );
    assert_eq!(
        cluster_of(&r, "h", "/", &[("content-type", "application/grpc+proto")]),
        "grpc"
    );
    assert_ne!(
        cluster_of(&r, "h", "/", &[("content-type", "application/grpcx")]),
        "grpc"
    );
}

#[test]
fn weighted_and_header_clusters() {
    let wc = |name: &str, weight| WeightedCluster {
        name: name.into(),
        weight,
        headers: HeaderOps::default(),
        filter_overrides: Default::default(),
    };
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "",
                prefix("/w"),
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Weighted(vec![wc("a", 10), wc("b", 0), wc("c", 30)]),
                    ..Default::default()
                }),
            ),
            route(
                "",
                prefix("/h"),
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Header("x-cluster".into()),
                    ..Default::default()
                }),
            ),
        ],
    )]))
    .unwrap();
    let h = HeaderMap::new();
    let req = RequestView::new("h", "/w", &h);
    let pick = |random| match r.route_with_random(&req, random).unwrap().action {
        Action::Forward(f) => f.cluster.to_string(),
        _ => unreachable!(),
    };
    // random % 40: [0,10) -> a, [10,40) -> c; the zero-weight cluster never.
    assert_eq!(pick(0), "a");
    assert_eq!(pick(9), "a");
    assert_eq!(pick(10), "c");
    assert_eq!(pick(39), "c");
    assert_eq!(pick(40), "a");
    assert_eq!(cluster_of(&r, "h", "/h", &[("x-cluster", "dyn")]), "dyn");
    assert_eq!(
        cluster_of(&r, "h", "/h", &[]),
        "",
        "absent header: empty cluster -> 503 later"
    );
}

#[test]
fn redirects() {
    let red = |r: Redirect| RouteAction::Redirect(r);
    let base = Redirect {
        scheme: None,
        host: None,
        port: None,
        path: None,
        response_code: 301,
        strip_query: false,
    };
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "",
                prefix("/https"),
                red(Redirect {
                    scheme: Some("https".into()),
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/host"),
                red(Redirect {
                    host: Some("new.example.com".into()),
                    response_code: 302,
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/port"),
                red(Redirect {
                    port: Some(8443),
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/path"),
                red(Redirect {
                    path: Some(PathRedirect::Path("/new".into())),
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/pq"),
                red(Redirect {
                    path: Some(PathRedirect::Path("/new?x=1".into())),
                    strip_query: true,
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/strip"),
                red(Redirect {
                    strip_query: true,
                    response_code: 307,
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/old/"),
                red(Redirect {
                    path: Some(PathRedirect::PrefixRewrite("/new/".into())),
                    response_code: 308,
                    ..base.clone()
                }),
            ),
            route(
                "",
                prefix("/v1/"),
                red(Redirect {
                    path: Some(PathRedirect::RegexRewrite(RegexRewrite {
                        pattern: Regex::search("^/v1/(.*)$").unwrap(),
                        substitution: "/v2/\\1".into(),
                    })),
                    response_code: 303,
                    ..base.clone()
                }),
            ),
        ],
    )]))
    .unwrap();
    let cases = [
        ("h.com", "/https/a?q=1", "301 https://h.com/https/a?q=1"),
        ("h.com:80", "/https/a", "301 https://h.com/https/a"),
        ("h.com:8080", "/https/a", "301 https://h.com:8080/https/a"),
        (
            "h.com:80",
            "/host/x?y",
            "302 http://new.example.com/host/x?y",
        ),
        ("h.com:80", "/port/x", "301 http://h.com:8443/port/x"),
        ("[::1]:80", "/port/x", "301 http://[::1]:8443/port/x"),
        ("h.com", "/path/x?a=b", "301 http://h.com/new?a=b"),
        ("h.com", "/pq?a=b", "301 http://h.com/new?x=1"),
        ("h.com", "/strip/x?a=b", "307 http://h.com/strip/x"),
        (
            "h.com",
            "/old/deep/p?k=v",
            "308 http://h.com/new/deep/p?k=v",
        ),
        ("h.com", "/v1/users?k", "303 http://h.com/v2/users?k"),
    ];
    for (authority, path, want) in cases {
        assert_eq!(
            cluster_of(&r, authority, path, &[]),
            want,
            "{authority}{path}"
        );
    }
    // https request redirected to https on :443 keeps the port (same scheme).
    let h = headers(&[("x-forwarded-proto", "https")]);
    let req = RequestView::new("h.com:443", "/https", &h).with_scheme("https");
    match r.route_with_random(&req, 0).unwrap().action {
        Action::Redirect { location, .. } => assert_eq!(location, "https://h.com:443/https"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn direct_response_and_rewrites() {
    let r = Router::new(&config(vec![vhost(
        "v",
        &["*"],
        vec![
            route(
                "",
                prefix("/health"),
                RouteAction::DirectResponse(DirectResponse {
                    status: 200,
                    body: Some(b"ok".to_vec()),
                }),
            ),
            route(
                "",
                prefix("/api/"),
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Cluster("api".into()),
                    prefix_rewrite: Some("/".into()),
                    host_rewrite: Some(HostRewrite::Literal("backend.internal".into())),
                    ..Default::default()
                }),
            ),
            route(
                "",
                RouteMatch {
                    path: PathMatch::Exact("/exact".into()),
                    ..Default::default()
                },
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Cluster("e".into()),
                    prefix_rewrite: Some("/other".into()),
                    host_rewrite: Some(HostRewrite::Header("x-host".into())),
                    ..Default::default()
                }),
            ),
            route(
                "",
                prefix("/re/"),
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Cluster("re".into()),
                    regex_rewrite: Some(RegexRewrite {
                        pattern: Regex::search("^/re/([^/]+)/(.*)$").unwrap(),
                        substitution: "/\\2/by/\\1".into(),
                    }),
                    host_rewrite: Some(HostRewrite::Auto),
                    ..Default::default()
                }),
            ),
            route("", prefix("/local"), RouteAction::NonForwarding),
        ],
    )]))
    .unwrap();
    let h = headers(&[("x-host", "from-header")]);
    let go = |path: &'static str| {
        r.route_with_random(&RequestView::new("h", path, &h), 0)
            .unwrap()
            .action
    };
    match go("/health") {
        Action::DirectResponse { status, body } => {
            assert_eq!(status, 200);
            assert_eq!(body.as_deref(), Some(&b"ok"[..]));
        }
        other => panic!("{other:?}"),
    }
    let cases: [(&str, Option<&str>, Option<HostRewriteDecision>); 4] = [
        (
            "/api/users?x=1",
            Some("/users?x=1"),
            Some(HostRewriteDecision::Set("backend.internal".into())),
        ),
        (
            "/exact?q",
            Some("/other?q"),
            Some(HostRewriteDecision::Set("from-header".into())),
        ),
        (
            "/re/alice/photos/1?s=2",
            Some("/photos/1/by/alice?s=2"),
            Some(HostRewriteDecision::FromEndpoint),
        ),
        ("/re/nomatch", None, Some(HostRewriteDecision::FromEndpoint)),
    ];
    for (path, want_path, want_host) in cases {
        match go(path) {
            Action::Forward(f) => {
                let expected = want_path
                    .map(str::to_owned)
                    .or_else(|| (path == "/re/nomatch").then(|| "/re/nomatch".into()));
                assert_eq!(f.path, expected, "{path}");
                assert_eq!(f.host, want_host, "{path}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(go("/local"), Action::NonForwarding));
}

#[test]
fn header_edits_in_envoy_order() {
    let add = |name: &str, value: &str, action| HeaderValueOption {
        name: name.into(),
        value: value.into(),
        action,
        keep_empty_value: false,
    };
    let ops =
        |adds: Vec<HeaderValueOption>, removes: &[&str], resp: Vec<HeaderValueOption>| HeaderOps {
            request_headers_to_add: adds,
            request_headers_to_remove: removes.iter().map(|s| s.to_string()).collect(),
            response_headers_to_add: resp,
            response_headers_to_remove: vec![],
        };
    let mut rt = route("r", prefix("/"), to("c"));
    rt.headers = ops(
        vec![
            add("x-level", "route", AppendAction::OverwriteIfExistsOrAdd),
            add("x-append", "route", AppendAction::Append),
            add("x-only-if", "route", AppendAction::OverwriteIfExists),
            add("x-empty", "", AppendAction::Append),
        ],
        &["x-secret"],
        vec![add("x-resp", "route", AppendAction::Append)],
    );
    let mut vh = vhost("v", &["*"], vec![rt]);
    vh.headers = ops(
        vec![
            add("x-level", "vhost", AppendAction::OverwriteIfExistsOrAdd),
            add("x-append", "vhost", AppendAction::Append),
            add("x-absent", "vhost", AppendAction::AddIfAbsent),
        ],
        &[],
        vec![add("x-resp", "vhost", AppendAction::OverwriteIfExistsOrAdd)],
    );
    let mut cfg = config(vec![vh]);
    cfg.headers = ops(
        vec![
            add("x-absent", "config", AppendAction::AddIfAbsent),
            add("x-append", "config", AppendAction::Append),
        ],
        &["x-level-remove-never"],
        vec![],
    );
    let r = Router::new(&cfg).unwrap();
    let hdrs = HeaderMap::new();
    let d = r
        .route_with_random(&RequestView::new("h", "/", &hdrs), 0)
        .unwrap();
    let mut req = headers(&[("x-secret", "s"), ("x-absent", "client")]);
    d.headers.apply_request(&mut req);
    let get = |h: &HeaderMap, n: &str| {
        h.get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // Most specific first (route, vhost, config): the less specific overwrite wins.
    assert_eq!(get(&req, "x-level"), ["vhost"]);
    assert_eq!(get(&req, "x-append"), ["route", "vhost", "config"]);
    assert_eq!(get(&req, "x-absent"), ["client"]);
    assert!(get(&req, "x-only-if").is_empty());
    assert!(get(&req, "x-empty").is_empty(), "empty values are skipped");
    assert!(get(&req, "x-secret").is_empty());
    assert_eq!(req.len(), 5);
    let mut resp = HeaderMap::new();
    d.headers.apply_response(&mut resp);
    assert_eq!(get(&resp, "x-resp"), ["vhost"]);
}

#[test]
fn policies_and_mirrors() {
    let retry = RetryPolicy {
        num_retries: 3,
        ..Default::default()
    };
    let mut vh = vhost(
        "v",
        &["*"],
        vec![
            route(
                "mirrored",
                prefix("/m"),
                fwd(ForwardAction {
                    cluster: ClusterSpecifier::Cluster("c".into()),
                    mirror_policies: vec![
                        MirrorPolicy {
                            cluster: "all".into(),
                            fraction: None,
                            keep_host: false,
                        },
                        MirrorPolicy {
                            cluster: "tenth".into(),
                            fraction: Some(Fraction::new(10, 100)),
                            keep_host: true,
                        },
                    ],
                    timeout: Some(Duration::ZERO),
                    hash_policies: vec![HashPolicy {
                        kind: HashPolicyKind::SourceIp,
                        terminal: false,
                    }],
                    ..Default::default()
                }),
            ),
            route("default", prefix("/"), to("c")),
        ],
    );
    vh.retry_policy = Some(retry.clone());
    vh.filter_overrides
        .insert("envoy.filters.http.fault".into(), FilterOverride::Disabled);
    let r = Router::new(&config(vec![vh])).unwrap();
    let h = HeaderMap::new();
    let f = |path, random| match r
        .route_with_random(&RequestView::new("h", path, &h), random)
        .unwrap()
        .action
    {
        Action::Forward(f) => f,
        other => panic!("{other:?}"),
    };
    let m = f("/m", 5);
    assert_eq!(
        m.mirrors
            .iter()
            .map(|c| (c.cluster.to_string(), c.keep_host))
            .collect::<Vec<_>>(),
        [("all".to_string(), false), ("tenth".to_string(), true)]
    );
    assert_eq!(f("/m", 50).mirrors.len(), 1);
    assert_eq!(m.policy.timeout, None, "timeout 0 disables it");
    assert_eq!(
        m.policy.retry_policy.as_deref(),
        Some(&retry),
        "inherited from the vhost"
    );
    assert_eq!(m.policy.hash_policies.len(), 1);
    let d = f("/", 0);
    assert_eq!(
        d.policy.timeout,
        Some(Duration::from_secs(15)),
        "Envoy's default"
    );
    assert!(
        d.policy.timeout_is_default,
        "which gRPC requests do not get"
    );
    assert!(!m.policy.timeout_is_default);
    assert!(
        d.policy
            .filter_overrides
            .contains_key("envoy.filters.http.fault")
    );
    assert!(d.policy.fault("envoy.filters.http.fault").is_none());
    // The same Arc for every request of a route: nothing rebuilt per request.
    assert!(std::sync::Arc::ptr_eq(&d.policy, &f("/", 1).policy));
}
