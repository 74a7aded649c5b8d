//! Route matching, header edits, redirects, cluster choice, host rewrites, RDS, direct
//! responses, mirrors and the connection manager's path normalization.

use super::harness::*;

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
    // (path, request headers, the route that must match)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
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
    for _ in 0..2000 {
        let got = f.get("http://match.test:80/frac", &[]).await;
        matched += usize::from(got.body() == "/frac");
    }
    // About 20; 3 to 50 is more than six standard deviations either way.
    assert!(
        (3..=50).contains(&matched),
        "1% of 2000 matched, not {matched}"
    );
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
        request_mirror_policies: vec![route_action::RequestMirrorPolicy {
            disable_shadow_host_suffix_append: true,
            ..mirror("b")
        }],
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
    // RequestMirrorPolicy.disable_shadow_host_suffix_append unset: `-shadow` on the host.
    assert_eq!(f.b.last().headers["host"], "rds.test-shadow:80");
    // DataSource.inline_bytes: the direct response's body.
    let got = f.get("http://rds.test:80/direct", &[]).await;
    assert_eq!((got.status, got.body()), (203, "raw body"));
    // VirtualHost.request_mirror_policies.
    f.reset();
    let got = f.get("http://mirror-vh.test:80/y", &[]).await;
    assert_eq!((got.status, got.body()), (200, "/y"));
    assert_eq!(wait_calls(&f.b, 1).await, 1);
    assert_eq!(f.b.last().path, "/y");
    // disable_shadow_host_suffix_append: the copy keeps the host.
    assert_eq!(f.b.last().headers["host"], "mirror-vh.test:80");
}
