//! Inbound listeners per node: the node's own workload on a shared address, the chains
//! PeerAuthentication asks for, and the AuthorizationPolicies as RBAC filters that our
//! client decodes and evaluates as Istio means them.

use std::path::Path;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use mesh_core::model::{self, HttpFilterConfig, RbacRequest};
use mesh_xds::resource::{Resource, ResourceType, decode};

use super::*;
use crate::istio::SourceFile;

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.into())),
    }
}

fn node(ip: &str, pod: &str, sa: &str, labels: &[(&str, &str)]) -> Node {
    let labels = Struct {
        fields: labels.iter().map(|(k, v)| ((*k).into(), s(v))).collect(),
    };
    Node {
        id: format!("sidecar~{ip}~{pod}.default~default.svc.cluster.local"),
        metadata: Some(Struct {
            fields: [
                ("GENERATOR".to_owned(), s("grpc")),
                ("NAMESPACE".to_owned(), s("default")),
                ("INSTANCE_IPS".to_owned(), s(ip)),
                ("SERVICE_ACCOUNT".to_owned(), s(sa)),
                (
                    "LABELS".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    }
}

fn inbound(r: &crate::xds_server::Resources) -> Vec<(String, model::ServerListener)> {
    r.of_type(ResourceType::Listener.type_url())
        .filter(|(n, _)| n.starts_with("xds.istio.io/grpc/lds/inbound/"))
        .map(|(n, any)| {
            let Resource::Listener(l) =
                decode(ResourceType::Listener, any).unwrap_or_else(|e| panic!("{n}: {e}"))
            else {
                panic!("{n} is not a listener")
            };
            let model::ListenerKind::Server(s) = &l.kind else {
                panic!("{n} is not a server listener")
            };
            (n.to_owned(), (**s).clone())
        })
        .collect()
}

fn bookinfo() -> MeshConfig {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo");
    MeshConfig::load_dir(dir).unwrap().0
}

fn rbac(chain: &model::FilterChain) -> Vec<(&str, &model::RbacFilter)> {
    chain
        .http_connection_manager
        .http_filters
        .iter()
        .filter_map(|f| match &f.config {
            HttpFilterConfig::Rbac(r) => Some((f.name.as_str(), r)),
            _ => None,
        })
        .collect()
}

fn req<'a>(who: Option<&'a str>, method: &'a str, path: &'a str) -> RbacRequest<'a> {
    RbacRequest {
        headers: vec![(":method", method), (":path", path)],
        authenticated: who.is_some(),
        peer_names: who.into_iter().collect(),
        ..Default::default()
    }
}

#[test]
fn shared_address_resolves_to_the_nodes_own_workload() {
    let config = bookinfo();
    let g = MeshGenerator::default();
    let n = node("127.0.0.1", "reviews-v1", "reviews", &[("app", "reviews")]);
    let r = g.generate(&n, &config).unwrap();
    let listeners = inbound(&r);
    let names: Vec<&str> = listeners.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["xds.istio.io/grpc/lds/inbound/127.0.0.1:19082"]);
    // Without a pod name, the service account narrows to the three reviews versions.
    let n = node("127.0.0.1", "", "reviews", &[]);
    let names: Vec<String> = inbound(&g.generate(&n, &config).unwrap())
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    // Different nodes, different keys: the server generates for each.
    assert_ne!(
        g.node_key(&node("127.0.0.1", "reviews-v1", "reviews", &[])),
        g.node_key(&node("127.0.0.1", "ratings-v1", "ratings", &[]))
    );
}

#[test]
fn strict_listener_carries_the_authorization_policy() {
    let config = bookinfo();
    let n = node("127.0.0.1", "reviews-v1", "reviews", &[]);
    let r = MeshGenerator::default().generate(&n, &config).unwrap();
    let (_, l) = &inbound(&r)[0];
    assert_eq!(l.address, "127.0.0.1:19082".parse().unwrap());
    assert_eq!(l.filter_chains.len(), 1);
    let chain = &l.filter_chains[0];
    assert_eq!(chain.name, "inbound-mtls");
    assert!(chain.tls.as_ref().unwrap().require_client_certificate);
    let filters = rbac(chain);
    assert_eq!(filters.len(), 1, "only an ALLOW policy selects reviews");
    assert_eq!(filters[0].0, "envoy.filters.http.rbac");
    let allows = |r: &RbacRequest<'_>| filters.iter().all(|(_, f)| f.allows(r));
    let pp = "spiffe://cluster.local/ns/default/sa/productpage";
    let ratings = "spiffe://cluster.local/ns/default/sa/ratings";
    assert!(allows(&req(Some(pp), "GET", "/reviews/1")));
    assert!(!allows(&req(Some(pp), "POST", "/reviews/1")));
    assert!(!allows(&req(Some(pp), "GET", "/ratings/1")));
    assert!(!allows(&req(Some(ratings), "GET", "/reviews/1")));
    assert!(!allows(&req(None, "GET", "/reviews/1")));
    let model::RbacRuleSet::Rules(rules) = &filters[0].1.rules else {
        panic!("{:?}", filters[0].1)
    };
    assert_eq!(filters[0].1.shadow_rules, model::RbacRuleSet::NoRules);
    assert_eq!(
        rules.policies[0].name,
        "ns[default]-policy[reviews-viewer]-rule[0]"
    );
}

const SVC: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.7, ports: {http: 18080}, serviceAccount: echo, labels: {app: echo}}]
"#;

