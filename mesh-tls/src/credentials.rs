//! [`Credentials`]: one workload's certificate chain, private key and trust bundle.

use std::fmt;
use std::time::SystemTime;

use mesh_core::{SpiffeId, TrustDomain};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The material a workload needs for mTLS: its X.509-SVID chain (leaf first), the leaf's
/// private key, and the trust bundle (root certificates) peers are verified against.
///
/// `Debug` never prints the key, and the key is zeroized on drop.
pub struct Credentials {
    /// The SPIFFE ID in the leaf's URI SAN.
    pub id: SpiffeId,
    /// Leaf first, then intermediates; roots are in `roots`.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// Trust anchors of our own trust domain (and federated ones, when the source has them).
    pub roots: Vec<CertificateDer<'static>>,
    /// Leaf validity start.
    pub not_before: SystemTime,
    /// Leaf validity end: after this instant the credentials are unusable (fail closed).
    pub not_after: SystemTime,
}

impl Credentials {
    /// The trust domain of our own identity.
    pub fn trust_domain(&self) -> TrustDomain {
        self.id.trust_domain()
    }

    /// The instant at which the renewal should happen: half of the lifetime.
    pub fn half_life(&self) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        self.not_before + life / 2
    }

    /// True once `now` is past `not_after`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

impl Clone for Credentials {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
        }
    }
}

/// The key is wiped from memory when the credentials go (after a rotation, the old ones).
impl Drop for Credentials {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.key);
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("chain_len", &self.chain.len())
            .field("key", &"<redacted>")
            .field("roots_len", &self.roots.len())
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish()
    }
}
