//! Scrape-time metrics: families read from state kept elsewhere when Prometheus scrapes
//! (prometheus-client [`Collector`]s), so nothing is counted twice and the request path pays
//! nothing. [`FnCollector`] reads one family from a closure; [`encode_family`] writes a
//! family of [`Sample`]s from a collector of your own. Register them in a prefixed
//! sub-registry:
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use mesh_telemetry::metrics::library::{FnCollector, Kind};
//!
//! let mut registry = Registry::default();
//! let mesh = registry.sub_registry_with_prefix("mesh");
//! mesh.register_collector(Box::new(FnCollector::new(
//!     "endpoints_ejected", "Endpoints ejected by outlier detection", Kind::Gauge,
//!     || vec![(vec![("cluster", "outbound|9080||reviews".to_string())], 1.0)],
//! )));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("mesh_endpoints_ejected{cluster=\"outbound|9080||reviews\"} 1"));
//! ```
//!
//! The collectors of identity, xDS and per-cluster upstream state are in mesh-admin
//! (`mesh_admin::IdentityCollector`, `XdsCollector`, `UpstreamMetrics`), which depends on
//! the crates that keep that state.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One labelled value of a scrape-time metric.
pub type Sample = (Vec<(&'static str, String)>, f64);

/// Encodes one family of samples in a [`Collector::encode`]: `kind` is
/// [`MetricType::Counter`] (a `_total` suffix is added) or a gauge (anything else).
pub fn encode_family(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: &[Sample],
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in samples {
        let e = metric.encode_family(labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(*value).encode(e)?,
            _ => ConstGauge::new(*value).encode(e)?,
        }
    }
    Ok(())
}

/// The kind of a [`FnCollector`] family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic (a `_total` suffix is added).
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One family read at scrape time from a closure: for state other crates keep (endpoint
/// health and ejections, retries, circuit-breaker overflows, pools) without this crate
/// depending on them.
///
/// ```
/// use mesh_telemetry::metrics::library::{FnCollector, Kind};
/// let c = FnCollector::new("endpoints_ejected", "Endpoints ejected by outlier detection",
///     Kind::Gauge, || vec![(vec![("cluster", "outbound|9080||reviews".to_string())], 1.0)]);
/// # let _ = c;
/// ```
pub struct FnCollector {
    name: String,
    help: String,
    kind: Kind,
    read: Box<dyn Fn() -> Vec<Sample> + Send + Sync>,
}

impl fmt::Debug for FnCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnCollector")
            .field("name", &self.name)
            .finish()
    }
}

impl FnCollector {
    /// A family named `name` (the sub-registry prefix is added) read from `read`.
    pub fn new(
        name: impl Into<String>,
        help: impl Into<String>,
        kind: Kind,
        read: impl Fn() -> Vec<Sample> + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            help: help.into(),
            kind,
            read: Box::new(read),
        }
    }
}

impl Collector for FnCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
        };
        encode_family(&mut enc, &self.name, &self.help, kind, &(self.read)())
    }
}
