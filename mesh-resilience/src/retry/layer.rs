use std::sync::Arc;

use mesh_core::model::RetryPolicy;
use tower_layer::Layer;

use super::{Retry, RetryBudget};
use crate::classify::FailureClassifier;

/// Retry settings of a [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryConfig {
    /// Used when neither the request nor its route carries a policy (`None`: no retries).
    pub policy: Option<Arc<RetryPolicy>>,
    /// The cluster's retry limit (default: Envoy's `max_retries` of 3).
    pub budget: Arc<RetryBudget>,
    /// Bytes of request body kept for replay (default 64 KiB); a longer body is not
    /// retried.
    pub buffer_cap: usize,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            policy: None,
            budget: RetryBudget::max_retries(3),
            buffer_cap: 64 * 1024,
        }
    }
}

impl RetryConfig {
    /// Sets the static policy.
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(Arc::new(policy));
        self
    }

    /// Sets the retry budget (share one `Arc` between all layers of a cluster).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Sets the replay buffer's cap.
    pub fn buffer_cap(mut self, bytes: usize) -> Self {
        self.buffer_cap = bytes;
        self
    }
}

/// Retries failed attempts (see the [module docs](super)).
#[derive(Clone, Debug)]
pub struct RetryLayer<C = FailureClassifier> {
    pub(super) config: RetryConfig,
    pub(super) classifier: C,
}

impl RetryLayer {
    /// A layer with these settings and the default classifier.
    pub fn new(config: RetryConfig) -> Self {
        Self {
            config,
            classifier: FailureClassifier,
        }
    }
}

impl<C> RetryLayer<C> {
    /// Uses another failure classifier.
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer {
            config: self.config,
            classifier,
        }
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry {
            inner,
            config: self.config.clone(),
            classifier: self.classifier.clone(),
        }
    }
}
