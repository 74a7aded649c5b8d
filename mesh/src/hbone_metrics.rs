//! Istio's ambient metrics for the HBONE tunnels of [`Mesh::hbone_server`] and
//! [`Mesh::hbone_client`](crate::Mesh::hbone_client): each tunnel is one `istio_tcp_*`
//! connection (opened, closed, bytes each way), `connection_security_policy="mutual_tls"`,
//! the source labels from the verified peer and the `CONNECT`'s `baggage`, the destination
//! service from its `forwarded` host, as ztunnel reports them. The HTTP requests inside a
//! tunnel that carried `baggage` take the same source labels in `istio_requests_total`
//! (the meter puts a [`SourceWorkload`] on each).
//!
//! [`Mesh::hbone_server`]: crate::Mesh::hbone_server

use std::sync::Arc;

use mesh_hbone::{Baggage, HboneClient, HboneClientSettings, HboneTarget, TunnelInfo, TunnelMeter};
use mesh_telemetry::metrics::tcp::{TcpConnection, TcpMetrics};
use mesh_telemetry::metrics::{
    IstioMetrics, PeerLabels, Reporter, SecurityPolicy, ServiceInfo, SourceWorkload, UNKNOWN,
    WorkloadInfo,
};
use mesh_tls::IdentityStore;

struct Meter {
    tcp: TcpConnection,
    /// Server side: the caller's labels for the requests inside the tunnel.
    source: Option<SourceWorkload>,
}

impl TunnelMeter for Meter {
    fn received(&self, bytes: u64) {
        self.tcp.received(bytes);
    }

    fn sent(&self, bytes: u64) {
        self.tcp.sent(bytes);
    }

    fn extend_request(&self, extensions: &mut http::Extensions) {
        if let Some(s) = &self.source {
            extensions.insert(s.clone());
        }
    }
}

fn meter(
    metrics: &IstioMetrics,
    labels: PeerLabels,
    source: Option<SourceWorkload>,
) -> Box<dyn TunnelMeter> {
    let tcp = TcpMetrics::new(metrics, Arc::new(labels)).open();
    Box::new(Meter { tcp, source })
}

fn service(host: Option<&str>) -> ServiceInfo {
    host.map(ServiceInfo::from_host).unwrap_or_default()
}

/// The server side: `reporter="destination"`, this workload the destination.
pub(crate) fn server_meter(
    metrics: IstioMetrics,
    local: WorkloadInfo,
) -> impl Fn(&TunnelInfo) -> Box<dyn TunnelMeter> + Send + Sync + 'static {
    move |t: &TunnelInfo| {
        let labels = PeerLabels {
            reporter: Reporter::Destination,
            source: source_of(&WorkloadInfo::from_spiffe(t.peer.id()), &t.baggage),
            destination: local.clone(),
            service: service(t.service_host.as_deref()),
            security: SecurityPolicy::MutualTls,
        };
        // With baggage, the requests inside take the tunnel's source labels (as ztunnel
        // reports); without, the metrics layer resolves the caller's principal as usual.
        let requests =
            (t.baggage != Baggage::default()).then(|| SourceWorkload::new(labels.source.clone()));
        meter(&metrics, labels, requests)
    }
}

/// The client side: `reporter="source"`, the server's verified identity the destination.
pub(crate) fn client_meter(
    metrics: IstioMetrics,
    local: WorkloadInfo,
) -> impl Fn(&HboneTarget) -> Box<dyn TunnelMeter> + Send + Sync + 'static {
    move |t: &HboneTarget| {
        let labels = PeerLabels {
            reporter: Reporter::Source,
            source: local.clone(),
            destination: WorkloadInfo::from_spiffe(&t.identity),
            service: service(t.service.as_deref()),
            security: SecurityPolicy::MutualTls,
        };
        meter(&metrics, labels, None)
    }
}

/// An HBONE client of `identity` sending `local`'s baggage, each tunnel counted in
/// `istio_tcp_*` as `reporter="source"`.
pub(crate) fn client(
    identity: &IdentityStore,
    metrics: &IstioMetrics,
    local: &WorkloadInfo,
) -> HboneClient {
    let settings = HboneClientSettings {
        baggage: Some(baggage_of(local)),
        ..Default::default()
    };
    HboneClient::with_settings(identity.clone(), settings)
        .observe(client_meter(metrics.clone(), local.clone()))
}

/// ztunnel's source labels from a caller's baggage (its `with_derived_source`); the
/// principal stays the certificate's, the namespace too when the certificate names one.
fn source_of(peer: &WorkloadInfo, b: &Baggage) -> WorkloadInfo {
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
    let namespace = if peer.namespace == UNKNOWN {
        or(&b.namespace, UNKNOWN)
    } else {
        peer.namespace.clone()
    };
    WorkloadInfo {
        workload: or(&b.workload, UNKNOWN),
        namespace,
        principal: peer.principal.clone(),
        app: or(&b.service, UNKNOWN),
        version: or(&b.version, UNKNOWN),
        canonical_service: or(&b.service, UNKNOWN),
        canonical_revision: or(&b.version, UNKNOWN),
        cluster: or(&b.cluster, UNKNOWN),
    }
}

/// The baggage ztunnel would send for `local` (labels it does not know left out).
pub(crate) fn baggage_of(local: &WorkloadInfo) -> Baggage {
    let known = |v: &str| (v != UNKNOWN && !v.is_empty()).then(|| v.to_owned());
    Baggage {
        cluster: known(&local.cluster),
        namespace: known(&local.namespace),
        workload: known(&local.workload),
        service: known(&local.canonical_service),
        version: known(&local.canonical_revision),
    }
}
