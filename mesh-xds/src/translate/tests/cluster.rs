use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as uphttp;
use envoy_types::pb::envoy::r#type::matcher::v3 as m;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::util::pack_any;
use mesh_core::model::*;

use super::{ads, cluster, d, reason, socket, u32v};
use crate::resource::{Resource, ResourceType};

fn eds_cluster(name: &str) -> cds::Cluster {
    cds::Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
            cds::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
            eds_config: ads(),
            service_name: String::new(),
        }),
        ..Default::default()
    }
}

fn cds_reason(c: cds::Cluster) -> String {
    reason(ResourceType::Cluster, &pack_any(c))
}

fn one_endpoint(host: &str, port: u32) -> eds::ClusterLoadAssignment {
    eds::ClusterLoadAssignment {
        cluster_name: "x".into(),
        endpoints: vec![eds::LocalityLbEndpoints {
            lb_endpoints: vec![eds::LbEndpoint {
                host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
                    address: socket(host, port),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn eds_cluster_defaults() {
    let c = cluster(eds_cluster(
        "outbound|9080||reviews.default.svc.cluster.local",
    ));
    assert_eq!(c.discovery, Discovery::Eds { service_name: None });
    assert_eq!(c.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(c.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.circuit_breakers, CircuitBreakers::default());
    assert_eq!(c.outlier_detection, None);
    assert_eq!(c.tls, None);
    assert_eq!(c.common_lb, CommonLbConfig::default());
    assert_eq!(
        Resource::Cluster(c).dependencies(),
        vec![(
            ResourceType::ClusterLoadAssignment,
            "outbound|9080||reviews.default.svc.cluster.local".into()
        )]
    );
    let mut named = eds_cluster("c");
    named.eds_cluster_config.as_mut().unwrap().service_name = "svc".into();
    let c = cluster(named);
    assert_eq!(
        Resource::Cluster(c).dependencies(),
        vec![(ResourceType::ClusterLoadAssignment, "svc".into())]
    );
}

#[test]
fn static_logical_dns_and_aggregate() {
    let mut s = cds::Cluster {
        name: "static".into(),
        load_assignment: Some(one_endpoint("10.0.0.1", 80)),
        ..Default::default()
    };
    let c = cluster(s.clone());
    let Discovery::Static(cla) = &c.discovery else {
        panic!("{:?}", c.discovery)
    };
    assert_eq!(
        cla.localities[0].endpoints[0].address,
        EndpointAddress::Socket("10.0.0.1:80".parse().unwrap())
    );
    assert!(Resource::Cluster(c.clone()).dependencies().is_empty());

    s.name = "dns".into();
    s.cluster_discovery_type = Some(cds::cluster::ClusterDiscoveryType::Type(
        cds::cluster::DiscoveryType::LogicalDns as i32,
    ));
    s.load_assignment = Some(one_endpoint("api.example.com", 443));
    let c = cluster(s);
    let Discovery::LogicalDns {
        assignment: cla, ..
    } = &c.discovery
    else {
        panic!("{:?}", c.discovery)
    };
    assert_eq!(
        cla.localities[0].endpoints[0].address,
        EndpointAddress::Dns {
            host: "api.example.com".into(),
            port: 443
        }
    );

    let agg = cds::Cluster {
        name: "agg".into(),
        lb_policy: cds::cluster::LbPolicy::ClusterProvided as i32,
        cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::ClusterType(
            cds::cluster::CustomClusterType {
                name: "envoy.clusters.aggregate".into(),
                typed_config: Some(pack_any(ClusterConfig {
                    clusters: vec!["primary".into(), "fallback".into()],
                })),
            },
        )),
        ..Default::default()
    };
    let c = cluster(agg);
    assert_eq!(
        c.discovery,
        Discovery::Aggregate(vec!["primary".into(), "fallback".into()])
    );
    assert_eq!(
        Resource::Cluster(c).dependencies(),
        vec![
            (ResourceType::Cluster, "fallback".into()),
            (ResourceType::Cluster, "primary".into())
        ]
    );
}

#[test]
fn lb_policies() {
    use cds::cluster::{LbConfig as C, LbPolicy as P};
    let with = |p: P, cfg: Option<C>| {
        let mut c = eds_cluster("c");
        c.lb_policy = p as i32;
        c.lb_config = cfg;
        cluster(c).lb_policy.clone()
    };
    assert_eq!(with(P::Random, None), LbPolicy::Random);
    assert_eq!(
        with(P::LeastRequest, None),
        LbPolicy::LeastRequest { choice_count: 2 }
    );
    assert_eq!(
        with(
            P::LeastRequest,
            Some(C::LeastRequestLbConfig(
                cds::cluster::LeastRequestLbConfig {
                    choice_count: u32v(4),
                    ..Default::default()
                }
            ))
        ),
        LbPolicy::LeastRequest { choice_count: 4 }
    );
    assert_eq!(
        with(P::RingHash, None),
        LbPolicy::RingHash {
            min_ring_size: 1024,
            max_ring_size: 8 * 1024 * 1024,
            hash_function: HashFunction::XxHash
        }
    );
    assert_eq!(
        with(
            P::RingHash,
            Some(C::RingHashLbConfig(cds::cluster::RingHashLbConfig {
                minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: 2048
                }),
                maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                    value: 4096
                }),
                hash_function: cds::cluster::ring_hash_lb_config::HashFunction::MurmurHash2 as i32,
            }))
        ),
        LbPolicy::RingHash {
            min_ring_size: 2048,
            max_ring_size: 4096,
            hash_function: HashFunction::MurmurHash2
        }
    );
    assert_eq!(
        with(P::Maglev, None),
        LbPolicy::Maglev { table_size: 65537 }
    );
}

#[test]
fn common_lb_circuit_breakers_outlier_detection() {
    let mut c = eds_cluster("c");
    c.connect_timeout = d(1, 0);
    c.common_lb_config = Some(cds::cluster::CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value: 0.0 }),
        locality_config_specifier: Some(
            cds::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                Default::default(),
            ),
        ),
        ..Default::default()
    });
    c.circuit_breakers = Some(cds::CircuitBreakers {
        thresholds: vec![
            cds::circuit_breakers::Thresholds {
                max_connections: u32v(10),
                max_pending_requests: u32v(20),
                max_requests: u32v(30),
                max_retries: u32v(4),
                ..Default::default()
            },
            cds::circuit_breakers::Thresholds {
                priority: core::RoutingPriority::High as i32,
                retry_budget: Some(cds::circuit_breakers::thresholds::RetryBudget {
                    budget_percent: Some(Percent { value: 25.0 }),
                    min_retry_concurrency: u32v(5),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    c.outlier_detection = Some(cds::OutlierDetection {
        consecutive_5xx: u32v(3),
        interval: d(1, 0),
        base_ejection_time: d(10, 0),
        max_ejection_percent: u32v(50),
        enforcing_consecutive_gateway_failure: u32v(100),
        split_external_local_origin_errors: true,
        failure_percentage_threshold: u32v(70),
        enforcing_failure_percentage: u32v(100),
        success_rate_stdev_factor: u32v(1500),
        ..Default::default()
    });
    let c = cluster(c);
    assert_eq!(c.connect_timeout, Duration::from_secs(1));
    assert_eq!(
        c.common_lb,
        CommonLbConfig {
            healthy_panic_threshold: 0.0,
            locality_weighted: true
        }
    );
    assert_eq!(
        c.circuit_breakers.default,
        Thresholds {
            max_connections: 10,
            max_pending_requests: 20,
            max_requests: 30,
            max_retries: 4,
            retry_budget: None
        }
    );
    assert_eq!(
        c.circuit_breakers.high.retry_budget,
        Some(RetryBudget {
            budget_percent: 25.0,
            min_retry_concurrency: 5
        })
    );
    let od = c.outlier_detection.unwrap();
    let def = OutlierDetection::default();
    assert_eq!(od.consecutive_5xx, 3);
    assert_eq!(od.interval, Duration::from_secs(1));
    assert_eq!(od.base_ejection_time, Duration::from_secs(10));
    assert_eq!(od.max_ejection_time, Duration::from_secs(300));
    assert_eq!(od.max_ejection_percent, 50);
    assert_eq!(od.enforcing_consecutive_gateway_failure, 100);
    assert!(od.split_external_local_origin_errors);
    assert_eq!(od.failure_percentage.threshold, 70);
    assert_eq!(od.failure_percentage.enforcing_percentage, 100);
    assert_eq!(od.success_rate.stdev_factor, 1500);
    assert_eq!(
        od.success_rate.request_volume,
        def.success_rate.request_volume
    );
    assert_eq!(
        od.consecutive_local_origin_failure,
        def.consecutive_local_origin_failure
    );
}

fn upstream_tls(sans: &[&str]) -> core::TransportSocket {
    core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::UpstreamTlsContext {
                sni: "reviews.default.svc.cluster.local".into(),
                common_tls_context: Some(tls::CommonTlsContext {
                    tls_certificate_provider_instance: Some(
                        tls::CertificateProviderPluginInstance {
                            instance_name: "default".into(),
                            certificate_name: "default".into(),
                        },
                    ),
                    alpn_protocols: vec!["h2".into()],
                    validation_context_type: Some(
                        tls::common_tls_context::ValidationContextType::ValidationContext(
                            tls::CertificateValidationContext {
                                ca_certificate_provider_instance: Some(
                                    tls::CertificateProviderPluginInstance {
                                        instance_name: "default".into(),
                                        certificate_name: "ROOTCA".into(),
                                    },
                                ),
                                match_typed_subject_alt_names: sans
                                    .iter()
                                    .map(|s| tls::SubjectAltNameMatcher {
                                        san_type: tls::subject_alt_name_matcher::SanType::Uri
                                            as i32,
                                        matcher: Some(m::StringMatcher {
                                            match_pattern: Some(
                                                m::string_matcher::MatchPattern::Exact((*s).into()),
                                            ),
                                            ignore_case: false,
                                        }),
                                        ..Default::default()
                                    })
                                    .collect(),
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
fn upstream_tls_with_typed_san_matchers() {
    let mut c = eds_cluster("c");
    c.transport_socket = Some(upstream_tls(&[
        "spiffe://cluster.local/ns/default/sa/reviews",
    ]));
    let tls = cluster(c).tls.clone().unwrap();
    assert_eq!(
        tls.sni.as_deref(),
        Some("reviews.default.svc.cluster.local")
    );
    assert_eq!(
        tls.identity_certificate,
        Some(CertificateProviderInstance {
            instance_name: "default".into(),
            certificate_name: "default".into()
        })
    );
    assert_eq!(
        tls.validation.ca_certificate,
        Some(CertificateProviderInstance {
            instance_name: "default".into(),
            certificate_name: "ROOTCA".into()
        })
    );
    assert_eq!(
        tls.validation.san_matchers,
        vec![SanMatcher {
            san_type: SanType::Uri,
            matcher: StringMatcher::Exact {
                value: "spiffe://cluster.local/ns/default/sa/reviews".into(),
                ignore_case: false
            }
        }]
    );
    assert_eq!(tls.alpn_protocols, vec!["h2".to_string()]);
}

#[test]
fn raw_buffer_transport_socket_is_plaintext() {
    let mut c = eds_cluster("c");
    c.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.raw_buffer".into(),
        config_type: None,
    });
    assert_eq!(cluster(c).tls, None);
}

#[test]
fn http_protocol_options() {
    use uphttp::http_protocol_options::{
        UpstreamProtocolOptions as U, explicit_http_config::ProtocolConfig as P,
    };
    let mut c = eds_cluster("c");
    c.typed_extension_protocol_options = [(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        pack_any(uphttp::HttpProtocolOptions {
            common_http_protocol_options: Some(core::HttpProtocolOptions {
                idle_timeout: d(30, 0),
                max_requests_per_connection: u32v(100),
                ..Default::default()
            }),
            upstream_protocol_options: Some(U::ExplicitHttpConfig(
                uphttp::http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(P::Http2ProtocolOptions(core::Http2ProtocolOptions {
                        max_concurrent_streams: u32v(64),
                        ..Default::default()
                    })),
                },
            )),
            ..Default::default()
        }),
    )]
    .into();
    assert_eq!(
        cluster(c).http_protocol,
        HttpProtocolOptions {
            protocol: UpstreamProtocol::Http2,
            max_concurrent_streams: Some(64),
            idle_timeout: Some(Duration::from_secs(30)),
            max_requests_per_connection: Some(100),
            max_connection_duration: None,
        }
    );
    // The deprecated cluster-level field still selects HTTP/2.
    let mut c = eds_cluster("c");
    c.http2_protocol_options = Some(Default::default());
    assert_eq!(cluster(c).http_protocol.protocol, UpstreamProtocol::Http2);
}

#[test]
fn rejections() {
    use cds::cluster::{ClusterDiscoveryType as T, DiscoveryType as D, LbPolicy as P};
    let mut strict = eds_cluster("c");
    strict.cluster_discovery_type = Some(T::Type(D::StrictDns as i32));
    let mut no_ads = eds_cluster("c");
    no_ads.eds_cluster_config.as_mut().unwrap().eds_config = None;
    let mut ring = eds_cluster("c");
    ring.lb_policy = P::RingHash as i32;
    ring.lb_config = Some(cds::cluster::LbConfig::RingHashLbConfig(
        cds::cluster::RingHashLbConfig {
            minimum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value {
                value: 10_000,
            }),
            maximum_ring_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 100 }),
            ..Default::default()
        },
    ));
    let mut maglev = eds_cluster("c");
    maglev.lb_policy = P::Maglev as i32;
    maglev.lb_config = Some(cds::cluster::LbConfig::MaglevLbConfig(
        cds::cluster::MaglevLbConfig {
            table_size: Some(envoy_types::pb::google::protobuf::UInt64Value { value: 1000 }),
        },
    ));
    let mut hc = eds_cluster("c");
    hc.health_checks = vec![Default::default()];
    let mut tsm = eds_cluster("c");
    tsm.transport_socket_matches = vec![Default::default()];
    let mut od = eds_cluster("c");
    od.outlier_detection = Some(cds::OutlierDetection {
        max_ejection_percent: u32v(150),
        ..Default::default()
    });
    let mut cb = eds_cluster("c");
    cb.circuit_breakers = Some(cds::CircuitBreakers {
        thresholds: vec![Default::default(), Default::default()],
        ..Default::default()
    });
    let mut zero_timeout = eds_cluster("c");
    zero_timeout.connect_timeout = d(0, 0);
    let mut tls_no_ca = eds_cluster("c");
    tls_no_ca.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::UpstreamTlsContext {
                common_tls_context: Some(Default::default()),
                ..Default::default()
            },
        ))),
    });
    let mut tls_inline = eds_cluster("c");
    tls_inline.transport_socket = Some(core::TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(core::transport_socket::ConfigType::TypedConfig(pack_any(
            tls::UpstreamTlsContext {
                common_tls_context: Some(tls::CommonTlsContext {
                    tls_certificates: vec![Default::default()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))),
    });
    let mut lbp = eds_cluster("c");
    lbp.load_balancing_policy = Some(Default::default());
    let dns_two = cds::Cluster {
        name: "c".into(),
        cluster_discovery_type: Some(T::Type(D::LogicalDns as i32)),
        load_assignment: Some(eds::ClusterLoadAssignment {
            endpoints: vec![Default::default(), Default::default()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let cases: Vec<(cds::Cluster, &str)> = vec![
        (
            strict,
            "cluster 'c': load_assignment is required for a STRICT_DNS cluster",
        ),
        (
            no_ads,
            "cluster 'c' eds_cluster_config.eds_config: ads or self is required",
        ),
        (
            ring,
            "cluster 'c' ring_hash_lb_config: ring sizes must satisfy 0 < minimum_ring_size (10000) <= maximum_ring_size (100) <= 8388608",
        ),
        (
            maglev,
            "cluster 'c' maglev_lb_config: table_size 1000 must be a prime no larger than 5000011",
        ),
        (
            hc,
            "cluster 'c': health_checks (active health checking) are not supported",
        ),
        (
            tsm,
            "cluster 'c': transport_socket_matches / transport_socket_matcher are not supported (use transport_socket)",
        ),
        (
            od,
            "cluster 'c' outlier_detection: max_ejection_percent 150 is greater than 100",
        ),
        (
            cb,
            "cluster 'c' circuit_breakers.thresholds[1]: a second thresholds entry for the same priority",
        ),
        (
            zero_timeout,
            "cluster 'c': connect_timeout must be greater than 0",
        ),
        (
            tls_no_ca,
            "cluster 'c' transport_socket.common_tls_context: a CA certificate provider instance is required to verify the server",
        ),
        (
            tls_inline,
            "cluster 'c' transport_socket.common_tls_context: tls_certificates (inline certificates) are not supported; use a certificate provider instance",
        ),
        (
            lbp,
            "cluster 'c' load_balancing_policy: no supported policy among []",
        ),
        (
            dns_two,
            "cluster 'c' load_assignment: a LOGICAL_DNS cluster needs exactly one locality with exactly one endpoint",
        ),
        (
            cds::Cluster {
                name: "c".into(),
                ..Default::default()
            },
            "cluster 'c': load_assignment is required for a STATIC cluster",
        ),
    ];
    for (c, want) in cases {
        assert_eq!(cds_reason(c), want);
    }
}

#[test]
fn typed_load_balancing_policies() {
    use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
    use envoy_types::pb::envoy::extensions::load_balancing_policies as lbp;
    use envoy_types::pb::google::protobuf::{Any, UInt64Value};
    let policy = |any: Any| cds::load_balancing_policy::Policy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: "p".into(),
            typed_config: Some(any),
        }),
    };
    let lbp_of = |anys: Vec<Any>| cds::LoadBalancingPolicy {
        policies: anys.into_iter().map(policy).collect(),
    };
    // Unknown types are skipped; wrr_locality weights localities around its child.
    let mut c = eds_cluster("c");
    c.lb_policy = cds::cluster::LbPolicy::Maglev as i32; // ignored: the typed policy wins
    c.load_balancing_policy = Some(lbp_of(vec![
        pack_any(
            lbp::client_side_weighted_round_robin::v3::ClientSideWeightedRoundRobin::default(),
        ),
        pack_any(lbp::wrr_locality::v3::WrrLocality {
            endpoint_picking_policy: Some(lbp_of(vec![pack_any(lbp::ring_hash::v3::RingHash {
                minimum_ring_size: Some(UInt64Value { value: 100 }),
                ..Default::default()
            })])),
        }),
    ]));
    let got = cluster(c);
    assert_eq!(
        got.lb_policy,
        LbPolicy::RingHash {
            min_ring_size: 100,
            max_ring_size: 8 * 1024 * 1024,
            hash_function: HashFunction::XxHash
        }
    );
    assert!(got.common_lb.locality_weighted);
    let mut c = eds_cluster("c");
    c.load_balancing_policy = Some(lbp_of(vec![pack_any(
        lbp::least_request::v3::LeastRequest {
            choice_count: u32v(3),
            ..Default::default()
        },
    )]));
    let got = cluster(c);
    assert_eq!(got.lb_policy, LbPolicy::LeastRequest { choice_count: 3 });
    assert!(!got.common_lb.locality_weighted);
    let mut c = eds_cluster("c");
    c.load_balancing_policy = Some(lbp_of(vec![pack_any(
        lbp::pick_first::v3::PickFirst::default(),
    )]));
    assert_eq!(
        cds_reason(c),
        "cluster 'c' load_balancing_policy: no supported policy among [\"envoy.extensions.load_balancing_policies.pick_first.v3.PickFirst\"]"
    );
    let mut c = eds_cluster("c");
    c.load_balancing_policy = Some(lbp_of(vec![pack_any(lbp::maglev::v3::Maglev {
        table_size: Some(UInt64Value { value: 10 }),
        ..Default::default()
    })]));
    assert_eq!(
        cds_reason(c),
        "cluster 'c' load_balancing_policy.policies[0]: table_size 10 must be a prime no larger than 5000011"
    );
}
