//! Generator tests on the Bookinfo config: every proxyless resource decodes through our own
//! client's translation, names follow Istio, and the VirtualService/DestinationRule land
//! where they should.

use std::path::Path;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, Node, header_value_option};
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::google::protobuf::{BoolValue, Struct, Value, value::Kind};
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

/// The config of one YAML file, which must be valid.
fn valid_config(text: &str) -> MeshConfig {
    let files = [crate::istio::SourceFile {
        path: "c.yaml".into(),
        text: text.into(),
    }];
    let (config, errors) = MeshConfig::from_files(&files).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    config
}

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
        virtual_host_domains(REVIEWS, 9080, None)
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
    let config = valid_config(text);
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
    let model::Discovery::LogicalDns {
        assignment: cla,
        lookup_family,
        ..
    } = &rr.discovery
    else {
        panic!("{:?}", rr.discovery)
    };
    // istiod's choice for a proxy without IPv6 addresses.
    assert_eq!(*lookup_family, model::DnsLookupFamily::V4Only);
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

/// Every VirtualService route field and DestinationRule hash policy that has no traffic test
/// yet lands in the generated route: matches (every string-match kind, `ignoreUriCase`,
/// `withoutHeaders`, `queryParams`, `port`), header operations, rewrites, redirects, fault
/// delay and gRPC abort, mirror subset and port, the destination port, and cookie and
/// source-IP hashing (issue #16's table names this test for them).
#[test]
fn every_route_field_is_generated() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: alt, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 18080, alt: 18081}, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ip, namespace: default}
spec:
  hosts: [ip.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 18082}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: svc, namespace: default}
spec:
  host: svc.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /p, ttl: 5s}}}
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ip, namespace: default}
spec:
  host: ip.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.default.svc.cluster.local]
  http:
  - name: all
    match:
    - uri: {exact: /Exact}
      ignoreUriCase: true
      method: {exact: GET}
      authority: {prefix: auth}
      scheme: {regex: "https?"}
      headers: {x-pre: {prefix: p}, x-re: {regex: "r.*"}}
      withoutHeaders: {x-not: {exact: "1"}, x-not-p: {prefix: np}, x-not-r: {regex: "n.*"}}
      queryParams: {q-ex: {exact: v}, q-pre: {prefix: p}, q-re: {regex: "r.*"}}
      port: 80
    route: [{destination: {host: svc.default.svc.cluster.local, subset: v1, port: {number: 81}}}]
    headers:
      request: {set: {x-set: s}, add: {x-add: a}, remove: [x-rm]}
      response: {set: {x-rset: s}, add: {x-radd: a}, remove: [x-rrm]}
    rewrite: {uri: /new, authority: new.host}
    fault:
      delay: {fixedDelay: 2s, percentage: {value: 50}}
      abort: {grpcStatus: UNAVAILABLE, percentage: {value: 10}}
    mirror: {host: svc.default.svc.cluster.local, subset: v1, port: {number: 81}}
  - name: regex
    match:
    - uri: {regex: "/re/.*"}
      method: {prefix: PO}
      authority: {exact: auth.example}
      scheme: {exact: https}
      headers: {x-ex: {exact: e}}
      port: 81
    rewrite: {uriRegexRewrite: {match: "^/re/(.*)", rewrite: "/\\1"}}
    route: [{destination: {host: svc.default.svc.cluster.local, port: {number: 81}}}]
  - name: moved
    match: [{uri: {prefix: /moved}, method: {regex: "G.*"}, authority: {regex: "a.*"}, scheme: {prefix: ht}}]
    redirect: {uri: /r, scheme: https, redirectCode: 302}
  - route: [{destination: {host: svc.default.svc.cluster.local, port: {number: 80}}}]
