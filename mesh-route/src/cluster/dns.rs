//! `STRICT_DNS` and `LOGICAL_DNS` clusters: every host name of the cluster's endpoints is
//! resolved again every refresh period. For `STRICT_DNS` each address becomes an endpoint
//! with the configured endpoint's locality, weight and health; for `LOGICAL_DNS` only the
//! first address does, as Envoy's DNS clusters do.
//!
//! `dns_lookup_family` picks the addresses: Envoy's `AUTO` (IPv6 when the name has any,
//! else IPv4), `V4_PREFERRED` (the reverse), `V4_ONLY`, `V6_ONLY` or `ALL`. A resolution
//! that succeeds without an address of the family leaves the name without endpoints (Envoy
//! removes its hosts); one that fails keeps the last addresses.
//!
//! A name listed in the [`hosts`](super::hosts) table takes its addresses from there; others
//! go to the system's resolver.
//!
//! Until the first resolution the balancer holds the names themselves (the pool resolves
//! them when it connects), so a new cluster serves at once.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use mesh_core::model::{ClusterLoadAssignment, DnsLookupFamily, Endpoint, EndpointAddress};

use crate::lb::Balancer;

/// How a DNS cluster's names are resolved.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolution {
    /// `dns_refresh_rate`.
    pub(crate) refresh: Duration,
    /// `dns_jitter`.
    pub(crate) jitter: Duration,
    /// `dns_lookup_family`.
    pub(crate) family: DnsLookupFamily,
    /// `LOGICAL_DNS`: only the first address.
    pub(crate) first_only: bool,
}

/// Starts the resolver of `assignment` for `balancer`; it ends when the balancer (the
/// cluster) is dropped. Does nothing outside a Tokio runtime.
pub(crate) fn spawn(
    balancer: Weak<Balancer>,
    assignment: Arc<ClusterLoadAssignment>,
    how: Resolution,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    rt.spawn(refresh(balancer, assignment, how, system_lookup));
}

