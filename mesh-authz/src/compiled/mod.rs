//! The fast path: policies compiled once when a policy set is built, evaluated against a
//! [`RequestView`] built once per request.
//!
//! Semantics are those of mesh-core's evaluator (`RbacPolicy::matches` over
//! [`crate::rbac_request`]); the fuzz target `rbac` and the property test in
//! tests/compiled.rs compare the two on arbitrary policies and requests.

mod matcher;
mod view;

use std::collections::HashMap;

pub(crate) use matcher::Names;
use matcher::{Perm, Princ};
pub(crate) use view::RequestView;

use crate::AuthzPolicy;

/// One policy's matchers: any permission AND any principal.
#[derive(Clone, Debug)]
struct Compiled {
    permissions: Box<[Perm]>,
    principals: Box<[Princ]>,
    /// Whether the principals are the cheaper side (an exact or prefix SPIFFE ID against a
    /// method and path), so they run first; permissions first otherwise (Istio's
    /// namespaces are regexes).
    principals_first: bool,
}

impl Compiled {
    fn new(mut permissions: Vec<Perm>, mut principals: Vec<Princ>) -> Self {
        // Pure matchers: the order changes the cost, never the result.
        permissions.sort_by_key(Perm::cost);
        principals.sort_by_key(Princ::cost);
        let cost_perm: u32 = permissions.first().map_or(0, Perm::cost);
        let cost_princ: u32 = principals.first().map_or(0, Princ::cost);
        Self {
            permissions: permissions.into(),
            principals: principals.into(),
            principals_first: cost_princ < cost_perm,
        }
    }

    fn matches(&self, view: &RequestView<'_>) -> bool {
        let perm = || self.permissions.iter().any(|p| p.matches(view));
        let princ = || self.principals.iter().any(|p| p.matches(view));
        if self.principals_first {
            return princ() && perm();
        }
        perm() && princ()
    }
}

/// An ordered list of policies with an index by caller.
///
/// A policy whose every principal can only match exact SPIFFE IDs (Istio's
/// `principals: ["cluster.local/ns/x/sa/y"]`) is indexed under those IDs and only
/// evaluated for those callers; the others are evaluated for every request. Candidates are
/// walked in the original order, so the first matching policy is the same as a linear scan.
#[derive(Clone, Debug, Default)]
pub(crate) struct PolicySet {
    pub(crate) policies: Vec<AuthzPolicy>,
    compiled: Vec<Compiled>,
    by_peer: HashMap<Box<str>, Vec<usize>>,
    unindexed: Vec<usize>,
}

impl PolicySet {
    pub(crate) fn push(&mut self, policy: AuthzPolicy, names: &mut Names) {
        let idx = self.policies.len();
        let compiled = Compiled::new(
            policy
                .rbac
                .permissions
                .iter()
                .map(|p| Perm::compile(p, names))
                .collect(),
            policy
                .rbac
                .principals
                .iter()
                .map(|p| Princ::compile(p, names))
                .collect(),
        );
        let mut peers = Vec::new();
        if compiled
            .principals
            .iter()
            .all(|p| p.exact_peers(&mut peers))
        {
            // No principal at all: the policy never matches and is never a candidate.
            for peer in peers {
                let list = self.by_peer.entry(peer.into()).or_default();
                if list.last() != Some(&idx) {
                    list.push(idx);
                }
            }
        } else {
            self.unindexed.push(idx);
        }
        self.policies.push(policy);
        self.compiled.push(compiled);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The name of the first policy (in order) matching the request.
    pub(crate) fn first_match(&self, view: &RequestView<'_>) -> Option<&str> {
        let indexed: &[usize] = match view.peer {
            Some(peer) if !self.by_peer.is_empty() => {
                self.by_peer.get(peer).map_or(&[], Vec::as_slice)
            }
            _ => &[],
        };
        let (mut a, mut b) = (indexed.iter().peekable(), self.unindexed.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (_, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            };
            if let Some(&i) = next
                && self.compiled[i].matches(view)
            {
                return Some(self.policies[i].name.as_str());
            }
        }
    }
}
