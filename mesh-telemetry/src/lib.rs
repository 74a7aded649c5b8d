//! The mesh's request-path telemetry as tower layers that stand alone: Istio's standard
//! metrics from both sides of every call ([`metrics::IstioMetricsLayer`], `istio_*`), trace
//! propagation (W3C `traceparent` and B3, [`trace::TraceLayer`]), access logs
//! ([`access_log::AccessLogLayer`]), OTLP export (feature `otlp`), and scrape-time
//! collectors ([`metrics::library`]).
//!
//! It depends on mesh-core (the config model and the request-extension types layers share,
//! such as [`PeerIdentity`](mesh_core::extensions::PeerIdentity)), tower, http, tokio and
//! prometheus-client; nothing about routing, TLS or xDS. The admin server, CSDS and the
//! per-cluster upstream export, which read that state, are in mesh-admin.
//!
//! The metrics layer on an axum `Router` with `tower::ServiceBuilder`
//! (`reporter="destination"`; inside an mTLS server the caller's `PeerIdentity` labels
//! the `source_*` side):
//!
//! ```
//! use axum::{Router, routing::get};
//! use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
//! use prometheus_client::registry::Registry;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let metrics = IstioMetrics::new();
//! let mut registry = Registry::default();
//! metrics.register(&mut registry);
//!
//! let me = WorkloadInfo { workload: "reviews-v1".into(), namespace: "default".into(),
//!     ..Default::default() };
//! let app = ServiceBuilder::new()
//!     .layer(IstioMetricsLayer::destination(&metrics, me,
//!         ServiceInfo::from_host("reviews.default.svc.cluster.local")))
//!     .service(Router::new().route("/", get(|| async { "hi" })));
//! // Serve `app` with hyper-util (tests/standalone.rs does, over TCP); here, one request:
//! let req = http::Request::get("/").body(axum::body::Body::empty()).unwrap();
//! let resp = app.oneshot(req).await.unwrap();
//! drop(resp); // recorded when the response body ends or is dropped
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.lines().any(|l| l.starts_with("istio_requests_total{reporter=\"destination\"")
//!     && l.contains("destination_workload=\"reviews-v1\"") && l.contains("response_code=\"200\"")));
//! # }
//! ```
//!
//! On a hyper-util client (`reporter="source"`), outermost:
//!
//! ```no_run
//! # use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, WorkloadInfo};
//! # let metrics = IstioMetrics::new();
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! let client = tower::ServiceBuilder::new()
//!     .layer(IstioMetricsLayer::source(&metrics, WorkloadInfo::default()))
//!     .service(Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<bytes::Bytes>>());
//! # let _ = client;
//! ```
//!
//! See `docs/telemetry.md` for the labels, the peer directory and the other layers.

pub mod access_log;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod trace;
