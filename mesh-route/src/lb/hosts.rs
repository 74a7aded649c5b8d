//! The balancer as the host set outlier detection ejects from.

use super::balancer::Balancer;

/// Outlier detection (mesh-resilience's `OutlierDetector`) ejects through this: hosts are
/// keyed by [`EndpointRef::hash_key`](super::EndpointRef::hash_key) (`ip:port`), and every endpoint of the current plan
/// (DRAINING ones included) counts, as [`Balancer::endpoints`] lists them.
impl mesh_core::hosts::EjectableHosts for Balancer {
    fn host_counts(&self) -> (usize, usize) {
        let plan = self.plan.load();
        let ejected = plan.endpoints.iter().filter(|e| e.is_ejected()).count();
        (plan.endpoints.len(), ejected)
    }

    fn set_ejected(&self, host: &str, ejected: bool) -> bool {
        let found = self
            .plan
            .load()
            .endpoints
            .iter()
            .find(|e| e.hash_key() == host)
            .cloned();
        match found {
            Some(endpoint) => {
                Balancer::set_ejected(self, &endpoint, ejected);
                true
            }
            None => false,
        }
    }
}
