//! One workload: its identity from the mesh CA, its xDS client, and its [`Mesh`] (the
//! facade): a MeshClient with the resilience layers (retries, timeouts, circuit breakers,
//! outlier detection, fault injection) the VirtualServices and DestinationRules configure,
//! whose clusters feed the process's upstream metrics, and the destination-side Istio
//! metrics for its server.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh::Mesh;
use mesh_control::server::ControlPlane;
use mesh_core::SpiffeId;
use mesh_tls::IdentityStore;
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};

use crate::stats::{Telemetry, workload_info};

/// A running workload's mesh side.
pub struct Workload {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its mesh: credentials, xDS client, outbound client (the default `ResilienceStack`
    /// around every cluster), Istio metrics recorded into the process's [`Telemetry`].
    pub mesh: Mesh,
}

impl Workload {
    /// The workload `name`-`version` with these credentials and this xDS client: its
    /// Istio metrics go to `telemetry.metrics`, its clusters' state to `telemetry.upstream`
    /// (labelled `workload="<name>-<version>"`).
    pub fn new(
        id: SpiffeId,
        identity: IdentityStore,
        xds: XdsClient,
        (name, account, version): (&str, &str, &str),
        telemetry: &Telemetry,
    ) -> Result<Self, String> {
        let info = workload_info(name, account, version);
        let mesh = Mesh::builder()
            .identity_store(identity)
            .xds_client(xds)
            .metrics(telemetry.metrics.clone())
            .upstream_metrics(telemetry.upstream.for_workload(&info.workload))
            .workload(info)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { id, mesh })
    }

    /// Creates the identity (signed by the control plane's CA, in process) and connects an
    /// xDS client as an Istio proxyless node (`GENERATOR: grpc`).
    pub fn start(
        cp: &ControlPlane,
        xds_uri: &str,
        (name, account, version): (&str, &str, &str),
        telemetry: &Telemetry,
    ) -> Result<Self, String> {
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
        let creds = cp
            .ca()
            .issue(&id, Duration::from_secs(3600))
            .map_err(|e| format!("issuing {id}: {e}"))?;
        let identity = IdentityStore::from_credentials(creds).map_err(|e| e.to_string())?;
        let bootstrap = Bootstrap::istio_proxyless(node, xds_uri);
        let config = XdsClientConfig {
            node: bootstrap.node_proto(),
            ..Default::default()
        };
        let xds = XdsClient::new(
            config,
            channel::insecure(xds_uri).map_err(|e| e.to_string())?,
        );
        Self::new(id, identity, xds, (name, account, version), telemetry)
    }
}
