//! The workload's side of the Istio CA gRPC API
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`):
//! - [`IstioCaClient`]: a [`crate::CertProvider`] that sends a fresh CSR to istiod (or any
//!   Istio-compatible CA) and checks what comes back; run it under
//!   [`crate::rotation::Rotation`];
//! - [`istio_proto`]: the API's messages, shared with the server side (the embedded control
//!   plane's CA server, `mesh_control::ca::IstioCaServer`).

pub mod istio_client;
pub mod istio_proto;

pub use istio_client::IstioCaClient;
