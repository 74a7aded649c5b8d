//! Istio's standard label set, split into the part resolved when config changes
//! ([`PeerLabels`]) and the part filled per request ([`IstioLabels`]).

use std::fmt;
use std::sync::Arc;

use mesh_core::SpiffeId;
use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};

/// The value Istio uses for a label it cannot resolve.
pub const UNKNOWN: &str = "unknown";

/// Which side of a call records the metric (`reporter` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Reporter {
    /// The client side (Istio's outbound sidecar).
    #[default]
    Source,
    /// The server side (Istio's inbound sidecar).
    Destination,
}

impl Reporter {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Destination => "destination",
        }
    }
}

/// The `request_protocol` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Plain HTTP (any version).
    Http,
    /// gRPC (`content-type: application/grpc*`).
    Grpc,
    /// A TCP connection.
    Tcp,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
            Self::Tcp => "tcp",
        }
    }
}

/// The `connection_security_policy` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SecurityPolicy {
    /// The peer presented a verified SPIFFE certificate.
    MutualTls,
    /// Plaintext (or TLS without a client certificate).
    None,
    /// Not known by this reporter (Istio's client side reports `unknown`).
    #[default]
    Unknown,
}

impl SecurityPolicy {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MutualTls => "mutual_tls",
            Self::None => "none",
            Self::Unknown => UNKNOWN,
        }
    }
}

/// One workload's labels (either side of a call). Fields Istio cannot resolve are `unknown`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadInfo {
    /// `*_workload`: the Deployment (or other controller) name.
    pub workload: String,
    /// `*_workload_namespace`.
    pub namespace: String,
    /// `*_principal`: the SPIFFE ID, e.g. `spiffe://cluster.local/ns/default/sa/web`.
    pub principal: String,
    /// `*_app`: the `app` label.
    pub app: String,
    /// `*_version`: the `version` label.
    pub version: String,
    /// `*_canonical_service` (`service.istio.io/canonical-name`, defaults to `app`).
    pub canonical_service: String,
    /// `*_canonical_revision` (`service.istio.io/canonical-revision`, defaults to
    /// `version`, Istio uses `latest` when neither is set).
    pub canonical_revision: String,
    /// `*_cluster`: the `CLUSTER_ID`.
    pub cluster: String,
}

impl Default for WorkloadInfo {
    fn default() -> Self {
        let u = || UNKNOWN.to_string();
        Self {
            workload: u(),
            namespace: u(),
            principal: u(),
            app: u(),
            version: u(),
            canonical_service: u(),
            canonical_revision: u(),
            cluster: u(),
        }
    }
}

impl WorkloadInfo {
    /// What a verified peer certificate tells: principal and (Istio layout) namespace.
    ///
    /// ```
    /// use mesh_telemetry::metrics::WorkloadInfo;
    /// let id = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
    /// let w = WorkloadInfo::from_spiffe(&id);
    /// assert_eq!(w.namespace, "shop");
    /// assert_eq!(w.workload, "unknown");
    /// ```
    pub fn from_spiffe(id: &SpiffeId) -> Self {
        Self {
            principal: id.as_str().to_string(),
            namespace: id.istio_namespace().unwrap_or(UNKNOWN).to_string(),
            ..Self::default()
        }
    }
}

/// The destination service's labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// `destination_service`: the FQDN, e.g. `reviews.default.svc.cluster.local`.
    pub host: String,
    /// `destination_service_name`, e.g. `reviews`.
    pub name: String,
    /// `destination_service_namespace`, e.g. `default`.
    pub namespace: String,
}

impl Default for ServiceInfo {
    fn default() -> Self {
        Self {
            host: UNKNOWN.into(),
            name: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
        }
    }
}