"#;
    let config = valid_config(text);
    let r = MeshGenerator::default().proxyless(&config);
    let host = "svc.default.svc.cluster.local";
    let rc: rds::RouteConfiguration =
        get(&r, ResourceType::RouteConfiguration, &format!("{host}:80"));
    let routes = &rc.virtual_hosts[0].routes;
    let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
    // `match.port`: the 81-only match is not on port 80's routes.
    assert_eq!(names, ["all", "moved", ""], "{names:?}");
    let rc81: rds::RouteConfiguration =
        get(&r, ResourceType::RouteConfiguration, &format!("{host}:81"));
    let names81: Vec<&str> = rc81.virtual_hosts[0]
        .routes
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names81, ["regex", "moved", ""], "{names81:?}");

    // Route "all": every match field.
    let all = &routes[0];
    let m = all.r#match.as_ref().unwrap();
    assert_eq!(
        m.path_specifier,
        Some(rds::route_match::PathSpecifier::Path("/Exact".into()))
    );
    assert_eq!(m.case_sensitive, Some(BoolValue { value: false }));
    let header = |name: &str| {
        let h = m.headers.iter().find(|h| h.name == name);
        format!(
            "{:?}",
            h.unwrap_or_else(|| panic!("no matcher for {name}: {m:?}"))
        )
    };
    assert!(header(":method").contains("Exact(\"GET\")"));
    assert!(header(":authority").contains("Prefix(\"auth\")"));
    assert!(header(":scheme").contains("https?"));
    assert!(header("x-pre").contains("Prefix(\"p\")"));
    assert!(header("x-re").contains("SafeRegex") && header("x-re").contains("r.*"));
    let not = m.headers.iter().find(|h| h.name == "x-not").unwrap();
    assert!(not.invert_match && format!("{not:?}").contains("Exact(\"1\")"));
    let not_p = m.headers.iter().find(|h| h.name == "x-not-p").unwrap();
    assert!(not_p.invert_match && format!("{not_p:?}").contains("Prefix(\"np\")"));
    let not_r = m.headers.iter().find(|h| h.name == "x-not-r").unwrap();
    assert!(not_r.invert_match && format!("{not_r:?}").contains("n.*"));
    let query = |name: &str| {
        format!(
            "{:?}",
            m.query_parameters.iter().find(|q| q.name == name).unwrap()
        )
    };
    assert!(query("q-ex").contains("Exact(\"v\")"));
    assert!(query("q-pre").contains("Prefix(\"p\")"));
    assert!(query("q-re").contains("r.*"));
    // Header operations: set overwrites, add appends, remove.
    let ops = |v: &[HeaderValueOption]| -> Vec<(String, String, i32)> {
        v.iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (h.key.clone(), h.value.clone(), o.append_action)
            })
            .collect()
    };
    use header_value_option::HeaderAppendAction as A;
    assert_eq!(
        ops(&all.request_headers_to_add),
        [
            ("x-set".into(), "s".into(), A::OverwriteIfExistsOrAdd as i32),
            ("x-add".into(), "a".into(), A::AppendIfExistsOrAdd as i32)
        ]
    );
    assert_eq!(all.request_headers_to_remove, ["x-rm"]);
    assert_eq!(
        ops(&all.response_headers_to_add),
        [
            (
                "x-rset".into(),
                "s".into(),
                A::OverwriteIfExistsOrAdd as i32
            ),
            ("x-radd".into(), "a".into(), A::AppendIfExistsOrAdd as i32)
        ]
    );
    assert_eq!(all.response_headers_to_remove, ["x-rrm"]);
    // Destination subset and port, rewrite, mirror, cookie hash.
    let Some(rds::route::Action::Route(a)) = &all.action else {
        panic!("{all:?}")
    };
    assert_eq!(
        a.cluster_specifier,
        Some(rds::route_action::ClusterSpecifier::Cluster(format!(
            "outbound|81|v1|{host}"
        )))
    );
    assert_eq!(a.prefix_rewrite, "/new");
    assert!(format!("{:?}", a.host_rewrite_specifier).contains("new.host"));
    assert_eq!(
        a.request_mirror_policies[0].cluster,
        format!("outbound|81|v1|{host}")
    );
    let hash = format!("{:?}", a.hash_policy);
    assert!(
        hash.contains("Cookie")
            && hash.contains("sticky")
            && hash.contains("/p")
            && hash.contains("seconds: 5"),
        "{hash}"
    );
    // Fault: a 2 s delay for 50 %, gRPC UNAVAILABLE (14) for 10 %.
    let any = &all.typed_per_filter_config[super::route::FAULT_FILTER];
    let f = envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault::decode(
        any.value.as_slice(),
    )
    .unwrap();
    let f = format!("{f:?}");
    assert!(f.contains("FixedDelay(Duration { seconds: 2"), "{f}");
    assert!(
        f.contains("numerator: 50") && f.contains("numerator: 10"),
        "{f}"
    );
    assert!(f.contains("GrpcStatus(14)"), "{f}");

    // Route "regex" (port 81): regex path and regex rewrite, the other match kinds.
    let re = &rc81.virtual_hosts[0].routes[0];
    let m = re.r#match.as_ref().unwrap();
    assert!(format!("{:?}", m.path_specifier).contains("/re/.*"));
    let m = format!("{m:?}");
    assert!(
        m.contains("Prefix(\"PO\")") && m.contains("Exact(\"auth.example\")"),
        "{m}"
    );
    assert!(
        m.contains("Exact(\"https\")") && m.contains("Exact(\"e\")"),
        "{m}"
    );
    let Some(rds::route::Action::Route(a)) = &re.action else {
        panic!("{re:?}")
    };
    let rw = format!("{:?}", a.regex_rewrite);
    assert!(rw.contains("^/re/(.*)") && rw.contains("/\\\\1"), "{rw}");

    // Route "moved": redirect with scheme and code, regex and prefix pseudo-header matches.
    let moved = &routes[1];
    let m = format!("{:?}", moved.r#match);
    assert!(
        m.contains("G.*") && m.contains("a.*") && m.contains("Prefix(\"ht\")"),
        "{m}"
    );
    let Some(rds::route::Action::Redirect(red)) = &moved.action else {
        panic!("{moved:?}")
    };
    assert_eq!(
        red.response_code,
        rds::redirect_action::RedirectResponseCode::Found as i32
    );
    assert!(format!("{:?}", red.scheme_rewrite_specifier).contains("https"));
    assert!(format!("{:?}", red.path_rewrite_specifier).contains("/r"));

    // useSourceIp: the default route to `ip` hashes on the source address.
    let ip: rds::RouteConfiguration = get(
        &r,
        ResourceType::RouteConfiguration,
        "ip.default.svc.cluster.local:80",
    );
    let Some(rds::route::Action::Route(a)) = &ip.virtual_hosts[0].routes[0].action else {
        panic!()
    };
    assert!(format!("{:?}", a.hash_policy).contains("source_ip: true"));
}

