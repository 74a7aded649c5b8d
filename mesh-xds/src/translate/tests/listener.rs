use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_http;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use envoy_types::util::pack_any;
use mesh_core::model::*;
use mesh_core::path::{EscapedSlashesAction, PathNormalization};

use super::{ads, d, listener, reason, socket};
use crate::resource::{Resource, ResourceType};

pub(super) fn filter(name: &str, any: Any) -> hcm::HttpFilter {
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

pub(super) fn router() -> hcm::HttpFilter {
    filter("envoy.filters.http.router", pack_any(Router::default()))
}

fn rds_hcm(filters: Vec<hcm::HttpFilter>) -> hcm::HttpConnectionManager {
    hcm::HttpConnectionManager {
        http_filters: filters,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: ads(),
                route_config_name: "route-a".into(),
            },
        )),
        ..Default::default()
    }
}

fn api(h: hcm::HttpConnectionManager) -> lds::Listener {
    lds::Listener {
        name: "a.example:80".into(),
        api_listener: Some(lds::ApiListener {
            api_listener: Some(pack_any(h)),
        }),
        ..Default::default()
    }
}

fn client_hcm(l: &Listener) -> &HttpConnectionManager {
    match &l.kind {
        ListenerKind::Client(h) => h,
        other => panic!("{other:?}"),
    }
}

fn server_chain(
    h: hcm::HttpConnectionManager,
    ts: Option<core::TransportSocket>,
) -> lds::FilterChain {
    lds::FilterChain {
        name: "chain".into(),
        filters: vec![lds::Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(h))),
        }],
        transport_socket: ts,
        ..Default::default()
    }
}

fn server(chains: Vec<lds::FilterChain>) -> lds::Listener {
    lds::Listener {
        name: "srv".into(),
        address: socket("0.0.0.0", 8080),
        filter_chains: chains,
        ..Default::default()
    }
}

fn lds_reason(l: lds::Listener) -> String {
    reason(ResourceType::Listener, &pack_any(l))
}

#[test]
fn client_listener_with_rds_fault_and_router() {
    let f = fault::HttpFault {
        delay: Some(envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay {
            percentage: Some(FractionalPercent { numerator: 100, denominator: 0 }),
            fault_delay_secifier: Some(
                envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier::HeaderDelay(
                    Default::default(),
                ),
            ),
        }),
        ..Default::default()
    };
    let mut h = rds_hcm(vec![
        filter("envoy.filters.http.fault", pack_any(f)),
        router(),
    ]);
    h.common_http_protocol_options = Some(core::HttpProtocolOptions {
        max_stream_duration: d(10, 0),
        ..Default::default()
    });
    let l = listener(api(h));
    let h = client_hcm(&l);
    assert_eq!(h.route_source, RouteSource::Rds("route-a".into()));
    assert_eq!(h.max_stream_duration, Some(Duration::from_secs(10)));
    // An HCM that says nothing gets Istio's default, not Envoy's (off).
    assert_eq!(h.path_normalization, PathNormalization::BASE);
    assert_eq!(h.http_filters.len(), 2);
    let HttpFilterConfig::Fault(fc) = &h.http_filters[0].config else {
        panic!()
    };
    assert_eq!(fc.delay.as_ref().unwrap().kind, DelayKind::FromHeader);
    assert_eq!(
        h.http_filters[1].config,
        HttpFilterConfig::Router(Default::default())
    );
    assert_eq!(
        Resource::Listener(l).dependencies(),
        vec![(ResourceType::RouteConfiguration, "route-a".into())]
    );
}

#[test]
fn optional_unknown_filters_are_skipped_and_typed_struct_is_named() {
    let mut unknown = filter(
        "envoy.filters.http.cors",
        pack_any(rds::Decorator::default()),
    );
    unknown.is_optional = true;
    let l = listener(api(rds_hcm(vec![unknown, router()])));
    assert_eq!(client_hcm(&l).http_filters.len(), 1);
}

