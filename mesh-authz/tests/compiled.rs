//! The compiled matchers (`AuthzPolicies::check`, what the layer runs) against mesh-core's
//! reference evaluator (`AuthzPolicies::evaluate` over `rbac_request`) on arbitrary
//! policies and requests: same enforced decision, same shadow decision, same AUDIT match,
//! naming the same policy. The fuzz target `fuzz/fuzz_targets/rbac.rs` does the same with
//! coverage guidance.

use std::net::SocketAddr;

use http::{HeaderValue, Request};
use mesh_authz::{
    AuthzPolicies, AuthzPolicy, ConnectionAddrs, PolicyAction, principal, rbac_request,
};
use mesh_core::SpiffeId;
use mesh_core::extensions::PeerIdentity;
use mesh_core::model::{
    CidrRange, HeaderMatchRule, HeaderMatcher, Permission, Principal, RbacPolicy, Regex,
    StringMatcher,
};
use proptest::prelude::*;

const PEERS: [&str; 3] = [
    "spiffe://cluster.local/ns/default/sa/a",
    "spiffe://cluster.local/ns/default/sa/b",
    "spiffe://cluster.local/ns/prod/sa/a",
];

/// Short strings from an alphabet that makes prefixes, suffixes, case and query
/// separators collide often.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[aAb/?#,1]{0,4}",
        prop::sample::select(vec![
            "/api".to_owned(),
            "GET".to_owned(),
            "get".to_owned(),
            "5".to_owned(),
            PEERS[0].to_owned(),
            "/sa/a".to_owned(),
            "é".to_owned(),
        ]),
    ]
}

fn string_matcher() -> impl Strategy<Value = StringMatcher> {
    let regexes = ["a.*", "/api(/.*)?", "[A-Z]+", ".*/ns/default/.*", ""]
        .map(|r| StringMatcher::Regex(Regex::full(r).unwrap()));
    prop_oneof![
        (text(), any::<bool>())
            .prop_map(|(value, ignore_case)| StringMatcher::Exact { value, ignore_case }),
        (text(), any::<bool>())
            .prop_map(|(value, ignore_case)| StringMatcher::Prefix { value, ignore_case }),
        (text(), any::<bool>())
            .prop_map(|(value, ignore_case)| StringMatcher::Suffix { value, ignore_case }),
        (text(), any::<bool>())
            .prop_map(|(value, ignore_case)| StringMatcher::Contains { value, ignore_case }),
        prop::sample::select(regexes.to_vec()),
    ]
}

const HEADER_NAMES: [&str; 7] = [
    ":method",
    ":path",
    ":authority",
    ":scheme",
    "x-a",
    "x-b",
    "host",
];

fn header_matcher() -> impl Strategy<Value = HeaderMatcher> {
    let rule = prop_oneof![
        string_matcher().prop_map(HeaderMatchRule::String),
        (-2i64..8, -2i64..8).prop_map(|(start, end)| HeaderMatchRule::Range { start, end }),
        any::<bool>().prop_map(HeaderMatchRule::Present),
    ];
    (
        prop::sample::select(HEADER_NAMES.to_vec()),
        rule,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, rule, invert_match, missing)| HeaderMatcher {
            name: name.into(),
            rule,
            invert_match,
            treat_missing_header_as_empty: missing,
        })
}

fn cidr() -> impl Strategy<Value = CidrRange> {
    (
        prop::sample::select(vec!["127.0.0.0", "10.1.2.3", "::1"]),
        0u8..33,
    )
        .prop_map(|(ip, len)| CidrRange::new(ip.parse().unwrap(), len).unwrap())
}

fn permission() -> impl Strategy<Value = Permission> {
    let leaf = prop_oneof![
        Just(Permission::Any),
        header_matcher().prop_map(Permission::Header),
        string_matcher().prop_map(Permission::UrlPath),
        cidr().prop_map(Permission::DestinationIp),
        prop::sample::select(vec![80u16, 8080]).prop_map(Permission::DestinationPort),
        (79u16..82, 80u16..8081)
            .prop_map(|(start, end)| Permission::DestinationPortRange { start, end }),
        string_matcher().prop_map(Permission::RequestedServerName),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Permission::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Permission::Or),
            inner.prop_map(|p| Permission::Not(Box::new(p))),
        ]
    })
}

fn principal() -> impl Strategy<Value = Principal> {
    let leaf = prop_oneof![
        Just(Principal::Any),
        Just(Principal::Authenticated(None)),
        // Exact IDs (indexed by caller), Istio's principal and namespace forms.
        prop::sample::select(PEERS.to_vec()).prop_map(principal::spiffe_id),
        prop::sample::select(PEERS.to_vec()).prop_map(principal::spiffe_id),
        prop::sample::select(vec!["default", "prod", "*", "pro*"])
            .prop_map(principal::istio_namespace),
        string_matcher().prop_map(|m| Principal::Authenticated(Some(m))),
        cidr().prop_map(Principal::DirectRemoteIp),
        cidr().prop_map(Principal::RemoteIp),
        header_matcher().prop_map(Principal::Header),
        string_matcher().prop_map(Principal::UrlPath),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Principal::And),
            prop::collection::vec(inner.clone(), 0..3).prop_map(Principal::Or),
            inner.prop_map(|p| Principal::Not(Box::new(p))),
        ]
    })
}

