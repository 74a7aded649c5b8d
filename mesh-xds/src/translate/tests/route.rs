use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::envoy::r#type::v3 as t;
use envoy_types::pb::google::protobuf::BoolValue;
use envoy_types::util::pack_any;
use mesh_core::model::*;

use super::{d, reason, route_config, u32v};
use crate::resource::{Resource, ResourceType};

fn rc(routes: Vec<rds::Route>) -> rds::RouteConfiguration {
    rds::RouteConfiguration {
        name: "r1".into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: "vh".into(),
            domains: vec!["*".into()],
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn to_cluster(name: &str) -> Option<rds::route::Action> {
    Some(rds::route::Action::Route(rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(name.into())),
        ..Default::default()
    }))
}

fn prefix(p: &str) -> Option<rds::RouteMatch> {
    Some(rds::RouteMatch {
        path_specifier: Some(rds::route_match::PathSpecifier::Prefix(p.into())),
        ..Default::default()
    })
}

fn with_action(a: rds::RouteAction) -> rds::RouteConfiguration {
    rc(vec![rds::Route {
        r#match: prefix("/"),
        action: Some(rds::route::Action::Route(rds::RouteAction {
            cluster_specifier: a.cluster_specifier.clone().or(Some(
                rds::route_action::ClusterSpecifier::Cluster("c".into()),
            )),
            ..a
        })),
        ..Default::default()
    }])
}

fn with_match(mt: rds::RouteMatch) -> rds::RouteConfiguration {
    rc(vec![rds::Route {
        r#match: Some(mt),
        action: to_cluster("c"),
        ..Default::default()
    }])
}

fn forward(r: &RouteConfig) -> &ForwardAction {
    match &r.virtual_hosts[0].routes[0].action {
        RouteAction::Forward(f) => f,
        other => panic!("{other:?}"),
    }
}

fn rds_reason(r: rds::RouteConfiguration) -> String {
    reason(ResourceType::RouteConfiguration, &pack_any(r))
}

fn regex(re: &str) -> m::RegexMatcher {
    m::RegexMatcher {
        regex: re.into(),
        ..Default::default()
    }
}

#[test]
fn path_matches() {
    use rds::route_match::PathSpecifier as P;
    let cases: Vec<(P, PathMatch)> = vec![
        (P::Prefix("/a".into()), PathMatch::Prefix("/a".into())),
        (P::Path("/a/b".into()), PathMatch::Exact("/a/b".into())),
        (
            P::SafeRegex(regex("/v[0-9]+/.*")),
            PathMatch::Regex(Regex::full("/v[0-9]+/.*").unwrap()),
        ),
        (
            P::PathSeparatedPrefix("/api".into()),
            PathMatch::PathSeparatedPrefix("/api".into()),
        ),
    ];
    for (spec, want) in cases {
        let r = route_config(with_match(rds::RouteMatch {
            path_specifier: Some(spec),
            case_sensitive: Some(BoolValue { value: false }),
            grpc: Some(Default::default()),
            runtime_fraction: Some(core::RuntimeFractionalPercent {
                default_value: Some(t::FractionalPercent {
                    numerator: 25,
                    denominator: t::fractional_percent::DenominatorType::TenThousand as i32,
                }),
                runtime_key: "ignored".into(),
            }),
            ..Default::default()
        }));
        let got = &r.virtual_hosts[0].routes[0].route_match;
        assert_eq!(got.path, want);
        assert!(!got.case_sensitive);
        assert!(got.grpc);
        assert_eq!(got.fraction, Some(Fraction::new(25, 10_000)));
    }
}

