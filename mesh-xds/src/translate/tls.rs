//! TLS transport socket translation.
