//! `AuthorizationPolicy` as Envoy RBAC HTTP filters, the way istiod's proxyless generator
//! builds them (`grpcgen/lds.go` `buildRBAC`, `security/authz/model` with
//! `Generate(forTCP = false, useAuthenticated = true)`):
//!
//! - one filter `envoy.filters.http.rbac.DENY` with the DENY policies, then one filter
//!   `envoy.filters.http.rbac` with the ALLOW policies; AUDIT is not sent (gRPC only knows
//!   ALLOW and DENY), CUSTOM is rejected by validation;
//! - one RBAC policy per rule, named `<namespace>-<name>-<rule index>`;
//! - a policy's permissions are one AND per `to` (hosts, methods, paths, ports, then the
//!   `when` conditions on the destination), its principals one AND per `from` (principals,
//!   namespaces, ipBlocks, then the `when` conditions on the source); each field is an OR
//!   of its values, its `not*` twin a NOT of an OR.
//!
//! Dry-run policies (`istio.io/dry-run: "true"`) go into `shadow_rules`, as istiod does
//! for Envoy sidecars (its grpcgen ignores the annotation and enforces them).
//!
//! One difference, on purpose: an ALLOW policy without rules (Istio's "allow nothing")
//! yields an ALLOW filter with no policies, which denies every request as Envoy does;
//! istiod's grpcgen drops the empty filter and so allows everything.

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3 as rbac;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::r#type::matcher::v3::{
    PathMatcher, StringMatcher, path_matcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use envoy_types::util::pack_any;

use super::pb;
use crate::istio::api::{Action, AuthorizationPolicy, Rule};
use crate::istio::{MeshConfig, Named, ROOT_NAMESPACE, labels_match};

/// Name of the filter holding the ALLOW policies (istiod's `RBACHTTPFilterName`).
pub(crate) const RBAC_FILTER: &str = "envoy.filters.http.rbac";
/// Name of the filter holding the DENY policies (istiod's `RBACHTTPFilterNameDeny`).
pub(crate) const RBAC_DENY_FILTER: &str = "envoy.filters.http.rbac.DENY";

const SPIFFE: &str = "spiffe://";

/// The policies that select a workload in `namespace` with `labels`: those of its
/// namespace and of the root namespace, without a selector or with one its labels match.
pub(crate) fn selected<'a>(
    config: &'a MeshConfig,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<&'a Named<AuthorizationPolicy>> {
    config
        .authorization_policies
        .iter()
        .filter(|p| p.namespace == namespace || p.namespace == ROOT_NAMESPACE)
        .filter(|p| match &p.spec.selector {
            Some(sel) => labels_match(labels, &sel.match_labels),
            None => true,
        })
        .map(|p| p.as_ref())
        .collect()
}

/// Istio's annotation marking a policy as a dry run.
const DRY_RUN: &str = "istio.io/dry-run";

fn dry_run(p: &Named<AuthorizationPolicy>) -> bool {
    p.annotations
        .get(DRY_RUN)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The RBAC filters for these policies (DENY first, then ALLOW), to put before the router.
/// Dry-run policies (`istio.io/dry-run: "true"`) go into the filters' `shadow_rules`,
/// as for Envoy sidecars: evaluated for stats at most, never enforced.
pub(crate) fn rbac_filters(policies: &[&Named<AuthorizationPolicy>]) -> Vec<hcm::HttpFilter> {
    let of = |action: Action, shadow: bool| -> Vec<&Named<AuthorizationPolicy>> {
        policies
            .iter()
            .copied()
            .filter(|p| p.spec.action == action && dry_run(p) == shadow)
            .collect()
    };
    let mut out = Vec::new();
    for (action, name, pb_action) in [
        (Action::Deny, RBAC_DENY_FILTER, rbac::rbac::Action::Deny),
        (Action::Allow, RBAC_FILTER, rbac::rbac::Action::Allow),
    ] {
        let (enforced, shadow) = (of(action, false), of(action, true));
        let enforced = match action {
            // Kept even without policies: an ALLOW policy with no rule allows nothing.
            Action::Allow => (!enforced.is_empty()).then(|| rules(pb_action, &enforced)),
            _ => Some(rules(pb_action, &enforced)).filter(|r| !r.policies.is_empty()),
        };
        let shadow = Some(rules(pb_action, &shadow)).filter(|r| !r.policies.is_empty());
        if enforced.is_none() && shadow.is_none() {
            continue;
        }
        let prefix = match action {
            Action::Deny => "istio_dry_run_deny_",
            _ => "istio_dry_run_allow_",
        };
        out.push(filter(name, enforced, shadow, prefix));
    }
    out
}

fn filter(
    name: &str,
    rules: Option<rbac::Rbac>,
    shadow_rules: Option<rbac::Rbac>,
    shadow_prefix: &str,
) -> hcm::HttpFilter {
    let shadow_rules_stat_prefix = if shadow_rules.is_some() {
        shadow_prefix.to_owned()
    } else {
        String::new()
    };
    hcm::HttpFilter {
        name: name.into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(pack_any(
            RbacFilter {
                rules,
                shadow_rules,
                shadow_rules_stat_prefix,
                ..Default::default()
            },
        ))),
        ..Default::default()
    }
}