#[test]
fn header_and_query_matchers() {
    use rds::header_matcher::HeaderMatchSpecifier as H;
    let hm = |name: &str, spec: H, invert: bool| rds::HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        invert_match: invert,
        ..Default::default()
    };
    let sm = |p: m::string_matcher::MatchPattern, ic: bool| m::StringMatcher {
        match_pattern: Some(p),
        ignore_case: ic,
    };
    let r = route_config(with_match(rds::RouteMatch {
        path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
        headers: vec![
            hm("X-Exact", H::ExactMatch("v".into()), false),
            hm("x-prefix", H::PrefixMatch("p".into()), true),
            hm("x-suffix", H::SuffixMatch("s".into()), false),
            hm("x-contains", H::ContainsMatch("c".into()), false),
            hm("x-re", H::SafeRegexMatch(regex("a+")), false),
            hm(
                "x-range",
                H::RangeMatch(t::Int64Range { start: 1, end: 5 }),
                false,
            ),
            hm("x-present", H::PresentMatch(true), false),
            hm(
                "x-string",
                H::StringMatch(sm(m::string_matcher::MatchPattern::Exact("E".into()), true)),
                false,
            ),
        ],
        query_parameters: vec![
            rds::QueryParameterMatcher {
                name: "q".into(),
                query_parameter_match_specifier: Some(
                    rds::query_parameter_matcher::QueryParameterMatchSpecifier::StringMatch(sm(
                        m::string_matcher::MatchPattern::Prefix("v".into()),
                        false,
                    )),
                ),
            },
            rds::QueryParameterMatcher {
                name: "debug".into(),
                query_parameter_match_specifier: Some(
                    rds::query_parameter_matcher::QueryParameterMatchSpecifier::PresentMatch(true),
                ),
            },
        ],
        ..Default::default()
    }));
    let got = &r.virtual_hosts[0].routes[0].route_match;
    let rules: Vec<(&str, &HeaderMatchRule, bool)> = got
        .headers
        .iter()
        .map(|h| (h.name.as_str(), &h.rule, h.invert_match))
        .collect();
    let s = |m: StringMatcher| HeaderMatchRule::String(m);
    assert_eq!(
        rules[0],
        (
            "x-exact",
            &s(StringMatcher::Exact {
                value: "v".into(),
                ignore_case: false
            }),
            false
        )
    );
    assert_eq!(
        rules[1],
        (
            "x-prefix",
            &s(StringMatcher::Prefix {
                value: "p".into(),
                ignore_case: false
            }),
            true
        )
    );
    assert_eq!(
        rules[2].1,
        &s(StringMatcher::Suffix {
            value: "s".into(),
            ignore_case: false
        })
    );
    assert_eq!(
        rules[3].1,
        &s(StringMatcher::Contains {
            value: "c".into(),
            ignore_case: false
        })
    );
    assert_eq!(
        rules[4].1,
        &s(StringMatcher::Regex(Regex::full("a+").unwrap()))
    );
    assert_eq!(rules[5].1, &HeaderMatchRule::Range { start: 1, end: 5 });
    assert_eq!(rules[6].1, &HeaderMatchRule::Present(true));
    assert_eq!(
        rules[7].1,
        &s(StringMatcher::Exact {
            value: "E".into(),
            ignore_case: true
        })
    );
    assert_eq!(
        got.query_parameters,
        vec![
            QueryParameterMatcher {
                name: "q".into(),
                value: Some(StringMatcher::Prefix {
                    value: "v".into(),
                    ignore_case: false
                })
            },
            QueryParameterMatcher {
                name: "debug".into(),
                value: None
            },
        ]
    );
}

