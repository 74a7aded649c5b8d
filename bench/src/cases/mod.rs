//! The cases, each a way to serve [`crate::payload`] and open client lanes to it.

mod envoy_pair;
mod grpc;
mod hbone;
mod hyper_h1;
mod hyper_mtls;
mod in_process_mesh;
mod lanes;
mod process;
mod proxy_pair;

use std::fmt;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use envoy_pair::EnvoyPair;
pub use grpc::{GrpcMesh, GrpcTonicMtls};
pub use hbone::Hbone;
pub use hyper_h1::HyperH1;
pub use hyper_mtls::HyperMtls;
pub use in_process_mesh::InProcessMesh;
pub use proxy_pair::{ProxyPair, ProxyPairConfig};

use crate::Error;
use crate::loadgen::Lane;

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
    /// 8. HTTP/2 inside HBONE tunnels between two in-process workloads (ambient mode).
    Hbone,
}

impl CaseId {
    /// All cases in order.
    pub const ALL: [CaseId; 8] = [
        CaseId::HyperH1,
        CaseId::HyperMtls,
        CaseId::Mesh,
        CaseId::ProxyPair,
        CaseId::EnvoyPair,
        CaseId::GrpcTonicMtls,
        CaseId::GrpcMesh,
        CaseId::Hbone,
    ];

    /// The case's number (1-8).
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
            CaseId::Hbone => "HBONE in-process",
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

    /// What exactly is measured, for the report.
    fn describe(&self) -> String;
}
