//! Retry budgets: how many retries may be in flight for a cluster at once, so that
//! retries cannot become a retry storm (Envoy's `max_retries` circuit breaker and
//! `retry_budget`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_core::model::Thresholds;

/// Shared by every request to one cluster (clone the `Arc`).
#[derive(Debug)]
pub struct RetryBudget {
    limit: Limit,
    active_requests: AtomicU64,
    active_retries: AtomicU64,
    overflow: AtomicU64,
    retries: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum Limit {
    Fixed(u64),
    Percent { percent: f64, min: u64 },
}

impl RetryBudget {
    /// At most `max_retries` retries in flight (Envoy's default circuit breaker: 3).
    pub fn max_retries(max_retries: u32) -> Arc<Self> {
        Self::with(Limit::Fixed(max_retries as u64))
    }

    /// Retries in flight limited to `budget_percent` % of the requests in flight, but
    /// always at least `min_retry_concurrency`.
    pub fn percent(budget_percent: f64, min_retry_concurrency: u32) -> Arc<Self> {
        Self::with(Limit::Percent {
            percent: budget_percent.clamp(0.0, 100.0),
            min: min_retry_concurrency as u64,
        })
    }

    /// The retry limit of a cluster's circuit-breaker thresholds (the budget when set,
    /// else `max_retries`).
    pub fn from_thresholds(t: &Thresholds) -> Arc<Self> {
        match t.retry_budget {
            Some(b) => Self::percent(b.budget_percent, b.min_retry_concurrency),
            None => Self::max_retries(t.max_retries),
        }
    }

    /// No limit.
    pub fn unlimited() -> Arc<Self> {
        Self::max_retries(u32::MAX)
    }

    fn with(limit: Limit) -> Arc<Self> {
        Arc::new(Self {
            limit,
            active_requests: AtomicU64::new(0),
            active_retries: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        })
    }

    /// Counts a request in flight (original attempts) until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> RequestGuard {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    fn allowed(&self) -> u64 {
        match self.limit {
            Limit::Fixed(n) => n,
            Limit::Percent { percent, min } => {
                let active = self.active_requests.load(Ordering::Relaxed) as f64;
                ((active * percent / 100.0) as u64).max(min)
            }
        }
    }

    /// Takes a retry slot, or counts an overflow and returns `None`.
    pub fn try_retry(self: &Arc<Self>) -> Option<RetryGuard> {
        let allowed = self.allowed();
        // compare-and-swap so that the gauge never reads above the limit, even briefly
        let admitted = self
            .active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < allowed).then_some(n + 1)
            });
        if admitted.is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.retries.fetch_add(1, Ordering::Relaxed);
        Some(RetryGuard(self.clone()))
    }

    /// Requests in flight.
    pub fn active_requests(&self) -> u64 {
        self.active_requests.load(Ordering::Relaxed)
    }

    /// Retries in flight.
    pub fn active_retries(&self) -> u64 {
        self.active_retries.load(Ordering::Relaxed)
    }

    /// Retries refused by the budget (Envoy's `upstream_rq_retry_overflow`).
    pub fn overflow_total(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Retries made (Envoy's `upstream_rq_retry`).
    pub fn retries_total(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// A request in flight.
#[derive(Debug)]
pub struct RequestGuard(Arc<RetryBudget>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.active_requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight.
#[derive(Debug)]
pub struct RetryGuard(Arc<RetryBudget>);

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.active_retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_limit() {
        let b = RetryBudget::max_retries(2);
        let g1 = b.try_retry().unwrap();
        let _g2 = b.try_retry().unwrap();
        assert!(b.try_retry().is_none());
        assert_eq!(b.overflow_total(), 1);
        drop(g1);
        assert!(b.try_retry().is_some());
    }

    #[test]
    fn percent_of_active_with_minimum() {
        let b = RetryBudget::percent(20.0, 1);
        let reqs: Vec<_> = (0..10).map(|_| b.start_request()).collect();
        let g: Vec<_> = (0..2).map(|_| b.try_retry().unwrap()).collect();
        assert!(b.try_retry().is_none(), "20% of 10 is 2");
        drop(g);
        drop(reqs);
        let _one = b.try_retry().expect("the minimum holds with no traffic");
        assert!(b.try_retry().is_none());
    }
}