#[test]
fn forward_action_fields() {
    use rds::route_action::hash_policy::PolicySpecifier as HP;
    let hp = |p: HP, terminal: bool| rds::route_action::HashPolicy {
        policy_specifier: Some(p),
        terminal,
    };
    let r = route_config(with_action(rds::RouteAction {
        prefix_rewrite: "/new".into(),
        host_rewrite_specifier: Some(rds::route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "h.example".into(),
        )),
        timeout: d(3, 0),
        idle_timeout: d(60, 0),
        request_mirror_policies: vec![rds::route_action::RequestMirrorPolicy {
            cluster: "shadow".into(),
            runtime_fraction: Some(core::RuntimeFractionalPercent {
                default_value: Some(t::FractionalPercent {
                    numerator: 5,
                    denominator: 0,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }],
        hash_policy: vec![
            hp(
                HP::Header(rds::route_action::hash_policy::Header {
                    header_name: "X-User".into(),
                    regex_rewrite: None,
                }),
                false,
            ),
            hp(
                HP::Cookie(rds::route_action::hash_policy::Cookie {
                    name: "sid".into(),
                    ttl: d(10, 0),
                    path: "/".into(),
                    ..Default::default()
                }),
                false,
            ),
            hp(
                HP::ConnectionProperties(rds::route_action::hash_policy::ConnectionProperties {
                    source_ip: true,
                }),
                false,
            ),
            hp(
                HP::QueryParameter(rds::route_action::hash_policy::QueryParameter {
                    name: "u".into(),
                }),
                false,
            ),
            hp(
                HP::FilterState(rds::route_action::hash_policy::FilterState {
                    key: "io.grpc.channel_id".into(),
                }),
                true,
            ),
            // source_ip: false can never produce a hash and is dropped.
            hp(
                HP::ConnectionProperties(rds::route_action::hash_policy::ConnectionProperties {
                    source_ip: false,
                }),
                false,
            ),
        ],
        max_stream_duration: Some(rds::route_action::MaxStreamDuration {
            max_stream_duration: d(30, 0),
            grpc_timeout_header_max: d(5, 0),
            grpc_timeout_header_offset: d(0, 10_000_000),
        }),
        ..Default::default()
    }));
    let f = forward(&r);
    assert_eq!(f.cluster, ClusterSpecifier::Cluster("c".into()));
    assert_eq!(f.prefix_rewrite.as_deref(), Some("/new"));
    assert_eq!(
        f.host_rewrite,
        Some(HostRewrite::Literal("h.example".into()))
    );
    assert_eq!(f.timeout, Some(Duration::from_secs(3)));
    assert_eq!(f.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(
        f.mirror_policies,
        vec![MirrorPolicy {
            cluster: "shadow".into(),
            fraction: Some(Fraction::new(5, 100)),
            keep_host: false,
        }]
    );
    let kinds: Vec<&HashPolicyKind> = f.hash_policies.iter().map(|h| &h.kind).collect();
    assert_eq!(
        kinds,
        vec![
            &HashPolicyKind::Header {
                name: "x-user".into(),
                regex_rewrite: None
            },
            &HashPolicyKind::Cookie {
                name: "sid".into(),
                ttl: Some(Duration::from_secs(10)),
                path: "/".into()
            },
            &HashPolicyKind::SourceIp,
            &HashPolicyKind::QueryParameter { name: "u".into() },
            &HashPolicyKind::ChannelId,
        ]
    );
    assert!(f.hash_policies[4].terminal);
    assert_eq!(
        f.max_stream_duration,
        MaxStreamDuration {
            max_stream_duration: Some(Duration::from_secs(30)),
            grpc_timeout_header_max: Some(Duration::from_secs(5)),
            grpc_timeout_header_offset: Some(Duration::from_millis(10)),
        }
    );
}

#[test]
fn deprecated_grpc_timeout_fields_map_to_max_stream_duration() {
    let r = route_config(with_action(rds::RouteAction {
        max_grpc_timeout: d(0, 0),
        grpc_timeout_offset: d(1, 0),
        ..Default::default()
    }));
    assert_eq!(
        forward(&r).max_stream_duration.grpc_timeout_header_max,
        Some(Duration::ZERO)
    );
    assert_eq!(
        forward(&r).max_stream_duration.grpc_timeout_header_offset,
        Some(Duration::from_secs(1))
    );
}

#[test]
fn host_rewrite_variants_and_regex_rewrite() {
    use rds::route_action::HostRewriteSpecifier as H;
    let auto = route_config(with_action(rds::RouteAction {
        host_rewrite_specifier: Some(H::AutoHostRewrite(BoolValue { value: true })),
        ..Default::default()
    }));
    assert_eq!(forward(&auto).host_rewrite, Some(HostRewrite::Auto));
    let hdr = route_config(with_action(rds::RouteAction {
        host_rewrite_specifier: Some(H::HostRewriteHeader("X-Host".into())),
        regex_rewrite: Some(m::RegexMatchAndSubstitute {
            pattern: Some(regex("^/v1/(.*)$")),
            substitution: "/v2/\\1".into(),
        }),
        ..Default::default()
    }));
    let f = forward(&hdr);
    assert_eq!(f.host_rewrite, Some(HostRewrite::Header("x-host".into())));
    assert_eq!(
        f.regex_rewrite.as_ref().unwrap().apply("/v1/users"),
        "/v2/users"
    );
}

#[test]
fn weighted_clusters_with_header_ops() {
    let wc = |name: &str, w: u32| rds::weighted_cluster::ClusterWeight {
        name: name.into(),
        weight: u32v(w),
        ..Default::default()
    };
    let mut a = wc("a", 80);
    a.request_headers_to_add = vec![core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "x-canary".into(),
            value: "no".into(),
            ..Default::default()
        }),
        ..Default::default()
    }];
    a.response_headers_to_remove = vec!["x-internal".into()];
    let r = route_config(with_action(rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::WeightedClusters(
            rds::WeightedCluster {
                clusters: vec![a, wc("b", 20)],
                ..Default::default()
            },
        )),
        ..Default::default()
    }));
    let ClusterSpecifier::Weighted(ws) = &forward(&r).cluster else {
        panic!("not weighted")
    };
    assert_eq!(
        ws.iter()
            .map(|w| (w.name.as_str(), w.weight))
            .collect::<Vec<_>>(),
        vec![("a", 80), ("b", 20)]
    );
    assert_eq!(ws[0].headers.request_headers_to_add[0].name, "x-canary");
    assert_eq!(
        ws[0].headers.response_headers_to_remove,
        vec!["x-internal".to_string()]
    );
    let deps = Resource::RouteConfiguration(r.clone()).dependencies();
    assert_eq!(
        deps,
        vec![
            (ResourceType::Cluster, "a".to_string()),
            (ResourceType::Cluster, "b".to_string())
        ]
    );
}

