//! Outlier detection (Envoy's `outlier_detection`, Istio's DestinationRule
//! `outlierDetection`, gRPC A50), driving the per-endpoint ejection flag that
//! mesh-route's [`Balancer`](mesh_route::Balancer) skips.
//!
//! An [`OutlierDetector`] per cluster records each attempt's outcome (classified by the
//! shared classifier) against the endpoint that served it:
//!
//! - consecutive 5xx (`consecutive_5xx`), consecutive gateway failures (502/503/504,
//!   `consecutive_gateway_failure`) and, with `split_external_local_origin_errors`,
//!   consecutive local-origin failures (connect failure, reset, timeout:
//!   `consecutive_local_origin_failure`) eject at once, each with its `enforcing_*`
//!   percentage; without the split, local-origin failures count as 5xx and gateway
//!   failures, as in Envoy;
//! - every `interval`, [`OutlierDetector::sweep`] runs success-rate ejection (below
//!   mean - stdev * `stdev_factor` / 1000, among hosts with `request_volume`, when at
//!   least `minimum_hosts` have it) and failure-percentage ejection, and un-ejects hosts
//!   whose time is up;
//! - an ejection lasts `base_ejection_time * times ejected`, capped at
//!   `max(base_ejection_time, max_ejection_time)`, plus up to `max_ejection_time_jitter`;
//!   a healthy host's multiplier decreases by one per interval;
//! - at most `max_ejection_percent` of the hosts are ejected at once (at least one may
//!   always be).
//!
//! [`OutlierLayer`] records the outcomes of a service's responses: it needs the endpoint
//! in the response's [`UpstreamEndpoint`](crate::policy::UpstreamEndpoint) extension, or
//! in the error's [`EndpointError`](crate::policy::EndpointError). Per-endpoint state is
//! exposed by [`OutlierDetector::endpoints`].
//!
//! ```
//! use std::sync::Arc;
//! use mesh_core::model::*;
//! use mesh_resilience::classify::{Classification, ErrorKind};
//! use mesh_resilience::outlier::OutlierDetector;
//! use mesh_route::{Balancer, PickContext};
//!
//! let ep = |port| Endpoint {
//!     address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
//!     health: HealthStatus::Healthy, weight: 1, hostname: None, tls_mode: TlsMode::Unset,
//! };
//! let cla = ClusterLoadAssignment {
//!     cluster_name: "c".into(),
//!     localities: vec![LocalityEndpoints {
//!         locality: Arc::new(Locality::default()), priority: 0, load_balancing_weight: None,
//!         endpoints: vec![ep(1), ep(2)],
//!     }],
//!     ..Default::default()
//! };
//! let lb = Arc::new(Balancer::new("c", &LbPolicy::RoundRobin, &CommonLbConfig::default(), Arc::new(cla)).unwrap());
//! let od = OutlierDetector::new(lb.clone(), OutlierDetection { max_ejection_percent: 50, ..Default::default() });
//! for _ in 0..5 {
//!     od.record("10.0.0.1:1", Classification::Error(ErrorKind::ConnectFailure));
//! }
//! assert!(od.is_ejected("10.0.0.1:1"));
//! for r in 0..10 {
//!     assert_eq!(lb.pick(&PickContext::with_random(r)).unwrap().hash_key(), "10.0.0.1:2");
//! }
//! ```

mod detector;
mod layer;

pub use detector::{EndpointOutlierState, OutlierDetector};
pub use layer::{Outlier, OutlierLayer, ResponseFuture};

#[cfg(test)]
mod tests;
