//! `ServiceEntry` and `WorkloadEntry` (networking.istio.io): the service registry.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::{Unsupported, WorkloadSelector};

/// `ServiceEntry.spec`: a service (hosts and ports) and where its workloads are.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceEntry {
    /// Host names of the service (FQDNs such as `reviews.default.svc.cluster.local`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Virtual IPs (or CIDRs) of the service.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports the service listens on; at least one.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Inside or outside the mesh.
    #[serde(default)]
    pub location: Location,
    /// How the workload addresses are found.
    #[serde(default)]
    pub resolution: Resolution,
    /// Inline workloads.
    #[serde(default)]
    pub endpoints: Vec<WorkloadEntry>,
    /// Selects `WorkloadEntry` resources of the same namespace by label.
    #[serde(default)]
    pub workload_selector: Option<WorkloadSelector>,
    /// Namespaces that may see this service: `*` (default), `.` or namespace names.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Extra SPIFFE identities the servers may present.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `ServicePort`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// The port number the service is addressed on.
    #[serde(default)]
    pub number: u32,
    /// `HTTP`, `HTTP2`, `GRPC` or `TCP` (case-insensitive).
    #[serde(default)]
    pub protocol: String,
    /// Port name; workloads map names to their own ports.
    #[serde(default)]
    pub name: String,
    /// The port on the workloads, when it differs from `number`.
    #[serde(default)]
    pub target_port: Option<u32>,
}

/// `ServiceEntry.Location`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Location {
    /// Outside the mesh (no mTLS expected from the workloads).
    #[default]
    MeshExternal,
    /// Part of the mesh.
    MeshInternal,
}

/// `ServiceEntry.Resolution`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resolution {
    /// Pass-through to the original destination: not supported here.
    #[default]
    None,
    /// Endpoint addresses are IPs.
    Static,
    /// Endpoint addresses (or the hosts) are resolved through DNS.
    Dns,
    /// Like `DNS`, but only the first address is used.
    DnsRoundRobin,
}

/// `WorkloadEntry.spec` (also the inline `ServiceEntry.endpoints` items): one workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEntry {
    /// IP address (or DNS name for DNS resolution).
    #[serde(default)]
    pub address: String,
    /// Service port name -> port on this workload.
    #[serde(default)]
    pub ports: BTreeMap<String, u32>,
    /// Labels (for `workloadSelector` and `DestinationRule` subsets).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Network name: only one network is supported.
    #[serde(default)]
    pub network: Option<Unsupported>,
    /// `region/zone/subzone`.
    #[serde(default)]
    pub locality: String,
    /// Load-balancing weight (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// The workload's service account: its identity is
    /// `spiffe://<trust domain>/ns/<namespace>/sa/<serviceAccount>`.
    #[serde(default)]
    pub service_account: String,
}
