//! A filter chain's RBAC HTTP filters as one [`AuthzPolicies`] set.
//!
//! Envoy runs each RBAC filter on its own and a request must pass all of them. Istio sends
//! at most a DENY filter and an ALLOW filter, which map one to one onto mesh-authz's order
//! (DENY first, then ALLOW). In general:
//!
//! - DENY filters: their policies become DENY policies;
//! - LOG filters: AUDIT policies;
//! - one ALLOW filter: its policies become the ALLOW policies; an ALLOW filter without
//!   policies allows nothing (a policy that never matches);
//! - several ALLOW filters: a request must match a policy of each, so the ALLOW policies
//!   are the combinations (one policy of each filter, permissions AND-ed, principals
//!   AND-ed);
//! - rules the translation could not model ([`RbacRuleSet::Unmodelled`]) deny every request
//!   (fail closed), unless the filter only logs.
//!
//! The filters' `shadow_rules` (Istio's `istio.io/dry-run` policies) map the same way onto
//! dry-run policies ([`AuthzPolicy::dry_run`]), so the shadow decision is "some filter's
//! shadow rules would deny"; they never change the enforced decision. Shadow rules that
//! only log, or that the translation could not model, are not evaluated.

use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction};
use mesh_core::model::{
    HttpConnectionManager, HttpFilterConfig, Permission, Principal, RbacAction, RbacPolicy,
    RbacRuleSet,
};

/// The policies of the RBAC filters of `hcm`, in the order of its filter list: the
/// enforced `rules`, then the `shadow_rules` as dry-run policies.
pub fn authz_policies(hcm: &HttpConnectionManager) -> AuthzPolicies {
    let filters: Vec<_> = hcm
        .http_filters
        .iter()
        .filter_map(|f| match &f.config {
            HttpFilterConfig::Rbac(rbac) => Some((f.name.as_str(), rbac)),
            _ => None,
        })
        .collect();
    let enforced = rule_set_policies(filters.iter().map(|(name, f)| (*name, &f.rules)));
    let shadow = shadow_policies(filters.iter().map(|(name, f)| (*name, &f.shadow_rules)));
    AuthzPolicies::new(enforced.into_iter().chain(shadow))
}

/// The policies of one rule set of each filter (its `rules`, or its ALLOW/DENY
/// `shadow_rules`), in filter order.
fn rule_set_policies<'a>(
    sets: impl Iterator<Item = (&'a str, &'a RbacRuleSet)>,
) -> Vec<AuthzPolicy> {
    let mut out = Vec::new();
    let mut allow_filters: Vec<(&str, &[RbacPolicy])> = Vec::new();
    for (filter, rules) in sets {
        match rules {
            RbacRuleSet::NoRules => {}
            RbacRuleSet::Rules(rules) => match rules.action {
                RbacAction::Allow => allow_filters.push((filter, &rules.policies)),
                RbacAction::Deny => out.extend(
                    rules
                        .policies
                        .iter()
                        .map(|p| AuthzPolicy::new(&p.name, PolicyAction::Deny, p.clone())),
                ),
                RbacAction::Log => out.extend(
                    rules
                        .policies
                        .iter()
                        .map(|p| AuthzPolicy::new(&p.name, PolicyAction::Audit, p.clone())),
                ),
            },
            RbacRuleSet::Unmodelled {
                action: RbacAction::Log,
                ..
            } => {}
            RbacRuleSet::Unmodelled { reason, .. } => {
                let name = format!("{filter}: unsupported rules, denying all: {reason}");
                tracing::warn!(%filter, %reason, "RBAC rules cannot be evaluated; denying every request");
                out.push(AuthzPolicy::new(
                    name.clone(),
                    PolicyAction::Deny,
                    RbacPolicy {
                        name,
                        permissions: vec![Permission::Any],
                        principals: vec![Principal::Any],
                    },
                ));
            }
        }
    }
    if !allow_filters.is_empty() {
        let combined = combine(&allow_filters);
        if combined.is_empty() {
            // ALLOW with no policy: nothing is allowed.
            let name = format!("{}: no ALLOW policy", allow_filters[0].0);
            out.push(AuthzPolicy::new(
                name.clone(),
                PolicyAction::Allow,
                RbacPolicy {
                    name,
                    permissions: vec![],
                    principals: vec![],
                },
            ));
        }
        out.extend(
            combined
                .into_iter()
                .map(|p| AuthzPolicy::new(p.name.clone(), PolicyAction::Allow, p)),
        );
    }
    out
}

