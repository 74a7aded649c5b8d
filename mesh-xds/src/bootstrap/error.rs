//! Why a bootstrap could not be loaded, and the environment variables it is loaded from.

use std::path::PathBuf;

/// Environment variable naming a bootstrap file.
pub const BOOTSTRAP_FILE_ENV: &str = "GRPC_XDS_BOOTSTRAP";
/// Environment variable holding bootstrap JSON inline.
pub const BOOTSTRAP_CONFIG_ENV: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// Why a bootstrap could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootstrapError {
    /// Neither `GRPC_XDS_BOOTSTRAP` nor `GRPC_XDS_BOOTSTRAP_CONFIG` is set.
    #[error("no xDS bootstrap: set {BOOTSTRAP_FILE_ENV} (a file) or {BOOTSTRAP_CONFIG_ENV} (JSON)")]
    NotConfigured,
    /// The bootstrap file could not be read.
    #[error("cannot read the xDS bootstrap file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a field has the wrong type.
    #[error("invalid xDS bootstrap JSON at `{path}`: {message}")]
    Json {
        /// The field path, e.g. `xds_servers[0].channel_creds[0].type`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The JSON is well-formed but breaks a rule of gRPC A27.
    #[error("invalid xDS bootstrap: {0}")]
    Invalid(String),
}