fn rules(action: rbac::rbac::Action, policies: &[&Named<AuthorizationPolicy>]) -> rbac::Rbac {
    let mut out = rbac::Rbac {
        action: action as i32,
        ..Default::default()
    };
    for p in policies {
        for (i, rule) in p.spec.rules.iter().enumerate() {
            // Istio's names: brackets cannot occur in Kubernetes names, so two policies never
            // share one (`a-b`/`c` and `a`/`b-c` would as `a-b-c`).
            let name = format!("ns[{}]-policy[{}]-rule[{i}]", p.namespace, p.name);
            out.policies.insert(name, policy(rule));
        }
    }
    out
}

/// One rule (istiod's `authzmodel.New(rule).Generate(false, true, action)`).
pub(crate) fn policy(rule: &Rule) -> rbac::Policy {
    // `when` conditions split into destination (permission) and source (principal) parts.
    let mut base_permission: Vec<rbac::Permission> = Vec::new();
    let mut base_principal: Vec<rbac::Principal> = Vec::new();
    for c in &rule.when {
        let (values, not) = (&c.values, &c.not_values);
        match c.key.as_str() {
            "destination.ip" => perm_rule(&mut base_permission, values, not, dest_ip),
            "destination.port" => perm_rule(&mut base_permission, values, not, dest_port),
            "source.ip" => princ_rule(&mut base_principal, values, not, source_ip),
            "source.namespace" => princ_rule(&mut base_principal, values, not, namespace),
            "source.principal" => princ_rule(&mut base_principal, values, not, principal),
            key => {
                // Validation only lets the keys above and request headers through.
                if let Some(header) = key
                    .strip_prefix("request.headers[")
                    .and_then(|k| k.strip_suffix(']'))
                {
                    princ_rule(&mut base_principal, values, not, |v| {
                        Some(principal_of(rbac::principal::Identifier::Header(
                            header_matcher(header, v, false),
                        )))
                    });
                }
            }
        }
    }
    let principals = if rule.from.is_empty() {
        vec![and_principals(base_principal.clone())]
    } else {
        rule.from
            .iter()
            .map(|f| {
                let s = &f.source;
                let mut and = Vec::new();
                princ_rule(&mut and, &s.principals, &s.not_principals, principal);
                princ_rule(&mut and, &s.namespaces, &s.not_namespaces, namespace);
                princ_rule(&mut and, &s.ip_blocks, &s.not_ip_blocks, source_ip);
                and.extend(base_principal.iter().cloned());
                and_principals(and)
            })
            .collect()
    };
    let permissions = if rule.to.is_empty() {
        vec![and_permissions(base_permission.clone())]
    } else {
        rule.to
            .iter()
            .map(|t| {
                let o = &t.operation;
                let mut and = Vec::new();
                perm_rule(&mut and, &o.hosts, &o.not_hosts, |v| {
                    Some(header_permission(header_matcher(":authority", v, true)))
                });
                perm_rule(&mut and, &o.methods, &o.not_methods, |v| {
                    Some(header_permission(header_matcher(":method", v, false)))
                });
                perm_rule(&mut and, &o.paths, &o.not_paths, |v| {
                    Some(permission_of(rbac::permission::Rule::UrlPath(
                        PathMatcher {
                            rule: Some(path_matcher::Rule::Path(string_matcher(v, ""))),
                        },
                    )))
                });
                perm_rule(&mut and, &o.ports, &o.not_ports, dest_port);
                and.extend(base_permission.iter().cloned());
                and_permissions(and)
            })
            .collect()
    };
    rbac::Policy {
        permissions,
        principals,
        ..Default::default()
    }
}

/// Appends `Or(values)` and `Not(Or(not_values))`, skipping empty lists and values that do
/// not convert (validation has rejected those already).
fn perm_rule(
    and: &mut Vec<rbac::Permission>,
    values: &[String],
    not_values: &[String],
    f: impl Fn(&str) -> Option<rbac::Permission>,
) {
    use rbac::permission::Rule;
    let or = |vs: &[String]| -> Option<rbac::Permission> {
        let rules: Vec<_> = vs.iter().filter_map(|v| f(v)).collect();
        (!rules.is_empty()).then(|| permission_of(Rule::OrRules(rbac::permission::Set { rules })))
    };
    and.extend(or(values));
    if let Some(p) = or(not_values) {
        and.push(permission_of(Rule::NotRule(Box::new(p))));
    }
}

fn princ_rule(
    and: &mut Vec<rbac::Principal>,
    values: &[String],
    not_values: &[String],
    f: impl Fn(&str) -> Option<rbac::Principal>,
) {
    use rbac::principal::Identifier;
    let or = |vs: &[String]| -> Option<rbac::Principal> {
        let ids: Vec<_> = vs.iter().filter_map(|v| f(v)).collect();
        (!ids.is_empty()).then(|| principal_of(Identifier::OrIds(rbac::principal::Set { ids })))
    };
    and.extend(or(values));
    if let Some(p) = or(not_values) {
        and.push(principal_of(Identifier::NotId(Box::new(p))));
    }
}

