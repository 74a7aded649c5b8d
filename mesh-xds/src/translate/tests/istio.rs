//! Resources shaped exactly as Istio's proxyless generator (pilot/pkg/networking/grpcgen)
//! emits them: each must decode without rejection.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3 as rbac_http;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::google::protobuf::{
    Any, BoolValue, Struct, UInt32Value, UInt64Value, Value, value::Kind,
};
use envoy_types::util::pack_any;
use mesh_core::model::*;

use super::listener::{filter, router};
use super::{ads, d, decode_ok, socket, u32v};
use crate::resource::{Resource, ResourceType};

const HOST: &str = "echo.default.svc.cluster.local";
const CLUSTER: &str = "outbound|7070||echo.default.svc.cluster.local";

/// Istio wraps every resource in `discovery.Resource{name, resource}`.
fn wrapped<M: prost::Message + prost::Name>(name: &str, msg: M) -> Any {
    pack_any(Wrapper {
        name: name.into(),
        resource: Some(pack_any(msg)),
        ..Default::default()
    })
}

/// grpcgen.go buildCommonTLSContext: deprecated certificate-provider-instance fields.
fn istio_common_tls(sans: &[&str]) -> tls::CommonTlsContext {
    tls::CommonTlsContext {
        tls_certificate_certificate_provider_instance: Some(
            tls::common_tls_context::CertificateProviderInstance {
                instance_name: "default".into(),
                certificate_name: "default".into(),
            },
        ),
        validation_context_type: Some(
            tls::common_tls_context::ValidationContextType::CombinedValidationContext(
                tls::common_tls_context::CombinedCertificateValidationContext {
                    validation_context_certificate_provider_instance: Some(
                        tls::common_tls_context::CertificateProviderInstance {
                            instance_name: "default".into(),
                            certificate_name: "ROOTCA".into(),
                        },
                    ),
                    default_validation_context: Some(tls::CertificateValidationContext {
                        match_subject_alt_names: sans
                            .iter()
                            .map(|s| m::StringMatcher {
                                match_pattern: Some(m::string_matcher::MatchPattern::Exact(
                                    (*s).into(),
                                )),
                                ignore_case: false,
                            })
                            .collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

#[test]
fn outbound_listener() {
    let h = hcm::HttpConnectionManager {
        http_filters: vec![
            filter("envoy.filters.http.fault", pack_any(HttpFault::default())),
            router(),
        ],
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(
            hcm::Rds {
                config_source: ads(),
                route_config_name: CLUSTER.into(),
            },
        )),
        ..Default::default()
    };
    let name = format!("{HOST}:7070");
    let l = lds::Listener {
        name: name.clone(),
        address: socket("10.96.0.20", 7070),
        api_listener: Some(lds::ApiListener {
            api_listener: Some(pack_any(h)),
        }),
        ..Default::default()
    };
    let r = decode_ok(ResourceType::Listener, &wrapped(&name, l));
    assert_eq!(r.name(), name);
    assert_eq!(
        r.dependencies(),
        vec![(ResourceType::RouteConfiguration, CLUSTER.into())]
    );
    let Resource::Listener(l) = r else { panic!() };
    let ListenerKind::Client(h) = &l.kind else {
        panic!()
    };
    // An empty HTTPFault config injects nothing.
    assert_eq!(
        h.http_filters[0].config,
        HttpFilterConfig::Fault(FaultConfig::default())
    );
}

#[test]
fn inbound_listener_with_mtls_and_rbac() {
    let name = "xds.istio.io/grpc/lds/inbound/10.0.0.5:7070";
    let policy = rbac::Policy {
        permissions: vec![rbac::Permission {
            rule: Some(rbac::permission::Rule::Any(true)),
        }],
        principals: vec![rbac::Principal {
            identifier: Some(rbac::principal::Identifier::Authenticated(
                rbac::principal::Authenticated {
                    principal_name: Some(m::StringMatcher {
                        match_pattern: Some(m::string_matcher::MatchPattern::Exact(
                            "spiffe://cluster.local/ns/default/sa/client".into(),
                        )),
                        ignore_case: false,
                    }),
                },
            )),
        }],
        ..Default::default()
    };
    let rbac_filter = |name: &str, action: rbac::rbac::Action| {
        filter(
            name,
            pack_any(rbac_http::Rbac {
                rules: Some(rbac::Rbac {
                    action: action as i32,
                    policies: HashMap::from([(
                        "default-allow-client-0".to_string(),
                        policy.clone(),
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        )
    };
    let h = hcm::HttpConnectionManager {
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::RouteConfig(
            rds::RouteConfiguration {
                name: "inbound".into(),
                virtual_hosts: vec![rds::VirtualHost {
                    domains: vec!["*".into()],
                    routes: vec![rds::Route {
                        r#match: Some(rds::RouteMatch {
                            path_specifier: Some(rds::route_match::PathSpecifier::Prefix(
                                "/".into(),
                            )),
                            ..Default::default()
                        }),
                        action: Some(rds::route::Action::NonForwardingAction(Default::default())),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        )),
        http_filters: vec![
            rbac_filter("envoy.filters.http.rbac.DENY", rbac::rbac::Action::Deny),
            rbac_filter("envoy.filters.http.rbac", rbac::rbac::Action::Allow),
            router(),
        ],
        ..Default::default()
    };
    let chain = lds::FilterChain {
        name: "inbound-mtls".into(),
        filters: vec![lds::Filter {
            name: "inbound-hcmmtls".into(),
            config_type: Some(lds::filter::ConfigType::TypedConfig(pack_any(h))),
        }],
        transport_socket: Some(core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
                tls::DownstreamTlsContext {
                    common_tls_context: Some(istio_common_tls(&[])),
                    require_client_certificate: Some(BoolValue { value: true }),
                    ..Default::default()
                },
            ))),
        }),
        ..Default::default()
    };
    let l = lds::Listener {
        name: name.into(),
        address: socket("10.0.0.5", 7070),
        filter_chains: vec![chain],
        ..Default::default()
    };
    let Resource::Listener(l) = decode_ok(ResourceType::Listener, &wrapped(name, l)) else {
        panic!()
    };
    let ListenerKind::Server(s) = &l.kind else {
        panic!()
    };
    assert_eq!(s.address, "10.0.0.5:7070".parse().unwrap());
    let fc = &s.filter_chains[0];
    let t = fc.tls.as_ref().unwrap();
    assert!(t.require_client_certificate);
    assert_eq!(
        t.identity_certificate,
        CertificateProviderInstance {
            instance_name: "default".into(),
            certificate_name: "default".into()
        }
    );
    assert_eq!(
        t.validation
            .ca_certificate
            .as_ref()
            .unwrap()
            .certificate_name,
        "ROOTCA"
    );
    let filters = &fc.http_connection_manager.http_filters;
    // The Istio ALLOW policy admits only the client's SPIFFE ID over mTLS.
    let HttpFilterConfig::Rbac(allow) = &filters[1].config else {
        panic!("{:?}", filters[1])
    };
    let client = RbacRequest {
        authenticated: true,
        peer_names: vec!["spiffe://cluster.local/ns/default/sa/client"],
        ..Default::default()
    };
    let other = RbacRequest {
        authenticated: true,
        peer_names: vec!["spiffe://cluster.local/ns/default/sa/other"],
        ..Default::default()
    };
    assert!(allow.allows(&client));
    assert!(!allow.allows(&other));
    let HttpFilterConfig::Rbac(deny) = &filters[0].config else {
        panic!()
    };
    assert!(
        !deny.allows(&client),
        "the DENY filter with the same policy refuses the client"
    );
    let RouteSource::Inline(rc) = &fc.http_connection_manager.route_source else {
        panic!()
    };
    assert_eq!(
        rc.virtual_hosts[0].routes[0].action,
        RouteAction::NonForwarding
    );
}

#[test]
fn cluster_with_istio_mutual_and_ring_hash() {
    let c = cds::Cluster {
        name: CLUSTER.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            service_name: CLUSTER.into(),
            eds_config: ads(),
        }),
        lb_policy: cds::cluster::LbPolicy::RingHash as i32,
        lb_config: Some(cds::cluster::LbConfig::RingHashLbConfig(
            cds::cluster::RingHashLbConfig {
                minimum_ring_size: Some(UInt64Value { value: 1024 }),
                ..Default::default()
            },
        )),
        transport_socket: Some(core::TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
                tls::UpstreamTlsContext {
                    common_tls_context: Some(istio_common_tls(&[
                        "spiffe://cluster.local/ns/default/sa/echo",
                    ])),
                    ..Default::default()
                },
            ))),
        }),
        ..Default::default()
    };
    let r = decode_ok(ResourceType::Cluster, &wrapped(CLUSTER, c));
    assert_eq!(
        r.dependencies(),
        vec![(ResourceType::ClusterLoadAssignment, CLUSTER.into())]
    );
    let Resource::Cluster(c) = r else { panic!() };
    let t = c.tls.as_ref().unwrap();
    assert_eq!(
        t.identity_certificate.as_ref().unwrap().instance_name,
        "default"
    );
    assert_eq!(
        t.validation.san_matchers,
        vec![SanMatcher {
            san_type: SanType::Any,
            matcher: StringMatcher::Exact {
                value: "spiffe://cluster.local/ns/default/sa/echo".into(),
                ignore_case: false
            }
        }]
    );
    assert!(matches!(
        c.lb_policy,
        LbPolicy::RingHash {
            min_ring_size: 1024,
            ..
        }
    ));
}

#[test]
fn proxyless_clusters_limit_retries_only_where_they_say_so() {
    use crate::translate::Dialect;
    let breakers = |max_retries: Option<u32>| cds::Cluster {
        name: CLUSTER.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            service_name: CLUSTER.into(),
            eds_config: ads(),
        }),
        // istiod's proxyless generator: a DestinationRule's http2MaxRequests only.
        circuit_breakers: Some(cds::CircuitBreakers {
            thresholds: vec![cds::circuit_breakers::Thresholds {
                max_requests: u32v(100),
                max_retries: max_retries.and_then(u32v),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let none = cds::Cluster {
        circuit_breakers: None,
        ..breakers(None)
    };
    let limits = |c: cds::Cluster, dialect| match crate::resource::decode_as(
        ResourceType::Cluster,
        &wrapped(CLUSTER, c),
        dialect,
    ) {
        Ok(Resource::Cluster(c)) => (
            c.circuit_breakers.default.max_requests,
            c.circuit_breakers.default.max_retries,
            c.circuit_breakers.high.max_retries,
        ),
        other => panic!("{other:?}"),
    };
    let d = 1024;
    let (envoy, proxyless) = (Dialect::Envoy, Dialect::IstioProxyless);
    assert_eq!(limits(breakers(None), envoy), (100, 3, 3));
    assert_eq!(limits(breakers(None), proxyless), (100, u32::MAX, u32::MAX));
    assert_eq!(limits(none.clone(), envoy), (d, 3, 3));
    assert_eq!(limits(none, proxyless), (d, u32::MAX, u32::MAX));
    // A limit the cluster does set applies in either dialect.
    assert_eq!(limits(breakers(Some(5)), proxyless), (100, 5, u32::MAX));

    // The dialect follows the node's GENERATOR metadata.
    let node = |generator: &str| {
        let mut metadata = Struct::default();
        metadata.fields.insert(
            "GENERATOR".into(),
            Value {
                kind: Some(Kind::StringValue(generator.into())),
            },
        );
        core::Node {
            metadata: Some(metadata),
            ..Default::default()
        }
    };
    assert_eq!(Dialect::of_node(&node("grpc")), proxyless);
    assert_eq!(Dialect::of_node(&node("envoy")), envoy);
    assert_eq!(Dialect::of_node(&core::Node::default()), envoy);
}

#[test]
fn sidecar_style_route_configuration() {
    let route = rds::Route {
        name: "default".into(),
        r#match: Some(rds::RouteMatch {
            path_specifier: Some(rds::route_match::PathSpecifier::Prefix("/".into())),
            ..Default::default()
        }),
        action: Some(rds::route::Action::Route(rds::RouteAction {
            cluster_specifier: Some(rds::route_action::ClusterSpecifier::Cluster(CLUSTER.into())),
            timeout: d(0, 0),
            retry_policy: Some(rds::RetryPolicy {
                retry_on:
                    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
                        .into(),
                num_retries: u32v(2),
                retry_host_predicate: vec![rds::retry_policy::RetryHostPredicate {
                    name: "envoy.retry_host_predicates.previous_hosts".into(),
                    config_type: Some(
                        rds::retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack_any(
                            PreviousHostsPredicate::default(),
                        )),
                    ),
                }],
                host_selection_retry_max_attempts: 5,
                retriable_status_codes: vec![503],
                ..Default::default()
            }),
            max_stream_duration: Some(rds::route_action::MaxStreamDuration {
                max_stream_duration: d(0, 0),
                grpc_timeout_header_max: d(0, 0),
                ..Default::default()
            }),
            ..Default::default()
        })),
        decorator: Some(rds::Decorator {
            operation: format!("{HOST}:7070/*"),
            ..Default::default()
        }),
        metadata: Some(core::Metadata {
            filter_metadata: HashMap::from([(
                "istio".to_string(),
                Struct {
                    fields: HashMap::from([(
                        "config".to_string(),
                        Value {
                            kind: Some(Kind::StringValue("/apis/x".into())),
                        },
                    )]),
                },
            )]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let rc = rds::RouteConfiguration {
        name: CLUSTER.into(),
        virtual_hosts: vec![rds::VirtualHost {
            name: format!("{HOST}:7070"),
            domains: vec![
                HOST.into(),
                format!("{HOST}:7070"),
                "echo".into(),
                "echo:7070".into(),
                "10.96.0.20".into(),
                "10.96.0.20:7070".into(),
            ],
            routes: vec![route],
            include_request_attempt_count: true,
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    };
    let r = decode_ok(ResourceType::RouteConfiguration, &wrapped(CLUSTER, rc));
    assert_eq!(
        r.dependencies(),
        vec![(ResourceType::Cluster, CLUSTER.into())]
    );
    let Resource::RouteConfiguration(rc) = r else {
        panic!()
    };
    let RouteAction::Forward(f) = &rc.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert_eq!(
        f.timeout,
        Some(std::time::Duration::ZERO),
        "0s disables the timeout"
    );
    let p = f.retry_policy.as_ref().unwrap();
    assert!(p.retry_previous_hosts);
    assert_eq!(p.num_retries, 2);
    assert_eq!(
        p.retry_on,
        vec![
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::GrpcUnavailable,
            RetryOn::GrpcCancelled,
            RetryOn::RetriableStatusCodes
        ]
    );
}

#[test]
fn endpoints_with_istio_metadata() {
    let lb = eds::LbEndpoint {
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: socket("10.0.0.5", 7070),
            ..Default::default()
        })),
        health_status: core::HealthStatus::Healthy as i32,
        metadata: Some(core::Metadata {
            filter_metadata: HashMap::from([
                (
                    "envoy.transport_socket_match".to_string(),
                    Struct {
                        fields: HashMap::from([(
                            "tlsMode".to_string(),
                            Value {
                                kind: Some(Kind::StringValue("istio".into())),
                            },
                        )]),
                    },
                ),
                (
                    "istio".to_string(),
                    Struct {
                        fields: HashMap::from([(
                            "workload".to_string(),
                            Value {
                                kind: Some(Kind::StringValue(
                                    "echo;default;echo;v1;cluster1".into(),
                                )),
                            },
                        )]),
                    },
                ),
            ]),
            ..Default::default()
        }),
        load_balancing_weight: Some(UInt32Value { value: 1 }),
    };
    let c = eds::ClusterLoadAssignment {
        cluster_name: CLUSTER.into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            locality: Some(core::Locality {
                region: "us-central1".into(),
                zone: "us-central1-a".into(),
                sub_zone: String::new(),
            }),
            lb_endpoints: vec![lb],
            load_balancing_weight: u32v(1),
            ..Default::default()
        }],
        ..Default::default()
    };
    let Resource::ClusterLoadAssignment(c) =
        decode_ok(ResourceType::ClusterLoadAssignment, &wrapped(CLUSTER, c))
    else {
        panic!()
    };
    assert_eq!(c.localities[0].endpoints[0].tls_mode, TlsMode::Istio);
    assert_eq!(c.localities[0].locality.zone, "us-central1-a");
}
