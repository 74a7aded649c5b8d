//! Authorization cost per request with a 100-rule policy (target <= 2 us).
//!
//! `cargo bench -p mesh-authz --bench authz`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction, principal, rbac_request};
use mesh_core::SpiffeId;
use mesh_core::extensions::PeerIdentity;
use mesh_core::model::{HeaderMatchRule, HeaderMatcher, Permission, RbacPolicy, StringMatcher};

/// 1 DENY and 100 ALLOW rules, each a method + path prefix + service-account principal;
/// the request matches only the last one, so the reference evaluator runs every rule. With
/// exact principals the compiled set's caller index skips to the one rule naming the
/// caller; with `wildcard` the principals are `client-<i>*` prefixes, which the index cannot
/// use, so the compiled matchers run every rule too.
fn hundred_rules(wildcard: bool) -> AuthzPolicies {
    let rules = (0..100).map(|i| {
        let name = format!("ns[default]-policy[p{i}]-rule[0]");
        AuthzPolicy::new(
            name.clone(),
            PolicyAction::Allow,
            RbacPolicy {
                name,
                permissions: vec![Permission::And(vec![
                    Permission::Header(HeaderMatcher {
                        name: ":method".into(),
                        rule: HeaderMatchRule::String(StringMatcher::Exact {
                            value: "GET".into(),
                            ignore_case: false,
                        }),
                        invert_match: false,
                        treat_missing_header_as_empty: false,
                    }),
                    Permission::UrlPath(StringMatcher::Prefix {
                        value: format!("/api/v{i}/"),
                        ignore_case: false,
                    }),
                ])],
                principals: vec![principal::istio(&format!(
                    "cluster.local/ns/default/sa/client-{i}{}",
                    if wildcard { "*" } else { "" }
                ))],
            },
        )
    });
    let deny = AuthzPolicy::new(
        "deny-admin",
        PolicyAction::Deny,
        RbacPolicy {
            name: "deny-admin".into(),
            permissions: vec![Permission::UrlPath(StringMatcher::Prefix {
                value: "/admin".into(),
                ignore_case: false,
            })],
            principals: vec![principal::not(principal::istio_namespace("default"))],
        },
    );
    AuthzPolicies::new(std::iter::once(deny).chain(rules))
}

fn bench(c: &mut Criterion) {
    let policies = hundred_rules(false);
    let mut req = Request::builder()
        .method("GET")
        .uri("/api/v99/items?page=2")
        .header("host", "reviews.default.svc:9080")
        .header("user-agent", "bench")
        .header("accept", "application/json")
        .header("x-request-id", "4bf92f3577b34da6a3ce929d0e0e4736")
        .body(())
        .unwrap();
    req.extensions_mut().insert(PeerIdentity(
        SpiffeId::new("spiffe://cluster.local/ns/default/sa/client-99").unwrap(),
    ));
    assert!(rbac_request(&req, |r| policies.evaluate(r).is_allowed()));
    assert!(policies.check(&req).decision.is_allowed());
    let mut group = c.benchmark_group("authz 100 rules (match last)");
    // What the layer runs: the compiled matchers over a per-request view.
    group.bench_function("compiled", |b| {
        b.iter(|| policies.check(black_box(&req)).decision.is_allowed())
    });
    // mesh-core's reference evaluator over `rbac_request` (the layer's path before the
    // matchers were compiled), kept to measure before/after in the same run.
    group.bench_function("reference", |b| {
        b.iter(|| rbac_request(black_box(&req), |r| policies.evaluate(r).is_allowed()))
    });
    // A caller that no exact principal names: the index yields no candidate.
    let mut stranger = req.clone();
    stranger.extensions_mut().insert(PeerIdentity(
        SpiffeId::new("spiffe://cluster.local/ns/default/sa/stranger").unwrap(),
    ));
    assert!(!policies.check(&stranger).decision.is_allowed());
    group.bench_function("compiled, denied caller", |b| {
        b.iter(|| policies.check(black_box(&stranger)).decision.is_allowed())
    });
    // Prefix principals: no index, all 101 rules run through the compiled matchers.
    let wildcards = hundred_rules(true);
    assert!(wildcards.check(&req).decision.is_allowed());
    group.bench_function("compiled, unindexed", |b| {
        b.iter(|| wildcards.check(black_box(&req)).decision.is_allowed())
    });
    group.bench_function("reference, unindexed", |b| {
        b.iter(|| rbac_request(black_box(&req), |r| wildcards.evaluate(r).is_allowed()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
