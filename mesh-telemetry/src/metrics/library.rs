//! The library's own metrics, read from the other crates' existing state at scrape time
//! (prometheus-client [`Collector`]s): nothing is counted twice and the request path pays
//! nothing. Register them in a prefixed sub-registry:
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use mesh_telemetry::metrics::library::IdentityCollector;
//! use mesh_tls::IdentityStore;
//!
//! let mut registry = Registry::default();
//! let mesh = registry.sub_registry_with_prefix("mesh");
//! mesh.register_collector(Box::new(IdentityCollector::new(IdentityStore::new())));
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("mesh_identity_certificate_state{state=\"initializing\"} 1"));
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_tls::verify::VerifyStats;
use mesh_tls::{IdentityStatus, IdentityStore};
use mesh_xds::ResourceType;
use mesh_xds::client::{ClientStatus, ResourceState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// One labelled value of a scrape-time metric.
pub type Sample = (Vec<(&'static str, String)>, f64);

/// Encodes one family of samples.
pub(crate) fn family(
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

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Certificates: state, expiry, rotations and failures of an [`IdentityStore`], and the
/// verification outcomes of acceptors and connectors ([`VerifyStats`]).
#[derive(Clone)]
pub struct IdentityCollector {
    store: IdentityStore,
    verifiers: Vec<(&'static str, Arc<VerifyStats>)>,
}

impl fmt::Debug for IdentityCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityCollector").finish_non_exhaustive()
    }
}

impl IdentityCollector {
    /// Reads `store`.
    pub fn new(store: IdentityStore) -> Self {
        Self {
            store,
            verifiers: Vec::new(),
        }
    }

    /// Also reads the verification counters of an acceptor (`side = "server"`) or a
    /// connector (`side = "client"`).
    pub fn with_verifier(mut self, side: &'static str, stats: Arc<VerifyStats>) -> Self {
        self.verifiers.push((side, stats));
        self
    }
}

impl Collector for IdentityCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let status = self.store.status();
        let current = match &status {
            IdentityStatus::Initializing => "initializing",
            IdentityStatus::Available { .. } => "available",
            IdentityStatus::Unavailable { .. } => "unavailable",
        };
        let states: Vec<Sample> = ["initializing", "available", "unavailable"]
            .iter()
            .map(|s| {
                (
                    vec![("state", s.to_string())],
                    f64::from(u8::from(*s == current)),
                )
            })
            .collect();
        family(
            &mut enc,
            "identity_certificate_state",
            "1 for the current state of the workload certificate",
            MetricType::Gauge,
            &states,
        )?;
        if let IdentityStatus::Available { not_after, .. } = status {
            family(
                &mut enc,
                "identity_certificate_expiry_timestamp_seconds",
                "When the current certificate expires (Unix seconds)",
                MetricType::Gauge,
                &[(vec![], unix_seconds(not_after))],
            )?;
        }
        let stats = self.store.stats();
        family(
            &mut enc,
            "identity_rotations",
            "Certificates published (first issue and rotations)",
            MetricType::Counter,
            &[(vec![], stats.rotations as f64)],
        )?;
        family(
            &mut enc,
            "identity_failures",
            "Failures to obtain or renew a certificate",
            MetricType::Counter,
            &[(vec![], stats.failures as f64)],
        )?;
        if !self.verifiers.is_empty() {
            let accepted: Vec<Sample> = self
                .verifiers
                .iter()
                .map(|(side, s)| (vec![("side", side.to_string())], s.accepted() as f64))
                .collect();
            family(
                &mut enc,
                "tls_peers_accepted",
                "Peer certificates accepted",
                MetricType::Counter,
                &accepted,
            )?;
            let rejected: Vec<Sample> = self
                .verifiers
                .iter()
                .flat_map(|(side, s)| {
                    s.snapshot().into_iter().map(move |(rule, n)| {
                        (
                            vec![
                                ("side", side.to_string()),
                                ("rule", rule.as_str().to_string()),
                            ],
                            n as f64,
                        )
                    })
                })
                .collect();
            family(
                &mut enc,
                "tls_peers_rejected",
                "Peer certificates rejected, by the rule broken",
                MetricType::Counter,
                &rejected,
            )?;
        }
        Ok(())
    }
}

/// A source of the xDS client's status for synchronous readers (scrapes, the admin
/// server). [`crate::admin::XdsStatusCache`] implements it for a live client.
pub trait XdsStatusSource: Send + Sync + 'static {
    /// The latest status (`None` before the first read).
    fn client_status(&self) -> Option<Arc<ClientStatus>>;
}

/// xDS: connected, ready, resources per type and state (`ACKED`, `NACKED`, ...), and the
/// last update per type.
pub struct XdsCollector {
    source: Arc<dyn XdsStatusSource>,
}

impl fmt::Debug for XdsCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsCollector").finish_non_exhaustive()
    }
}

impl XdsCollector {
    /// Reads `source` on each scrape.
    pub fn new(source: Arc<dyn XdsStatusSource>) -> Self {
        Self { source }
    }
}

const STATES: [ResourceState; 4] = [
    ResourceState::Requested,
    ResourceState::Acked,
    ResourceState::Nacked,
    ResourceState::DoesNotExist,
];

impl Collector for XdsCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let status = self.source.client_status().unwrap_or_default();
        let b = |v: bool| if v { 1.0 } else { 0.0 };
        family(
            &mut enc,
            "xds_connected",
            "1 while the ADS stream is open",
            MetricType::Gauge,
            &[(vec![], b(status.connected))],
        )?;
        family(
            &mut enc,
            "xds_ready",
            "1 once every subscribed type had its first answer",
            MetricType::Gauge,
            &[(vec![], b(status.ready))],
        )?;
        let mut resources = Vec::new();
        let mut last = Vec::new();
        for ty in ResourceType::ALL {
            for state in STATES {
                let n = status
                    .resources
                    .iter()
                    .filter(|r| r.kind == ty && r.state == state)
                    .count();
                resources.push((
                    vec![
                        ("type", ty.short_name().to_string()),
                        ("state", state.as_str().to_string()),
                    ],
                    n as f64,
                ));
            }
            if let Some(t) = status
                .resources
                .iter()
                .filter(|r| r.kind == ty)
                .filter_map(|r| r.last_update)
                .max()
            {
                last.push((vec![("type", ty.short_name().to_string())], unix_seconds(t)));
            }
        }
        family(
            &mut enc,
            "xds_resources",
            "Subscribed resources by type and state (NACKED = last update rejected)",
            MetricType::Gauge,
            &resources,
        )?;
        family(
            &mut enc,
            "xds_last_update_timestamp_seconds",
            "Last accepted or rejected update per type (Unix seconds)",
            MetricType::Gauge,
            &last,
        )
    }
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
        family(&mut enc, &self.name, &self.help, kind, &(self.read)())
    }
}