#[test]
fn inline_route_config_depends_on_its_clusters() {
    let mut h = rds_hcm(vec![router()]);
    h.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
        rds::RouteConfiguration {
            name: "inline".into(),
            virtual_hosts: vec![rds::VirtualHost {
                name: "v".into(),
                domains: vec!["*".into()],
                routes: vec![rds::Route {
                    r#match: Some(rds::RouteMatch {
                        path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
                        ..Default::default()
                    }),
                    action: Some(rds::route::Action::Route(rds::RouteAction {
                        cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(
                            "backend".into(),
                        )),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        },
    ));
    let l = listener(api(h));
    let RouteSource::Inline(rc) = &client_hcm(&l).route_source else {
        panic!()
    };
    assert_eq!(rc.name, "inline");
    assert_eq!(
        Resource::Listener(l).dependencies(),
        vec![(ResourceType::Cluster, "backend".into())]
    );
}

fn downstream_tls(require_client: bool) -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::DownstreamTlsContext {
                require_client_certificate: Some(BoolValue {
                    value: require_client,
                }),
                common_tls_context: Some(tls::CommonTlsContext {
                    tls_certificate_provider_instance: Some(
                        tls::CertificateProviderPluginInstance {
                            instance_name: "default".into(),
                            certificate_name: "default".into(),
                        },
                    ),
                    validation_context_type: Some(
                        tls::common_tls_context::ValidationContextType::ValidationContext(
                            tls::CertificateValidationContext {
                                ca_certificate_provider_instance: Some(
                                    tls::CertificateProviderPluginInstance {
                                        instance_name: "default".into(),
                                        certificate_name: "ROOTCA".into(),
                                    },
                                ),
                                ..Default::default()
                            },
                        ),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))),
    }
}

#[test]
fn server_listener_filter_chains_match_and_tls() {
    let mut mtls = server_chain(rds_hcm(vec![router()]), Some(downstream_tls(true)));
    mtls.filter_chain_match = Some(lds::FilterChainMatch {
        destination_port: Some(UInt32Value { value: 8080 }),
        prefix_ranges: vec![core::CidrRange {
            address_prefix: "10.0.0.0".into(),
            prefix_len: Some(UInt32Value { value: 8 }),
        }],
        source_type: lds::filter_chain_match::ConnectionSourceType::External as i32,
        source_prefix_ranges: vec![core::CidrRange {
            address_prefix: "192.168.0.0".into(),
            prefix_len: Some(UInt32Value { value: 16 }),
        }],
        source_ports: vec![1234],
        server_names: vec!["a.example".into()],
        transport_protocol: "tls".into(),
        application_protocols: vec!["h2".into()],
        ..Default::default()
    });
    let mut l = server(vec![mtls]);
    l.default_filter_chain = Some(server_chain(rds_hcm(vec![router()]), None));
    let got = listener(l);
    let ListenerKind::Server(s) = &got.kind else {
        panic!()
    };
    assert_eq!(s.address, "0.0.0.0:8080".parse().unwrap());
    let fc = &s.filter_chains[0];
    assert_eq!(
        fc.filter_chain_match,
        FilterChainMatch {
            destination_port: Some(8080),
            prefix_ranges: vec![CidrRange::new("10.0.0.0".parse().unwrap(), 8).unwrap()],
            source_type: SourceType::External,
            source_prefix_ranges: vec![CidrRange::new("192.168.0.0".parse().unwrap(), 16).unwrap()],
            source_ports: vec![1234],
            transport_protocol: Some("tls".into()),
            application_protocols: vec!["h2".into()],
            server_names: vec!["a.example".into()],
        }
    );
    let t = fc.tls.as_ref().unwrap();
    assert!(t.require_client_certificate);
    assert_eq!(t.identity_certificate.instance_name, "default");
    assert_eq!(
        t.validation
            .ca_certificate
            .as_ref()
            .unwrap()
            .certificate_name,
        "ROOTCA"
    );
    assert!(s.default_filter_chain.as_ref().unwrap().tls.is_none());
    // Both chains reference the same RDS name: one dependency.
    assert_eq!(
        Resource::Listener(got).dependencies(),
        vec![(ResourceType::RouteConfiguration, "route-a".into())]
    );
}

fn rbac_http_filter(config: rbac_http::Rbac) -> hcm::HttpFilter {
    filter("envoy.filters.http.rbac", pack_any(config))
}

/// The model of one RBAC filter, decoded through a whole server listener.
fn decode_rbac_filter(config: rbac_http::Rbac) -> RbacFilter {
    let l = listener(server(vec![server_chain(
        rds_hcm(vec![rbac_http_filter(config), router()]),
        None,
    )]));
    let ListenerKind::Server(s) = &l.kind else {
        panic!()
    };
    match &s.filter_chains[0].http_connection_manager.http_filters[0].config {
        HttpFilterConfig::Rbac(r) => r.clone(),
        other => panic!("{other:?}"),
    }
}

/// The rejection reason of a server listener with this RBAC filter.
fn rbac_reason(config: rbac_http::Rbac) -> String {
    lds_reason(server(vec![server_chain(
        rds_hcm(vec![rbac_http_filter(config), router()]),
        None,
    )]))
}

/// An RBAC rule set with one policy `p` whose principal is a regex that does not compile.
fn rbac_bad_regex(action: rbac::rbac::Action) -> rbac::Rbac {
    use envoy_types::pb::envoy::r#type::matcher::v3 as m;
    let principal = rbac::Principal {
        identifier: Some(rbac::principal::Identifier::Authenticated(
            rbac::principal::Authenticated {
                principal_name: Some(m::StringMatcher {
                    match_pattern: Some(m::string_matcher::MatchPattern::SafeRegex(
                        m::RegexMatcher {
                            regex: "(".into(),
                            ..Default::default()
                        },
                    )),
                    ignore_case: false,
                }),
            },
        )),
    };
    rbac::Rbac {
        action: action as i32,
        policies: [(
            "p".to_string(),
            rbac::Policy {
                permissions: vec![rbac::Permission {
                    rule: Some(rbac::permission::Rule::Any(true)),
                }],
                principals: vec![principal],
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

const RBAC_FILTER_PATH: &str = "listener 'srv' filter_chains[0].filters[0] 'envoy.filters.network.http_connection_manager'.http_filters[0] 'envoy.filters.http.rbac'.typed_config";

#[test]
fn rbac_filter_states() {
    let decode_rbac = |rules: Option<rbac::Rbac>| {
        let f = decode_rbac_filter(rbac_http::Rbac {
            rules,
            ..Default::default()
        });
        assert_eq!(f.shadow_rules, RbacRuleSet::NoRules);
        f.rules
    };
    let allow = rbac::rbac::Action::Allow as i32;
    let principal = |id: rbac::principal::Identifier| rbac::Principal {
        identifier: Some(id),
    };
    let policy = |principals: Vec<rbac::Principal>| rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::DestinationPort(8080)),
        }],
        principals,
        ..Default::default()
    };
    assert_eq!(decode_rbac(None), RbacRuleSet::NoRules);
    assert_eq!(
        decode_rbac(Some(rbac::Rbac {
            action: allow,
            ..Default::default()
        })),
        RbacRuleSet::Rules(RbacRules {
            action: RbacAction::Allow,
            policies: vec![]
        })
    );
    let src = principal(rbac::principal::Identifier::SourceIp(core::CidrRange {
        address_prefix: "10.0.0.0".into(),
        prefix_len: Some(UInt32Value { value: 8 }),
    }));
    let got = decode_rbac(Some(rbac::Rbac {
        action: allow,
        policies: [
            ("b".to_string(), policy(vec![src.clone()])),
            ("a".to_string(), policy(vec![src])),
        ]
        .into(),
        ..Default::default()
    }));
    let RbacRuleSet::Rules(rules) = &got else {
        panic!("{got:?}")
    };
    assert_eq!(
        rules
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b"]
    );
    assert_eq!(
        rules.policies[0].permissions,
        vec![Permission::DestinationPort(8080)]
    );
    assert_eq!(
        rules.policies[0].principals,
        vec![Principal::DirectRemoteIp(
            CidrRange::new("10.0.0.0".parse().unwrap(), 8).unwrap()
        )]
    );
    // A JWT-claim rule (metadata) is valid but not evaluated: fail closed, do not NACK.
    let jwt = decode_rbac(Some(rbac::Rbac {
        action: allow,
        policies: [(
            "jwt".to_string(),
            policy(vec![principal(rbac::principal::Identifier::Metadata(
                Default::default(),
            ))]),
        )]
        .into(),
        ..Default::default()
    }));
    assert_eq!(
        jwt,
        RbacRuleSet::Unmodelled {
            action: RbacAction::Allow,
            policy_names: vec!["jwt".into()],
            reason: "policy \"jwt\": metadata principal (e.g. JWT claims)".into()
        }
    );
    assert!(!jwt.allows(&RbacRequest::default()));
    // A malformed value is a rejection naming the path.
    let got = rbac_reason(rbac_http::Rbac {
        rules: Some(rbac_bad_regex(rbac::rbac::Action::Allow)),
        ..Default::default()
    });
    assert!(
        got.starts_with(&format!(
            "{RBAC_FILTER_PATH}.rules.policies[\"p\"].principals[0].authenticated.principal_name.safe_regex: regex \"(\" does not compile"
        )),
        "{got}"
    );
    let got = rbac_reason(rbac_http::Rbac {
        rules: Some(rbac::Rbac {
            action: 7,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        got,
        format!("{RBAC_FILTER_PATH}.rules: action 7 is unknown")
    );
}

#[test]
fn rbac_shadow_rules() {
    let deny = rbac::rbac::Action::Deny as i32;
    let any_policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals: vec![rbac::Principal {
            identifier: Some(rbac::principal::Identifier::Any(true)),
        }],
        ..Default::default()
    };
    let deny_all = RbacRules {
        action: RbacAction::Deny,
        policies: vec![RbacPolicy {
            name: "default-deny-all-0".into(),
            permissions: vec![Permission::Any],
            principals: vec![Principal::Any],
        }],
    };
    // Istio's dry-run DENY filter: shadow rules only, with the dry-run stat prefix.
    let got = decode_rbac_filter(rbac_http::Rbac {
        shadow_rules: Some(rbac::Rbac {
            action: deny,
            policies: [("default-deny-all-0".to_string(), any_policy.clone())].into(),
            ..Default::default()
        }),
        shadow_rules_stat_prefix: "istio_dry_run_deny_".into(),
        ..Default::default()
    });
    assert_eq!(
        got,
        RbacFilter {
            rules: RbacRuleSet::NoRules,
            shadow_rules: RbacRuleSet::Rules(deny_all.clone()),
            shadow_rules_stat_prefix: "istio_dry_run_deny_".into(),
        }
    );
    // Shadow rules never change the decision.
    assert!(got.allows(&RbacRequest::default()));
    // Enforced and shadow rules side by side are both kept.
    let both = decode_rbac_filter(rbac_http::Rbac {
        rules: Some(rbac::Rbac {
            action: deny,
            policies: [("default-deny-all-0".to_string(), any_policy.clone())].into(),
            ..Default::default()
        }),
        shadow_rules: Some(rbac::Rbac {
            action: rbac::rbac::Action::Allow as i32,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(both.rules, RbacRuleSet::Rules(deny_all));
    assert_eq!(
        both.shadow_rules,
        RbacRuleSet::Rules(RbacRules {
            action: RbacAction::Allow,
            policies: vec![]
        })
    );
    assert!(!both.allows(&RbacRequest::default()));
    // Unsupported features in shadow rules are valid: kept as unmodelled, not enforced.
    let jwt = decode_rbac_filter(rbac_http::Rbac {
        shadow_rules: Some(rbac::Rbac {
            action: deny,
            policies: [(
                "jwt".to_string(),
                rbac::Policy {
                    condition: Some(Default::default()),
                    ..any_policy
                },
            )]
            .into(),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        jwt.shadow_rules,
        RbacRuleSet::Unmodelled {
            action: RbacAction::Deny,
            policy_names: vec!["jwt".into()],
            reason: "policy \"jwt\": CEL condition".into()
        }
    );
    assert!(jwt.allows(&RbacRequest::default()));
    // A malformed shadow rule rejects the listener, naming the path.
    let got = rbac_reason(rbac_http::Rbac {
        shadow_rules: Some(rbac_bad_regex(rbac::rbac::Action::Deny)),
        ..Default::default()
    });
    assert!(
        got.starts_with(&format!(
            "{RBAC_FILTER_PATH}.shadow_rules.policies[\"p\"].principals[0].authenticated.principal_name.safe_regex: regex \"(\" does not compile"
        )),
        "{got}"
    );
    let got = rbac_reason(rbac_http::Rbac {
        shadow_rules: Some(rbac::Rbac {
            action: 7,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(
        got,
        format!("{RBAC_FILTER_PATH}.shadow_rules: action 7 is unknown")
    );
    let got = rbac_reason(rbac_http::Rbac {
        shadow_matcher: Some(Default::default()),
        ..Default::default()
    });
    assert_eq!(
        got,
        format!("{RBAC_FILTER_PATH}: shadow_matcher (RBAC matcher tree) is not supported")
    );
}

#[test]
fn path_normalization_is_honoured() {
    use hcm::http_connection_manager::PathWithEscapedSlashesAction as A;
    for (normalize, merge, action, want) in [
        (Some(true), false, A::KeepUnchanged, PathNormalization::BASE),
        (
            Some(true),
            false,
            A::ImplementationSpecificDefault,
            PathNormalization::BASE,
        ),
        (
            Some(true),
            true,
            A::KeepUnchanged,
            PathNormalization::MERGE_SLASHES,
        ),
        (
            Some(true),
            true,
            A::UnescapeAndForward,
            PathNormalization::DECODE_AND_MERGE_SLASHES,
        ),
        (
            Some(false),
            false,
            A::RejectRequest,
            PathNormalization {
                escaped_slashes: EscapedSlashesAction::RejectRequest,
                ..PathNormalization::NONE
            },
        ),
        (
            None,
            true,
            A::UnescapeAndRedirect,
            PathNormalization {
                merge_slashes: true,
                escaped_slashes: EscapedSlashesAction::UnescapeAndRedirect,
                ..PathNormalization::BASE
            },
        ),
    ] {
        let mut h = rds_hcm(vec![router()]);
        h.normalize_path = normalize.map(|value| BoolValue { value });
        h.merge_slashes = merge;
        h.path_with_escaped_slashes_action = action as i32;
        let l = listener(api(h.clone()));
        assert_eq!(client_hcm(&l).path_normalization, want, "{action:?}");
        let srv = listener(server(vec![server_chain(h, None)]));
        let ListenerKind::Server(s) = &srv.kind else {
            panic!()
        };
        assert_eq!(
            s.filter_chains[0]
                .http_connection_manager
                .path_normalization,
            want
        );
    }
}

#[test]
fn rejections() {
    let unknown = filter(
        "envoy.filters.http.lua",
        pack_any(rds::Decorator::default()),
    );
    let mut bad_rds = rds_hcm(vec![router()]);
    bad_rds.route_specifier = Some(hcm::http_connection_manager::RouteSpecifier::Rds(
        hcm::Rds {
            config_source: Some(core::ConfigSource {
                config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Path(
                    "/x".into(),
                )),
                ..Default::default()
            }),
            route_config_name: "r".into(),
        },
    ));
    let mut two_filters = server_chain(rds_hcm(vec![router()]), None);
    two_filters.filters.push(two_filters.filters[0].clone());
    let mut listener_filters = server(vec![server_chain(rds_hcm(vec![router()]), None)]);
    listener_filters.listener_filters = vec![Default::default()];
    let mut no_addr = server(vec![server_chain(rds_hcm(vec![router()]), None)]);
    no_addr.address = None;
    let mut ws = rds_hcm(vec![router()]);
    ws.upgrade_configs = vec![Default::default()];
    let mut bad_action = rds_hcm(vec![router()]);
    bad_action.path_with_escaped_slashes_action = 9;
    let mut transformations = rds_hcm(vec![router()]);
    transformations.path_normalization_options = Some(Default::default());
    let no_id_tls = core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::DownstreamTlsContext {
                common_tls_context: Some(Default::default()),
                ..Default::default()
            },
        ))),
    };
    let cases: Vec<(lds::Listener, &str)> = vec![
        (
            api(rds_hcm(vec![unknown.clone(), router()])),
            "listener 'a.example:80' api_listener.http_filters[0] 'envoy.filters.http.lua': filter type \"envoy.config.route.v3.Decorator\" is not supported and the filter is not optional",
        ),
        (
            api(rds_hcm(vec![])),
            "listener 'a.example:80' api_listener: http_filters must end with the router filter (envoy.filters.http.router)",
        ),
        (
            api(rds_hcm(vec![
                router(),
                filter(
                    "envoy.filters.http.fault",
                    pack_any(fault::HttpFault::default()),
                ),
            ])),
            "api_listener.http_filters[1] 'envoy.filters.http.fault': the router filter must be the last filter",
        ),
        (
            api(rds_hcm(vec![router(), router()])),
            "api_listener.http_filters[1] 'envoy.filters.http.router': duplicate filter name",
        ),
        (
            api(bad_rds),
            "api_listener.rds.config_source: path is not supported: only ads or self config sources are",
        ),
        (
            api(ws),
            "api_listener: upgrade_configs (websocket, CONNECT) are not supported",
        ),
        (
            api(bad_action),
            "api_listener: path_with_escaped_slashes_action 9 is not a known action",
        ),
        (
            api(transformations),
            "api_listener: path_normalization_options is not supported",
        ),
        (
            lds::Listener {
                name: "x".into(),
                api_listener: Some(lds::ApiListener {
                    api_listener: Some(pack_any(Router::default())),
                }),
                ..Default::default()
            },
            "listener 'x' api_listener: api_listener of type \"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router\" is not supported (only HttpConnectionManager)",
        ),
        (
            server(vec![two_filters]),
            "listener 'srv' filter_chains[0]: filters must hold exactly one HttpConnectionManager, found 2 filters",
        ),
        (
            listener_filters,
            "listener 'srv': listener_filters are not supported",
        ),
        (
            no_addr,
            "listener 'srv': address is required for a server listener (no api_listener)",
        ),
        (
            server(vec![
                server_chain(rds_hcm(vec![router()]), None),
                server_chain(rds_hcm(vec![router()]), None),
            ]),
            "listener 'srv' filter_chains[1]: filter_chain_match equals that of filter_chains[0]",
        ),
        (
            server(vec![server_chain(rds_hcm(vec![router()]), Some(no_id_tls))]),
            "listener 'srv' filter_chains[0].transport_socket.common_tls_context: an identity certificate provider instance is required for a TLS server",
        ),
        (
            server(vec![]),
            "listener 'srv': a server listener needs filter_chains or a default_filter_chain",
        ),
    ];
    for (l, want) in cases {
        let got = lds_reason(l);
        assert!(got.contains(want), "\n got: {got}\nwant: {want}");
    }
}

#[test]
fn local_ratelimit_on_a_client_listener_is_kept_and_refused_on_a_server_one() {
    use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
    let name = "envoy.filters.http.local_ratelimit";
    // No token_bucket: a listener-level no-op that per-route configs enable.
    let l = listener(api(rds_hcm(vec![
        filter(name, pack_any(LocalRateLimit::default())),
        router(),
    ])));
    let HttpFilterConfig::LocalRateLimit(c) = &client_hcm(&l).http_filters[0].config else {
        panic!("{:?}", client_hcm(&l).http_filters[0]);
    };
    assert_eq!(c.token_bucket, None);
    let chain = |optional| {
        let mut f = filter(name, pack_any(LocalRateLimit::default()));
        f.is_optional = optional;
        server(vec![server_chain(rds_hcm(vec![f, router()]), None)])
    };
    assert!(
        lds_reason(chain(false)).contains("local_ratelimit on a server listener is not supported"),
        "{}",
        lds_reason(chain(false))
    );
    let l = listener(chain(true));
    let ListenerKind::Server(s) = &l.kind else {
        panic!()
    };
    assert_eq!(
        s.filter_chains[0]
            .http_connection_manager
            .http_filters
            .len(),
        1,
        "optional: skipped"
    );
}
