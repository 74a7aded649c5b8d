//! Role-based access control as Envoy's RBAC filter defines it (the gRPC A41 subset):
//! policies of permissions (what is asked) and principals (who asks), with a pure evaluator.

use std::net::IpAddr;

use super::matcher::{CidrRange, HeaderMatcher, StringMatcher};

/// An RBAC rule set's action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RbacAction {
    /// Allow only what a policy matches.
    Allow,
    /// Deny what a policy matches.
    Deny,
    /// Only log; never denies.
    Log,
}

/// The RBAC HTTP filter's config (`envoy.extensions.filters.http.rbac.v3.RBAC`).
///
/// Only [`rules`](Self::rules) decide; [`shadow_rules`](Self::shadow_rules) (Istio's
/// `istio.io/dry-run` policies) are evaluated for stats and logs and never change the
/// decision, as in Envoy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RbacFilter {
    /// `rules`: enforced.
    pub rules: RbacRuleSet,
    /// `shadow_rules`: evaluated, never enforced.
    pub shadow_rules: RbacRuleSet,
    /// `shadow_rules_stat_prefix` (Istio: `istio_dry_run_allow_` / `istio_dry_run_deny_`).
    pub shadow_rules_stat_prefix: String,
}

impl RbacFilter {
    /// Whether the request may proceed: the enforced [`rules`](Self::rules) only.
    pub fn allows(&self, req: &RbacRequest<'_>) -> bool {
        self.rules.allows(req)
    }
}

impl From<RbacRuleSet> for RbacFilter {
    /// A filter with these enforced rules and no shadow rules.
    fn from(rules: RbacRuleSet) -> Self {
        Self {
            rules,
            ..Self::default()
        }
    }
}

/// One rule set of the RBAC filter (`rules` or `shadow_rules`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RbacRuleSet {
    /// Absent: every request passes.
    #[default]
    NoRules,
    /// A rule set we evaluate.
    Rules(RbacRules),
    /// Rules using features we cannot evaluate (metadata matchers, CEL conditions, ...).
    /// **Enforce as deny-all** (fail closed); as shadow rules, not evaluated.
    Unmodelled {
        /// The rules' action.
        action: RbacAction,
        /// The policy names, for diagnostics.
        policy_names: Vec<String>,
        /// The first unsupported feature met.
        reason: String,
    },
}

impl RbacRuleSet {
    /// Whether the request may proceed (fail-closed for [`RbacRuleSet::Unmodelled`]).
    pub fn allows(&self, req: &RbacRequest<'_>) -> bool {
        match self {
            Self::NoRules => true,
            Self::Rules(r) => r.allows(req),
            Self::Unmodelled { .. } => false,
        }
    }
}

/// Policies and the action taken when one matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacRules {
    /// What a match means.
    pub action: RbacAction,
    /// Named policies (sorted by name).
    pub policies: Vec<RbacPolicy>,
}

impl RbacRules {
    /// The name of the first policy matching `req`.
    pub fn matching_policy(&self, req: &RbacRequest<'_>) -> Option<&str> {
        self.policies
            .iter()
            .find(|p| p.matches(req))
            .map(|p| p.name.as_str())
    }

    /// ALLOW: allowed iff a policy matches. DENY: allowed iff none matches. LOG: allowed.
    pub fn allows(&self, req: &RbacRequest<'_>) -> bool {
        match self.action {
            RbacAction::Allow => self.matching_policy(req).is_some(),
            RbacAction::Deny => self.matching_policy(req).is_none(),
            RbacAction::Log => true,
        }
    }
}

/// A policy: matches when any permission and any principal match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RbacPolicy {
    /// Policy name.
    pub name: String,
    /// What is asked (OR).
    pub permissions: Vec<Permission>,
    /// Who asks (OR).
    pub principals: Vec<Principal>,
}

