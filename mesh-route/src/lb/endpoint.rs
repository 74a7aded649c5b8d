//! Per-endpoint shared state: the EDS data, an active-request counter (least request, and
//! later circuit breaking) and an ejection flag (set by outlier detection).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mesh_core::model::{Endpoint, EndpointAddress, Locality};

#[derive(Debug)]
pub(crate) struct EndpointState {
    pub(crate) endpoint: Endpoint,
    pub(crate) locality: Arc<Locality>,
    pub(crate) priority: u32,
    /// The ring-hash / Maglev key: `ip:port` (or `host:port`), as Envoy's `address()->asString()`.
    pub(crate) hash_key: Arc<str>,
    /// Shared with the handles of the same address from earlier EDS updates, so requests
    /// started before an update are counted down on the same counter.
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    active: AtomicU64,
    ejected: AtomicBool,
}

/// A shared handle on one endpoint of a cluster. Cloning is one atomic increment. The same
/// handle survives EDS updates that keep the endpoint's address, with its counters and flags.
#[derive(Clone)]
pub struct EndpointRef(pub(crate) Arc<EndpointState>);

impl EndpointRef {
    pub(crate) fn new(endpoint: Endpoint, locality: Arc<Locality>, priority: u32) -> Self {
        let hash_key = address_key(&endpoint.address);
        Self(Arc::new(EndpointState {
            endpoint,
            locality,
            priority,
            hash_key,
            counters: Arc::default(),
        }))
    }

    /// Carries the counters and the ejection flag of `old` over to a new description of the
    /// same address.
    pub(crate) fn renew(
        old: &EndpointRef,
        endpoint: Endpoint,
        locality: Arc<Locality>,
        priority: u32,
    ) -> Self {
        if old.0.endpoint == endpoint && old.0.locality == locality && old.0.priority == priority {
            return old.clone();
        }
        Self(Arc::new(EndpointState {
            hash_key: address_key(&endpoint.address),
            endpoint,
            locality,
            priority,
            counters: old.0.counters.clone(),
        }))
    }

    /// The endpoint as EDS described it.
    pub fn endpoint(&self) -> &Endpoint {
        &self.0.endpoint
    }

    /// Its address.
    pub fn address(&self) -> &EndpointAddress {
        &self.0.endpoint.address
    }

    /// Its locality.
    pub fn locality(&self) -> &Locality {
        &self.0.locality
    }

    /// Its priority (0 is highest).
    pub fn priority(&self) -> u32 {
        self.0.priority
    }

    /// The key hashed onto a ring or Maglev table (`ip:port`).
    pub fn hash_key(&self) -> &str {
        &self.0.hash_key
    }

    /// The same `ip:port` key, shared (no allocation to name the endpoint in extensions).
    pub fn key(&self) -> &Arc<str> {
        &self.0.hash_key
    }

    /// Requests in flight to this endpoint (those holding an [`ActiveRequest`]).
    pub fn active_requests(&self) -> u64 {
        self.0.counters.active.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the returned guard is dropped.
    pub fn start_request(&self) -> ActiveRequest {
        self.0.counters.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(self.clone())
    }

    /// Whether outlier detection ejected it.
    pub fn is_ejected(&self) -> bool {
        self.0.counters.ejected.load(Ordering::Relaxed)
    }

    pub(crate) fn store_ejected(&self, ejected: bool) -> bool {
        self.0.counters.ejected.swap(ejected, Ordering::Relaxed)
    }

    /// Whether new requests may go to it: health HEALTHY or UNKNOWN, and not ejected.
    pub fn is_healthy(&self) -> bool {
        self.0.endpoint.health.is_usable() && !self.is_ejected()
    }

    /// Whether two handles are the same endpoint state.
    pub fn ptr_eq(&self, other: &EndpointRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointRef")
            .field("address", &self.0.hash_key)
            .field("health", &self.0.endpoint.health)
            .field("priority", &self.0.priority)
            .field("active", &self.active_requests())
            .field("ejected", &self.is_ejected())
            .finish()
    }
}

/// A request in flight to an endpoint; dropping it decrements the endpoint's counter.
#[derive(Debug)]
pub struct ActiveRequest(EndpointRef);

impl ActiveRequest {
    /// The endpoint.
    pub fn endpoint(&self) -> &EndpointRef {
        &self.0
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.0.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(crate) fn address_key(a: &EndpointAddress) -> Arc<str> {
    match a {
        EndpointAddress::Socket(s) => s.to_string().into(),
        EndpointAddress::Dns { host, port } => format!("{host}:{port}").into(),
    }
}
