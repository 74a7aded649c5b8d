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
//! - rules the translation could not model ([`RbacFilter::Unmodelled`]) deny every request
//!   (fail closed), unless the filter only logs.

use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction};
use mesh_core::model::{
    HttpConnectionManager, HttpFilterConfig, Permission, Principal, RbacAction, RbacFilter,
    RbacPolicy,
};

/// The policies of the RBAC filters of `hcm`, in the order of its filter list.
pub fn authz_policies(hcm: &HttpConnectionManager) -> AuthzPolicies {
    let mut out = Vec::new();
    let mut allow_filters: Vec<(&str, &[RbacPolicy])> = Vec::new();
    for f in &hcm.http_filters {
        let HttpFilterConfig::Rbac(rbac) = &f.config else {
            continue;
        };
        match rbac {
            RbacFilter::NoRules => {}
            RbacFilter::Rules(rules) => match rules.action {
                RbacAction::Allow => allow_filters.push((&f.name, &rules.policies)),
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
            RbacFilter::Unmodelled {
                action: RbacAction::Log,
                ..
            } => {}
            RbacFilter::Unmodelled { reason, .. } => {
                let name = format!("{}: unsupported rules, denying all: {reason}", f.name);
                tracing::warn!(filter = %f.name, %reason, "RBAC rules cannot be evaluated; denying every request");
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
    AuthzPolicies::new(out)
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
    use mesh_core::model::{HttpFilter, RbacRequest, RbacRules, RouteSource, StringMatcher};
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
            config: HttpFilterConfig::Router,
        });
        HttpConnectionManager {
            route_source: RouteSource::Inline(Arc::new(Default::default())),
            http_filters,
            max_stream_duration: None,
            idle_timeout: None,
            xff_num_trusted_hops: 0,
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

    fn rules(action: RbacAction, policies: Vec<RbacPolicy>) -> RbacFilter {
        RbacFilter::Rules(RbacRules { action, policies })
    }

    fn allowed(p: &AuthzPolicies, path: &'static str) -> bool {
        let req = RbacRequest {
            headers: vec![(":method", "GET"), (":path", path)],
            ..Default::default()
        };
        p.evaluate(&req).is_allowed()
    }

    /// The reference: every filter on its own, all must allow.
    fn envoy(h: &HttpConnectionManager, path: &'static str) -> bool {
        let req = RbacRequest {
            headers: vec![(":method", "GET"), (":path", path)],
            ..Default::default()
        };
        h.http_filters.iter().all(|f| match &f.config {
            HttpFilterConfig::Rbac(r) => r.allows(&req),
            _ => true,
        })
    }

    #[test]
    fn matches_envoy_filter_by_filter_semantics() {
        let cases = [
            hcm(vec![]),
            hcm(vec![("rbac", RbacFilter::NoRules)]),
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
                RbacFilter::Unmodelled {
                    action: RbacAction::Allow,
                    policy_names: vec![],
                    reason: "metadata".into(),
                },
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
            RbacFilter::Unmodelled {
                action: RbacAction::Log,
                policy_names: vec![],
                reason: "metadata".into(),
            },
        )]);
        assert!(allowed(&authz_policies(&log), "/"));
    }
}
