//! Policies and Istio's evaluation order (DENY, then ALLOW; AUDIT never decides).

use mesh_core::model::{RbacPolicy, RbacRequest};

/// What a policy does when it matches (Istio's `AuthorizationPolicy.action`; CUSTOM is
/// not supported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyAction {
    /// The request must match some ALLOW policy (when at least one exists).
    #[default]
    Allow,
    /// A matching request is denied.
    Deny,
    /// Only logged; never changes the decision.
    Audit,
}

/// One policy: an action and an Envoy RBAC policy (permissions AND principals).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthzPolicy {
    /// Name used in logs and metrics (Istio: `ns[<ns>]-policy[<name>]-rule[<i>]`).
    pub name: String,
    /// What a match means.
    pub action: PolicyAction,
    /// Dry run (`istio.io/dry-run`): evaluated into the shadow result only.
    pub dry_run: bool,
    /// The matchers.
    pub rbac: RbacPolicy,
}

impl AuthzPolicy {
    /// An enforced policy.
    pub fn new(name: impl Into<String>, action: PolicyAction, rbac: RbacPolicy) -> Self {
        Self {
            name: name.into(),
            action,
            dry_run: false,
            rbac,
        }
    }

    /// The same policy as a dry run.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// The outcome of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Allowed; names the ALLOW policy that matched, if ALLOW policies apply.
    Allow {
        /// The matching ALLOW policy.
        policy: Option<&'a str>,
    },
    /// Denied; names the DENY policy that matched (`None`: no ALLOW policy matched).
    Deny {
        /// The matching DENY policy.
        policy: Option<&'a str>,
    },
}

impl Decision<'_> {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// The policies that apply to a server, split by action once so each request only walks
/// the lists it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthzPolicies {
    deny: Vec<AuthzPolicy>,
    allow: Vec<AuthzPolicy>,
    audit: Vec<AuthzPolicy>,
    shadow_deny: Vec<AuthzPolicy>,
    shadow_allow: Vec<AuthzPolicy>,
}

impl AuthzPolicies {
    /// Sorts `policies` into enforced and dry-run sets (order within a set is kept).
    pub fn new(policies: impl IntoIterator<Item = AuthzPolicy>) -> Self {
        let mut me = Self::default();
        for p in policies {
            let list = match (p.action, p.dry_run) {
                (PolicyAction::Deny, false) => &mut me.deny,
                (PolicyAction::Allow, false) => &mut me.allow,
                (PolicyAction::Deny, true) => &mut me.shadow_deny,
                (PolicyAction::Allow, true) => &mut me.shadow_allow,
                (PolicyAction::Audit, _) => &mut me.audit,
            };
            list.push(p);
        }
        me
    }

    /// No policy at all: everything is allowed and nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.shadow_deny.is_empty()
            && self.shadow_allow.is_empty()
    }

    /// Whether any dry-run policy exists (a shadow result is worth computing).
    pub fn has_shadow(&self) -> bool {
        !self.shadow_deny.is_empty() || !self.shadow_allow.is_empty()
    }

    /// The enforced decision, in Istio's order.
    pub fn evaluate<'s>(&'s self, req: &RbacRequest<'_>) -> Decision<'s> {
        decide(&self.deny, &self.allow, req)
    }

    /// What the dry-run policies would decide (`None` without dry-run policies).
    pub fn evaluate_shadow<'s>(&'s self, req: &RbacRequest<'_>) -> Option<Decision<'s>> {
        self.has_shadow()
            .then(|| decide(&self.shadow_deny, &self.shadow_allow, req))
    }

    /// The first AUDIT policy matching `req`.
    pub fn audit_match<'s>(&'s self, req: &RbacRequest<'_>) -> Option<&'s str> {
        first_match(&self.audit, req)
    }
}

fn first_match<'s>(list: &'s [AuthzPolicy], req: &RbacRequest<'_>) -> Option<&'s str> {
    list.iter()
        .find(|p| p.rbac.matches(req))
        .map(|p| p.name.as_str())
}

fn decide<'s>(
    deny: &'s [AuthzPolicy],
    allow: &'s [AuthzPolicy],
    req: &RbacRequest<'_>,
) -> Decision<'s> {
    if let Some(name) = first_match(deny, req) {
        return Decision::Deny { policy: Some(name) };
    }
    if allow.is_empty() {
        return Decision::Allow { policy: None };
    }
    match first_match(allow, req) {
        Some(name) => Decision::Allow { policy: Some(name) },
        None => Decision::Deny { policy: None },
    }
}
