//! Outlier detection (Envoy's `outlier_detection`, Istio's DestinationRule
//! `outlierDetection`, gRPC A50), ejecting hosts from a cluster's host set through
//! [`mesh_core::hosts::EjectableHosts`] (mesh-route's `Balancer` implements it and skips
//! ejected hosts; any load balancer can).
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
//!   always be), counted by the host set's
//!   [`host_counts`](mesh_core::hosts::EjectableHosts::host_counts).
//!
//! [`OutlierLayer`] records the outcomes of a service's responses: it needs the endpoint
//! in the response's [`UpstreamEndpoint`](crate::policy::UpstreamEndpoint) extension, or
//! in the error's [`EndpointError`](crate::policy::EndpointError). Per-endpoint state is
//! exposed by [`OutlierDetector::endpoints`].
//!
//! Alone: whatever picks the endpoint (here a trivial service standing for a load
//! balancer in front of a hyper-util client) names it in the response, and the host set
//! is anything that can take a host out of rotation:
//!
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use mesh_core::hosts::EjectableHosts;
//! use mesh_core::model::OutlierDetection;
//! use mesh_resilience::outlier::{OutlierDetector, OutlierLayer};
//! use mesh_resilience::policy::UpstreamEndpoint;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! /// `ip:port` -> ejected
//! struct Hosts(Mutex<HashMap<String, bool>>);
//! impl EjectableHosts for Hosts {
//!     fn host_counts(&self) -> (usize, usize) {
//!         let h = self.0.lock().unwrap();
//!         (h.len(), h.values().filter(|e| **e).count())
//!     }
//!     fn set_ejected(&self, host: &str, ejected: bool) -> bool {
//!         self.0.lock().unwrap().get_mut(host).map(|e| *e = ejected).is_some()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let hosts = Arc::new(Hosts(Mutex::new(HashMap::from([
//!     ("10.0.0.1:80".to_string(), false),
//!     ("10.0.0.2:80".to_string(), false),
//! ]))));
//! let detector = OutlierDetector::new(
//!     hosts.clone(),
//!     OutlierDetection { max_ejection_percent: 50, ..Default::default() },
//! );
//! let _sweeper = detector.spawn(); // un-ejects when the ejection time is up
//! let upstream = tower::service_fn(|_req: http::Request<()>| async {
//!     let mut resp = http::Response::builder().status(503).body(()).unwrap();
//!     resp.extensions_mut().insert(UpstreamEndpoint("10.0.0.1:80".into()));
//!     Ok::<_, tower::BoxError>(resp)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(OutlierLayer::new(detector.clone()))
//!     .service(upstream);
//! for _ in 0..5 {
//!     svc.clone().oneshot(http::Request::new(())).await.unwrap();
//! }
//! assert!(detector.is_ejected("10.0.0.1:80")); // 5 consecutive 5xx
//! assert_eq!(hosts.host_counts(), (2, 1));
//! # }
//! ```
//!
//! In the mesh, mesh-route's `ResilienceStack` builds one detector per cluster over the
//! cluster's `Balancer`.

mod detector;
mod layer;

pub use detector::{EndpointOutlierState, OutlierDetector};
pub use layer::{Outlier, OutlierLayer, ResponseFuture};

#[cfg(test)]
mod tests;