impl ServiceInfo {
    /// Labels from a host as Istio names it: `<name>.<namespace>.svc.<domain>` gives name
    /// and namespace; any other host is its own name with an unknown namespace.
    ///
    /// ```
    /// use mesh_telemetry::metrics::ServiceInfo;
    /// let s = ServiceInfo::from_host("reviews.default.svc.cluster.local:9080");
    /// assert_eq!((s.host.as_str(), s.name.as_str(), s.namespace.as_str()),
    ///            ("reviews.default.svc.cluster.local", "reviews", "default"));
    /// ```
    pub fn from_host(authority: &str) -> Self {
        let host = strip_port(authority);
        if host.is_empty() {
            return Self::default();
        }
        let mut parts = host.split('.');
        let name = parts.next().unwrap_or(host);
        let namespace = match (parts.next(), parts.next()) {
            (Some(ns), Some("svc")) => ns,
            _ => UNKNOWN,
        };
        Self {
            host: host.to_string(),
            name: name.to_string(),
            namespace: namespace.to_string(),
        }
    }
}

/// `host:port` -> `host` (IPv6 literals keep their brackets).
pub(crate) fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    }
}

/// The labels fixed for one pair of peers: resolved when config changes, shared by every
/// request between them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct PeerLabels {
    /// `reporter`.
    pub reporter: Reporter,
    /// `source_*`.
    pub source: WorkloadInfo,
    /// `destination_*` (workload).
    pub destination: WorkloadInfo,
    /// `destination_service*`.
    pub service: ServiceInfo,
    /// `connection_security_policy`.
    pub security: SecurityPolicy,
}

/// Istio's label names in the order istio/proxy's stats filter emits them.
pub const ISTIO_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_canonical_service",
    "source_canonical_revision",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
    "response_code",
    "grpc_response_status",
];

impl PeerLabels {
    fn values(&self) -> [&str; 21] {
        let (s, d, svc) = (&self.source, &self.destination, &self.service);
        [
            self.reporter.as_str(),
            &s.workload,
            &s.namespace,
            &s.principal,
            &s.app,
            &s.version,
            &s.canonical_service,
            &s.canonical_revision,
            &s.cluster,
            &d.workload,
            &d.namespace,
            &d.principal,
            &d.app,
            &d.version,
            &svc.host,
            &svc.name,
            &svc.namespace,
            &d.canonical_service,
            &d.canonical_revision,
            &d.cluster,
            self.security.as_str(),
        ]
    }

    fn encode_with(
        &self,
        protocol: Protocol,
        flags: &str,
        tail: Option<(u16, Option<u16>)>,
        encoder: &mut LabelSetEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        let v = self.values();
        for (k, v) in ISTIO_LABELS[..20].iter().zip(&v[..20]) {
            (*k, *v).encode(encoder.encode_label())?;
        }
        ("request_protocol", protocol.as_str()).encode(encoder.encode_label())?;
        ("response_flags", flags).encode(encoder.encode_label())?;
        ("connection_security_policy", v[20]).encode(encoder.encode_label())?;
        if let Some((code, grpc)) = tail {
            ("response_code", u64::from(code)).encode(encoder.encode_label())?;
            let grpc = grpc.map(|g| g.to_string()).unwrap_or_default();
            ("grpc_response_status", grpc.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// The full label set of one HTTP/gRPC series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IstioLabels {
    /// The labels resolved at config time.
    pub peer: Arc<PeerLabels>,
    /// `request_protocol`.
    pub protocol: Protocol,
    /// `response_code` (0 when no response was received).
    pub response_code: u16,
    /// `grpc_response_status` (empty for plain HTTP).
    pub grpc_status: Option<u16>,
    /// `response_flags` (`-` when none).
    pub response_flags: &'static str,
}

impl EncodeLabelSet for IstioLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        self.peer.encode_with(
            self.protocol,
            self.response_flags,
            Some((self.response_code, self.grpc_status)),
            encoder,
        )
    }
}

/// The label set of the `istio_tcp_*` series: Istio's labels without `response_code` and
/// `grpc_response_status`, with `request_protocol="tcp"`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// The labels resolved at config time.
    pub peer: Arc<PeerLabels>,
    /// `response_flags` (`-` when none).
    pub response_flags: &'static str,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        self.peer
            .encode_with(Protocol::Tcp, self.response_flags, None, encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_port_keeps_ipv6_brackets() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn host_outside_kubernetes_naming_has_unknown_namespace() {
        let s = ServiceInfo::from_host("example.com");
        assert_eq!(s.name, "example");
        assert_eq!(s.namespace, UNKNOWN);
        assert_eq!(ServiceInfo::from_host(""), ServiceInfo::default());
    }
}
