//! The RBAC HTTP filter (`envoy.extensions.filters.http.rbac.v3.RBAC`, the gRPC A41 subset).
//!
//! Malformed values (a regex that does not compile, a bad CIDR) are rejected. Features we do
//! not evaluate (metadata, filter state, CEL conditions, custom matchers) do not reject the
//! listener, since Istio sends them for JWT rules: the rule set becomes
//! [`RbacRuleSet::Unmodelled`], which the server enforces as deny-all (fail closed).
//! `shadow_rules` are translated the same way (a malformed shadow rule rejects too).

use envoy_types::pb::envoy::config::rbac::v3 as pb;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as RbacFilterProto;
use envoy_types::pb::envoy::r#type::matcher::v3::PathMatcher;
use mesh_core::model::{
    Permission, Principal, RbacAction, RbacFilter, RbacPolicy, RbacRuleSet, RbacRules,
    StringMatcher,
};

use super::matcher::{cidr, header_matcher, string_matcher};
use super::{At, Invalid, Res, bail};

enum Fail {
    /// Malformed: reject the resource.
    Invalid(Invalid),
    /// Valid but not evaluated here: fail closed.
    Unsupported(String),
}

impl From<Invalid> for Fail {
    fn from(e: Invalid) -> Self {
        Fail::Invalid(e)
    }
}

type R<T> = Result<T, Fail>;

fn unsupported<T>(what: &str) -> R<T> {
    Err(Fail::Unsupported(what.to_owned()))
}

/// Translates the RBAC filter config: `rules` and `shadow_rules` alike (shadow rules are
/// carried for evaluation into stats and logs; they never change a decision).
pub fn rbac_filter(r: &RbacFilterProto) -> Res<RbacFilter> {
    if r.matcher.is_some() {
        return bail("matcher (RBAC matcher tree) is not supported");
    }
    if r.shadow_matcher.is_some() {
        return bail("shadow_matcher (RBAC matcher tree) is not supported");
    }
    Ok(RbacFilter {
        rules: rule_set(r.rules.as_ref()).at(".rules")?,
        shadow_rules: rule_set(r.shadow_rules.as_ref()).at(".shadow_rules")?,
        shadow_rules_stat_prefix: r.shadow_rules_stat_prefix.clone(),
    })
}

fn rule_set(rules: Option<&pb::Rbac>) -> Res<RbacRuleSet> {
    let Some(rules) = rules else {
        return Ok(RbacRuleSet::NoRules);
    };
    let action = match pb::rbac::Action::try_from(rules.action) {
        Ok(pb::rbac::Action::Allow) => RbacAction::Allow,
        Ok(pb::rbac::Action::Deny) => RbacAction::Deny,
        Ok(pb::rbac::Action::Log) => RbacAction::Log,
        Err(_) => return bail(format!("action {} is unknown", rules.action)),
    };
    let mut names: Vec<&String> = rules.policies.keys().collect();
    names.sort();
    let mut policies = Vec::with_capacity(names.len());
    for name in &names {
        let p = &rules.policies[*name];
        match policy(name, p) {
            Ok(p) => policies.push(p),
            Err(Fail::Invalid(e)) => return Err(e.at(format!(".policies[{name:?}]"))),
            Err(Fail::Unsupported(reason)) => {
                return Ok(RbacRuleSet::Unmodelled {
                    action,
                    policy_names: names.iter().map(|n| (*n).clone()).collect(),
                    reason: format!("policy {name:?}: {reason}"),
                });
            }
        }
    }
    Ok(RbacRuleSet::Rules(RbacRules { action, policies }))
}

fn policy(name: &str, p: &pb::Policy) -> R<RbacPolicy> {
    if p.condition.is_some() || p.checked_condition.is_some() {
        return unsupported("CEL condition");
    }
    let permissions = p
        .permissions
        .iter()
        .enumerate()
        .map(|(i, x)| permission(x).map_err(|e| at(e, format!(".permissions[{i}]"))))
        .collect::<R<Vec<_>>>()?;
    let principals = p
        .principals
        .iter()
        .enumerate()
        .map(|(i, x)| principal(x).map_err(|e| at(e, format!(".principals[{i}]"))))
        .collect::<R<Vec<_>>>()?;
    Ok(RbacPolicy {
        name: name.to_owned(),
        permissions,
        principals,
    })
}

fn at(e: Fail, seg: String) -> Fail {
    match e {
        Fail::Invalid(i) => Fail::Invalid(i.at(seg)),
        u => u,
    }
}

