//! One workload: its identity from the mesh CA, its config source (the embedded control
//! plane in process, or an xDS client of istiod), and its [`Mesh`] (the facade): a
//! MeshClient with the resilience layers (retries, timeouts, circuit breakers, outlier
//! detection, fault injection) the VirtualServices and DestinationRules configure, whose
//! clusters feed the process's upstream metrics, and the destination-side Istio metrics for
//! its server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mesh::{Mesh, MeshBuilder};
use mesh_control::generate::MeshGenerator;
use mesh_control::istio::MeshConfig;
use mesh_control::local::LocalSource;
use mesh_core::SpiffeId;
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use mesh_xds::bootstrap::IstioNode;
use mesh_xds::client::XdsClient;
use tokio::sync::watch;

use crate::stats::{Telemetry, workload_info};

/// A running workload's mesh side.
pub struct Workload {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its mesh: credentials, config source, outbound client (the default
    /// `ResilienceStack` around every cluster), Istio metrics recorded into the process's
    /// [`Telemetry`].
    pub mesh: Mesh,
    /// The in-process config source, in embedded mode (its status feeds the admin).
    pub local: Option<LocalSource>,
}

/// The mesh of `name`-`version` with these credentials and config: its Istio metrics go to
/// `telemetry.metrics`, its clusters' state to `telemetry.upstream` (labelled
/// `workload="<name>-<version>"`).
fn build(
    identity: IdentityStore,
    config: impl FnOnce(MeshBuilder) -> MeshBuilder,
    (name, account, version): (&str, &str, &str),
    telemetry: &Telemetry,
) -> Result<Mesh, String> {
    let info = workload_info(name, account, version);
    config(Mesh::builder().identity_store(identity))
        .metrics(telemetry.metrics.clone())
        .upstream_metrics(telemetry.upstream.for_workload(&info.workload))
        .workload(info)
        .build()
        .map_err(|e| e.to_string())
}

impl Workload {
    /// The workload `name`-`version` with these credentials and this xDS client.
    pub fn new(
        id: SpiffeId,
        identity: IdentityStore,
        xds: XdsClient,
        who: (&str, &str, &str),
        telemetry: &Telemetry,
    ) -> Result<Self, String> {
        let mesh = build(identity, |b| b.xds_client(xds), who, telemetry)?;
        Ok(Self {
            id,
            mesh,
            local: None,
        })
    }

    /// Creates the identity (signed by the embedded control plane's CA; its lifetime is
    /// [`cert_ttl`]) and the workload's
    /// config source: the resources the control plane generates for its Istio proxyless
    /// node (`GENERATOR: grpc`), decoded in process (no xDS server, no stream). Sources
    /// sharing `generator` generate the client side once per config.
    pub fn start(
        ca: &Arc<DevCa>,
        config: watch::Receiver<Arc<MeshConfig>>,
        generator: &MeshGenerator,
        who: (&str, &str, &str),
        telemetry: &Telemetry,
    ) -> Result<Self, String> {
        let (name, account, version) = who;
        let node = IstioNode {
            pod_name: format!("{name}-{version}"),
            service_account: account.into(),
            labels: BTreeMap::from([
                ("app".to_owned(), name.to_owned()),
                ("version".to_owned(), version.to_owned()),
            ]),
            workload_name: Some(format!("{name}-{version}")),
            ..Default::default()
        };
        let id = node.spiffe_id().map_err(|e| e.to_string())?;
        let ttl = cert_ttl();
        let creds = ca
            .issue(&id, ttl)
            .map_err(|e| format!("issuing {id}: {e}"))?;
        let identity = IdentityStore::from_credentials(creds).map_err(|e| e.to_string())?;
        if ttl < DEFAULT_CERT_TTL {
            // Short-lived certificates are renewed at half-life, as the rotation does.
            let (ca, id, store) = (Arc::clone(ca), id.clone(), identity.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 2).await;
                    match ca.issue(&id, ttl) {
                        Ok(creds) => {
                            if let Err(e) = store.publish(creds) {
                                tracing::warn!(%id, "renewal refused: {e}");
                            }
                        }
                        Err(e) => tracing::warn!(%id, "renewal failed: {e}"),
                    }
                }
            });
        }
        let local =
            LocalSource::with_generator(config, node.node_proto(), generator.clone(), false);
        let source = local.clone();
        let mesh = build(identity, |b| b.config_source(source), who, telemetry)?;
        Ok(Self {
            id,
            mesh,
            local: Some(local),
        })
    }
}

const DEFAULT_CERT_TTL: Duration = Duration::from_secs(3600);

/// The workloads' certificate lifetime: `DEMO_CERT_TTL_SECS` (for scripts/soak: a
/// rotation every TTL/2 under load), else an hour (no rotation within a demo run).
pub(crate) fn cert_ttl() -> Duration {
    std::env::var("DEMO_CERT_TTL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s >= 2)
        .map_or(DEFAULT_CERT_TTL, Duration::from_secs)
}