#[test]
fn cluster_header_specifier() {
    let r = route_config(with_action(rds::RouteAction {
        cluster_specifier: Some(rds::route_action::ClusterSpecifier::ClusterHeader(
            "X-Cluster".into(),
        )),
        ..Default::default()
    }));
    assert_eq!(
        forward(&r).cluster,
        ClusterSpecifier::Header("x-cluster".into())
    );
    assert!(Resource::RouteConfiguration(r).dependencies().is_empty());
}

#[test]
fn retry_policy_fields() {
    let rp = rds::RetryPolicy {
        retry_on: "5xx, reset,connect-failure,retriable-status-codes,unavailable,5xx".into(),
        num_retries: u32v(3),
        per_try_timeout: d(1, 0),
        per_try_idle_timeout: d(2, 0),
        retry_back_off: Some(rds::retry_policy::RetryBackOff {
            base_interval: d(0, 50_000_000),
            max_interval: None,
        }),
        retriable_status_codes: vec![503, 429],
        retriable_headers: vec![rds::HeaderMatcher {
            name: "x-retry".into(),
            header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::PresentMatch(
                true,
            )),
            ..Default::default()
        }],
        retry_host_predicate: vec![rds::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: None,
        }],
        host_selection_retry_max_attempts: 5,
        ..Default::default()
    };
    let r = route_config(with_action(rds::RouteAction {
        retry_policy: Some(rp),
        ..Default::default()
    }));
    let p = forward(&r).retry_policy.clone().unwrap();
    assert_eq!(
        p.retry_on,
        vec![
            RetryOn::Http5xx,
            RetryOn::Reset,
            RetryOn::ConnectFailure,
            RetryOn::RetriableStatusCodes,
            RetryOn::GrpcUnavailable
        ]
    );
    assert_eq!(p.num_retries, 3);
    assert_eq!(p.per_try_timeout, Some(Duration::from_secs(1)));
    assert_eq!(p.per_try_idle_timeout, Some(Duration::from_secs(2)));
    assert_eq!(
        p.back_off,
        RetryBackOff {
            base_interval: Duration::from_millis(50),
            max_interval: Duration::from_millis(500)
        }
    );
    assert_eq!(p.retriable_status_codes, vec![503, 429]);
    assert_eq!(p.retriable_headers.len(), 1);
    assert!(p.retry_previous_hosts);
    assert_eq!(p.host_selection_retry_max_attempts, 5);
    // Defaults.
    let r = route_config(with_action(rds::RouteAction {
        retry_policy: Some(rds::RetryPolicy::default()),
        ..Default::default()
    }));
    assert_eq!(forward(&r).retry_policy, Some(RetryPolicy::default()));
}

