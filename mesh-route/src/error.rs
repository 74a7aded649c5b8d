//! Errors raised while building a router or a balancer from a config snapshot.

/// A config snapshot that cannot be turned into a router or a balancer. The message names the
/// rule broken and where; nothing of the previous snapshot is lost (the caller keeps it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A header name or value that HTTP does not allow.
    #[error("{location}: header {name:?}: {reason}")]
    InvalidHeader {
        /// Where in the route config (virtual host / route).
        location: String,
        /// The header name as configured.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A route that cannot be compiled.
    #[error("{location}: {reason}")]
    InvalidRoute {
        /// Where in the route config.
        location: String,
        /// The rule broken.
        reason: String,
    },
    /// A load-balancer setting outside its allowed range.
    #[error("cluster {cluster:?}: {reason}")]
    InvalidLbConfig {
        /// Cluster name.
        cluster: String,
        /// The rule broken.
        reason: String,
    },
}