fn policies() -> impl Strategy<Value = AuthzPolicies> {
    let one = (
        prop::sample::select(vec![
            PolicyAction::Allow,
            PolicyAction::Deny,
            PolicyAction::Audit,
        ]),
        any::<bool>(),
        prop::collection::vec(permission(), 0..3),
        prop::collection::vec(principal(), 0..3),
    );
    prop::collection::vec(one, 0..6).prop_map(|list| {
        AuthzPolicies::new(list.into_iter().enumerate().map(
            |(i, (action, dry_run, permissions, principals))| {
                let name = format!("p{i}");
                let p = AuthzPolicy::new(
                    name.clone(),
                    action,
                    RbacPolicy {
                        name,
                        permissions,
                        principals,
                    },
                );
                if dry_run { p.dry_run() } else { p }
            },
        ))
    })
}

fn request() -> impl Strategy<Value = Request<()>> {
    let header = (
        prop::sample::select(vec!["x-a", "x-b", "host"]),
        prop_oneof![
            text().prop_map(String::into_bytes),
            Just(b"\xff".to_vec()),
            Just(b"7".to_vec()),
        ],
    );
    (
        prop::sample::select(vec!["GET", "POST", "get"]),
        "(/[aAb?#1]{0,4}){1,2}",
        prop::option::of(prop::sample::select(vec!["svc:80", "Svc"])),
        prop::collection::vec(header, 0..4),
        prop::option::of(prop::sample::select(PEERS.to_vec())),
        prop::option::of((
            prop::sample::select(vec!["127.0.0.1:5000", "[::1]:6000", "10.1.2.3:1"]),
            prop::sample::select(vec!["127.0.0.1:80", "10.1.2.3:8080", "[::1]:81"]),
        )),
    )
        .prop_filter_map(
            "a request http can build",
            |(method, path, authority, headers, peer, addrs)| {
                let uri = match authority {
                    Some(a) => format!("http://{a}{path}"),
                    None => path,
                };
                let mut req = Request::builder().method(method).uri(uri).body(()).ok()?;
                for (name, value) in headers {
                    let value = HeaderValue::from_bytes(&value).ok()?;
                    req.headers_mut().append(name, value);
                }
                if let Some(p) = peer {
                    req.extensions_mut()
                        .insert(PeerIdentity(SpiffeId::new(p).ok()?));
                }
                if let Some((remote, local)) = addrs {
                    req.extensions_mut().insert(ConnectionAddrs {
                        remote: remote.parse::<SocketAddr>().ok()?,
                        local: local.parse::<SocketAddr>().ok()?,
                    });
                }
                Some(req)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn compiled_matches_the_reference_evaluator(policies in policies(), req in request()) {
        let fast = policies.check(&req);
        rbac_request(&req, |r| {
            prop_assert_eq!(fast.decision, policies.evaluate(r));
            prop_assert_eq!(fast.shadow, policies.evaluate_shadow(r));
            prop_assert_eq!(fast.audit, policies.audit_match(r));
            Ok(())
        })?;
    }
}

/// Header names are case-insensitive (Envoy lowercases them): the compiled matchers
/// lowercase policy names once, so `X-Tenant` matches the `x-tenant` header.
#[test]
fn header_names_in_policies_are_case_insensitive() {
    let policies = AuthzPolicies::new([AuthzPolicy::new(
        "tenant",
        PolicyAction::Allow,
        RbacPolicy {
            name: "tenant".into(),
            permissions: vec![Permission::Header(HeaderMatcher {
                name: "X-Tenant".into(),
                rule: HeaderMatchRule::Present(true),
                invert_match: false,
                treat_missing_header_as_empty: false,
            })],
            principals: vec![Principal::Any],
        },
    )]);
    let with = Request::get("/").header("x-tenant", "t1").body(()).unwrap();
    let without = Request::get("/").body(()).unwrap();
    assert!(policies.check(&with).decision.is_allowed());
    assert!(!policies.check(&without).decision.is_allowed());
}

/// More distinct header names than the per-request cache has slots: the names past the
/// cache are looked up directly, with the same answers (repeated values joined).
#[test]
fn many_header_names_beyond_the_cache() {
    let header = |i: usize| {
        Permission::Header(HeaderMatcher {
            name: format!("x-h{i}"),
            rule: HeaderMatchRule::String(StringMatcher::Exact {
                value: format!("v{i},w{i}"),
                ignore_case: false,
            }),
            invert_match: false,
            treat_missing_header_as_empty: false,
        })
    };
    let policies = AuthzPolicies::new([AuthzPolicy::new(
        "many",
        PolicyAction::Allow,
        RbacPolicy {
            name: "many".into(),
            permissions: vec![Permission::Or((0..40).map(header).collect())],
            principals: vec![Principal::Any],
        },
    )]);
    for i in [0, 15, 16, 39] {
        let req = Request::get("/")
            .header(format!("x-h{i}"), format!("v{i}"))
            .header(format!("x-h{i}"), format!("w{i}"))
            .body(())
            .unwrap();
        assert!(policies.check(&req).decision.is_allowed(), "x-h{i}");
        let single = Request::get("/")
            .header(format!("x-h{i}"), format!("v{i}"))
            .body(())
            .unwrap();
        assert!(!policies.check(&single).decision.is_allowed(), "x-h{i}");
        rbac_request(&req, |r| assert!(policies.evaluate(r).is_allowed()));
    }
}
