//! [`EjectableHosts`]: how outlier detection takes hosts out of load balancing without
//! knowing the balancer (mesh-route's `Balancer` implements it).

/// A cluster's host set whose members can be ejected from load balancing.
pub trait EjectableHosts: Send + Sync {
    /// How many hosts the set has, and how many of them are ejected now.
    fn host_counts(&self) -> (usize, usize);

    /// Ejects (`true`) or returns (`false`) the host keyed `host` (`ip:port`, as in
    /// [`UpstreamEndpoint`](crate::extensions::UpstreamEndpoint)). Returns `false` when no
    /// such host is in the set.
    fn set_ejected(&self, host: &str, ejected: bool) -> bool;
}