fn path_matcher(p: &PathMatcher) -> R<StringMatcher> {
    use envoy_types::pb::envoy::r#type::matcher::v3::path_matcher::Rule;
    match &p.rule {
        Some(Rule::Path(m)) => Ok(string_matcher(m).at(".url_path.path")?),
        None => Err(Invalid::new("url_path.path is required").into()),
    }
}

fn permission(p: &pb::Permission) -> R<Permission> {
    use pb::permission::Rule;
    Ok(match &p.rule {
        None => return Err(Invalid::new("rule is required").into()),
        Some(Rule::AndRules(s)) => {
            Permission::And(s.rules.iter().map(permission).collect::<R<Vec<_>>>()?)
        }
        Some(Rule::OrRules(s)) => {
            Permission::Or(s.rules.iter().map(permission).collect::<R<Vec<_>>>()?)
        }
        Some(Rule::Any(true)) => Permission::Any,
        Some(Rule::Any(false)) => return Err(Invalid::new("any must be true").into()),
        Some(Rule::Header(h)) => Permission::Header(header_matcher(h).at(".header")?),
        Some(Rule::UrlPath(u)) => Permission::UrlPath(path_matcher(u)?),
        Some(Rule::DestinationIp(c)) => Permission::DestinationIp(cidr(c).at(".destination_ip")?),
        Some(Rule::DestinationPort(port)) => Permission::DestinationPort(
            u16::try_from(*port)
                .map_err(|_| Invalid::new(format!("destination_port {port} is out of range")))?,
        ),
        Some(Rule::DestinationPortRange(r)) => {
            let conv = |v: i32| u16::try_from(v).ok();
            match (conv(r.start), conv(r.end)) {
                (Some(start), Some(end)) if start <= end => {
                    Permission::DestinationPortRange { start, end }
                }
                _ => {
                    return Err(Invalid::new(format!(
                        "destination_port_range [{}, {}) is not a port range",
                        r.start, r.end
                    ))
                    .into());
                }
            }
        }
        Some(Rule::NotRule(inner)) => Permission::Not(Box::new(permission(inner)?)),
        // The server does not hand the connection's SNI to RBAC: a rule on it would see
        // none on TLS connections too, so it fails closed (Istio's `connection.sni`).
        Some(Rule::RequestedServerName(_)) => {
            return unsupported("requested_server_name permission (the SNI is not read)");
        }
        Some(Rule::Metadata(_)) => return unsupported("metadata permission"),
        Some(Rule::Matcher(_)) => return unsupported("custom permission matcher"),
        Some(Rule::UriTemplate(_)) => return unsupported("uri_template permission"),
        Some(Rule::SourcedMetadata(_)) => return unsupported("sourced_metadata permission"),
    })
}

fn principal(p: &pb::Principal) -> R<Principal> {
    use pb::principal::Identifier as I;
    Ok(match &p.identifier {
        None => return Err(Invalid::new("identifier is required").into()),
        Some(I::AndIds(s)) => Principal::And(s.ids.iter().map(principal).collect::<R<Vec<_>>>()?),
        Some(I::OrIds(s)) => Principal::Or(s.ids.iter().map(principal).collect::<R<Vec<_>>>()?),
        Some(I::Any(true)) => Principal::Any,
        Some(I::Any(false)) => return Err(Invalid::new("any must be true").into()),
        Some(I::Authenticated(a)) => Principal::Authenticated(
            a.principal_name
                .as_ref()
                .map(string_matcher)
                .transpose()
                .at(".authenticated.principal_name")?,
        ),
        Some(I::SourceIp(c)) | Some(I::DirectRemoteIp(c)) => {
            Principal::DirectRemoteIp(cidr(c).at(".direct_remote_ip")?)
        }
        Some(I::RemoteIp(c)) => Principal::RemoteIp(cidr(c).at(".remote_ip")?),
        Some(I::Header(h)) => Principal::Header(header_matcher(h).at(".header")?),
        Some(I::UrlPath(u)) => Principal::UrlPath(path_matcher(u)?),
        Some(I::NotId(inner)) => Principal::Not(Box::new(principal(inner)?)),
        Some(I::Metadata(_)) => return unsupported("metadata principal (e.g. JWT claims)"),
        Some(I::FilterState(_)) => return unsupported("filter_state principal"),
        Some(I::SourcedMetadata(_)) => return unsupported("sourced_metadata principal"),
        Some(I::Custom(_)) => return unsupported("custom principal"),
    })
}
