//! xDS resources off the wire through the real translation: the first byte picks the
//! resource type (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment) and whether
//! the bytes come wrapped in `envoy.service.discovery.v3.Resource`; the rest is the
//! protobuf a control plane would send. `mesh_xds::decode` (prost decode, then the
//! translation of every field and typed extension into the mesh-core model) must accept or
//! reject without panicking, and what it accepts must answer `dependencies()` (what the
//! client subscribes to next).
//!
//! Seeds (fuzz/seeds/xds): the resources our control plane generates for Bookinfo, for
//! proxyless and Envoy nodes (written by mesh-control's `fuzz_seeds` test).

#![no_main]

use envoy_types::pb::google::protobuf::Any;
use libfuzzer_sys::fuzz_target;
use mesh_xds::{ResourceType, decode};
use prost::Message;

const WRAPPER_URL: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let ty = ResourceType::ALL[usize::from(selector & 3)];
    let inner = Any {
        type_url: ty.type_url().to_owned(),
        value: value.to_vec(),
    };
    let raw = if selector & 4 == 0 {
        inner
    } else {
        let wrapper = envoy_types::pb::envoy::service::discovery::v3::Resource {
            name: "wrapped".into(),
            resource: Some(inner),
            ..Default::default()
        };
        Any {
            type_url: WRAPPER_URL.to_owned(),
            value: wrapper.encode_to_vec(),
        }
    };
    if let Ok(resource) = decode(ty, &raw) {
        assert_eq!(resource.resource_type(), ty);
        let _ = resource.dependencies();
    }
});
