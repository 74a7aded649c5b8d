//! One workload: its identity from the mesh CA, its xDS client and its MeshClient, with
//! the resilience layers (retries, timeouts, circuit breakers, outlier detection, fault
//! injection) the VirtualServices and DestinationRules configure.

use std::collections::BTreeMap;
use std::time::Duration;

use mesh_control::server::ControlPlane;
use mesh_core::SpiffeId;
use mesh_resilience::ResilienceStack;
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::IdentityStore;
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};

/// A running workload's mesh side.
pub struct Workload {
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its credentials.
    pub identity: IdentityStore,
    /// Its outbound client (with [`ResilienceStack`] around every cluster).
    pub client: MeshClient,
}

impl Workload {
    /// Creates the identity (signed by the control plane's CA, in process) and connects an
    /// xDS client as an Istio proxyless node (`GENERATOR: grpc`).
    pub fn start(
        cp: &ControlPlane,
        xds_uri: &str,
        name: &str,
        account: &str,
        version: &str,
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
        let client = MeshClient::with_stack(
            xds,
            identity.clone(),
            MeshClientConfig::default(),
            ResilienceStack::new(),
        );
        Ok(Self {
            id,
            identity,
            client,
        })
    }
}