#[test]
fn virtual_host_level_policies_and_overrides() {
    let hf = pack_any(fault::HttpFault {
        abort: Some(fault::FaultAbort {
            percentage: Some(t::FractionalPercent {
                numerator: 100,
                denominator: 0,
            }),
            error_type: Some(fault::fault_abort::ErrorType::HttpStatus(503)),
            ..Default::default()
        }),
        ..Default::default()
    });
    let disabled = pack_any(rds::FilterConfig {
        disabled: true,
        ..Default::default()
    });
    let optional_unknown = pack_any(rds::FilterConfig {
        config: Some(pack_any(rds::Decorator::default())),
        is_optional: true,
        ..Default::default()
    });
    let mut cfg = rc(vec![rds::Route {
        r#match: prefix("/"),
        action: to_cluster("c"),
        typed_per_filter_config: [("envoy.filters.http.fault".to_string(), disabled)].into(),
        request_headers_to_remove: vec!["X-Drop".into()],
        ..Default::default()
    }]);
    cfg.request_headers_to_add = vec![core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "x-rc".into(),
            value: "1".into(),
            ..Default::default()
        }),
        append_action: core::header_value_option::HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
        ..Default::default()
    }];
    let vh = &mut cfg.virtual_hosts[0];
    vh.retry_policy = Some(rds::RetryPolicy {
        retry_on: "gateway-error".into(),
        ..Default::default()
    });
    vh.typed_per_filter_config = [
        ("envoy.filters.http.fault".to_string(), hf),
        ("some.optional".to_string(), optional_unknown),
    ]
    .into();
    vh.response_headers_to_add = vec![core::HeaderValueOption {
        header: Some(core::HeaderValue {
            key: "x-vh".into(),
            value: "v".into(),
            ..Default::default()
        }),
        append: Some(BoolValue { value: false }),
        ..Default::default()
    }];
    vh.request_mirror_policies = vec![rds::route_action::RequestMirrorPolicy {
        cluster: "mirror".into(),
        ..Default::default()
    }];
    let r = route_config(cfg);
    assert_eq!(
        r.headers.request_headers_to_add[0].action,
        AppendAction::OverwriteIfExistsOrAdd
    );
    let vh = &r.virtual_hosts[0];
    assert_eq!(
        vh.retry_policy.as_ref().unwrap().retry_on,
        vec![RetryOn::GatewayError]
    );
    assert_eq!(
        vh.headers.response_headers_to_add[0].action,
        AppendAction::OverwriteIfExistsOrAdd
    );
    let Some(FilterOverride::Fault(f)) = vh.filter_overrides.get("envoy.filters.http.fault") else {
        panic!("{:?}", vh.filter_overrides)
    };
    assert_eq!(f.abort.as_ref().unwrap().kind, AbortKind::Http(503));
    assert!(
        !vh.filter_overrides.contains_key("some.optional"),
        "optional unknown override is skipped"
    );
    let route = &vh.routes[0];
    assert_eq!(
        route.filter_overrides.get("envoy.filters.http.fault"),
        Some(&FilterOverride::Disabled)
    );
    assert_eq!(
        route.headers.request_headers_to_remove,
        vec!["x-drop".to_string()]
    );
    // The virtual host's mirror policy applies to the route that has none; it is a dependency.
    assert_eq!(forward(&r).mirror_policies[0].cluster, "mirror");
    assert!(
        Resource::RouteConfiguration(r)
            .dependencies()
            .contains(&(ResourceType::Cluster, "mirror".into()))
    );
}