/// DestinationRule fields with no traffic test yet land in the generated clusters: ring
/// sizes, idle timeouts (HTTP, else TCP), `useClientProtocol`, `maxConcurrentStreams`, the
/// local-origin and gateway outlier settings, `tls.sni`, and a subset's own policy taking
/// precedence over the top-level one (issue #16's table names this test for them).
#[test]
fn every_cluster_field_is_generated() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a, namespace: default}
spec:
  hosts: [a.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 18080}, labels: {version: v1}}]
  subjectAltNames: [spiffe://other.example/ns/x/sa/y]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: b, namespace: default}
spec:
  hosts: [b.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 9090}]
  endpoints: [{address: 127.0.0.1, weight: 3}, {address: 127.0.0.2, ports: {http: 18081}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a, namespace: default}
spec:
  host: a.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user, ringHash: {minimumRingSize: 2048}}}
    connectionPool:
      tcp: {idleTimeout: 30s}
      http: {useClientProtocol: true, maxConcurrentStreams: 7}
    outlierDetection:
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 3
      consecutiveGatewayErrors: 4
    tls: {mode: ISTIO_MUTUAL, sni: a.example}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy: {connectionPool: {http: {idleTimeout: 20s, maxConcurrentStreams: 9, h2UpgradePolicy: UPGRADE}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b, namespace: default}
spec:
  host: b.default.svc.cluster.local
  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user, minimumRingSize: 512}}}
