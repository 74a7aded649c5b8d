//! Generator tests on the Bookinfo config: every proxyless resource decodes through our own
//! client's translation, names follow Istio, and the VirtualService/DestinationRule land
//! where they should.

use std::path::Path;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_core::model;
use mesh_xds::resource::{Resource, ResourceType, decode};
use prost::Message;

use super::*;

fn bookinfo() -> MeshConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo");
    MeshConfig::load_dir(dir).unwrap().0
}

fn node(meta: &[(&str, &str)]) -> Node {
    Node {
        id: "sidecar~127.0.0.1~x.default~default.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: meta
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        Value {
                            kind: Some(Kind::StringValue((*v).to_owned())),
                        },
                    )
                })
                .collect(),
        }),
        ..Default::default()
    }
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

#[test]
fn proxyless_bookinfo_decodes_through_our_client() {
    let config = bookinfo();
    let g = MeshGenerator::default();
    let resources = g
        .generate(&node(&[("GENERATOR", "grpc")]), &config)
        .unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for ty in ResourceType::ALL {
        for (name, any) in resources.of_type(ty.type_url()) {
            let decoded = decode(ty, any).unwrap_or_else(|e| panic!("{ty} {name}: {e}"));
            assert_eq!(decoded.name(), name);
            *counts.entry(ty.short_name()).or_insert(0) += 1;
        }
    }
    // 4 services x 1 port; 6 workloads; clusters: 4 defaults + 1+1+3+1 subsets.
    assert_eq!(counts["LDS"], 4 + 6);
    assert_eq!(counts["RDS"], 4);
    assert_eq!(counts["CDS"], 10);
    assert_eq!(counts["EDS"], 10);

    let lds = ResourceType::Listener.type_url();
    let listener = resources
        .of_type(lds)
        .find(|(n, _)| *n == format!("{REVIEWS}:9080"))
        .unwrap()
        .1;
    let Resource::Listener(l) = decode(ResourceType::Listener, listener).unwrap() else {
        panic!()
    };
    let model::ListenerKind::Client(h) = &l.kind else {
        panic!()
    };
    assert_eq!(
        h.route_source,
        model::RouteSource::Rds(format!("{REVIEWS}:9080"))
    );

    // STRICT namespace-wide PeerAuthentication: inbound listeners require client certs.
    let inbound = resources
        .of_type(lds)
        .find(|(n, _)| *n == "xds.istio.io/grpc/lds/inbound/127.0.0.1:19082")
        .unwrap()
        .1;
    let Resource::Listener(l) = decode(ResourceType::Listener, inbound).unwrap() else {
        panic!()
    };
    let model::ListenerKind::Server(s) = &l.kind else {
        panic!()
    };
    assert!(
        s.filter_chains[0]
            .tls
            .as_ref()
            .unwrap()
            .require_client_certificate
    );
}

fn get<M: Message + Default>(r: &crate::xds_server::Resources, ty: ResourceType, name: &str) -> M {
    let any = r
        .of_type(ty.type_url())
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no {ty} {name}"))
        .1;
    M::decode(any.value.as_slice()).unwrap()
}

#[test]
fn virtual_service_and_destination_rule_are_translated() {
    let config = bookinfo();
    let r = MeshGenerator::default().proxyless(&config);
    let rc: rds::RouteConfiguration = get(
        &r,
        ResourceType::RouteConfiguration,
        &format!("{REVIEWS}:9080"),
    );
    let routes = &rc.virtual_hosts[0].routes;
    assert_eq!(
        rc.virtual_hosts[0].domains,
        [REVIEWS.to_string(), format!("{REVIEWS}:9080")]
    );
    // jason -> v2 by header.
    assert_eq!(routes[0].name, "jason");
    let h = &routes[0].r#match.as_ref().unwrap().headers[0];
    assert_eq!(h.name, "end-user");
    let Some(rds::route::Action::Route(a)) = &routes[0].action else {
        panic!()
    };
    assert_eq!(
        a.cluster_specifier,
        Some(rds::route_action::ClusterSpecifier::Cluster(format!(
            "outbound|9080|v2|{REVIEWS}"
        )))
    );
    // split 90/10 with timeout and retries.
    let Some(rds::route::Action::Route(a)) = &routes[1].action else {
        panic!()
    };
    let Some(rds::route_action::ClusterSpecifier::WeightedClusters(w)) = &a.cluster_specifier
    else {
        panic!()
    };
    let split: Vec<(String, u32)> = w
        .clusters
        .iter()
        .map(|c| (c.name.clone(), c.weight.as_ref().unwrap().value))
        .collect();
    assert_eq!(
        split,
        [
            (format!("outbound|9080|v1|{REVIEWS}"), 90),
            (format!("outbound|9080|v3|{REVIEWS}"), 10)
        ]
    );
    assert_eq!(a.timeout.as_ref().unwrap().seconds, 10);
    let retry = a.retry_policy.as_ref().unwrap();
    assert_eq!(retry.num_retries.as_ref().unwrap().value, 3);
    assert_eq!(retry.retry_on, "5xx,connect-failure,refused-stream");

    // Cluster: LEAST_REQUEST, circuit breakers, outlier detection, ISTIO_MUTUAL with SANs.
    let c: cds::Cluster = get(
        &r,
        ResourceType::Cluster,
        &format!("outbound|9080|v1|{REVIEWS}"),
    );
    assert_eq!(c.lb_policy, cds::cluster::LbPolicy::LeastRequest as i32);
    let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(t.max_connections.as_ref().unwrap().value, 100);
    assert_eq!(t.max_retries.as_ref().unwrap().value, 8);
    let od = c.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx.as_ref().unwrap().value, 5);
    assert_eq!(od.base_ejection_time.as_ref().unwrap().seconds, 30);
    assert_eq!(c.connect_timeout.as_ref().unwrap().seconds, 1);
    let Resource::Cluster(m) =
        decode(ResourceType::Cluster, &envoy_types::util::pack_any(c)).unwrap()
    else {
        panic!()
    };
    let tls = m.tls.as_ref().unwrap();
    assert_eq!(
        tls.validation.san_matchers.len(),
        1,
        "reviews' workloads share one identity"
    );
    // v3 overrides the load balancer.
    let c3: cds::Cluster = get(
        &r,
        ResourceType::Cluster,
        &format!("outbound|9080|v3|{REVIEWS}"),
    );
    assert_eq!(c3.lb_policy, cds::cluster::LbPolicy::RoundRobin as i32);

    // Endpoints follow subset labels and the workloads' port mapping.
    let cla: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment = get(
        &r,
        ResourceType::ClusterLoadAssignment,
        &format!("outbound|9080|v2|{REVIEWS}"),
    );
    let eps = &cla.endpoints[0].lb_endpoints;
    assert_eq!(eps.len(), 1);
    let all: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment = get(
        &r,
        ResourceType::ClusterLoadAssignment,
        &format!("outbound|9080||{REVIEWS}"),
    );
    assert_eq!(all.endpoints[0].lb_endpoints.len(), 3);
}

