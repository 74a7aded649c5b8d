//! The Istio CA, served: [`IstioCaServer`] answers
//! `istio.v1.auth.IstioCertificateService/CreateCertificate` like istiod's Citadel on port
//! 15012. By default it signs with the in-process [`DevCa`]; any [`CaSigner`] can take its
//! place. The client side (a workload asking for its certificate) is
//! [`mesh_tls::ca::IstioCaClient`]; both speak the messages of [`mesh_tls::ca::istio_proto`].
//!
//! Every caller is authenticated, by a client certificate chained to the CA (identity: its
//! SPIFFE ID) or by a bootstrap bearer token mapped to an identity (compared in constant
//! time). The CA signs the *authenticated* identity: a CSR asking for another one is refused
//! with `PERMISSION_DENIED` naming both. An open signer, which believes the CSR, exists for
//! local experiments and refuses to listen anywhere but loopback.
//!
//! The server's own TLS certificate is issued by the same CA for DNS/IP names like istiod's
//! (`istiod.istio-system.svc`, `localhost`, `127.0.0.1`, `::1` by default), valid for a
//! year and not rotated: this is a development CA.
//!
//! - [`server`]: the builder ([`IstioCaServer`]), the running server and its parts;
//! - [`incoming`]: the TLS accept loop and what it knows about each caller ([`CaPeer`]);
//! - [`service`]: the gRPC service, caller authentication and the [`CaSigner`] seam.
//!
//! [`DevCa`]: mesh_tls::dev_ca::DevCa

pub mod incoming;
pub mod server;
pub mod service;

pub use incoming::{CaConnection, CaIncoming, CaPeer};
pub use server::{CaParts, IstioCaServer, RunningCaServer};
pub use service::{CaSigner, IstioCaService};
