use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mesh_core::model::{CircuitBreakers, Thresholds};
use tokio::sync::Notify;

use crate::policy::Priority;
use crate::retry::RetryBudget;

#[derive(Debug)]
struct Gauge {
    max: u64,
    current: AtomicU64,
    overflow: AtomicU64,
}

impl Gauge {
    fn new(max: u32) -> Self {
        Self {
            max: max as u64,
            current: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    fn try_acquire(&self) -> bool {
        let admitted = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            });
        if admitted.is_err() {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[derive(Debug)]
struct Level {
    requests: Gauge,
    pending: Gauge,
    connections: Gauge,
    /// Woken when a connection slot is given back.
    connection_released: Notify,
    retries: Arc<RetryBudget>,
}

impl Level {
    fn new(t: &Thresholds) -> Self {
        Self {
            requests: Gauge::new(t.max_requests),
            pending: Gauge::new(t.max_pending_requests),
            connections: Gauge::new(t.max_connections),
            connection_released: Notify::new(),
            retries: RetryBudget::from_thresholds(t),
        }
    }
}

/// One cluster's circuit breaker (see the [module docs](super)).
#[derive(Debug)]
pub struct CircuitBreaker {
    name: Arc<str>,
    default: Level,
    high: Level,
}

/// What a slot counts.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Request,
    Pending,
    Connection,
}

/// A held slot (request, pending request or connection); released on drop.
#[derive(Debug)]
pub struct Slot {
    breaker: Arc<CircuitBreaker>,
    priority: Priority,
    kind: Kind,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let level = self.breaker.level(self.priority);
        let g = match self.kind {
            Kind::Request => &level.requests,
            Kind::Pending => &level.pending,
            Kind::Connection => &level.connections,
        };
        g.current.fetch_sub(1, Ordering::AcqRel);
        if let Kind::Connection = self.kind {
            level.connection_released.notify_waiters();
        }
    }
}

/// A request refused by a connection pool over a limit of its cluster's breaker
/// (`max_pending_requests` while waiting for a connection); [`CircuitBreakerLayer`]
/// answers it as any overflow (503, `UO`).
///
/// [`CircuitBreakerLayer`]: super::CircuitBreakerLayer
#[derive(Clone, Copy, Debug)]
pub struct Overflow(pub &'static str);

impl std::fmt::Display for Overflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream overflow: {} reached", self.0)
    }
}

impl std::error::Error for Overflow {}

/// A snapshot of one priority's gauges and overflow counters (Envoy's
/// `upstream_rq_pending_overflow`, `upstream_cx_overflow`, `upstream_rq_retry_overflow`;
/// `requests_overflow` is counted by Envoy as `upstream_rq_pending_overflow` too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakerStats {
    /// Requests in flight.
    pub requests: u64,
    /// Requests waiting for the inner service.
    pub pending: u64,
    /// Connections open.
    pub connections: u64,
    /// Retries in flight.
    pub retries: u64,
    /// Requests refused over `max_requests`.
    pub requests_overflow: u64,
    /// Requests refused over `max_pending_requests`.
    pub pending_overflow: u64,
    /// Connections refused over `max_connections`.
    pub connections_overflow: u64,
    /// Retries refused over `max_retries` or the retry budget.
    pub retries_overflow: u64,
}

impl CircuitBreaker {
    /// A breaker for cluster `name` with these thresholds.
    pub fn new(name: &str, cfg: &CircuitBreakers) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            default: Level::new(&cfg.default),
            high: Level::new(&cfg.high),
        })
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn level(&self, p: Priority) -> &Level {
        match p {
            Priority::Default => &self.default,
            Priority::High => &self.high,
        }
    }

    fn slot(self: &Arc<Self>, p: Priority, kind: Kind) -> Option<Slot> {
        let level = self.level(p);
        let g = match kind {
            Kind::Request => &level.requests,
            Kind::Pending => &level.pending,
            Kind::Connection => &level.connections,
        };
        g.try_acquire().then(|| Slot {
            breaker: self.clone(),
            priority: p,
            kind,
        })
    }

    /// Takes a request slot (`max_requests`).
    pub fn try_request(self: &Arc<Self>, p: Priority) -> Option<Slot> {
        self.slot(p, Kind::Request)
    }

    /// Takes a pending-request slot (`max_pending_requests`).
    pub fn try_pending(self: &Arc<Self>, p: Priority) -> Option<Slot> {
        self.slot(p, Kind::Pending)
    }

    /// Takes a connection slot (`max_connections`), for connection pools: hold it as
    /// long as the connection is open.
    pub fn try_connection(self: &Arc<Self>, p: Priority) -> Option<Slot> {
        self.slot(p, Kind::Connection)
    }

    /// Completes when a connection slot of priority `p` is given back (a pooled connection
    /// closed). Create the future before checking for a free slot, so that no release
    /// between the check and the wait is missed.
    pub fn connection_released(&self, p: Priority) -> tokio::sync::futures::Notified<'_> {
        self.level(p).connection_released.notified()
    }

    /// The retry limit of this priority, for [`RetryConfig::budget`](crate::retry::RetryConfig::budget).
    pub fn retry_budget(&self, p: Priority) -> Arc<RetryBudget> {
        self.level(p).retries.clone()
    }

    /// Gauges and overflow counters of a priority.
    pub fn stats(&self, p: Priority) -> BreakerStats {
        let l = self.level(p);
        let r = Ordering::Relaxed;
        BreakerStats {
            requests: l.requests.current.load(r),
            pending: l.pending.current.load(r),
            connections: l.connections.current.load(r),
            retries: l.retries.active_retries(),
            requests_overflow: l.requests.overflow.load(r),
            pending_overflow: l.pending.overflow.load(r),
            connections_overflow: l.connections.overflow.load(r),
            retries_overflow: l.retries.overflow_total(),
        }
    }
}