/// The shadow rule sets of the filters as dry-run policies: ALLOW and DENY rules as the
/// enforced ones would be; LOG and unmodelled rules are not evaluated.
fn shadow_policies<'a>(
    sets: impl Iterator<Item = (&'a str, &'a RbacRuleSet)>,
) -> impl Iterator<Item = AuthzPolicy> {
    let evaluated = sets.filter(|(filter, rules)| match rules {
        RbacRuleSet::Rules(r) => r.action != RbacAction::Log,
        RbacRuleSet::NoRules => false,
        RbacRuleSet::Unmodelled { reason, .. } => {
            tracing::warn!(%filter, %reason, "RBAC shadow rules cannot be evaluated; ignored");
            false
        }
    });
    rule_set_policies(evaluated)
        .into_iter()
        .map(AuthzPolicy::dry_run)
}

/// One policy per combination of a policy from each ALLOW filter.
fn combine(filters: &[(&str, &[RbacPolicy])]) -> Vec<RbacPolicy> {
    let Some(((_, first), rest)) = filters.split_first() else {
        return Vec::new();
    };
    let mut acc: Vec<RbacPolicy> = first.to_vec();
    for (_, policies) in rest {
        let mut next = Vec::with_capacity(acc.len() * policies.len());
        for a in &acc {
            for b in policies.iter() {
                next.push(RbacPolicy {
                    name: format!("{}&{}", a.name, b.name),
                    permissions: vec![Permission::And(vec![
                        Permission::Or(a.permissions.clone()),
                        Permission::Or(b.permissions.clone()),
                    ])],
                    principals: vec![Principal::And(vec![
                        Principal::Or(a.principals.clone()),
                        Principal::Or(b.principals.clone()),
                    ])],
                });
            }
        }
        acc = next;
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::{
        HttpFilter, RbacFilter, RbacRequest, RbacRules, RouteSource, StringMatcher,
    };
    use std::sync::Arc;

    fn hcm(filters: Vec<(&str, RbacFilter)>) -> HttpConnectionManager {
        let mut http_filters: Vec<HttpFilter> = filters
            .into_iter()
            .map(|(n, f)| HttpFilter {
                name: n.into(),
                config: HttpFilterConfig::Rbac(f),
            })
            .collect();
        http_filters.push(HttpFilter {
            name: "router".into(),
            config: HttpFilterConfig::Router(Default::default()),
        });
        HttpConnectionManager {
            route_source: RouteSource::Inline(Arc::new(Default::default())),
            http_filters,
            max_stream_duration: None,
            idle_timeout: None,
            xff_num_trusted_hops: 0,
            path_normalization: Default::default(),
        }
    }

    fn path_policy(name: &str, prefix: &str) -> RbacPolicy {
        RbacPolicy {
            name: name.into(),
            permissions: vec![Permission::UrlPath(StringMatcher::Prefix {
                value: prefix.into(),
                ignore_case: false,
            })],
            principals: vec![Principal::Any],
        }
    }

    fn rule_set(action: RbacAction, policies: Vec<RbacPolicy>) -> RbacRuleSet {
        RbacRuleSet::Rules(RbacRules { action, policies })
    }

    fn rules(action: RbacAction, policies: Vec<RbacPolicy>) -> RbacFilter {
        rule_set(action, policies).into()
    }

    fn request(path: &'static str) -> RbacRequest<'static> {
        RbacRequest {
            headers: vec![(":method", "GET"), (":path", path)],
            ..Default::default()
        }
    }

    fn allowed(p: &AuthzPolicies, path: &'static str) -> bool {
        p.evaluate(&request(path)).is_allowed()
    }

    /// The reference: every filter on its own, all must allow.
    fn envoy(h: &HttpConnectionManager, path: &'static str) -> bool {
        h.http_filters.iter().all(|f| match &f.config {
            HttpFilterConfig::Rbac(r) => r.allows(&request(path)),
            _ => true,
        })
    }

    /// The shadow reference: every filter's shadow rules on their own, all must allow.
    fn envoy_shadow(h: &HttpConnectionManager, path: &'static str) -> bool {
        h.http_filters.iter().all(|f| match &f.config {
            HttpFilterConfig::Rbac(r) => r.shadow_rules.allows(&request(path)),
            _ => true,
        })
    }

    #[test]
    fn matches_envoy_filter_by_filter_semantics() {
        let cases = [
            hcm(vec![]),
            hcm(vec![("rbac", RbacFilter::default())]),
            hcm(vec![
                (
                    "deny",
                    rules(RbacAction::Deny, vec![path_policy("d", "/admin")]),
                ),
                (
                    "allow",
                    rules(RbacAction::Allow, vec![path_policy("a", "/api")]),
                ),
            ]),
            hcm(vec![("allow", rules(RbacAction::Allow, vec![]))]),
            hcm(vec![("deny", rules(RbacAction::Deny, vec![]))]),
            hcm(vec![(
                "log",
                rules(RbacAction::Log, vec![path_policy("l", "/")]),
            )]),
            hcm(vec![
                (
                    "a1",
                    rules(
                        RbacAction::Allow,
                        vec![path_policy("x", "/api"), path_policy("y", "/web")],
                    ),
                ),
                (
                    "a2",
                    rules(RbacAction::Allow, vec![path_policy("z", "/api/v2")]),
                ),
            ]),
            hcm(vec![(
                "u",
                RbacRuleSet::Unmodelled {
                    action: RbacAction::Allow,
                    policy_names: vec![],
                    reason: "metadata".into(),
                }
                .into(),
            )]),
        ];
        for (i, h) in cases.iter().enumerate() {
            let p = authz_policies(h);
            for path in ["/", "/api", "/api/v2/x", "/web", "/admin"] {
                assert_eq!(allowed(&p, path), envoy(h, path), "case {i} path {path}");
            }
        }
        // A LOG filter never denies, even with rules we cannot evaluate.
        let log = hcm(vec![(
            "u",
            RbacRuleSet::Unmodelled {
                action: RbacAction::Log,
                policy_names: vec![],
                reason: "metadata".into(),
            }
            .into(),
        )]);
        assert!(allowed(&authz_policies(&log), "/"));
    }

    #[test]
    fn shadow_rules_are_dry_run_policies() {
        let shadow = |name: &str, enforced: RbacRuleSet, shadow: RbacRuleSet| {
            (
                name.to_owned(),
                RbacFilter {
                    rules: enforced,
                    shadow_rules: shadow,
                    shadow_rules_stat_prefix: "istio_dry_run_".into(),
                },
            )
        };
        let deny_admin = || rule_set(RbacAction::Deny, vec![path_policy("d", "/admin")]);
        let allow_api = || rule_set(RbacAction::Allow, vec![path_policy("a", "/api")]);
        let cases = [
            // Istio's dry-run DENY and dry-run ALLOW filters.
            vec![shadow("deny", RbacRuleSet::NoRules, deny_admin())],
            vec![shadow("allow", RbacRuleSet::NoRules, allow_api())],
            vec![
                shadow("deny", RbacRuleSet::NoRules, deny_admin()),
                shadow("allow", RbacRuleSet::NoRules, allow_api()),
            ],
            // Enforced and dry-run side by side, in both directions.
            vec![shadow("deny", deny_admin(), allow_api())],
            vec![shadow("allow", allow_api(), deny_admin())],
            // A dry-run ALLOW without policies would deny everything.
            vec![shadow(
                "allow",
                RbacRuleSet::NoRules,
                rule_set(RbacAction::Allow, vec![]),
            )],
            // Two dry-run ALLOW filters: a request must match both.
            vec![
                shadow("a1", RbacRuleSet::NoRules, allow_api()),
                shadow(
                    "a2",
                    RbacRuleSet::NoRules,
                    rule_set(RbacAction::Allow, vec![path_policy("z", "/api/v2")]),
                ),
            ],
        ];
        for (i, filters) in cases.iter().enumerate() {
            let h = hcm(filters
                .iter()
                .map(|(n, f)| (n.as_str(), f.clone()))
                .collect());
            let p = authz_policies(&h);
            assert!(p.has_shadow(), "case {i}");
            for path in ["/", "/api", "/api/v2/x", "/admin"] {
                assert_eq!(allowed(&p, path), envoy(&h, path), "case {i} path {path}");
                let shadow = p.evaluate_shadow(&request(path)).unwrap();
                assert_eq!(
                    shadow.is_allowed(),
                    envoy_shadow(&h, path),
                    "case {i} path {path}: shadow"
                );
            }
        }
        // Shadow rules that only log or cannot be evaluated are not evaluated (and never
        // deny).
        let h = hcm(vec![
            (
                "log",
                RbacFilter {
                    shadow_rules: rule_set(RbacAction::Log, vec![path_policy("l", "/")]),
                    ..RbacFilter::default()
                },
            ),
            (
                "u",
                RbacFilter {
                    shadow_rules: RbacRuleSet::Unmodelled {
                        action: RbacAction::Deny,
                        policy_names: vec![],
                        reason: "metadata".into(),
                    },
                    ..RbacFilter::default()
                },
            ),
        ]);
        let p = authz_policies(&h);
        assert!(p.is_empty(), "{p:?}");
        assert!(allowed(&p, "/admin"));
    }
}
