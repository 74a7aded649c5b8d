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
//!   whose time is up; with the split, both also run over local-origin outcomes alone (an
//!   upstream answer is a success, a local-origin error a failure), enforced by
//!   `enforcing_local_origin_success_rate` and `enforcing_failure_percentage_local_origin`;
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
//! Alone, around a hyper-util client (`tests/standalone.rs` runs this against two real
//! servers): whatever picks the host names it in the response (or the error), and the host
//! set is anything that can take a host out of rotation:
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper_util::client::legacy::{Client, connect::HttpConnector};
//! use hyper_util::rt::TokioExecutor;
//! use mesh_core::hosts::EjectableHosts;
//! use mesh_core::model::OutlierDetection;
//! use mesh_resilience::outlier::{OutlierDetector, OutlierLayer};
//! use mesh_resilience::policy::{EndpointError, UpstreamEndpoint};
//! use tower::{BoxError, ServiceBuilder, ServiceExt};
//!
//! /// `ip:port` and whether it is ejected.
//! struct Hosts(Mutex<Vec<(String, bool)>>);
//!
//! impl EjectableHosts for Hosts {
//!     fn host_counts(&self) -> (usize, usize) {
//!         let h = self.0.lock().unwrap();
//!         (h.len(), h.iter().filter(|(_, e)| *e).count())
//!     }
//!     fn set_ejected(&self, host: &str, ejected: bool) -> bool {
//!         let mut h = self.0.lock().unwrap();
//!         h.iter_mut().find(|(k, _)| k == host).map(|(_, e)| *e = ejected).is_some()
//!     }
//! }
//!
//! impl Hosts {
//!     fn pick(&self) -> Option<String> {
//!         self.0.lock().unwrap().iter().find(|(_, e)| !e).map(|(k, _)| k.clone())
//!     }
//! }
//!
//! # async fn run() -> Result<(), BoxError> {
//! let hosts = Arc::new(Hosts(Mutex::new(vec![
//!     ("10.0.0.1:8080".to_string(), false),
//!     ("10.0.0.2:8080".to_string(), false),
//! ])));
//! let detector = OutlierDetector::new(
//!     hosts.clone(),
//!     OutlierDetection { max_ejection_percent: 50, ..Default::default() },
//! );
//! let _sweeper = detector.spawn(); // un-ejects when the ejection time is up
//! let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
//! let picker = hosts.clone();
//! // One attempt: pick a host, send, name the host in the response or the error.
//! let endpoints = tower::service_fn(move |mut req: http::Request<Full<Bytes>>| {
//!     let (client, host) = (client.clone(), picker.pick());
//!     async move {
//!         let host: Arc<str> = host.ok_or("no healthy upstream")?.into();
//!         *req.uri_mut() = format!("http://{host}{}", req.uri().path()).parse()?;
//!         match client.request(req).await {
//!             Ok(mut resp) => {
//!                 resp.extensions_mut().insert(UpstreamEndpoint(host));
//!                 Ok(resp)
//!             }
//!             Err(e) => Err(BoxError::from(EndpointError { endpoint: host, source: Box::new(e) })),
//!         }
//!     }
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(OutlierLayer::new(detector.clone()))
//!     .service(endpoints);
//! let resp = svc.oneshot(http::Request::get("/reviews/1").body(Full::new(Bytes::new()))?).await?;
//! // After 5 consecutive 5xx (or connect failures) from a host, it is ejected.
//! println!("{} ejected: {}", resp.status(), detector.is_ejected("10.0.0.1:8080"));
//! # Ok(()) }
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
