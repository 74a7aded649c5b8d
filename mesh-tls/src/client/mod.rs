//! The client side of mTLS: [`MeshConnector`], a `tower::Service<http::Uri>` that dials
//! TCP, presents our SVID and verifies the server's SPIFFE ID, for hyper-util's legacy
//! `Client` and tonic's `Endpoint::connect_with_connector`.
//!
//! Every new connection reads the store's latest credentials (through the config cache),
//! so rotation needs no reconnect; existing connections keep the certificate they started
//! with until they close.

mod connector;
mod stream;

pub use connector::MeshConnector;
pub use stream::MeshClientStream;