"#;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let config = valid_config(text);
    let r = MeshGenerator::default().proxyless(&config);
    let cluster = |name: &str| -> cds::Cluster { get(&r, ResourceType::Cluster, name) };
    let options = |c: &cds::Cluster| {
        let any = &c.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        format!(
            "{:?}",
            HttpProtocolOptions::decode(any.value.as_slice()).unwrap()
        )
    };
    let ring = |c: &cds::Cluster| match &c.lb_config {
        Some(cds::cluster::LbConfig::RingHashLbConfig(r)) => {
            r.minimum_ring_size.as_ref().unwrap().value
        }
        other => panic!("{other:?}"),
    };

    let a = cluster("outbound|80||a.default.svc.cluster.local");
    assert_eq!(ring(&a), 2048);
    let o = options(&a);
    assert!(o.contains("UseDownstreamProtocolConfig"), "{o}");
    assert!(
        o.contains("max_concurrent_streams: Some(UInt32Value { value: 7 })"),
        "{o}"
    );
    // No HTTP idle timeout: the TCP one, as istiod.
    assert!(
        o.contains("idle_timeout: Some(Duration { seconds: 30"),
        "{o}"
    );
    let od = a.outlier_detection.as_ref().unwrap();
    assert!(od.split_external_local_origin_errors);
    assert_eq!(
        od.consecutive_local_origin_failure.as_ref().unwrap().value,
        3
    );
    assert_eq!(od.consecutive_gateway_failure.as_ref().unwrap().value, 4);
    let Some(envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
        tls,
    )) = a
        .transport_socket
        .as_ref()
        .and_then(|t| t.config_type.as_ref())
    else {
        panic!("no upstream TLS: {a:?}")
    };
    let tls = UpstreamTlsContext::decode(tls.value.as_slice()).unwrap();
    assert_eq!(tls.sni, "a.example");
    // subjectAltNames: accepted server identities besides the workloads' own.
    assert!(
        format!("{tls:?}").contains("spiffe://other.example/ns/x/sa/y"),
        "{tls:?}"
    );

    // The subset's connection pool replaces the top-level one (HTTP/2 by upgrade, not the
    // client's protocol); the rest is inherited.
    let v1 = cluster("outbound|80|v1|a.default.svc.cluster.local");
    let o = options(&v1);
    assert!(
        o.contains("max_concurrent_streams: Some(UInt32Value { value: 9 })"),
        "{o}"
    );
    assert!(
        o.contains("idle_timeout: Some(Duration { seconds: 20"),
        "{o}"
    );
    assert!(!o.contains("UseDownstreamProtocolConfig"), "{o}");
    assert_eq!(ring(&v1), 2048);

    // The deprecated top-level minimumRingSize.
    assert_eq!(
        ring(&cluster("outbound|80||b.default.svc.cluster.local")),
        512
    );
    // targetPort for an endpoint that maps no port; the endpoint's weight.
    let cla: envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment = get(
        &r,
        ResourceType::ClusterLoadAssignment,
        "outbound|80||b.default.svc.cluster.local",
    );
    let eps: Vec<String> = cla
        .endpoints
        .iter()
        .flat_map(|l| &l.lb_endpoints)
        .map(|e| format!("{e:?}"))
        .collect();
    let one = eps.iter().find(|e| e.contains("127.0.0.1")).unwrap();
    assert!(one.contains("PortValue(9090)"), "{one}");
    assert!(
        one.contains("load_balancing_weight: Some(UInt32Value { value: 3 })"),
        "{one}"
    );
    let two = eps.iter().find(|e| e.contains("127.0.0.2")).unwrap();
    assert!(two.contains("PortValue(18081)"), "{two}");
}