#[test]
fn envoy_nodes_get_a_sidecar_listener_and_file_tls() {
    let config = bookinfo();
    let g = MeshGenerator::default();
    let n = node(&[("OUTBOUND_PORT", "15999"), ("TLS_CERT_CHAIN", "/tmp/c.pem")]);
    assert!(
        g.node_key(&n)
            .starts_with("envoy|127.0.0.1|15999|/tmp/c.pem")
    );
    let r = g.generate(&n, &config).unwrap();
    let listeners: Vec<&str> = r
        .of_type(ResourceType::Listener.type_url())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(listeners, ["127.0.0.1_15999"]);
    let rc: rds::RouteConfiguration = get(&r, ResourceType::RouteConfiguration, "15999");
    assert_eq!(rc.virtual_hosts.len(), 4);
    let c: cds::Cluster = get(
        &r,
        ResourceType::Cluster,
        &format!("outbound|9080|v1|{REVIEWS}"),
    );
    let ts = c.transport_socket.unwrap();
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        any,
    )) = ts.config_type
    else {
        panic!()
    };
    let ctx =
        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext::decode(
            any.value.as_slice(),
        )
        .unwrap();
    let common = ctx.common_tls_context.unwrap();
    let chain = common.tls_certificates[0]
        .certificate_chain
        .as_ref()
        .unwrap();
    assert_eq!(
        chain.specifier,
        Some(
            envoy_types::pb::envoy::config::core::v3::data_source::Specifier::Filename(
                "/tmp/c.pem".into()
            )
        )
    );
    assert_eq!(ctx.sni, format!("outbound_.9080_.v1_.{REVIEWS}"));
}

#[test]
fn node_kind_from_metadata() {
    assert_eq!(
        NodeKind::of(&node(&[("GENERATOR", "grpc")])),
        NodeKind::Proxyless
    );
    assert_eq!(NodeKind::of(&node(&[])), NodeKind::Envoy);
    assert!(
        MeshGenerator::default()
            .node_key(&node(&[("GENERATOR", "grpc")]))
            .starts_with("grpc|127.0.0.1|default|")
    );
}

#[test]
fn dns_service_entries_become_dns_clusters_that_our_client_decodes() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.example.com]
  location: MESH_EXTERNAL
  resolution: DNS
  ports: [{number: 443, name: http, protocol: HTTP}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: rr, namespace: default}
spec:
  hosts: [rr.example.com]
  location: MESH_EXTERNAL
  resolution: DNS_ROUND_ROBIN
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: one.example.com}, {address: two.example.com}]
"#;
    let files = [crate::istio::SourceFile {
        path: "c.yaml".into(),
        text: text.into(),
    }];
    let (config, errors) = MeshConfig::from_files(&files).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let r = MeshGenerator::default()
        .generate(&node(&[("GENERATOR", "grpc")]), &config)
        .unwrap();
    let cluster = |name: &str| {
        let c: cds::Cluster = get(&r, ResourceType::Cluster, name);
        let Resource::Cluster(m) = decode(ResourceType::Cluster, &prost_types_any(&c)).unwrap()
        else {
            unreachable!()
        };
        m
    };
    // DNS with no endpoints: the host itself is resolved, every address an endpoint.
    let api = cluster("outbound|443||api.example.com");
    let model::Discovery::StrictDns { assignment, .. } = &api.discovery else {
        panic!("{:?}", api.discovery)
    };
    assert_eq!(
        assignment.localities[0].endpoints[0].address,
        model::EndpointAddress::Dns {
            host: "api.example.com".into(),
            port: 443
        }
    );
    // DNS_ROUND_ROBIN: the first endpoint only.
    let rr = cluster("outbound|80||rr.example.com");
    let model::Discovery::LogicalDns(cla) = &rr.discovery else {
        panic!("{:?}", rr.discovery)
    };
    assert_eq!(cla.localities[0].endpoints.len(), 1);
    // No EDS resource for them.
    assert!(
        r.of_type(ResourceType::ClusterLoadAssignment.type_url())
            .all(|(name, _)| !name.contains("example.com"))
    );
}

fn prost_types_any(c: &cds::Cluster) -> envoy_types::pb::google::protobuf::Any {
    envoy_types::util::pack_any(c.clone())
}
