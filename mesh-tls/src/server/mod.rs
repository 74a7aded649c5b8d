//! The server side of mTLS: [`MeshAcceptor`] terminates TLS with our SVID, requires a
//! client certificate that passes the SPIFFE rules, and yields the [`PeerIdentity`].
//!
//! - hyper / axum: [`serve`] accepts TCP, handshakes off the accept loop, and serves any
//!   `tower::Service<http::Request<Incoming>>` (an axum `Router` included) over HTTP/1.1 or
//!   HTTP/2 (ALPN), with `PeerIdentity` in every request's extensions.
//! - tonic: [`MeshAcceptor::incoming`] is a stream of handshaken connections for
//!   `Server::serve_with_incoming` (feature `tonic`); handlers read the identity with
//!   `peer_identity`.
//!
//! Every accept loop here admits at most [`ConnectionLimits::max_connections`] connections
//! at once and cuts slow clients off ([`ConnectionLimits`]).
//!
//! The acceptor fails closed: without valid credentials a connection is dropped before
//! any TLS byte is sent.
//!
//! [`PeerIdentity`]: crate::PeerIdentity

mod acceptor;
mod conn;
mod incoming;
mod limits;
mod permissive;
mod serve;

pub use acceptor::MeshAcceptor;
pub use conn::{Drain, accept_loop, serve_connection, serve_connection_with_limits};
#[cfg(feature = "tonic")]
pub use incoming::peer_identity;
pub use incoming::{MeshConnectInfo, MeshIncoming, MeshServerStream};
pub use limits::{
    AcceptBackoff, ConnectionLimiter, ConnectionLimits, ConnectionPermit, LimitedListener,
};
pub use permissive::{
    ConnectionAddrs, PeerAuthMode, PeerAuthentication, serve_peer_auth, serve_peer_auth_with_limits,
};
pub use serve::{serve, serve_with_shutdown};