#[test]
fn redirect_and_direct_response_and_non_forwarding() {
    use rds::redirect_action as ra;
    let routes = vec![
        rds::Route {
            r#match: prefix("/old"),
            action: Some(rds::route::Action::Redirect(rds::RedirectAction {
                host_redirect: "new.example".into(),
                port_redirect: 8443,
                response_code: ra::RedirectResponseCode::PermanentRedirect as i32,
                strip_query: true,
                scheme_rewrite_specifier: Some(ra::SchemeRewriteSpecifier::HttpsRedirect(true)),
                path_rewrite_specifier: Some(ra::PathRewriteSpecifier::PrefixRewrite(
                    "/new".into(),
                )),
            })),
            ..Default::default()
        },
        rds::Route {
            r#match: prefix("/health"),
            action: Some(rds::route::Action::DirectResponse(
                rds::DirectResponseAction {
                    status: 200,
                    body: Some(core::DataSource {
                        specifier: Some(core::data_source::Specifier::InlineString("ok".into())),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        },
        rds::Route {
            r#match: prefix("/"),
            action: Some(rds::route::Action::NonForwardingAction(Default::default())),
            ..Default::default()
        },
    ];
    let r = route_config(rc(routes));
    let routes = &r.virtual_hosts[0].routes;
    assert_eq!(
        routes[0].action,
        RouteAction::Redirect(Redirect {
            scheme: Some("https".into()),
            host: Some("new.example".into()),
            port: Some(8443),
            path: Some(PathRedirect::PrefixRewrite("/new".into())),
            response_code: 308,
            strip_query: true,
        })
    );
    assert_eq!(
        routes[1].action,
        RouteAction::DirectResponse(DirectResponse {
            status: 200,
            body: Some(b"ok".to_vec())
        })
    );
    assert_eq!(routes[2].action, RouteAction::NonForwarding);
}

/// Each rejection names the resource, the field path and the rule broken.
#[test]
fn rejections() {
    use rds::route_action::ClusterSpecifier as C;
    let cases: Vec<(rds::RouteConfiguration, &str)> = vec![
        (
            with_match(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::SafeRegex(regex("a("))),
                ..Default::default()
            }),
            "route_config 'r1' virtual_host[0] 'vh' route[0].match.safe_regex: regex \"a(\" does not compile:",
        ),
        (
            with_match(rds::RouteMatch::default()),
            "route_config 'r1' virtual_host[0] 'vh' route[0].match: path_specifier (prefix, path, safe_regex, ...) is required",
        ),
        (
            with_match(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::ConnectMatcher(
                    Default::default(),
                )),
                ..Default::default()
            }),
            "route[0].match: connect_matcher is not supported",
        ),
        (
            with_match(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
                headers: vec![rds::HeaderMatcher {
                    name: "x".into(),
                    header_match_specifier: Some(
                        rds::header_matcher::HeaderMatchSpecifier::RangeMatch(t::Int64Range {
                            start: 5,
                            end: 1,
                        }),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            "route[0].match.headers[0]: range_match start 5 is greater than end 1",
        ),
        (
            with_match(rds::RouteMatch {
                path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
                cookies: vec![Default::default()],
                ..Default::default()
            }),
            "route[0].match: cookies matchers are not supported",
        ),
        (
            rc(vec![rds::Route {
                r#match: prefix("/"),
                ..Default::default()
            }]),
            "route[0]: an action (route, redirect, direct_response) is required",
        ),
        (
            with_action(rds::RouteAction {
                cluster_specifier: Some(C::WeightedClusters(rds::WeightedCluster {
                    clusters: vec![rds::weighted_cluster::ClusterWeight {
                        name: "a".into(),
                        weight: u32v(0),
                        ..Default::default()
                    }],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            "route[0].route.weighted_clusters: the sum of cluster weights must be greater than 0",
        ),
        (
            with_action(rds::RouteAction {
                cluster_specifier: Some(C::WeightedClusters(rds::WeightedCluster {
                    clusters: vec![
                        rds::weighted_cluster::ClusterWeight {
                            name: "a".into(),
                            weight: u32v(u32::MAX),
                            ..Default::default()
                        },
                        rds::weighted_cluster::ClusterWeight {
                            name: "b".into(),
                            weight: u32v(1),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                })),
                ..Default::default()
            }),
            "the sum of cluster weights (4294967296) exceeds 4294967295",
        ),
        (
            with_action(rds::RouteAction {
                cluster_specifier: Some(C::ClusterSpecifierPlugin("p".into())),
                ..Default::default()
            }),
            "route[0].route: cluster_specifier_plugin \"p\" is not supported",
        ),
        (
            with_action(rds::RouteAction {
                retry_policy: Some(rds::RetryPolicy {
                    retry_on: "5xx,bogus".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "route[0].route.retry_policy: retry_on \"bogus\" is not a known retry condition",
        ),
        (
            with_action(rds::RouteAction {
                retry_policy: Some(rds::RetryPolicy {
                    retry_back_off: Some(rds::retry_policy::RetryBackOff {
                        base_interval: d(0, 0),
                        max_interval: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "route[0].route.retry_policy: retry_back_off.base_interval must be greater than 0",
        ),
        (
            with_action(rds::RouteAction {
                retry_policy: Some(rds::RetryPolicy {
                    retry_host_predicate: vec![rds::retry_policy::RetryHostPredicate {
                        name: "envoy.retry_host_predicates.omit_canary_hosts".into(),
                        config_type: None,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            "retry_policy.retry_host_predicate[0]: retry host predicate \"envoy.retry_host_predicates.omit_canary_hosts\" is not supported (only previous_hosts)",
        ),
        (
            with_action(rds::RouteAction {
                timeout: d(-1, 0),
                ..Default::default()
            }),
            "route[0].route.timeout: duration -1s 0ns is negative or malformed",
        ),
        (
            with_action(rds::RouteAction {
                hedge_policy: Some(Default::default()),
                ..Default::default()
            }),
            "route[0].route: hedge_policy is not supported",
        ),
        (
            with_action(rds::RouteAction {
                metadata_match: Some(Default::default()),
                ..Default::default()
            }),
            "route[0].route: metadata_match (subset load balancing) is not supported",
        ),
        (
            with_action(rds::RouteAction {
                prefix_rewrite: "/x".into(),
                regex_rewrite: Some(m::RegexMatchAndSubstitute {
                    pattern: Some(regex("a")),
                    substitution: "b".into(),
                }),
                ..Default::default()
            }),
            "prefix_rewrite and regex_rewrite are mutually exclusive",
        ),
        (
            rc(vec![rds::Route {
                r#match: prefix("/"),
                action: Some(rds::route::Action::DirectResponse(
                    rds::DirectResponseAction {
                        status: 700,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }]),
            "route[0].direct_response: status 700 is outside [200, 600)",
        ),
        (
            rc(vec![rds::Route {
                r#match: prefix("/"),
                action: Some(rds::route::Action::DirectResponse(
                    rds::DirectResponseAction {
                        status: 200,
                        body: Some(core::DataSource {
                            specifier: Some(core::data_source::Specifier::Filename(
                                "/etc/passwd".into(),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }]),
            "body.filename is not supported (inline bodies only)",
        ),
        (
            rc(vec![rds::Route {
                r#match: prefix("/"),
                action: to_cluster("c"),
                request_headers_to_add: vec![core::HeaderValueOption {
                    header: Some(core::HeaderValue {
                        key: ":path".into(),
                        value: "/".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }]),
            "route[0].request_headers_to_add[0]: \":path\": pseudo-headers and host cannot be modified",
        ),
        (
            rc(vec![rds::Route {
                r#match: prefix("/"),
                action: to_cluster("c"),
                typed_per_filter_config: [("f".to_string(), pack_any(rds::Decorator::default()))]
                    .into(),
                ..Default::default()
            }]),
            "route[0].typed_per_filter_config[\"f\"]: override of type \"envoy.config.route.v3.Decorator\" is not supported",
        ),
        (
            rds::RouteConfiguration {
                name: "r1".into(),
                virtual_hosts: vec![rds::VirtualHost {
                    name: "vh".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "route_config 'r1' virtual_host[0] 'vh': domains must not be empty",
        ),
        (
            rds::RouteConfiguration {
                name: "r1".into(),
                virtual_hosts: vec![rds::VirtualHost {
                    name: "vh".into(),
                    domains: vec!["a.*.com".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
            "domain \"a.*.com\": a wildcard is allowed only once, at the start or the end",
        ),
        (
            rds::RouteConfiguration {
                name: "r1".into(),
                virtual_hosts: vec![
                    rds::VirtualHost {
                        name: "a".into(),
                        domains: vec!["x.com".into()],
                        ..Default::default()
                    },
                    rds::VirtualHost {
                        name: "b".into(),
                        domains: vec!["X.com".into()],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
            "virtual_host[1] 'b': domain \"X.com\" appears in more than one virtual host",
        ),
        (
            rds::RouteConfiguration {
                name: "r1".into(),
                vhds: Some(Default::default()),
                ..Default::default()
            },
            "route_config 'r1': vhds (on-demand virtual hosts) is not supported",
        ),
    ];
    for (cfg, want) in cases {
        let got = rds_reason(cfg);
        assert!(got.contains(want), "\n got: {got}\nwant: {want}");
    }
}

#[test]
fn empty_name_is_rejected_without_a_name() {
    let r = crate::resource::decode(
        ResourceType::RouteConfiguration,
        &pack_any(rds::RouteConfiguration::default()),
    )
    .unwrap_err();
    assert_eq!(r.name, None);
    assert_eq!(r.reason, "route_config has an empty name");
}

#[test]
fn regex_error_text_is_one_line_about_the_written_pattern() {
    let got = rds_reason(with_match(rds::RouteMatch {
        path_specifier: Some(rds::route_match::PathSpecifier::SafeRegex(regex("a("))),
        ..Default::default()
    }));
    assert_eq!(
        got,
        "route_config 'r1' virtual_host[0] 'vh' route[0].match.safe_regex: regex \"a(\" does not compile: regex parse error: a( ^ error: unclosed group"
    );
}
