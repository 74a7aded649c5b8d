//! Load balancing over a cluster's endpoints, with Envoy's semantics: priority levels and the
//! overprovisioning factor, locality weights, health (HEALTHY/UNKNOWN serve, DRAINING
//! endpoints are excluded), the panic threshold, and the policies round robin (EDF-weighted),
//! random, least request (power of two choices), ring hash and Maglev.
//!
//! A [`Balancer`] precomputes everything into a plan (priority loads, per-priority pools,
//! EDF cycles, rings, Maglev tables) when endpoints change or an endpoint's ejection flag
//! flips, and swaps it in with `ArcSwap`; [`Balancer::pick`] only reads the plan and bumps
//! atomics.
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::model::*;
//! use mesh_route::{Balancer, PickContext};
//!
//! let ep = |port| Endpoint {
//!     address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
//!     health: HealthStatus::Healthy,
//!     weight: 1,
//!     hostname: None,
//!     tls_mode: TlsMode::Unset,
//! };
//! let cla = ClusterLoadAssignment {
//!     cluster_name: "reviews".into(),
//!     localities: vec![LocalityEndpoints {
//!         locality: Arc::new(Locality::default()),
//!         priority: 0,
//!         load_balancing_weight: None,
//!         endpoints: vec![ep(9080), ep(9081)],
//!     }],
//!     ..Default::default()
//! };
//! let lb = Balancer::new("reviews", &LbPolicy::RoundRobin, &CommonLbConfig::default(), Arc::new(cla)).unwrap();
//! let a = lb.pick(&PickContext::with_random(1)).unwrap();
//! let b = lb.pick(&PickContext::with_random(2)).unwrap();
//! assert_ne!(a.hash_key(), b.hash_key(), "round robin alternates");
//! let _in_flight = a.start_request(); // counted for least request until dropped
//! ```

mod balancer;
mod edf;
mod endpoint;
mod hosts;
pub mod maglev;
mod pick;
mod picker;
mod plan;
pub mod priority;
mod ring_hash;

pub use balancer::{Balancer, MAX_MAGLEV_TABLE_SIZE, MAX_RING_SIZE};
pub(crate) use endpoint::address_key;
pub use endpoint::{ActiveRequest, EndpointRef};
pub use pick::PickContext;
pub use priority::{PriorityCounts, PriorityLoad};
