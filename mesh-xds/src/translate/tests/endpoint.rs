use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::util::pack_any;
use mesh_core::model::*;

use super::{cla, reason, socket, u32v};
use crate::resource::ResourceType;

fn ep(ip: &str, port: u32, health: core::HealthStatus, weight: Option<u32>) -> eds::LbEndpoint {
    eds::LbEndpoint {
        health_status: health as i32,
        load_balancing_weight: weight.and_then(u32v),
        host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(eds::Endpoint {
            address: socket(ip, port),
            hostname: if ip == "10.0.0.1" {
                "pod-a".into()
            } else {
                String::new()
            },
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn istio_tls_mode(mut e: eds::LbEndpoint, mode: &str) -> eds::LbEndpoint {
    let fields = HashMap::from([(
        "tlsMode".to_string(),
        Value {
            kind: Some(Kind::StringValue(mode.into())),
        },
    )]);
    e.metadata = Some(core::Metadata {
        filter_metadata: HashMap::from([(
            "envoy.transport_socket_match".to_string(),
            Struct { fields },
        )]),
        ..Default::default()
    });
    e
}

fn locality(
    zone: &str,
    priority: u32,
    weight: Option<u32>,
    eps: Vec<eds::LbEndpoint>,
) -> eds::LocalityLbEndpoints {
    eds::LocalityLbEndpoints {
        locality: Some(core::Locality {
            region: "r".into(),
            zone: zone.into(),
            sub_zone: "s".into(),
        }),
        lb_endpoints: eps,
        load_balancing_weight: weight.and_then(u32v),
        priority,
        ..Default::default()
    }
}

#[test]
fn localities_priorities_weights_health() {
    use core::HealthStatus as H;
    let got = cla(eds::ClusterLoadAssignment {
        cluster_name: "outbound|80||a.ns.svc.cluster.local".into(),
        endpoints: vec![
            locality(
                "z1",
                0,
                Some(3),
                vec![
                    istio_tls_mode(ep("10.0.0.1", 80, H::Healthy, Some(5)), "istio"),
                    ep("10.0.0.2", 80, H::Unhealthy, None),
                    ep("10.0.0.3", 80, H::Draining, None),
                    ep("10.0.0.4", 80, H::Timeout, None),
                    ep("10.0.0.5", 80, H::Degraded, None),
                    ep("::1", 80, H::Unknown, None),
                ],
            ),
            locality(
                "z2",
                1,
                None,
                vec![istio_tls_mode(
                    ep("10.0.1.1", 80, H::Healthy, None),
                    "disabled",
                )],
            ),
        ],
        policy: Some(eds::cluster_load_assignment::Policy {
            overprovisioning_factor: u32v(200),
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(got.overprovisioning_factor, 200);
    assert_eq!(got.endpoint_count(), 7);
    let l0 = &got.localities[0];
    assert_eq!(
        *l0.locality,
        Locality {
            region: "r".into(),
            zone: "z1".into(),
            sub_zone: "s".into()
        }
    );
    assert_eq!((l0.priority, l0.load_balancing_weight), (0, Some(3)));
    let e = &l0.endpoints;
    assert_eq!(
        e[0].address,
        EndpointAddress::Socket("10.0.0.1:80".parse().unwrap())
    );
    assert_eq!(
        (e[0].health, e[0].weight, e[0].tls_mode),
        (HealthStatus::Healthy, 5, TlsMode::Istio)
    );
    assert_eq!(e[0].hostname.as_deref(), Some("pod-a"));
    assert_eq!(
        e.iter().map(|e| e.health).collect::<Vec<_>>(),
        vec![
            HealthStatus::Healthy,
            HealthStatus::Unhealthy,
            HealthStatus::Draining,
            HealthStatus::Timeout,
            HealthStatus::Degraded,
            HealthStatus::Unknown
        ]
    );
    assert_eq!(e[1].weight, 1, "default weight");
    assert_eq!(
        e[5].address,
        EndpointAddress::Socket("[::1]:80".parse().unwrap())
    );
    let l1 = &got.localities[1];
    assert_eq!((l1.priority, l1.load_balancing_weight), (1, None));
    assert_eq!(l1.endpoints[0].tls_mode, TlsMode::Disabled);
    let default_policy = cla(eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        ..Default::default()
    });
    assert_eq!(default_policy.overprovisioning_factor, 140);
}

#[test]
fn rejections() {
    use core::HealthStatus as H;
    let base = |endpoints: Vec<eds::LocalityLbEndpoints>| eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints,
        ..Default::default()
    };
    let mut drops = base(vec![]);
    drops.policy = Some(eds::cluster_load_assignment::Policy {
        drop_overloads: vec![eds::cluster_load_assignment::policy::DropOverload {
            category: "throttle".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut named_port = ep("10.0.0.1", 80, H::Healthy, None);
    if let Some(eds::lb_endpoint::HostIdentifier::Endpoint(e)) = &mut named_port.host_identifier
        && let Some(core::address::Address::SocketAddress(sa)) =
            &mut e.address.as_mut().unwrap().address
    {
        sa.port_specifier = Some(core::socket_address::PortSpecifier::NamedPort(
            "http".into(),
        ));
    }
    let cases: Vec<(eds::ClusterLoadAssignment, &str)> = vec![
        (
            drops,
            "cluster_load_assignment 'c' policy: drop_overloads (throttle) are not supported: dropping requests would silently differ",
        ),
        (
            base(vec![
                locality("z", 0, None, vec![ep("10.0.0.1", 80, H::Healthy, None)]),
                locality("z", 2, None, vec![]),
            ]),
            "cluster_load_assignment 'c': priorities {0, 2} are not contiguous from 0",
        ),
        (
            base(vec![locality(
                "z",
                0,
                None,
                vec![ep("10.0.0.1", 80, H::Healthy, Some(0))],
            )]),
            "cluster_load_assignment 'c' endpoints[0].lb_endpoints[0]: load_balancing_weight must be at least 1",
        ),
        (
            base(vec![locality(
                "z",
                0,
                None,
                vec![ep("backend.local", 80, H::Healthy, None)],
            )]),
            "cluster_load_assignment 'c' endpoints[0].lb_endpoints[0].endpoint.address: socket_address.address \"backend.local\" is not an IP address",
        ),
        (
            base(vec![locality(
                "z",
                0,
                None,
                vec![ep("10.0.0.1", 70000, H::Healthy, None)],
            )]),
            "socket_address.port_value 70000 is out of range",
        ),
        (
            base(vec![locality("z", 0, None, vec![named_port])]),
            "socket_address.named_port \"http\" is not supported",
        ),
        (
            base(vec![locality(
                "z",
                0,
                None,
                vec![
                    ep("10.0.0.1", 80, H::Healthy, Some(u32::MAX)),
                    ep("10.0.0.2", 80, H::Healthy, Some(1)),
                ],
            )]),
            "sum of lb_endpoints weights exceeds 4294967295",
        ),
    ];
    for (c, want) in cases {
        let got = reason(ResourceType::ClusterLoadAssignment, &pack_any(c));
        assert!(got.contains(want), "\n got: {got}\nwant: {want}");
    }
}

fn strings(pairs: &[(&str, &str)]) -> Struct {
    Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                let kind = Some(Kind::StringValue((*v).into()));
                ((*k).to_string(), Value { kind })
            })
            .collect(),
    }
}

/// istiod's sidecar generator (`endpoint_builder.go`) replaces `tlsMode` with `tunnel: http`
/// for an endpoint labelled `networking.istio.io/tunnel: http`, and addresses it to Envoy's
/// `connect_originate` internal listener with the workload's `ip:port` in the
/// `original_dst` metadata. Both shapes (and the plain socket address with the marker, as
/// the embedded control plane sends it) become an HBONE endpoint at the workload's address.
#[test]
fn hbone_tunnel_metadata() {
    let marker = || {
        (
            "envoy.transport_socket_match".to_string(),
            strings(&[("tunnel", "http")]),
        )
    };
    let mut direct = ep("10.0.0.7", 9080, core::HealthStatus::Healthy, None);
    direct.metadata = Some(core::Metadata {
        filter_metadata: HashMap::from([marker()]),
        ..Default::default()
    });
    let internal = |local: Option<&str>| {
        let mut e = ep("10.0.0.8", 1, core::HealthStatus::Healthy, None);
        let mut md = HashMap::from([marker()]);
        if let Some(local) = local {
            md.insert(
                "envoy.filters.listener.original_dst".to_string(),
                strings(&[("local", local)]),
            );
        }
        e.metadata = Some(core::Metadata {
            filter_metadata: md,
            ..Default::default()
        });
        let Some(eds::lb_endpoint::HostIdentifier::Endpoint(inner)) = &mut e.host_identifier else {
            unreachable!()
        };
        inner.address = Some(core::Address {
            address: Some(core::address::Address::EnvoyInternalAddress(
                core::EnvoyInternalAddress {
                    address_name_specifier: Some(
                        core::envoy_internal_address::AddressNameSpecifier::ServerListenerName(
                            "connect_originate".into(),
                        ),
                    ),
                    endpoint_id: local.unwrap_or_default().into(),
                },
            )),
        });
        e
    };
    let plain = istio_tls_mode(
        ep("10.0.0.9", 9080, core::HealthStatus::Healthy, None),
        "istio",
    );
    let got = cla(eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![locality(
            "z",
            0,
            None,
            vec![direct, internal(Some("10.0.0.8:9080")), plain],
        )],
        ..Default::default()
    });
    let eps = &got.localities[0].endpoints;
    let seen: Vec<_> = eps
        .iter()
        .map(|e| (e.address.clone(), e.tls_mode))
        .collect();
    let at = |s: &str| EndpointAddress::Socket(s.parse().unwrap());
    assert_eq!(
        seen,
        vec![
            (at("10.0.0.7:9080"), TlsMode::Hbone),
            (at("10.0.0.8:9080"), TlsMode::Hbone),
            (at("10.0.0.9:9080"), TlsMode::Istio),
        ]
    );

    let missing = eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![locality("z", 0, None, vec![internal(None)])],
        ..Default::default()
    };
    let why = reason(ResourceType::ClusterLoadAssignment, &pack_any(missing));
    assert!(why.contains("original_dst.local"), "{why}");
}
