//! Harnesses for interop suites against real control planes.
//!
//! - [`istiod`]: runs istiod (`pilot-discovery`, built by `scripts/peers/istiod.sh`) without
//!   Kubernetes: a file config directory, our dev CA plugged in through `ROOT_CA_DIR`, every
//!   listener on 127.0.0.1, and JWT authentication against [`jwt::TestIssuer`].
//! - [`jwt`]: an OIDC-style token issuer for tests: RS256 tokens with Kubernetes
//!   service-account claims, and the JWKS served over local HTTP for istiod to fetch.
//! - [`model_diff`]: field-by-field differences between two decoded client models (our
//!   control plane against istiod on the same directory).
//! - [`xds`]: test pacing and "everything asked for has arrived" for xDS clients.
//! - [`workload`]: a workload built on the library as an Istio proxyless workload: its
//!   certificate from the control plane's CA, its xDS, a MeshClient, and an mTLS server
//!   enforcing the RBAC of its xDS inbound listener.
//!
//! The tests live in `tests/` (`istiod_ca.rs`, `istiod_xds.rs`, `istiod_mesh.rs` on the
//! config `interop/istio/config`; `istiod_grpc.rs` with grpc-go on its own); see
//! docs/istio.md and docs/grpc.md.

pub mod istiod;
pub mod jwt;
pub mod model_diff;
pub mod workload;
pub mod xds;

/// Harness failures (a peer that does not start, a bad fixture), with what went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The peer started but did not become ready, or exited.
    #[error("{0}")]
    NotReady(String),
    /// A key or certificate could not be used.
    #[error("{0}")]
    Crypto(String),
}

impl HarnessError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
