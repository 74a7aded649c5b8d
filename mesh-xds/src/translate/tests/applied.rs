//! Envoy fields the translation applies that no other test sets: each is set on a valid
//! resource and the model is checked to carry it (issue #16's Envoy table names these tests).

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as fault;
use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;
use mesh_core::model::{
    AbortKind, ClusterSpecifier, Discovery, HttpFilterConfig, ListenerKind, PathRedirect,
    RouteAction, RouteConfig, UpstreamProtocol,
};

use super::unsupported::{
    action, client, cluster, lb_policy, route, upstream_options, upstream_tls,
};
use crate::resource::{Resource, ResourceType, decode};

fn decoded_cluster(any: &Any) -> std::sync::Arc<mesh_core::model::Cluster> {
    match decode(ResourceType::Cluster, any) {
        Ok(Resource::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn decoded_route(any: &Any) -> std::sync::Arc<RouteConfig> {
    match decode(ResourceType::RouteConfiguration, any) {
        Ok(Resource::RouteConfiguration(r)) => r,
        other => panic!("{other:?}"),
    }
}

#[test]
fn cluster_fields_reach_the_model() {
    // dns_refresh_rate on a STRICT_DNS cluster.
    let dns = cluster(|c| {
        c.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::StrictDns as i32,
        ));
        c.eds_cluster_config = None;
        c.dns_refresh_rate = Some(PbDuration {
            seconds: 7,
            nanos: 0,
        });
        c.dns_lookup_family = cds::cluster::DnsLookupFamily::V6Only as i32;
        c.dns_jitter = Some(PbDuration {
            seconds: 0,
            nanos: 250_000_000,
        });
        c.load_assignment = Some(eds::ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![eds::LocalityLbEndpoints {
                lb_endpoints: vec![eds::LbEndpoint {
                    host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                        eds::Endpoint {
                            address: super::socket("10.0.0.1", 80),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        });
    });
    match &decoded_cluster(&dns).discovery {
        Discovery::StrictDns {
            refresh,
            jitter,
            lookup_family,
            ..
        } => {
            assert_eq!(*refresh, Duration::from_secs(7));
            assert_eq!(*jitter, Duration::from_millis(250));
            assert_eq!(*lookup_family, mesh_core::model::DnsLookupFamily::V6Only);
        }
        other => panic!("{other:?}"),
    }
    // protocol_selection (deprecated) and the typed auto_config.
    let downstream = cluster(|c| {
        c.protocol_selection = cds::cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32
    });
    assert_eq!(
        decoded_cluster(&downstream).http_protocol.protocol,
        UpstreamProtocol::UseDownstream
    );
    let auto = upstream_options(|o| {
        o.upstream_protocol_options = Some(
            uphttp::http_protocol_options::UpstreamProtocolOptions::AutoConfig(Default::default()),
        )
    });
    assert_eq!(
        decoded_cluster(&auto).http_protocol.protocol,
        UpstreamProtocol::Auto
    );
    // validation_context_certificate_provider_instance (the oneof member, not the combined
    // context's): the CA the server's certificate is checked against.
    let tls = decoded_cluster(&upstream_tls(|_| {}));
    let ca = tls
        .tls
        .as_ref()
        .unwrap()
        .validation
        .ca_certificate
        .as_ref()
        .unwrap();
    assert_eq!(
        (ca.instance_name.as_str(), ca.certificate_name.as_str()),
        ("default", "ROOTCA")
    );
}

/// `locality_lb_config` / `locality_weighted_lb_config` of each typed policy turns on
/// locality-weighted picks (off without it).
#[test]
fn each_typed_policys_locality_config_weights_localities() {
    use lbp::common::v3::LocalityLbConfig;
    use lbp::common::v3::locality_lb_config::{LocalityConfigSpecifier, LocalityWeightedLbConfig};
    let weighted = || {
        Some(LocalityLbConfig {
            locality_config_specifier: Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
                LocalityWeightedLbConfig {},
            )),
        })
    };
    let cases = [
        pack_any(lbp::round_robin::v3::RoundRobin {
            locality_lb_config: weighted(),
            ..Default::default()
        }),
        pack_any(lbp::least_request::v3::LeastRequest {
            locality_lb_config: weighted(),
            ..Default::default()
        }),
        pack_any(lbp::random::v3::Random {
            locality_lb_config: weighted(),
        }),
        pack_any(lbp::ring_hash::v3::RingHash {
            locality_weighted_lb_config: Some(LocalityWeightedLbConfig {}),
            ..Default::default()
        }),
        pack_any(lbp::maglev::v3::Maglev {
            locality_weighted_lb_config: Some(LocalityWeightedLbConfig {}),
            ..Default::default()
        }),
    ];
    for any in cases {
        let name = any.type_url.clone();
        let mut plain = any.clone();
        assert!(
            decoded_cluster(&lb_policy(any)).common_lb.locality_weighted,
            "{name}"
        );
        // The same policy without it: not weighted (the field is what turns it on).
        let stripped = match name.rsplit('.').next() {
            Some("RoundRobin") => pack_any(lbp::round_robin::v3::RoundRobin::default()),
            Some("LeastRequest") => pack_any(lbp::least_request::v3::LeastRequest::default()),
            Some("Random") => pack_any(lbp::random::v3::Random::default()),
            Some("RingHash") => pack_any(lbp::ring_hash::v3::RingHash::default()),
            _ => pack_any(lbp::maglev::v3::Maglev::default()),
        };
        plain.value = stripped.value;
        assert!(
            !decoded_cluster(&lb_policy(plain))
                .common_lb
                .locality_weighted,
            "{name}"
        );
    }
}

#[test]
fn route_fields_reach_the_model() {
    let header = |f: fn(&mut rds::HeaderMatcher)| {
        let mut h = rds::HeaderMatcher {
            name: "x-a".into(),
            header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::StringMatch(
                m::StringMatcher {
                    match_pattern: Some(m::string_matcher::MatchPattern::SafeRegex(
                        m::RegexMatcher {
                            regex: "v[0-9]+".into(),
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        f(&mut h);
        h
    };
    // HeaderMatcher.treat_missing_header_as_empty, StringMatcher.safe_regex.
    let rc = decoded_route(&route(|r| {
        r.r#match.as_mut().unwrap().headers =
            vec![header(|h| h.treat_missing_header_as_empty = true)]
    }));
    let hm = &rc.virtual_hosts[0].routes[0].route_match.headers[0];
    assert!(hm.treat_missing_header_as_empty);
    let rule = format!("{:?}", hm.rule);
    assert!(rule.contains("v[0-9]+"), "{rule}");
    // RedirectAction.scheme_redirect / path_redirect.
    let rc = decoded_route(&route(|r| {
        r.action = Some(rds::route::Action::Redirect(rds::RedirectAction {
            scheme_rewrite_specifier: Some(
                rds::redirect_action::SchemeRewriteSpecifier::SchemeRedirect("https".into()),
            ),
            path_rewrite_specifier: Some(rds::redirect_action::PathRewriteSpecifier::PathRedirect(
                "/new".into(),
            )),
            ..Default::default()
        }))
    }));
    let RouteAction::Redirect(redirect) = &rc.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(redirect.scheme.as_deref(), Some("https"));
    assert_eq!(redirect.path, Some(PathRedirect::Path("/new".into())));
    // DataSource.inline_bytes as a direct response body.
    let rc = decoded_route(&route(|r| {
        r.action = Some(rds::route::Action::DirectResponse(
            rds::DirectResponseAction {
                status: 200,
                body: Some(core::DataSource {
                    specifier: Some(core::data_source::Specifier::InlineBytes(b"hi".to_vec())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
    }));
    let RouteAction::DirectResponse(d) = &rc.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(d.body.as_deref(), Some(&b"hi"[..]));
    // HeaderValue.raw_value in a header edit.
    let rc = decoded_route(&route(|r| {
        r.request_headers_to_add = vec![core::HeaderValueOption {
            header: Some(core::HeaderValue {
                key: "x-raw".into(),
                raw_value: b"bytes".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        }]
    }));
    let add = &rc.virtual_hosts[0].routes[0].headers.request_headers_to_add[0];
    assert_eq!((add.name.as_str(), add.value.as_str()), ("x-raw", "bytes"));
    // WeightedCluster.total_weight must equal the sum; ClusterWeight.typed_per_filter_config.
    let weighted = |total: u32| {
        action(move |a| {
            a.cluster_specifier = Some(rds::route_action::ClusterSpecifier::WeightedClusters(
                rds::WeightedCluster {
                    clusters: vec![rds::weighted_cluster::ClusterWeight {
                        name: "c".into(),
                        weight: Some(UInt32Value { value: 3 }),
                        typed_per_filter_config: [(
                            "fault".to_string(),
                            pack_any(fault::HttpFault {
                                abort: Some(fault::FaultAbort {
                                    error_type: Some(fault::fault_abort::ErrorType::HttpStatus(
                                        503,
                                    )),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            }),
                        )]
                        .into(),
                        ..Default::default()
                    }],
                    total_weight: Some(UInt32Value { value: total }),
                    ..Default::default()
                },
            ))
        })
    };
    let rc = decoded_route(&weighted(3));
    let RouteAction::Forward(fwd) = &rc.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    let ClusterSpecifier::Weighted(clusters) = &fwd.cluster else {
        panic!()
    };
    assert!(clusters[0].filter_overrides.contains_key("fault"));
    let why = decode(ResourceType::RouteConfiguration, &weighted(4)).unwrap_err();
    assert!(why.reason.contains("total_weight"), "{}", why.reason);
}

#[test]
fn listener_fields_reach_the_model() {
    // ConfigSource.self for RDS.
    let l = client(|h| {
        h.route_specifier = Some(
            envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier::Rds(
                envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::Rds {
                    config_source: Some(core::ConfigSource {
                        config_source_specifier: Some(
                            core::config_source::ConfigSourceSpecifier::Self_(Default::default()),
                        ),
                        ..Default::default()
                    }),
                    route_config_name: "r".into(),
                },
            ),
        )
    });
    assert!(decode(ResourceType::Listener, &l).is_ok());
    // HTTPFault.headers and FaultAbort.header_abort.
    let f = fault::HttpFault {
        abort: Some(fault::FaultAbort {
            error_type: Some(fault::fault_abort::ErrorType::HeaderAbort(
                Default::default(),
            )),
            ..Default::default()
        }),
        headers: vec![rds::HeaderMatcher {
            name: "x-fault".into(),
            header_match_specifier: Some(rds::header_matcher::HeaderMatchSpecifier::PresentMatch(
                true,
            )),
            ..Default::default()
        }],
        ..Default::default()
    };
    let l = client(|h| {
        h.http_filters
            .insert(0, super::listener::filter("fault", pack_any(f)))
    });
    let Ok(Resource::Listener(l)) = decode(ResourceType::Listener, &l) else {
        panic!()
    };
    let ListenerKind::Client(h) = &l.kind else {
        panic!()
    };
    let HttpFilterConfig::Fault(cfg) = &h.http_filters[0].config else {
        panic!()
    };
    assert_eq!(cfg.abort.as_ref().unwrap().kind, AbortKind::FromHeader);
    assert_eq!(cfg.headers.len(), 1);
    assert_eq!(cfg.headers[0].name, "x-fault");
}
