//! SPIFFE workload identity and mutual TLS for hyper, axum and tonic: the workload's side of
//! Istio's Citadel (the CA server is in the control-plane crate, `mesh_control::ca`).
//!
//! Identity flows one way: a [`CertSource`] (PEM files, the Istio CA, the SPIFFE
//! Workload API, or the built-in dev CA) publishes [`Credentials`] into an
//! [`IdentityStore`]; acceptors and connectors build rustls configs from the store's
//! latest credentials for every new connection, and fail closed when there are none.
//!
//! | module | what it holds |
//! |---|---|
//! | [`store`] | [`IdentityStore`], the [`CertSource`] and [`CertProvider`] traits |
//! | [`source`] | PEM files with hot reload; the SPIFFE Workload API (SPIRE) |
//! | [`rotation`] | renewal of a one-shot [`CertProvider`] at half life, with backoff |
//! | `ca` | the Istio CA client (`IstioCaClient`) and the API's messages (feature `istio-ca`) |
//! | `dev_ca` | an in-process CA for tests, demos and the embedded control plane (feature `dev-ca`) |
//! | [`svid`], [`verify`] | the X.509-SVID rules and the SPIFFE verifiers for rustls, with per-rule counters |
//! | [`config`] | rustls configs per credential generation, ALPN ids, the crypto provider |
//! | [`client`] | [`client::MeshConnector`], a `tower::Service<Uri>` for hyper-util and tonic channels |
//! | [`handshake`] | handshakes on their own threads, off the workers that carry requests |
//! | [`server`] | [`server::MeshAcceptor`], serve loops, PeerAuthentication modes (STRICT, PERMISSIVE) |
//! | [`sniff`], [`peer`] | the ClientHello sniffer for PERMISSIVE; [`PeerIdentity`] off a connection |
//!
//! # Features
//!
//! The defaults are what a workload needs. A crate that only wants the acceptor and the
//! connector (no gRPC, no CSR code) depends on mesh-tls with `default-features = false,
//! features = ["ring"]`.
//!
//! | feature | default | adds | pulls in |
//! |---|---|---|---|
//! | `ring` | yes | the *ring* crypto provider (one provider is required) | ring |
//! | `aws-lc-rs` | no | the aws-lc-rs provider; with `ring` too, *ring* is used | aws-lc-rs |
//! | `istio-ca` | yes | `ca::IstioCaClient`: a fresh key and CSR per renewal, sent to istiod over gRPC | rcgen, tonic, prost |
//! | `dev-ca` | yes | `dev_ca::DevCa`: issues Istio-style SVIDs, signs CSRs, reads and writes Istio's CA directory | rcgen, pem |
//! | `tonic` | yes | tonic's `Connected` for `server::MeshServerStream`, and `server::peer_identity` | tonic |
//! | `spire` | yes | `source::SpireSource` (SPIFFE Workload API) | spiffe (with its gRPC client) |
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mesh_core::SpiffeId;
//! use mesh_tls::client::MeshConnector;
//! use mesh_tls::config::{ClientSettings, ServerSettings};
//! use mesh_tls::server::MeshAcceptor;
//! use mesh_tls::{IdentityStore, source::FileSource, verify::PeerPolicy};
//!
//! // istio-agent's layout (cert-chain.pem, key.pem, root-cert.pem), reloaded when it changes.
//! let (store, _reload) = IdentityStore::spawn(FileSource::dir("/etc/certs"));
//! store.ready().await;
//!
//! // Client side: present our SVID, accept only the server we meant to reach.
//! let reviews = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews")?;
//! let settings = ClientSettings { peers: PeerPolicy::identities([reviews]), ..Default::default() };
//! let connector = MeshConnector::new(store.clone(), settings);
//!
//! // Server side: require a client certificate from our trust domain.
//! let acceptor = MeshAcceptor::new(store, ServerSettings::default());
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:9080").await?;
//! let (tcp, _) = listener.accept().await?;
//! let (_tls, peer) = acceptor.accept(tcp).await?;
//! println!("client is {peer}");
//! # drop(connector); Ok(()) }
//! ```

#[cfg(feature = "istio-ca")]
pub mod ca;
pub mod client;
pub mod config;
pub mod credentials;
#[cfg(feature = "dev-ca")]
pub mod dev_ca;
pub mod error;
pub mod handshake;
mod params;
pub mod peer;
mod provider;
pub mod rotation;
mod san;
#[cfg(feature = "dev-ca")]
mod secret_file;
pub mod server;
pub mod sniff;
pub mod source;
pub mod store;
pub mod svid;
pub mod verify;

pub use credentials::Credentials;
pub use error::TlsError;
pub use peer::PeerIdentity;
pub use store::{CertProvider, CertSource, IdentityStats, IdentityStatus, IdentityStore};