/// The [`hosts`](super::hosts) table's entry, else the system's resolver (getaddrinfo:
/// /etc/hosts, then DNS).
async fn system_lookup(host: Arc<str>, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Some(ips) = super::hosts::get(&host) {
        return Ok(ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    tokio::net::lookup_host((&*host, port))
        .await
        .map(Iterator::collect)
}

/// The refresh loop of [`spawn`], over any `lookup` (the system's resolver, or a test's).
async fn refresh<L, F>(
    balancer: Weak<Balancer>,
    assignment: Arc<ClusterLoadAssignment>,
    how: Resolution,
    lookup: L,
) where
    L: Fn(Arc<str>, u16) -> F,
    F: Future<Output = io::Result<Vec<SocketAddr>>>,
{
    let mut known: HashMap<(Arc<str>, u16), Vec<SocketAddr>> = HashMap::new();
    let mut last: Option<ClusterLoadAssignment> = None;
    loop {
        for (host, port) in names(&assignment) {
            match lookup(host.clone(), port).await {
                Ok(addrs) => {
                    known.insert((host, port), pick(how, addrs));
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "DNS resolution failed; keeping the last addresses");
                }
            }
        }
        let resolved = expand(&assignment, &known);
        let Some(b) = balancer.upgrade() else { return };
        if last.as_ref() != Some(&resolved) {
            b.update(Arc::new(resolved.clone()));
            last = Some(resolved);
        }
        drop(b);
        tokio::time::sleep(next_refresh(how, rand::random::<f64>())).await;
    }
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

/// The addresses of a successful lookup to use: the family's, the first only for
/// `LOGICAL_DNS`.
fn pick(how: Resolution, addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut chosen = choose(how.family, addrs);
    if how.first_only {
        chosen.truncate(1);
    } else {
        chosen.sort();
        chosen.dedup();
    }
    chosen
}

/// The wait before the next resolution: the refresh rate plus `unit` (in [0, 1)) of the
/// jitter, so that clusters refreshed together spread their lookups.
fn next_refresh(how: Resolution, unit: f64) -> Duration {
    how.refresh + how.jitter.mul_f64(unit.clamp(0.0, 1.0))
}

/// The addresses `family` allows, in the resolver's order.
fn choose(family: DnsLookupFamily, all: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (v4, v6): (Vec<SocketAddr>, Vec<SocketAddr>) = all.iter().partition(|a| a.is_ipv4());
    match family {
        DnsLookupFamily::All => all,
        DnsLookupFamily::V4Only => v4,
        DnsLookupFamily::V6Only => v6,
        DnsLookupFamily::V4Preferred if v4.is_empty() => v6,
        DnsLookupFamily::V4Preferred => v4,
        DnsLookupFamily::Auto if v6.is_empty() => v4,
        DnsLookupFamily::Auto => v6,
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

    #[test]
    fn the_lookup_family_picks_the_addresses() {
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[fd00::1]:80".parse().unwrap();
        let both = vec![v4, v6];
        use DnsLookupFamily as F;
        assert_eq!(choose(F::Auto, both.clone()), [v6]);
        assert_eq!(choose(F::Auto, vec![v4]), [v4]);
        assert_eq!(choose(F::V4Preferred, both.clone()), [v4]);
        assert_eq!(choose(F::V4Preferred, vec![v6]), [v6]);
        assert_eq!(choose(F::V4Only, both.clone()), [v4]);
        assert_eq!(choose(F::V4Only, vec![v6]), []);
        assert_eq!(choose(F::V6Only, both.clone()), [v6]);
        assert_eq!(choose(F::All, both.clone()), both);
    }

    #[test]
    fn dns_jitter_delays_each_refresh_by_up_to_the_jitter() {
        let how = Resolution {
            refresh: Duration::from_secs(5),
            jitter: Duration::from_millis(100),
            family: DnsLookupFamily::Auto,
            first_only: false,
        };
        assert_eq!(next_refresh(how, 0.0), Duration::from_secs(5));
        assert_eq!(next_refresh(how, 0.5), Duration::from_millis(5050));
        assert!(next_refresh(how, 0.999) < Duration::from_millis(5100));
        let none = Resolution {
            jitter: Duration::ZERO,
            ..how
        };
        assert_eq!(next_refresh(none, 0.7), Duration::from_secs(5));
    }

    #[tokio::test]
    async fn localhost_resolves_by_family() {
        let how = |family| Resolution {
            refresh: Duration::from_secs(1),
            jitter: Duration::ZERO,
            family,
            first_only: false,
        };
        let lookup = || system_lookup("localhost".into(), 8080);
        let v4 = pick(how(DnsLookupFamily::V4Only), lookup().await.unwrap());
        assert!(v4.contains(&"127.0.0.1:8080".parse().unwrap()), "{v4:?}");
        assert!(v4.iter().all(SocketAddr::is_ipv4), "{v4:?}");
        let v6 = pick(how(DnsLookupFamily::V6Only), lookup().await.unwrap());
        assert!(v6.iter().all(SocketAddr::is_ipv6), "{v6:?}");
    }

    /// A resolver the test scripts: `Some` answers these addresses, `None` fails.
    #[derive(Clone, Default)]
    struct ScriptedDns {
        answer: Arc<std::sync::Mutex<Option<Vec<SocketAddr>>>>,
        lookups: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl ScriptedDns {
        fn set(&self, answer: Option<&str>) {
            *self.answer.lock().unwrap() = answer.map(|a| vec![a.parse().unwrap()]);
        }

        fn lookups(&self) -> usize {
            self.lookups.load(std::sync::atomic::Ordering::Relaxed)
        }

        fn lookup(
            &self,
        ) -> impl Fn(Arc<str>, u16) -> std::future::Ready<io::Result<Vec<SocketAddr>>> + use<>
        {
            let this = self.clone();
            move |_, _| {
                this.lookups
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let answer = this.answer.lock().unwrap().clone();
                std::future::ready(answer.ok_or_else(|| io::Error::other("SERVFAIL")))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_addresses_until_dns_answers_again() {
        let cla = Arc::new(ClusterLoadAssignment {
            localities: vec![LocalityEndpoints {
                locality: Default::default(),
                priority: 0,
                load_balancing_weight: None,
                endpoints: vec![named("svc.test", 80)],
            }],
            ..Default::default()
        });
        let balancer = Arc::new(
            Balancer::new("dns", &Default::default(), &Default::default(), cla.clone()).unwrap(),
        );
        let addresses = || -> Vec<EndpointAddress> {
            let eps = balancer.endpoints();
            eps.iter().map(|e| e.address().clone()).collect()
        };
        let socket = |a: &str| EndpointAddress::Socket(a.parse().unwrap());
        let dns = ScriptedDns::default();
        dns.set(Some("10.0.0.1:80"));
        let how = Resolution {
            refresh: Duration::from_secs(1),
            jitter: Duration::ZERO,
            family: DnsLookupFamily::Auto,
            first_only: false,
        };
        let task = tokio::spawn(refresh(Arc::downgrade(&balancer), cla, how, dns.lookup()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(addresses(), [socket("10.0.0.1:80")]);

        // DNS fails for five refreshes: the cluster keeps the last good address.
        dns.set(None);
        let before = dns.lookups();
        tokio::time::sleep(Duration::from_millis(5500)).await;
        assert!(dns.lookups() - before >= 5, "no refresh while DNS was down");
        assert_eq!(addresses(), [socket("10.0.0.1:80")]);

        // DNS answers again, with a new address: the next refresh takes it.
        dns.set(Some("10.0.0.2:80"));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(addresses(), [socket("10.0.0.2:80")]);

        // The loop ends with the cluster.
        drop(balancer);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(task.is_finished());
    }
}
