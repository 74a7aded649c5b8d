//! Certificate authorities reached over the Istio CA gRPC API
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`):
//! - [`IstioCaClient`]: a [`crate::CertProvider`] that sends a fresh CSR to istiod (or any
//!   Istio-compatible CA) and checks what comes back; run it under
//!   [`crate::rotation::Rotation`];
//! - [`IstioCaServer`]: the dev CA ([`crate::dev_ca::DevCa`]) served over the same API, with
//!   bearer-token or client-certificate authentication.

pub mod istio_client;
pub mod istio_proto;
pub mod istio_server;

pub use istio_client::IstioCaClient;
pub use istio_server::{
    CaConnection, CaIncoming, CaParts, CaPeer, CaSigner, IstioCaServer, IstioCaService,
    RunningCaServer,
};