#[test]
fn a_destination_rule_exported_to_its_namespace_applies_to_its_clients_only() {
    let text = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api, namespace: default}
spec:
  host: api.default.svc.cluster.local
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
"#;
    let config = valid_config(text);
    let lb_for = |namespace: &str| {
        let n = node(&[("GENERATOR", "grpc"), ("NAMESPACE", namespace)]);
        let r = MeshGenerator::default().generate(&n, &config).unwrap();
        let c: cds::Cluster = get(
            &r,
            ResourceType::Cluster,
            "outbound|80||api.default.svc.cluster.local",
        );
        c.lb_policy
    };
    assert_eq!(
        lb_for("default"),
        cds::cluster::LbPolicy::LeastRequest as i32
    );
    // Not exported to `testing`: the generator's default there.
    assert_eq!(lb_for("testing"), cds::cluster::LbPolicy::RoundRobin as i32);
}

/// Locality load balancing per node: the node's locality (xDS `locality`) and labels
/// (`LABELS`) key its snapshot and order its endpoints (located by `locality` or the
/// `istio-locality` label); a cluster with `distribute` weighs localities.
#[test]
fn each_node_gets_the_priorities_of_its_locality() {
    use envoy_types::pb::envoy::config::core::v3::Locality;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    let config = valid_config(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: default}
spec:
  hosts: [cart.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, locality: us/a, labels: {track: canary}}
  - {address: 10.0.0.2, labels: {istio-locality: us.b}}
  - {address: 10.0.0.3, locality: eu/c}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: default}
spec:
  host: cart.default.svc.cluster.local
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
  subsets:
  - name: split
    trafficPolicy:
      loadBalancer: {localityLbSetting: {distribute: [{from: us/a, to: {us/a: 70, eu: 30}}]}}
",
    );
    let g = MeshGenerator::default();
    let at = |kind: &str, zone: &str| {
        let mut n = node(&[("GENERATOR", kind)]);
        n.locality = Some(Locality {
            region: "us".into(),
            zone: zone.into(),
            sub_zone: String::new(),
        });
        n
    };
    let priorities = |kind: &str, zone: &str, subset: &str| {
        let n = at(kind, zone);
        let r = g.generate(&n, &config).unwrap();
        let name = format!("outbound|80|{subset}|cart.default.svc.cluster.local");
        let la: ClusterLoadAssignment = get(&r, ResourceType::ClusterLoadAssignment, &name);
        let c: cds::Cluster = get(&r, ResourceType::Cluster, &name);
        let weighted = c
            .common_lb_config
            .is_some_and(|l| l.locality_config_specifier.is_some());
        let mut out: Vec<(String, u32, u32)> = la
            .endpoints
            .iter()
            .map(|l| {
                let loc = l.locality.clone().unwrap_or_default();
                let w = l.load_balancing_weight.as_ref().map_or(0, |w| w.value);
                (format!("{}/{}", loc.region, loc.zone), l.priority, w)
            })
            .collect();
        out.sort();
        (out, weighted)
    };
    for kind in ["grpc", "envoy"] {
        assert_ne!(g.node_key(&at(kind, "a")), g.node_key(&at(kind, "b")));
        let (a, weighted) = priorities(kind, "a", "");
        assert_eq!(
            a,
            [
                ("eu/c".into(), 2, 1),
                ("us/a".into(), 0, 1),
                ("us/b".into(), 1, 1)
            ],
            "{kind}"
        );
        assert!(!weighted, "default failover keeps plain weights");
        let (b, _) = priorities(kind, "b", "");
        assert_eq!(
            b,
            [
                ("eu/c".into(), 2, 1),
                ("us/a".into(), 1, 1),
                ("us/b".into(), 0, 1)
            ],
            "{kind}"
        );
        // The subset's `distribute` replaces the rule's default failover.
        let (split, weighted) = priorities(kind, "a", "split");
        assert_eq!(
            split,
            [("eu/c".into(), 0, 30), ("us/a".into(), 0, 70)],
            "{kind}"
        );
        assert!(weighted, "{kind}");
    }
}

