//! The client's HBONE opt-in ([`MeshClientConfig::hbone_hosts`]): istiod's proxyless
//! generator never marks an endpoint `tunnel: http` (its `supportTunnel` is false for
//! proxyless nodes), so a client told which services speak HBONE marks their endpoints
//! itself, as istiod's sidecar generator would.
//!
//! [`MeshClientConfig::hbone_hosts`]: super::MeshClientConfig::hbone_hosts

use std::sync::Arc;

use mesh_core::config::ConfigSnapshot;
use mesh_core::model::{ClusterLoadAssignment, TlsMode};

/// `snapshot` with the endpoints of the clusters of `hosts` marked [`TlsMode::Hbone`]
/// (the same snapshot when `hosts` is empty or none of them has endpoints).
pub(super) fn mark(snapshot: &Arc<ConfigSnapshot>, hosts: &[String]) -> Arc<ConfigSnapshot> {
    if hosts.is_empty() {
        return snapshot.clone();
    }
    let mut out = None::<ConfigSnapshot>;
    for cluster in snapshot.clusters.values() {
        let Some(host) = service_host(&cluster.name) else {
            continue;
        };
        if !hosts.iter().any(|h| h == host) {
            continue;
        }
        let Some(eds) = cluster.discovery.eds_name(&cluster.name) else {
            continue;
        };
        let Some(cla) = snapshot.endpoints.get(eds) else {
            continue;
        };
        let s = out.get_or_insert_with(|| (**snapshot).clone());
        Arc::make_mut(&mut s.endpoints).insert(eds.into(), Arc::new(tunnelled(cla)));
    }
    out.map_or_else(|| snapshot.clone(), Arc::new)
}

/// The service host of an Istio cluster name, `outbound|<port>|<subset>|<host>`.
pub(crate) fn service_host(cluster: &str) -> Option<&str> {
    let mut parts = cluster.split('|');
    (parts.next() == Some("outbound")).then_some(())?;
    let host = parts.nth(2)?;
    (parts.next().is_none() && !host.is_empty()).then_some(host)
}

fn tunnelled(cla: &ClusterLoadAssignment) -> ClusterLoadAssignment {
    let mut cla = cla.clone();
    for ep in cla
        .localities
        .iter_mut()
        .flat_map(|l| l.endpoints.iter_mut())
    {
        ep.tls_mode = TlsMode::Hbone;
    }
    cla
}

#[cfg(test)]
mod tests {
    use super::service_host;

    #[test]
    fn service_hosts_of_istio_cluster_names() {
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(service_host(&format!("outbound|9080||{host}")), Some(host));
        assert_eq!(
            service_host(&format!("outbound|9080|v1|{host}")),
            Some(host)
        );
        assert_eq!(service_host(&format!("inbound|9080||{host}")), None);
        assert_eq!(service_host("outbound|9080|v1"), None);
        assert_eq!(service_host("reviews"), None);
        assert_eq!(service_host("outbound|9080|v1|h|x"), None);
    }
}