fn and_permissions(mut rules: Vec<rbac::Permission>) -> rbac::Permission {
    if rules.is_empty() {
        rules.push(permission_of(rbac::permission::Rule::Any(true)));
    }
    permission_of(rbac::permission::Rule::AndRules(rbac::permission::Set {
        rules,
    }))
}

fn and_principals(mut ids: Vec<rbac::Principal>) -> rbac::Principal {
    if ids.is_empty() {
        ids.push(principal_of(rbac::principal::Identifier::Any(true)));
    }
    principal_of(rbac::principal::Identifier::AndIds(rbac::principal::Set {
        ids,
    }))
}

fn permission_of(rule: rbac::permission::Rule) -> rbac::Permission {
    rbac::Permission { rule: Some(rule) }
}

fn principal_of(id: rbac::principal::Identifier) -> rbac::Principal {
    rbac::Principal {
        identifier: Some(id),
    }
}

fn header_permission(h: HeaderMatcher) -> rbac::Permission {
    permission_of(rbac::permission::Rule::Header(h))
}

fn authenticated(m: StringMatcher) -> rbac::Principal {
    principal_of(rbac::principal::Identifier::Authenticated(
        rbac::principal::Authenticated {
            principal_name: Some(m),
        },
    ))
}

/// `source.principals` (`srcPrincipalGenerator`): the value with `spiffe://` in front.
fn principal(v: &str) -> Option<rbac::Principal> {
    Some(authenticated(string_matcher(v, SPIFFE)))
}

/// `source.namespaces` (`srcNamespaceGenerator`): `.*/ns/<ns>/.*`, `*` standing for `.*`.
fn namespace(v: &str) -> Option<rbac::Principal> {
    let ns = v.split('*').map(quote_meta).collect::<Vec<_>>().join(".*");
    Some(authenticated(regex_matcher(&format!(".*/ns/{ns}/.*"))))
}

fn source_ip(v: &str) -> Option<rbac::Principal> {
    cidr(v).map(|c| principal_of(rbac::principal::Identifier::DirectRemoteIp(c)))
}

fn dest_ip(v: &str) -> Option<rbac::Permission> {
    cidr(v).map(|c| permission_of(rbac::permission::Rule::DestinationIp(c)))
}

fn dest_port(v: &str) -> Option<rbac::Permission> {
    let port: u16 = v.parse().ok()?;
    Some(permission_of(rbac::permission::Rule::DestinationPort(
        u32::from(port),
    )))
}

/// `10.0.0.1` (a host prefix) or `10.0.0.0/8`.
fn cidr(v: &str) -> Option<CidrRange> {
    let (ip, len) = match v.split_once('/') {
        Some((ip, len)) => (ip, Some(len.parse::<u32>().ok()?)),
        None => (v, None),
    };
    let ip: std::net::IpAddr = ip.parse().ok()?;
    let len = len.unwrap_or(if ip.is_ipv4() { 32 } else { 128 });
    Some(CidrRange {
        address_prefix: ip.to_string(),
        prefix_len: Some(UInt32Value { value: len }),
    })
}

/// istiod's `StringMatcherWithPrefix`: `*` any non-empty value, `*x` a suffix, `x*` a
/// prefix, else exact; `prefix` goes in front of the value.
fn string_matcher(v: &str, prefix: &str) -> StringMatcher {
    let pattern = if v == "*" {
        return regex_matcher(".+");
    } else if let Some(suffix) = v.strip_prefix('*') {
        if prefix.is_empty() {
            MatchPattern::Suffix(suffix.into())
        } else {
            return regex_matcher(&format!("{prefix}.*{}", quote_meta(suffix)));
        }
    } else if let Some(p) = v.strip_suffix('*') {
        MatchPattern::Prefix(format!("{prefix}{p}"))
    } else {
        MatchPattern::Exact(format!("{prefix}{v}"))
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case: false,
    }
}

fn regex_matcher(re: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(pb::regex(re))),
        ignore_case: false,
    }
}

/// istiod's `HeaderMatcher` / `HostMatcher` (`ignore_case` for hosts): `*` means present.
fn header_matcher(name: &str, v: &str, ignore_case: bool) -> HeaderMatcher {
    use header_matcher::HeaderMatchSpecifier as S;
    let spec = if v == "*" {
        S::PresentMatch(true)
    } else {
        let pattern = if let Some(s) = v.strip_prefix('*') {
            MatchPattern::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            MatchPattern::Prefix(p.into())
        } else {
            MatchPattern::Exact(v.into())
        };
        S::StringMatch(StringMatcher {
            match_pattern: Some(pattern),
            ignore_case,
        })
    };
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(spec),
        ..Default::default()
    }
}

/// Go's `regexp.QuoteMeta`.
fn quote_meta(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