#[test]
fn a_service_short_name_is_a_domain_in_its_own_namespace_only() {
    let config = bookinfo();
    let g = MeshGenerator::default();
    let domains = |namespace: &str| {
        let n = node(&[("GENERATOR", "grpc"), ("NAMESPACE", namespace)]);
        let r = g.generate(&n, &config).unwrap();
        let rc: rds::RouteConfiguration = get(
            &r,
            ResourceType::RouteConfiguration,
            &format!("{REVIEWS}:9080"),
        );
        rc.virtual_hosts[0].domains.clone()
    };
    let same = domains("default");
    assert!(same.iter().any(|d| d == "reviews:9080"), "{same:?}");
    let other = domains("other");
    assert!(
        !other.iter().any(|d| d == "reviews" || d == "reviews:9080"),
        "{other:?}"
    );
    assert!(
        other.iter().any(|d| d == "reviews.default:9080"),
        "{other:?}"
    );
    // One generator shares its generations per namespace: `default` still has it.
    assert_eq!(domains("default"), same);
}

/// The per-namespace cache of the shared proxyless output stays bounded whatever
/// namespaces nodes claim, and still answers each of them.
#[test]
fn the_per_namespace_output_cache_is_bounded() {
    // No caller-specific routes, exports or localities: the shared (cached) path.
    let config = valid_config(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: default}
spec:
  hosts: [api.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
"#,
    );
    let g = MeshGenerator::default();
    for i in 0..MAX_CACHED_NAMESPACES + 20 {
        let node = InboundNode {
            namespace: format!("ns-{i}"),
            ..Default::default()
        };
        let r = g.proxyless_for(&config, &node);
        assert!(
            r.of_type(ResourceType::Listener.type_url())
                .next()
                .is_some()
        );
    }
    let cache = g.outbound.lock().unwrap();
    let (_, by_namespace) = cache.as_ref().unwrap();
    assert_eq!(by_namespace.len(), MAX_CACHED_NAMESPACES);
}

/// A WorkloadEntry labelled `networking.istio.io/tunnel: http` (and without Istio mTLS, as
/// istiod requires by default) gets istiod's `tunnel: http` endpoint marker, which our client
/// decodes as an HBONE endpoint; its unlabelled sibling stays a plain endpoint.
#[test]
fn tunnel_labelled_workloads_are_hbone_endpoints() {
    let config = valid_config(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ambient, namespace: default}
spec:
  address: 10.0.0.1
  labels: {app: reviews, networking.istio.io/tunnel: http}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: plain, namespace: default}
spec:
  address: 10.0.0.2
  labels: {app: reviews}
",
    );
    let r = MeshGenerator::default()
        .generate(&node(&[("GENERATOR", "grpc")]), &config)
        .unwrap();
    let ty = ResourceType::ClusterLoadAssignment;
    let name = format!("outbound|9080||{REVIEWS}");
    let (_, any) = r
        .of_type(ty.type_url())
        .find(|(n, _)| *n == name)
        .expect("the cluster's endpoints");
    let Ok(Resource::ClusterLoadAssignment(cla)) = decode(ty, any) else {
        panic!("does not decode");
    };
    let mut seen: Vec<_> = cla.localities[0]
        .endpoints
        .iter()
        .map(|e| (e.address.clone(), e.tls_mode))
        .collect();
    seen.sort_by_key(|(a, _)| format!("{a:?}"));
    let at = |s: &str| model::EndpointAddress::Socket(s.parse().unwrap());
    assert_eq!(
        seen,
        vec![
            (at("10.0.0.1:9080"), model::TlsMode::Hbone),
            (at("10.0.0.2:9080"), model::TlsMode::Unset),
        ]
    );
}