impl RbacPolicy {
    /// Whether the policy matches.
    pub fn matches(&self, req: &RbacRequest<'_>) -> bool {
        self.permissions.iter().any(|p| p.matches(req))
            && self.principals.iter().any(|p| p.matches(req))
    }
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permission {
    /// Everything.
    Any,
    /// All of these.
    And(Vec<Permission>),
    /// Any of these.
    Or(Vec<Permission>),
    /// Not this.
    Not(Box<Permission>),
    /// A request header (`:method`, `:authority`, `:path` included).
    Header(HeaderMatcher),
    /// The path without query.
    UrlPath(StringMatcher),
    /// The local (destination) address.
    DestinationIp(CidrRange),
    /// The local port.
    DestinationPort(u16),
    /// The local port in `[start, end)`.
    DestinationPortRange {
        /// Inclusive start.
        start: u16,
        /// Exclusive end.
        end: u16,
    },
    /// The TLS SNI.
    RequestedServerName(StringMatcher),
}

impl Permission {
    /// Whether the permission matches.
    pub fn matches(&self, req: &RbacRequest<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::And(v) => v.iter().all(|p| p.matches(req)),
            Self::Or(v) => v.iter().any(|p| p.matches(req)),
            Self::Not(p) => !p.matches(req),
            Self::Header(h) => h.matches(req.header(&h.name)),
            Self::UrlPath(m) => m.matches(req.path_without_query()),
            Self::DestinationIp(c) => req.destination.is_some_and(|d| c.contains(d.0)),
            Self::DestinationPort(p) => req.destination.is_some_and(|d| d.1 == *p),
            Self::DestinationPortRange { start, end } => {
                req.destination.is_some_and(|d| d.1 >= *start && d.1 < *end)
            }
            Self::RequestedServerName(m) => m.matches(req.server_name.unwrap_or("")),
        }
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Anyone.
    Any,
    /// All of these.
    And(Vec<Principal>),
    /// Any of these.
    Or(Vec<Principal>),
    /// Not this.
    Not(Box<Principal>),
    /// An authenticated (mTLS) peer; `None` matches any authenticated peer, otherwise the
    /// matcher is applied to the peer's URI SANs (SPIFFE IDs), then DNS SANs (gRPC A41).
    Authenticated(Option<StringMatcher>),
    /// The connection's peer address (`source_ip` and `direct_remote_ip`).
    DirectRemoteIp(CidrRange),
    /// The original client address (from `x-forwarded-for` with trusted hops).
    RemoteIp(CidrRange),
    /// A request header.
    Header(HeaderMatcher),
    /// The path without query.
    UrlPath(StringMatcher),
}

impl Principal {
    /// Whether the principal matches.
    pub fn matches(&self, req: &RbacRequest<'_>) -> bool {
        match self {
            Self::Any => true,
            Self::And(v) => v.iter().all(|p| p.matches(req)),
            Self::Or(v) => v.iter().any(|p| p.matches(req)),
            Self::Not(p) => !p.matches(req),
            Self::Authenticated(None) => req.authenticated,
            Self::Authenticated(Some(m)) => {
                req.authenticated && req.peer_names.iter().any(|n| m.matches(n))
            }
            Self::DirectRemoteIp(c) => req.peer_ip.is_some_and(|ip| c.contains(ip)),
            Self::RemoteIp(c) => req
                .remote_ip
                .or(req.peer_ip)
                .is_some_and(|ip| c.contains(ip)),
            Self::Header(h) => h.matches(req.header(&h.name)),
            Self::UrlPath(m) => m.matches(req.path_without_query()),
        }
    }
}

/// What the evaluator needs to know about a request.
#[derive(Clone, Debug, Default)]
pub struct RbacRequest<'a> {
    /// Request headers with lowercase names, pseudo-headers included (`:method`,
    /// `:authority`, `:path`); repeated headers joined with `,`.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Whether the peer presented a verified client certificate.
    pub authenticated: bool,
    /// The peer certificate's URI SANs, then DNS SANs.
    pub peer_names: Vec<&'a str>,
    /// The connection's peer IP.
    pub peer_ip: Option<IpAddr>,
    /// The client IP after trusted `x-forwarded-for` hops.
    pub remote_ip: Option<IpAddr>,
    /// The local address and port.
    pub destination: Option<(IpAddr, u16)>,
    /// The TLS SNI.
    pub server_name: Option<&'a str>,
}

