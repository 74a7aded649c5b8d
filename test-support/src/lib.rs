//! Test helpers shared by the workspace.
//!
//! Interop tests run against real peers installed by `scripts/install-peers`, which
//! exports one `MESH_*_BIN` variable per peer. Under `scripts/test`
//! (`MESH_REQUIRE_PEERS=1`) a missing peer fails the test; under a plain `cargo test` the
//! test is skipped with a loud message, so a developer without the peers still gets a
//! useful run.

use std::path::PathBuf;

/// The path of a peer binary from the environment variable `var`, e.g. `MESH_ENVOY_BIN`.
///
/// Returns `None` (after printing why) when the peer is missing and peers are not
/// required. Panics when the peer is missing and `MESH_REQUIRE_PEERS=1`.
pub fn peer(var: &str) -> Option<PathBuf> {
    let required = std::env::var("MESH_REQUIRE_PEERS").is_ok_and(|v| v == "1");
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => Some(path),
        other => {
            let why = match other {
                Some(p) => format!("{var}={} does not exist", p.display()),
                None => format!("{var} is not set"),
            };
            if required {
                panic!("interop peer missing: {why} (run scripts/install-peers)");
            }
            eprintln!("SKIPPED: interop peer missing: {why}; run scripts/test to install it");
            None
        }
    }
}

/// Like [`peer`], for use at the top of a test: returns early when the peer is absent.
#[macro_export]
macro_rules! require_peer {
    ($var:expr) => {
        match $crate::peer($var) {
            Some(p) => p,
            None => return,
        }
    };
}

mod envoy;
mod ports;
pub use ports::free_port;
pub mod otelcol;

pub use envoy::EnvoyProcess;
