//! [`PeerIdentity`] (defined in mesh-core, where every layer can read it) and how to read it
//! off an established rustls connection.

use rustls::CommonState;

pub use mesh_core::extensions::PeerIdentity;

use crate::svid::parse_leaf;

/// Reads the peer identity of an established connection (`None` before the handshake or
/// without a peer certificate). The certificate was verified by our verifier, so this
/// only re-reads its URI SAN.
pub fn peer_of_connection(conn: &CommonState) -> Option<PeerIdentity> {
    let leaf = conn.peer_certificates()?.first()?;
    parse_leaf(leaf).ok().map(|svid| PeerIdentity(svid.id))
}
