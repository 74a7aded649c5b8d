//! Policies and Istio's evaluation order (DENY, then ALLOW; AUDIT never decides).

use mesh_core::model::{RbacPolicy, RbacRequest};

use crate::compiled::{Names, PolicySet, RequestView};

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

/// What the policies say about one request: the enforced decision, the dry-run (shadow)
/// decision when dry-run policies exist, and the first matching AUDIT policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluation<'s> {
    /// The enforced decision.
    pub decision: Decision<'s>,
    /// What the dry-run policies would decide (`None` without dry-run policies).
    pub shadow: Option<Decision<'s>>,
    /// The first AUDIT policy that matched.
    pub audit: Option<&'s str>,
}

/// The policies that apply to a server, split by action and compiled once, so each request
/// only walks the lists it needs with matchers that do not allocate.
///
/// [`AuthzPolicies::check`] is the fast path the layer uses: header names are resolved and
/// lowercased when the set is built, the request's headers are looked up at most once per
/// request, and ALLOW/DENY rules naming exact SPIFFE IDs are indexed by caller.
/// [`AuthzPolicies::evaluate`] runs mesh-core's reference evaluator on an [`RbacRequest`];
/// both give the same answers (property-tested and fuzzed).
#[derive(Clone, Default)]
pub struct AuthzPolicies {
    deny: PolicySet,
    allow: PolicySet,
    audit: PolicySet,
    shadow_deny: PolicySet,
    shadow_allow: PolicySet,
}

impl PartialEq for AuthzPolicies {
    fn eq(&self, other: &Self) -> bool {
        self.sets()
            .zip(other.sets())
            .all(|(a, b)| a.policies == b.policies)
    }
}

impl Eq for AuthzPolicies {}

impl std::fmt::Debug for AuthzPolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthzPolicies")
            .field("deny", &self.deny.policies)
            .field("allow", &self.allow.policies)
            .field("audit", &self.audit.policies)
            .field("shadow_deny", &self.shadow_deny.policies)
            .field("shadow_allow", &self.shadow_allow.policies)
            .finish()
    }
}

impl AuthzPolicies {
    /// Sorts `policies` into enforced and dry-run sets (order within a set is kept) and
    /// compiles them.
    pub fn new(policies: impl IntoIterator<Item = AuthzPolicy>) -> Self {
        let mut me = Self::default();
        let mut names = Names::default();
        for p in policies {
            let set = match (p.action, p.dry_run) {
                (PolicyAction::Deny, false) => &mut me.deny,
                (PolicyAction::Allow, false) => &mut me.allow,
                (PolicyAction::Deny, true) => &mut me.shadow_deny,
                (PolicyAction::Allow, true) => &mut me.shadow_allow,
                (PolicyAction::Audit, _) => &mut me.audit,
            };
            set.push(p, &mut names);
        }
        me
    }

    fn sets(&self) -> impl Iterator<Item = &PolicySet> {
        [
            &self.deny,
            &self.allow,
            &self.audit,
            &self.shadow_deny,
            &self.shadow_allow,
        ]
        .into_iter()
    }

    /// No policy at all: everything is allowed and nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.sets().all(PolicySet::is_empty)
    }

    /// Whether any dry-run policy exists (a shadow result is worth computing).
    pub fn has_shadow(&self) -> bool {
        !self.shadow_deny.is_empty() || !self.shadow_allow.is_empty()
    }

    /// Evaluates an HTTP request with the compiled matchers: the enforced decision in
    /// Istio's order, the shadow decision and the AUDIT match, from one view of the
    /// request (see [`crate::rbac_request`] for what a request is matched on).
    ///
    /// ```
    /// use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction, principal};
    /// use mesh_core::model::{Permission, RbacPolicy};
    ///
    /// let policies = AuthzPolicies::new([AuthzPolicy::new("only-productpage", PolicyAction::Allow, RbacPolicy {
    ///     name: "only-productpage".into(),
    ///     permissions: vec![Permission::Any],
    ///     principals: vec![principal::istio("cluster.local/ns/default/sa/productpage")],
    /// })]);
    /// let plaintext = http::Request::get("/").body(()).unwrap();
    /// assert!(!policies.check(&plaintext).decision.is_allowed());
    /// ```
    pub fn check<B>(&self, req: &http::Request<B>) -> Evaluation<'_> {
        let view = RequestView::new(req);
        Evaluation {
            decision: decide_compiled(&self.deny, &self.allow, &view),
            shadow: self
                .has_shadow()
                .then(|| decide_compiled(&self.shadow_deny, &self.shadow_allow, &view)),
            audit: self.audit.first_match(&view),
        }
    }

    /// The enforced decision, in Istio's order, by mesh-core's reference evaluator.
    pub fn evaluate<'s>(&'s self, req: &RbacRequest<'_>) -> Decision<'s> {
        decide(&self.deny.policies, &self.allow.policies, req)
    }

    /// What the dry-run policies would decide (`None` without dry-run policies), by
    /// mesh-core's reference evaluator.
    pub fn evaluate_shadow<'s>(&'s self, req: &RbacRequest<'_>) -> Option<Decision<'s>> {
        self.has_shadow()
            .then(|| decide(&self.shadow_deny.policies, &self.shadow_allow.policies, req))
    }

    /// The first AUDIT policy matching `req`, by mesh-core's reference evaluator.
    pub fn audit_match<'s>(&'s self, req: &RbacRequest<'_>) -> Option<&'s str> {
        first_match(&self.audit.policies, req)
    }
}

fn decide_compiled<'s>(
    deny: &'s PolicySet,
    allow: &'s PolicySet,
    view: &RequestView<'_>,
) -> Decision<'s> {
    if let Some(name) = deny.first_match(view) {
        return Decision::Deny { policy: Some(name) };
    }
    if allow.is_empty() {
        return Decision::Allow { policy: None };
    }
    match allow.first_match(view) {
        Some(name) => Decision::Allow { policy: Some(name) },
        None => Decision::Deny { policy: None },
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
