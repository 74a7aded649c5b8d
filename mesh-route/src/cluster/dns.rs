//! `STRICT_DNS` clusters: every host name of the cluster's endpoints is resolved again
//! every refresh period, and each address becomes an endpoint with the configured
//! endpoint's locality, weight and health, as Envoy's strict DNS cluster does.
//!
//! Until the first resolution the balancer holds the names themselves (the pool resolves
//! them when it connects), so a new cluster serves at once. A name that fails to resolve
//! keeps its last addresses. IPv4 addresses are used when a name has any, else IPv6
//! (Envoy's `V4_PREFERRED`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mesh_core::model::{ClusterLoadAssignment, Endpoint, EndpointAddress};

use crate::lb::Balancer;

/// Starts the resolver of `assignment` for `balancer`; it ends when the balancer (the
/// cluster) is dropped. Does nothing outside a Tokio runtime.
pub(crate) fn spawn(
    balancer: Weak<Balancer>,
    assignment: Arc<ClusterLoadAssignment>,
    refresh: Duration,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(async move {
        let mut known: HashMap<(Arc<str>, u16), Vec<SocketAddr>> = HashMap::new();
        let mut last: Option<ClusterLoadAssignment> = None;
        loop {
            for (host, port) in names(&assignment) {
                if let Some(addrs) = resolve(&host, port).await {
                    known.insert((host, port), addrs);
                }
            }
            let resolved = expand(&assignment, &known);
            let Some(b) = balancer.upgrade() else { return };
            if last.as_ref() != Some(&resolved) {
                b.update(Arc::new(resolved.clone()));
                last = Some(resolved);
            }
            drop(b);
            tokio::time::sleep(refresh).await;
        }
    });
}

fn names(cla: &ClusterLoadAssignment) -> Vec<(Arc<str>, u16)> {
    let mut out: Vec<_> = cla
        .localities
        .iter()
        .flat_map(|l| &l.endpoints)
        .filter_map(|e| match &e.address {
            EndpointAddress::Dns { host, port } => Some((host.clone(), *port)),
            EndpointAddress::Socket(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

async fn resolve(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let all: Vec<SocketAddr> = addrs.collect();
            let v4: Vec<SocketAddr> = all.iter().copied().filter(SocketAddr::is_ipv4).collect();
            let mut chosen = if v4.is_empty() { all } else { v4 };
            chosen.sort();
            chosen.dedup();
            (!chosen.is_empty()).then_some(chosen)
        }
        Err(e) => {
            tracing::debug!(%host, error = %e, "DNS resolution failed; keeping the last addresses");
            None
        }
    }
}

/// The assignment with each named endpoint replaced by its resolved addresses (kept as the
/// name until it has resolved once).
fn expand(
    cla: &ClusterLoadAssignment,
    known: &HashMap<(Arc<str>, u16), Vec<SocketAddr>>,
) -> ClusterLoadAssignment {
    let mut out = cla.clone();
    for locality in &mut out.localities {
        locality.endpoints = locality
            .endpoints
            .iter()
            .flat_map(|e| match &e.address {
                EndpointAddress::Dns { host, port } => match known.get(&(host.clone(), *port)) {
                    Some(addrs) => addrs
                        .iter()
                        .map(|a| Endpoint {
                            address: EndpointAddress::Socket(*a),
                            hostname: e.hostname.clone().or_else(|| Some(host.clone())),
                            ..e.clone()
                        })
                        .collect(),
                    None => vec![e.clone()],
                },
                EndpointAddress::Socket(_) => vec![e.clone()],
            })
            .collect();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::model::LocalityEndpoints;

    fn named(host: &str, port: u16) -> Endpoint {
        Endpoint {
            address: EndpointAddress::Dns {
                host: host.into(),
                port,
            },
            health: Default::default(),
            weight: 3,
            hostname: None,
            tls_mode: Default::default(),
        }
    }

    #[test]
    fn each_address_of_a_name_is_an_endpoint_and_unresolved_names_stay() {
        let cla = ClusterLoadAssignment {
            localities: vec![LocalityEndpoints {
                locality: Default::default(),
                priority: 0,
                load_balancing_weight: None,
                endpoints: vec![named("a.test", 80), named("b.test", 80)],
            }],
            ..Default::default()
        };
        let a: Vec<SocketAddr> = vec![
            "10.0.0.1:80".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
        ];
        let known = HashMap::from([(("a.test".into(), 80), a.clone())]);
        let out = expand(&cla, &known);
        let eps = &out.localities[0].endpoints;
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].address, EndpointAddress::Socket(a[0]));
        assert_eq!(eps[1].address, EndpointAddress::Socket(a[1]));
        assert_eq!(eps[0].weight, 3);
        assert_eq!(eps[0].hostname.as_deref(), Some("a.test"));
        assert_eq!(eps[2], named("b.test", 80));
        assert_eq!(
            names(&cla),
            vec![("a.test".into(), 80), ("b.test".into(), 80)]
        );
    }

    #[tokio::test]
    async fn localhost_resolves_to_ipv4_first() {
        let addrs = resolve("localhost", 8080).await.unwrap();
        assert!(addrs.iter().all(SocketAddr::is_ipv4), "{addrs:?}");
        assert!(addrs.contains(&"127.0.0.1:8080".parse().unwrap()));
    }
}
