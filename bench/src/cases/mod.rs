//! The cases, each a way to serve [`crate::payload`] and open client lanes to it.

mod envoy_hbone;
mod envoy_pair;
mod grpc;
mod grpc_go;
mod hbone;
mod hyper_h1;
mod hyper_mtls;
mod in_process_mesh;
pub(crate) mod lanes;
pub(crate) mod process;
mod proxy_pair;

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use envoy_hbone::EnvoyHbone;
pub use envoy_pair::EnvoyPair;
pub use grpc::{GrpcMesh, GrpcTonicMtls};
pub use grpc_go::GrpcGoPair;
pub use hbone::Hbone;
pub use hyper_h1::HyperH1;
pub use hyper_mtls::HyperMtls;
pub use in_process_mesh::InProcessMesh;
pub use proxy_pair::{ProxyPair, ProxyPairConfig};

pub(crate) use envoy_pair::{client_config as envoy_client, envoy};
pub(crate) use in_process_mesh::{HOST, PORT, config as mesh_config};

use crate::Error;
use crate::loadgen::{Lane, Load};

/// Which case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CaseId {
    /// 1. hyper direct, HTTP/1.1 plaintext.
    HyperH1,
    /// 2. hyper + rustls mTLS, HTTP/2, client certificates: the in-process baseline.
    HyperMtls,
    /// 3. the in-process mesh: MeshClient -> mesh server.
    Mesh,
    /// 4. our proxy pair (examples/proxy).
    ProxyPair,
    /// 5. an Envoy 1.40 pair.
    EnvoyPair,
    /// 6. unary gRPC, tonic over hyper + rustls mTLS: the gRPC baseline.
    GrpcTonicMtls,
    /// 7. unary gRPC through the mesh: `mesh.channel` -> mesh server.
    GrpcMesh,
    /// 8. hyper + rustls mTLS, HTTP/1.1: the baseline of case 3's protocol.
    HyperMtlsH1,
    /// 9. the in-process mesh over an HTTP/2 cluster (`h2UpgradePolicy: UPGRADE`).
    MeshH2,
    /// 10. unary gRPC between a grpc-go proxyless client and server.
    GrpcGoPair,
    /// 11. HTTP/2 inside HBONE tunnels between two in-process workloads (ambient mode).
    Hbone,
    /// 12. case 11's traffic over HBONE between two Envoy 1.40 sidecars.
    EnvoyHbone,
}

impl CaseId {
    /// All cases in order.
    pub const ALL: [CaseId; 12] = [
        CaseId::HyperH1,
        CaseId::HyperMtls,
        CaseId::Mesh,
        CaseId::ProxyPair,
        CaseId::EnvoyPair,
        CaseId::GrpcTonicMtls,
        CaseId::GrpcMesh,
        CaseId::HyperMtlsH1,
        CaseId::MeshH2,
        CaseId::GrpcGoPair,
        CaseId::Hbone,
        CaseId::EnvoyHbone,
    ];

    /// The case's number (1-12).
    pub fn number(self) -> u8 {
        self as u8 + 1
    }

    /// From its number.
    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n).checked_sub(1)?).copied()
    }

    /// A short label for tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            CaseId::HyperH1 => "hyper h1",
            CaseId::HyperMtls => "hyper+rustls mTLS h2",
            CaseId::Mesh => "in-process mesh",
            CaseId::ProxyPair => "our proxy pair",
            CaseId::EnvoyPair => "Envoy pair",
            CaseId::GrpcTonicMtls => "gRPC tonic+rustls mTLS",
            CaseId::GrpcMesh => "gRPC mesh.channel",
            CaseId::HyperMtlsH1 => "hyper+rustls mTLS h1",
            CaseId::MeshH2 => "in-process mesh h2",
            CaseId::GrpcGoPair => "gRPC grpc-go pair",
            CaseId::Hbone => "HBONE in-process",
            CaseId::EnvoyHbone => "Envoy HBONE pair",
        }
    }

    /// The in-process baseline speaking the same protocol as this case (the mesh over
    /// HTTP/1.1 against hyper + rustls over HTTP/1.1, over HTTP/2 against HTTP/2), so a
    /// ratio shows the mesh's own cost rather than the protocols' difference.
    pub fn same_protocol_baseline(self) -> Option<CaseId> {
        match self {
            CaseId::Mesh | CaseId::HyperMtlsH1 => Some(CaseId::HyperMtlsH1),
            CaseId::MeshH2 | CaseId::Hbone | CaseId::HyperMtls => Some(CaseId::HyperMtls),
            CaseId::GrpcMesh | CaseId::GrpcTonicMtls => Some(CaseId::GrpcTonicMtls),
            _ => None,
        }
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}. {}", self.number(), self.label())
    }
}

/// A running case: its servers (and proxies) are up; lanes connect to it.
pub trait Case: Send + Sync {
    /// Which case this is.
    fn id(&self) -> CaseId;

    /// Opens one client lane (a new connection, or a caller of the shared mesh client).
    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>>;

    /// Processes besides the harness whose CPU and memory count (name, pid).
    fn processes(&self) -> Vec<(String, u32)> {
        Vec::new()
    }

    /// Heap allocations so far of all of [`Case::processes`] together, when every one of
    /// them counts its own (`mesh-proxy --features count-allocs`); `None` otherwise.
    fn process_allocations(&self) -> BoxFuture<'_, Option<crate::alloc::Snapshot>> {
        Box::pin(async { None })
    }

    /// What exactly is measured, for the report.
    fn describe(&self) -> String;

    /// Whether the case runs `load` (a case with its own load generator may not).
    fn supports(&self, _load: Load) -> bool {
        true
    }

    /// For a case whose load comes from a program of its own: runs `load` for `warmup`
    /// unmeasured then `duration` measured, and returns its figures. `None` (the default):
    /// the harness drives lanes from [`Case::connect`].
    fn run_load(
        &self,
        _load: Load,
        _warmup: Duration,
        _duration: Duration,
    ) -> Option<BoxFuture<'_, Result<ExternalRun, Error>>> {
        None
    }
}

/// What a case's own load generator reports for one run (see [`Case::run_load`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ExternalRun {
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest latency.
    pub max_us: f64,
    /// The load generator's own CPU time during the measured part.
    pub cpu_ms: f64,
    /// The first failure.
    pub first_error: Option<String>,
}
