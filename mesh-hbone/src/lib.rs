//! Istio ambient mode in-process: the workload speaks HBONE itself.
//!
//! HBONE is HTTP/2 `CONNECT` over mutual TLS on port 15008: ztunnel and Envoy (in
//! sidecars and waypoints) carry each connection between workloads as one `CONNECT` stream
//! whose `:authority` is the destination's `<ip>:<port>`. Istio sends HBONE straight to a
//! workload labelled `networking.istio.io/tunnel: http`.
//!
//! - [`HboneServer`] (inbound): the :15008 listener. TLS 1.3 only, ALPN `h2`, a client SVID
//!   of an accepted trust domain; each `CONNECT` goes to the handler of its port, an HTTP
//!   service (with the caller's `PeerIdentity`) or a TCP handler (the byte stream).
//!   Refusals are answered as ztunnel answers them and counted ([`HboneMetrics`]).
//! - [`HboneClient`] (outbound): tunnels over pooled connections keyed by (source
//!   identity, destination identity, HBONE address), at most 100 streams per connection,
//!   the server verified against the destination's SPIFFE identity.
//!
//! ```no_run
//! # async fn run(store: mesh_tls::IdentityStore) -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Extension, Router, routing::get};
//! use mesh_core::{SpiffeId, extensions::PeerIdentity};
//! use mesh_hbone::{HboneClient, HboneServer};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // Server: HTTP on 9080 and a TCP echo on 9000, both reached only through :15008.
//! let app = Router::new().route("/", get(|Extension(p): Extension<PeerIdentity>| async move { p.to_string() }));
//! let server = HboneServer::builder(store.clone())
//!     .http(9080, app)
//!     .tcp(9000, |mut io, _info| async move {
//!         let (mut r, mut w) = tokio::io::split(&mut io);
//!         let _ = tokio::io::copy(&mut r, &mut w).await;
//!     })
//!     .build();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:15008").await?;
//! tokio::spawn(server.serve(listener, std::future::pending()));
//!
//! // Client: hyper-util's client over the tunnel.
//! let reviews = SpiffeId::new("spiffe://cluster.local/ns/default/sa/reviews")?;
//! let client = HboneClient::new(store);
//! let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
//!     .build::<_, http_body_util::Empty<bytes::Bytes>>(client.connector(reviews.clone()));
//! let resp = http.get("http://10.0.0.7:9080/".parse()?).await?;
//!
//! // Or a raw byte stream.
//! let target = mesh_hbone::HboneTarget::new("10.0.0.7:9000".parse()?, reviews);
//! let mut stream = client.connect(&target).await?;
//! stream.write_all(b"ping").await?;
//! # drop(resp); Ok(()) }
//! ```

pub mod authority;
pub mod client;
pub mod metrics;
pub mod observe;
pub mod server;
mod stream;
mod tls;

pub use client::{
    HboneClient, HboneClientSettings, HboneConnector, HboneError, HboneStream, HboneTarget,
};
pub use metrics::{HboneMetrics, Refusal};
pub use observe::{Baggage, TunnelIo, TunnelMeter, TunnelObserver};
pub use server::{HBONE_PORT, HboneServer, HboneServerBuilder, TunnelInfo};