fn echo_listener(extra: &str) -> model::ServerListener {
    let files = [SourceFile {
        path: "c.yaml".into(),
        text: format!("{SVC}{extra}"),
    }];
    let (config, _) = MeshConfig::from_files(&files).unwrap();
    let r = MeshGenerator::default()
        .generate(&node("10.0.0.7", "echo", "echo", &[]), &config)
        .unwrap();
    let mut l = inbound(&r);
    assert_eq!(l.len(), 1);
    l.remove(0).1
}

#[test]
fn permissive_sends_a_tls_and_a_plaintext_chain_and_disable_plaintext_only() {
    let l = echo_listener("");
    let chains: Vec<(&str, Option<&str>, bool)> = l
        .filter_chains
        .iter()
        .map(|c| {
            (
                c.name.as_str(),
                c.filter_chain_match.transport_protocol.as_deref(),
                c.tls.is_some(),
            )
        })
        .collect();
    assert_eq!(
        chains,
        [
            ("inbound-mtls", Some("tls"), true),
            ("inbound-plaintext", Some("raw_buffer"), false)
        ]
    );
    assert!(
        rbac(&l.filter_chains[0]).is_empty(),
        "no policy, no RBAC filter"
    );
    let disable = echo_listener(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: default}\nspec: {mtls: {mode: DISABLE}}\n",
    );
    assert_eq!(disable.filter_chains.len(), 1);
    assert!(disable.filter_chains[0].tls.is_none());
    let port_strict = echo_listener(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: d, namespace: default}\nspec: {selector: {matchLabels: {app: echo}}, mtls: {mode: DISABLE}, portLevelMtls: {18080: {mode: STRICT}}}\n",
    );
    assert_eq!(port_strict.filter_chains.len(), 1);
    assert!(port_strict.filter_chains[0].tls.is_some());
}

