//! [`IdentityCollector`]: the workload certificate and peer verification outcomes as
//! `mesh_identity_*` and `mesh_tls_*` metrics, read from mesh-tls at scrape time.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use mesh_admin::IdentityCollector;
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

use mesh_telemetry::metrics::library::{Sample, encode_family};
use mesh_tls::verify::VerifyStats;
use mesh_tls::{IdentityStatus, IdentityStore};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::unix_seconds;

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
        encode_family(
            &mut enc,
            "identity_certificate_state",
            "1 for the current state of the workload certificate",
            MetricType::Gauge,
            &states,
        )?;
        if let IdentityStatus::Available { not_after, .. } = status {
            encode_family(
                &mut enc,
                "identity_certificate_expiry_timestamp_seconds",
                "When the current certificate expires (Unix seconds)",
                MetricType::Gauge,
                &[(vec![], unix_seconds(not_after))],
            )?;
        }
        let stats = self.store.stats();
        encode_family(
            &mut enc,
            "identity_rotations",
            "Certificates published (first issue and rotations)",
            MetricType::Counter,
            &[(vec![], stats.rotations as f64)],
        )?;
        encode_family(
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
            encode_family(
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
            encode_family(
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
