use std::sync::Arc;

use tokio::sync::watch;
use tower_layer::Layer;

use super::Authz;
use crate::{AuthzMetrics, AuthzPolicies};

/// Enforces [`AuthzPolicies`] read from a watch channel, so edits apply to the next
/// request without a restart.
#[derive(Clone, Debug)]
pub struct AuthzLayer {
    policies: watch::Receiver<Arc<AuthzPolicies>>,
    metrics: AuthzMetrics,
}

impl AuthzLayer {
    /// Enforces the policies currently in `policies`, and any later ones.
    pub fn new(policies: watch::Receiver<Arc<AuthzPolicies>>) -> Self {
        Self {
            policies,
            metrics: AuthzMetrics::default(),
        }
    }

    /// Enforces a fixed set of policies.
    pub fn fixed(policies: AuthzPolicies) -> Self {
        let (_tx, rx) = watch::channel(Arc::new(policies));
        Self::new(rx)
    }

    /// Counts decisions into `metrics` (see [`AuthzMetrics::register`]).
    pub fn with_metrics(mut self, metrics: AuthzMetrics) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<S> Layer<S> for AuthzLayer {
    type Service = Authz<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authz::new(inner, self.policies.clone(), self.metrics.clone())
    }
}