#[test]
fn deny_then_allow_and_every_field() {
    let l = echo_listener(
        r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
  - from: [{source: {notNamespaces: [default]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/*"], notPrincipals: ["*/sa/evil"]}}]
    to: [{operation: {methods: [GET, HEAD], hosts: ["Echo.*"], notPaths: ["*.secret"]}}]
    when: [{key: "request.headers[x-team]", values: [blue]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other-app, namespace: default}
spec:
  selector: {matchLabels: {app: other}}
  rules: [{}]
"#,
    );
    let filters = rbac(&l.filter_chains[0]);
    let names: Vec<&str> = filters.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.rbac.DENY", "envoy.filters.http.rbac"]
    );
    let allows = |r: &RbacRequest<'_>| filters.iter().all(|(_, f)| f.allows(r));
    let good = "spiffe://cluster.local/ns/default/sa/web";
    let base = |who: &'static str, method: &'static str, path: &'static str, host: &'static str| {
        RbacRequest {
            headers: vec![
                (":method", method),
                (":path", path),
                (":authority", host),
                ("x-team", "blue"),
            ],
            authenticated: true,
            peer_names: vec![who],
            ..Default::default()
        }
    };
    assert!(allows(&base(good, "GET", "/x", "echo.default")));
    assert!(
        allows(&base(good, "HEAD", "/x", "ECHO.default")),
        "hosts ignore case"
    );
    assert!(!allows(&base(good, "POST", "/x", "echo.default")));
    assert!(!allows(&base(good, "GET", "/x", "other")));
    assert!(!allows(&base(good, "GET", "/a.secret", "echo.default")));
    assert!(
        !allows(&base(good, "GET", "/admin/x", "echo.default")),
        "DENY first"
    );
    assert!(!allows(&base(
        "spiffe://cluster.local/ns/default/sa/evil",
        "GET",
        "/x",
        "echo.default"
    )));
    assert!(!allows(&base(
        "spiffe://cluster.local/ns/prod/sa/web",
        "GET",
        "/x",
        "echo.default"
    )));
    let mut no_team = base(good, "GET", "/x", "echo.default");
    no_team.headers.pop();
    assert!(!allows(&no_team), "when: request.headers");
}

#[test]
fn allow_policy_without_rules_allows_nothing() {
    let l = echo_listener(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: allow-nothing, namespace: default}\nspec: {}\n",
    );
    let filters = rbac(&l.filter_chains[0]);
    assert_eq!(filters.len(), 1);
    assert!(!filters[0].1.allows(&req(
        Some("spiffe://cluster.local/ns/default/sa/web"),
        "GET",
        "/"
    )));
}

#[test]
fn dry_run_policies_are_shadow_rules_only() {
    let l = echo_listener(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: default, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n",
    );
    let filters = rbac(&l.filter_chains[0]);
    assert_eq!(filters.len(), 1);
    assert_eq!(filters[0].0, "envoy.filters.http.rbac.DENY");
    let f = filters[0].1;
    assert_eq!(f.rules, model::RbacRuleSet::NoRules, "nothing enforced");
    assert!(f.allows(&req(None, "GET", "/")));
    let model::RbacRuleSet::Rules(shadow) = &f.shadow_rules else {
        panic!("{f:?}")
    };
    assert_eq!(shadow.action, model::RbacAction::Deny);
    assert_eq!(shadow.policies.len(), 1);
    assert_eq!(
        shadow.policies[0].name,
        "ns[default]-policy[deny-all]-rule[0]"
    );
    assert!(shadow.policies[0].matches(&req(None, "GET", "/")));
    assert_eq!(f.shadow_rules_stat_prefix, "istio_dry_run_deny_");
}

#[test]
fn the_shared_client_side_follows_config_changes() {
    let g = MeshGenerator::default();
    let n = node("10.0.0.7", "echo", "echo", &[]);
    let names = |config: &MeshConfig| -> Vec<String> {
        g.generate(&n, config)
            .unwrap()
            .of_type(ResourceType::Listener.type_url())
            .map(|(n, _)| n.to_owned())
            .collect()
    };
    let files = |text: &str| {
        MeshConfig::from_files(&[SourceFile {
            path: "c.yaml".into(),
            text: text.into(),
        }])
        .unwrap()
        .0
    };
    let a = files(SVC);
    let first = names(&a);
    assert!(first.contains(&"echo.default.svc.cluster.local:8080".to_owned()));
    assert_eq!(
        names(&a.clone()),
        first,
        "same Arcs: the cached client side"
    );
    let b = files(&SVC.replace("echo.default", "other.default"));
    let second = names(&b);
    assert!(second.contains(&"other.default.svc.cluster.local:8080".to_owned()));
    assert!(!second.contains(&"echo.default.svc.cluster.local:8080".to_owned()));
}

#[test]
fn policy_names_never_collide_across_namespaces() {
    // With `{ns}-{name}-{i}`, both rules were `istio-system-deny-admin-0` and one replaced
    // the other: a root-namespace DENY vanished behind a workload's own.
    let policy = |ns: &str, name: &str, path: &str| {
        format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [\"{path}\"]}}}}]}}]}}\n"
        )
    };
    let svc = SVC
        .replace("namespace: default", "namespace: istio")
        .replace("echo.default.svc", "echo.istio.svc");
    let files = [SourceFile {
        path: "c.yaml".into(),
        text: format!(
            "{svc}{}{}",
            policy("istio-system", "deny-admin", "/admin"),
            policy("istio", "system-deny-admin", "/debug")
        ),
    }];
    let (config, errors) = MeshConfig::from_files(&files).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let mut n = node("10.0.0.7", "echo", "echo", &[]);
    n.id = n.id.replace(".default~", ".istio~");
    n.metadata
        .as_mut()
        .unwrap()
        .fields
        .insert("NAMESPACE".into(), s("istio"));
    let r = MeshGenerator::default().generate(&n, &config).unwrap();
    let (_, l) = &inbound(&r)[0];
    let filters = rbac(&l.filter_chains[0]);
    let model::RbacRuleSet::Rules(rules) = &filters[0].1.rules else {
        panic!("{filters:?}")
    };
    let mut names: Vec<_> = rules.policies.iter().map(|p| p.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ns[istio-system]-policy[deny-admin]-rule[0]",
            "ns[istio]-policy[system-deny-admin]-rule[0]"
        ]
    );
    let caller = Some("spiffe://cluster.local/ns/istio/sa/web");
    for path in ["/admin", "/debug"] {
        assert!(!filters[0].1.allows(&req(caller, "GET", path)), "{path}");
    }
}

/// The AuthorizationPolicy fields `deny_then_allow_and_every_field` leaves out, one ALLOW
/// rule each, evaluated on a request that matches and one that does not (issue #16's table
/// names this test for them).
#[test]
fn remaining_authorization_fields_are_enforced() {
    struct Call {
        peer: &'static str,
        ip: &'static str,
        port: u16,
        method: &'static str,
        host: &'static str,
        team: &'static str,
    }
    const OK: Call = Call {
        peer: "spiffe://cluster.local/ns/default/sa/web",
        ip: "10.1.2.3",
        port: 18080,
        method: "GET",
        host: "echo.default",
        team: "blue",
    };
    let allows = |rule: &str, c: &Call| {
        let l = echo_listener(&format!(
            "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: p, namespace: default}}\nspec:\n  rules: [{rule}]\n"
        ));
        let filters = rbac(&l.filter_chains[0]);
        assert_eq!(filters.len(), 1, "{rule}");
        let r = RbacRequest {
            headers: vec![
                (":method", c.method),
                (":path", "/x"),
                (":authority", c.host),
                ("x-team", c.team),
            ],
            authenticated: true,
            peer_names: vec![c.peer],
            peer_ip: Some(c.ip.parse().unwrap()),
            remote_ip: Some(c.ip.parse().unwrap()),
            destination: Some(("10.0.0.7".parse().unwrap(), c.port)),
            ..Default::default()
        };
        filters[0].1.allows(&r)
    };
    let cases: [(&str, Call); 8] = [
        (
            "{from: [{source: {namespaces: [default]}}]}",
            Call {
                peer: "spiffe://cluster.local/ns/prod/sa/web",
                ..OK
            },
        ),
        (
            "{from: [{source: {ipBlocks: [10.1.0.0/16]}}]}",
            Call {
                ip: "10.2.0.1",
                ..OK
            },
        ),
        (
            "{from: [{source: {notIpBlocks: [10.2.0.0/16]}}]}",
            Call {
                ip: "10.2.0.1",
                ..OK
            },
        ),
        (
            "{to: [{operation: {notHosts: [evil.example]}}]}",
            Call {
                host: "evil.example",
                ..OK
            },
        ),
        (
            "{to: [{operation: {ports: [\"18080\"]}}]}",
            Call { port: 9999, ..OK },
        ),
        (
            "{to: [{operation: {notPorts: [\"9999\"]}}]}",
            Call { port: 9999, ..OK },
        ),
        (
            "{to: [{operation: {notMethods: [DELETE]}}]}",
            Call {
                method: "DELETE",
                ..OK
            },
        ),
        (
            "{when: [{key: \"request.headers[x-team]\", notValues: [red]}]}",
            Call { team: "red", ..OK },
        ),
    ];
    for (rule, denied) in &cases {
        assert!(allows(rule, &OK), "{rule} refuses the matching request");
        assert!(
            !allows(rule, denied),
            "{rule} allows the request it excludes"
        );
    }
}