impl<'a> RbacRequest<'a> {
    fn header(&self, name: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    fn path_without_query(&self) -> &'a str {
        let p = self.header(":path").unwrap_or("");
        p.split(['?', '#']).next().unwrap_or(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiffe(sa: &str) -> StringMatcher {
        StringMatcher::Exact {
            value: format!("spiffe://cluster.local/ns/default/sa/{sa}"),
            ignore_case: false,
        }
    }

    #[test]
    fn allow_and_deny_policies() {
        let allow_reviews_get = RbacRules {
            action: RbacAction::Allow,
            policies: vec![RbacPolicy {
                name: "p".into(),
                permissions: vec![Permission::And(vec![
                    Permission::Header(HeaderMatcher {
                        name: ":method".into(),
                        rule: super::super::HeaderMatchRule::String(StringMatcher::Exact {
                            value: "GET".into(),
                            ignore_case: false,
                        }),
                        invert_match: false,
                        treat_missing_header_as_empty: false,
                    }),
                    Permission::UrlPath(StringMatcher::Prefix {
                        value: "/api".into(),
                        ignore_case: false,
                    }),
                ])],
                principals: vec![Principal::Authenticated(Some(spiffe("reviews")))],
            }],
        };
        let req = |method: &'static str, path: &'static str, who: &'static str| RbacRequest {
            headers: vec![(":method", method), (":path", path)],
            authenticated: true,
            peer_names: vec![who],
            ..Default::default()
        };
        let ok = req(
            "GET",
            "/api/x?y=1",
            "spiffe://cluster.local/ns/default/sa/reviews",
        );
        assert!(allow_reviews_get.allows(&ok));
        assert!(!allow_reviews_get.allows(&req(
            "POST",
            "/api/x",
            "spiffe://cluster.local/ns/default/sa/reviews"
        )));
        assert!(!allow_reviews_get.allows(&req(
            "GET",
            "/api/x",
            "spiffe://cluster.local/ns/default/sa/other"
        )));
        let mut unauthenticated = ok.clone();
        unauthenticated.authenticated = false;
        assert!(!allow_reviews_get.allows(&unauthenticated));
        let deny = RbacRules {
            action: RbacAction::Deny,
            ..allow_reviews_get.clone()
        };
        assert!(!deny.allows(&ok));
        assert!(deny.allows(&req("POST", "/api/x", "x")));
        let unmodelled = RbacRuleSet::Unmodelled {
            action: RbacAction::Allow,
            policy_names: vec![],
            reason: String::new(),
        };
        assert!(!unmodelled.allows(&ok));
        // Shadow rules never decide, even when they would deny everything.
        let shadow_only = RbacFilter {
            shadow_rules: unmodelled,
            ..RbacFilter::default()
        };
        assert!(shadow_only.allows(&ok));
        let shadow_deny = RbacFilter {
            shadow_rules: RbacRuleSet::Rules(deny.clone()),
            ..RbacFilter::from(RbacRuleSet::Rules(allow_reviews_get.clone()))
        };
        assert!(shadow_deny.allows(&ok));
        let empty_allow = RbacRules {
            action: RbacAction::Allow,
            policies: vec![],
        };
        assert!(
            !empty_allow.allows(&ok),
            "ALLOW with no policies denies everything"
        );
    }

    #[test]
    fn addresses_ports_and_not() {
        let p = Permission::Not(Box::new(Permission::DestinationPortRange {
            start: 8000,
            end: 9000,
        }));
        let mut req = RbacRequest {
            destination: Some(("10.0.0.1".parse().unwrap(), 8080)),
            peer_ip: Some("192.168.1.5".parse().unwrap()),
            ..Default::default()
        };
        assert!(!p.matches(&req));
        req.destination = Some(("10.0.0.1".parse().unwrap(), 9000));
        assert!(p.matches(&req));
        let who =
            Principal::DirectRemoteIp(CidrRange::new("192.168.0.0".parse().unwrap(), 16).unwrap());
        assert!(who.matches(&req));
        assert!(
            Principal::RemoteIp(CidrRange::new("192.168.0.0".parse().unwrap(), 16).unwrap())
                .matches(&req)
        );
        req.remote_ip = Some("8.8.8.8".parse().unwrap());
        assert!(
            !Principal::RemoteIp(CidrRange::new("192.168.0.0".parse().unwrap(), 16).unwrap())
                .matches(&req)
        );
    }
}
