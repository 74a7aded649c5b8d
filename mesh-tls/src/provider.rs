//! The choice of rustls crypto provider, documented where it is public:
//! [`crate::config::default_provider`]. Its own module so that everything that needs the
//! provider (configs, the SVID checks, CA clients) reaches it without going through the
//! config cache.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("mesh-tls needs a crypto provider: enable feature `ring` (default) or `aws-lc-rs`");

/// The crypto provider mesh-tls uses unless told otherwise (see [`crate::config`]).
pub fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    {
        // rustls 0.23.48 deprecates ring's provider: ring has no post-quantum key exchange
        // (X25519MLKEM768). The handshake is otherwise the same; feature `aws-lc-rs`
        // offers the hybrid group. Kept as the default for its simpler build.
        #[allow(deprecated)]
        Arc::new(rustls::crypto::ring::default_provider())
    }
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
}
