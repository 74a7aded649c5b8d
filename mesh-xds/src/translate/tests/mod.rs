//! Table-driven translation tests: protos built in code, packed into `Any`s and decoded
//! through [`crate::resource::decode`] exactly as the ADS client does.

mod applied;
mod cluster;
mod endpoint;
mod istio;
mod listener;
mod route;
mod unsupported;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration, UInt32Value};
use envoy_types::util::pack_any;

use crate::resource::{Rejection, Resource, ResourceType, decode};

pub(super) fn d(secs: i64, nanos: i32) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: secs,
        nanos,
    })
}

pub(super) fn u32v(v: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value: v })
}

pub(super) fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        ..Default::default()
    })
}

pub(super) fn socket(ip: &str, port: u32) -> Option<core::Address> {
    Some(core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: ip.into(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

pub(super) fn decode_ok(ty: ResourceType, any: &Any) -> Resource {
    match decode(ty, any) {
        Ok(r) => r,
        Err(e) => panic!("unexpected rejection: {e}"),
    }
}

pub(super) fn reason(ty: ResourceType, any: &Any) -> String {
    match decode(ty, any) {
        Ok(r) => panic!("expected a rejection, decoded {r:?}"),
        Err(Rejection { reason, .. }) => reason,
    }
}

pub(super) fn route_config(
    r: rds::RouteConfiguration,
) -> std::sync::Arc<mesh_core::model::RouteConfig> {
    match decode_ok(ResourceType::RouteConfiguration, &pack_any(r)) {
        Resource::RouteConfiguration(r) => r,
        other => panic!("{other:?}"),
    }
}

pub(super) fn cluster(c: cds::Cluster) -> std::sync::Arc<mesh_core::model::Cluster> {
    match decode_ok(ResourceType::Cluster, &pack_any(c)) {
        Resource::Cluster(c) => c,
        other => panic!("{other:?}"),
    }
}

pub(super) fn listener(l: lds::Listener) -> std::sync::Arc<mesh_core::model::Listener> {
    match decode_ok(ResourceType::Listener, &pack_any(l)) {
        Resource::Listener(l) => l,
        other => panic!("{other:?}"),
    }
}

pub(super) fn cla(
    c: eds::ClusterLoadAssignment,
) -> std::sync::Arc<mesh_core::model::ClusterLoadAssignment> {
    match decode_ok(ResourceType::ClusterLoadAssignment, &pack_any(c)) {
        Resource::ClusterLoadAssignment(c) => c,
        other => panic!("{other:?}"),
    }
}

#[test]
fn type_urls_round_trip_and_sotw_semantics() {
    for t in ResourceType::ALL {
        assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
    }
    assert_eq!(
        ResourceType::from_type_url("type.googleapis.com/envoy.api.v2.Listener"),
        None
    );
    assert!(ResourceType::Listener.sotw_full_state());
    assert!(ResourceType::Cluster.sotw_full_state());
    assert!(!ResourceType::RouteConfiguration.sotw_full_state());
    assert!(!ResourceType::ClusterLoadAssignment.sotw_full_state());
}

#[test]
fn wrong_type_url_is_rejected() {
    let any = pack_any(eds::ClusterLoadAssignment {
        cluster_name: "c".into(),
        ..Default::default()
    });
    assert_eq!(
        reason(ResourceType::Cluster, &any),
        "type_url \"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\" in a CDS response (expected type.googleapis.com/envoy.config.cluster.v3.Cluster)"
    );
}

#[test]
fn garbage_bytes_are_rejected_without_panic() {
    let any = Any {
        type_url: ResourceType::Listener.type_url().into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let r = decode(ResourceType::Listener, &any).unwrap_err();
    assert_eq!(r.name, None);
    assert!(
        r.reason
            .starts_with("cannot decode envoy.config.listener.v3.Listener"),
        "{}",
        r.reason
    );
}

#[test]
fn discovery_resource_wrapper_is_unwrapped() {
    use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
    let inner = pack_any(eds::ClusterLoadAssignment {
        cluster_name: "wrapped".into(),
        ..Default::default()
    });
    let any = pack_any(Wrapper {
        name: "wrapped".into(),
        resource: Some(inner),
        ..Default::default()
    });
    let r = decode_ok(ResourceType::ClusterLoadAssignment, &any);
    assert_eq!(r.name(), "wrapped");
    let empty = pack_any(Wrapper {
        name: "x".into(),
        ..Default::default()
    });
    let rej = decode(ResourceType::ClusterLoadAssignment, &empty).unwrap_err();
    assert_eq!(rej.name.as_deref(), Some("x"));
    assert_eq!(
        rej.reason,
        "envoy.service.discovery.v3.Resource has no resource"
    );
}

#[test]
fn rejection_display_names_the_resource() {
    let r = Rejection {
        name: Some("c1".into()),
        reason: "cluster 'c1' connect_timeout: bad".into(),
    };
    assert_eq!(r.to_string(), "\"c1\": cluster 'c1' connect_timeout: bad");
}

#[test]
fn undecodable_wrapped_resource_keeps_the_wrapper_name() {
    use envoy_types::pb::envoy::service::discovery::v3::Resource as Wrapper;
    let any = pack_any(Wrapper {
        name: "l1".into(),
        resource: Some(Any {
            type_url: ResourceType::Listener.type_url().into(),
            value: vec![0xff, 0xff],
        }),
        ..Default::default()
    });
    let r = decode(ResourceType::Listener, &any).unwrap_err();
    assert_eq!(r.name.as_deref(), Some("l1"));
}
