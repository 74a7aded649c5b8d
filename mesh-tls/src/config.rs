//! rustls configs built from the [`IdentityStore`](crate::IdentityStore), and the choice of
//! crypto provider.
//!
//! The provider is always passed explicitly (`builder_with_provider`), never taken from a
//! process-wide default, so linking mesh-tls into a program that installs another default
//! changes nothing here. With the default `ring` feature the provider is *ring*; with only
//! `aws-lc-rs` it is aws-lc-rs; with both, *ring* (smaller, no C toolchain needed beyond
//! `cc`, and fast enough for ECDSA P-256 handshakes).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs")))]
compile_error!("mesh-tls needs a crypto provider: enable feature `ring` (default) or `aws-lc-rs`");

/// The crypto provider mesh-tls uses unless told otherwise (see the module docs).
pub fn default_provider() -> Arc<CryptoProvider> {
    #[cfg(feature = "ring")]
    {
        Arc::new(rustls::crypto::ring::default_provider())
    }
    #[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
    {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }
}
