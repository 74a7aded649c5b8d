//! [`PeerIdentity`]: the verified SPIFFE ID of the other side of an mTLS connection.

use mesh_core::SpiffeId;
use rustls::CommonState;

use crate::svid::parse_leaf;

/// The peer's SPIFFE ID, verified during the handshake.
///
/// The server inserts it into every request's extensions, so axum handlers take it with
/// `Extension<PeerIdentity>` and hyper/tower services read
/// `req.extensions().get::<PeerIdentity>()`; tonic handlers get it through
/// [`crate::server::peer_identity`].
///
/// ```
/// use mesh_core::SpiffeId;
/// use mesh_tls::PeerIdentity;
/// let peer = PeerIdentity(SpiffeId::new("spiffe://cluster.local/ns/default/sa/web").unwrap());
/// assert_eq!(peer.to_string(), "spiffe://cluster.local/ns/default/sa/web");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity(pub SpiffeId);

impl PeerIdentity {
    /// The SPIFFE ID.
    pub fn id(&self) -> &SpiffeId {
        &self.0
    }

    /// Reads the identity of an established connection (`None` before the handshake or
    /// without a peer certificate). The certificate was verified by our verifier, so this
    /// only re-reads its URI SAN.
    pub fn of_connection(conn: &CommonState) -> Option<Self> {
        let leaf = conn.peer_certificates()?.first()?;
        parse_leaf(leaf).ok().map(|svid| Self(svid.id))
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}
