//! Counters of the HBONE server and client: tunnels opened and every refusal by reason
//! (`mesh_hbone_refused_total{reason=..}`), exported through prometheus-client.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Why the server refused a connection or a tunnel.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// The TLS handshake failed (plaintext, TLS 1.2, garbage, timeout): connection closed.
    tls_handshake,
    /// The client certificate broke a SPIFFE rule (another trust domain, no SVID).
    peer_rejected,
    /// ALPN was not `h2`.
    alpn,
    /// A method other than `CONNECT` (405).
    method,
    /// No or a malformed `:authority` (400).
    authority,
    /// The authority's IP is not one of ours (400).
    not_local,
    /// Authorization denied the caller (401).
    denied,
    /// No handler on the destination port (503).
    no_handler,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: Refusal,
}

/// The server's counters. Cheap to clone; clones share the counters.
#[derive(Clone, Debug, Default)]
pub struct HboneMetrics {
    refused: Family<ReasonLabels, Counter>,
    tunnels: Counter,
    connections: Counter,
}

impl HboneMetrics {
    /// Counters registered in `registry` under `mesh_hbone_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("mesh_hbone");
        sub.register(
            "refused",
            "HBONE connections and CONNECT streams refused, by reason",
            m.refused.clone(),
        );
        sub.register(
            "tunnels",
            "CONNECT streams accepted (answered 200)",
            m.tunnels.clone(),
        );
        sub.register(
            "connections",
            "mTLS HTTP/2 connections accepted",
            m.connections.clone(),
        );
        m
    }

    /// Refusals for `reason` so far.
    pub fn refused(&self, reason: Refusal) -> u64 {
        self.refused.get_or_create(&ReasonLabels { reason }).get()
    }

    /// Tunnels accepted so far.
    pub fn tunnels(&self) -> u64 {
        self.tunnels.get()
    }

    /// mTLS connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.get()
    }

    pub(crate) fn refuse(&self, reason: Refusal) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub(crate) fn tunnel(&self) {
        self.tunnels.inc();
    }

    pub(crate) fn connection(&self) {
        self.connections.inc();
    }
}
