//! Decision counters, resolved once so the request path only increments.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Authorization counters: `authz_requests_total{decision}` for enforced decisions and
/// `authz_shadow_requests_total{decision}` for dry-run results (Envoy's
/// `rbac.allowed/denied` and `rbac.shadow_allowed/shadow_denied`).
#[derive(Clone, Debug, Default)]
pub struct AuthzMetrics {
    pub(crate) allowed: Counter,
    pub(crate) denied: Counter,
    pub(crate) shadow_allowed: Counter,
    pub(crate) shadow_denied: Counter,
}

impl AuthzMetrics {
    /// Registers the counters into `registry` (use a prefixed sub-registry).
    pub fn register(registry: &mut Registry) -> Self {
        let enforced = Family::<Labels, Counter>::default();
        let shadow = Family::<Labels, Counter>::default();
        registry.register(
            "authz_requests",
            "Requests by enforced authorization decision",
            enforced.clone(),
        );
        registry.register(
            "authz_shadow_requests",
            "Requests by dry-run (shadow) authorization decision",
            shadow.clone(),
        );
        // Each guard from get_or_create must drop before the next call (it holds the
        // family's lock), hence one statement per counter.
        let allowed = enforced.get_or_create(&vec![("decision", "allow")]).clone();
        let denied = enforced.get_or_create(&vec![("decision", "deny")]).clone();
        let shadow_allowed = shadow.get_or_create(&vec![("decision", "allow")]).clone();
        let shadow_denied = shadow.get_or_create(&vec![("decision", "deny")]).clone();
        Self {
            allowed,
            denied,
            shadow_allowed,
            shadow_denied,
        }
    }

    /// Requests allowed so far.
    pub fn allowed(&self) -> u64 {
        self.allowed.get()
    }

    /// Requests denied so far.
    pub fn denied(&self) -> u64 {
        self.denied.get()
    }

    /// Requests the dry-run policies would have allowed.
    pub fn shadow_allowed(&self) -> u64 {
        self.shadow_allowed.get()
    }

    /// Requests the dry-run policies would have denied.
    pub fn shadow_denied(&self) -> u64 {
        self.shadow_denied.get()
    }
}
