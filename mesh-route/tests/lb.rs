//! Load-balancer behaviour: distributions within statistical tolerance, consistent-hash
//! stability, priority and locality failover with the overprovisioning factor, draining,
//! panic, ejection.

use std::collections::HashMap;
use std::sync::Arc;

use mesh_core::model::*;
use mesh_route::{Balancer, EndpointRef, PickContext};

fn ep(i: u16, weight: u32, health: HealthStatus) -> Endpoint {
    Endpoint {
        address: EndpointAddress::Socket(([10, 0, (i >> 8) as u8, i as u8], 8080).into()),
        health,
        weight,
        hostname: None,
        tls_mode: TlsMode::Unset,
    }
}

fn healthy(range: std::ops::Range<u16>) -> Vec<Endpoint> {
    range.map(|i| ep(i, 1, HealthStatus::Healthy)).collect()
}

fn locality(
    zone: &str,
    priority: u32,
    weight: Option<u32>,
    endpoints: Vec<Endpoint>,
) -> LocalityEndpoints {
    LocalityEndpoints {
        locality: Arc::new(Locality {
            zone: zone.into(),
            ..Default::default()
        }),
        priority,
        load_balancing_weight: weight,
        endpoints,
    }
}

fn cla(localities: Vec<LocalityEndpoints>) -> Arc<ClusterLoadAssignment> {
    Arc::new(ClusterLoadAssignment {
        cluster_name: "c".into(),
        localities,
        ..Default::default()
    })
}

fn lb(policy: LbPolicy, localities: Vec<LocalityEndpoints>) -> Balancer {
    Balancer::new("c", &policy, &CommonLbConfig::default(), cla(localities)).unwrap()
}

fn counts(b: &Balancer, n: u64, hash: impl Fn(u64) -> Option<u64>) -> HashMap<String, u64> {
    let mut m = HashMap::new();
    for i in 0..n {
        let ctx = PickContext::with_random(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF)
            .hash(hash(i));
        let e = b.pick(&ctx).expect("a pick");
        *m.entry(e.hash_key().to_owned()).or_default() += 1;
    }
    m
}

fn key(i: u16) -> String {
    format!("10.0.{}.{}:8080", i >> 8, i as u8)
}

fn within(actual: u64, expected: f64, tolerance: f64) -> bool {
    (actual as f64 - expected).abs() <= expected * tolerance
}

#[test]
fn round_robin_weighted_is_exact_per_cycle() {
    let b = lb(
        LbPolicy::RoundRobin,
        vec![locality(
            "z",
            0,
            None,
            vec![
                ep(1, 1, HealthStatus::Healthy),
                ep(2, 2, HealthStatus::Healthy),
                ep(3, 5, HealthStatus::Unknown),
            ],
        )],
    );
    let c = counts(&b, 8_000, |_| None);
    assert_eq!(c[&key(1)], 1_000);
    assert_eq!(c[&key(2)], 2_000);
    assert_eq!(c[&key(3)], 5_000);
}

#[test]
fn random_is_uniform() {
    let b = lb(
        LbPolicy::Random,
        vec![locality("z", 0, None, healthy(0..10))],
    );
    let c = counts(&b, 100_000, |_| None);
    for i in 0..10 {
        assert!(within(c[&key(i)], 10_000.0, 0.05), "{:?}", c);
    }
}

#[test]
fn least_request_prefers_less_loaded() {
    let b = lb(
        LbPolicy::LeastRequest { choice_count: 2 },
        vec![locality("z", 0, None, healthy(0..4))],
    );
    let eps = b.endpoints();
    // Endpoint 0 is busy: 10 requests in flight.
    let _busy: Vec<_> = (0..10).map(|_| eps[0].start_request()).collect();
    assert_eq!(eps[0].active_requests(), 10);
    let c = counts(&b, 40_000, |_| None);
    // P2C: the busy one wins only when both candidates are it: 1/16 of picks.
    let busy = c.get(&key(0)).copied().unwrap_or(0);
    assert!(within(busy, 40_000.0 / 16.0, 0.1), "busy got {busy}");
    for i in 1..4 {
        assert!(within(c[&key(i)], 40_000.0 * 5.0 / 16.0, 0.05), "{c:?}");
    }
    drop(_busy);
    assert_eq!(eps[0].active_requests(), 0);
}

fn hash_policies() -> [LbPolicy; 2] {
    [
        LbPolicy::RingHash {
            min_ring_size: 1024,
            max_ring_size: 8 * 1024 * 1024,
            hash_function: HashFunction::XxHash,
        },
        LbPolicy::Maglev { table_size: 65537 },
    ]
}

#[test]
fn consistent_hash_is_sticky_and_stable_when_an_endpoint_is_added() {
    for policy in hash_policies() {
        let before = lb(policy.clone(), vec![locality("z", 0, None, healthy(0..10))]);
        let after = lb(policy.clone(), vec![locality("z", 0, None, healthy(0..11))]);
        let keys = 20_000u64;
        let mut moved = 0;
        let mut to_new = 0;
        for k in 0..keys {
            let h = mesh_route::hash::xxhash64(format!("user-{k}").as_bytes());
            let a = before
                .pick(&PickContext::with_random(k).hash(Some(h)))
                .unwrap();
            let a2 = before
                .pick(&PickContext::with_random(k + 1).hash(Some(h)))
                .unwrap();
            assert!(a.ptr_eq(&a2), "{policy:?}: same hash, same endpoint");
            let b = after
                .pick(&PickContext::with_random(k).hash(Some(h)))
                .unwrap();
            if a.hash_key() != b.hash_key() {
                moved += 1;
                to_new += u64::from(b.hash_key() == key(10));
            }
        }
        // The new endpoint takes its fair 1/11 of the keys. Other keys move only where the
        // structure shrinks: on Envoy's ring every old host drops its last
        // M/10 - M/11 entries, whose arcs fall to their successors (so up to 2/11 move in
        // all); Maglev's table moves only a few keys between old endpoints.
        let share = moved as f64 / keys as f64;
        let new_share = to_new as f64 / keys as f64;
        eprintln!("{policy:?}: {share:.4} of keys moved, {new_share:.4} to the new endpoint");
        assert!(
            (new_share - 1.0 / 11.0).abs() < 0.02,
            "{policy:?}: {new_share}"
        );
        let bound = match policy {
            LbPolicy::RingHash { .. } => 2.0 / 11.0 + 0.02,
            _ => 1.0 / 11.0 + 0.03,
        };
        assert!(share < bound, "{policy:?}: {share} of keys moved");
        // Spread is even enough.
        let c = counts(&before, 20_000, |i| {
            Some(mesh_route::hash::xxhash64(&i.to_le_bytes()))
        });
        for i in 0..10 {
            assert!(within(c[&key(i)], 2_000.0, 0.25), "{policy:?} {c:?}");
        }
    }
}

#[test]
fn no_hash_picks_at_random() {
    for policy in hash_policies() {
        let b = lb(policy, vec![locality("z", 0, None, healthy(0..4))]);
        let c = counts(&b, 8_000, |_| None);
        assert_eq!(c.len(), 4);
    }
}

#[test]
fn invalid_configs_are_rejected() {
    let e = Balancer::new(
        "c",
        &LbPolicy::Maglev { table_size: 65536 },
        &CommonLbConfig::default(),
        cla(vec![]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("must be a prime"), "{e}");
    let e = Balancer::new(
        "c",
        &LbPolicy::RingHash {
            min_ring_size: 10,
            max_ring_size: 5,
            hash_function: HashFunction::XxHash,
        },
        &CommonLbConfig::default(),
        cla(vec![]),
    )
    .unwrap_err();
    assert!(e.to_string().contains("min_ring_size"), "{e}");
    // No endpoints: no pick, no panic.
    assert!(
        lb(LbPolicy::RoundRobin, vec![])
            .pick(&PickContext::new())
            .is_none()
    );
}

/// Envoy's priority doc: P0 with 50% healthy and factor 1.4 keeps 70% of the traffic.
#[test]
fn priority_failover_with_overprovisioning() {
    let mut p0 = healthy(0..5);
    p0.extend((5..10).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let b = lb(
        LbPolicy::RoundRobin,
        vec![
            locality("a", 0, None, p0),
            locality("b", 1, None, healthy(100..110)),
        ],
    );
    assert_eq!(b.priority_load().load, vec![70, 30]);
    let c = counts(&b, 100_000, |_| None);
    let p0_total: u64 = (0..5).map(|i| c.get(&key(i)).copied().unwrap_or(0)).sum();
    let p1_total: u64 = (100..110)
        .map(|i| c.get(&key(i)).copied().unwrap_or(0))
        .sum();
    assert!(within(p0_total, 70_000.0, 0.02), "{p0_total}");
    assert!(within(p1_total, 30_000.0, 0.03), "{p1_total}");
    assert!(
        (5..10).all(|i| !c.contains_key(&key(i))),
        "unhealthy endpoints get nothing"
    );
    // Factor 100 (in the assignment): 50% healthy keeps 50%.
    let mut p0 = healthy(0..5);
    p0.extend((5..10).map(|i| ep(i, 1, HealthStatus::Timeout)));
    let a = Arc::new(ClusterLoadAssignment {
        cluster_name: "c".into(),
        localities: vec![
            locality("a", 0, None, p0),
            locality("b", 1, None, healthy(100..110)),
        ],
        overprovisioning_factor: 100,
    });
    let b = Balancer::new("c", &LbPolicy::Random, &CommonLbConfig::default(), a).unwrap();
    assert_eq!(b.priority_load().load, vec![50, 50]);
}

/// Envoy's locality-weight doc: X (weight 1, 50% healthy) and Y (weight 2): X's effective
/// weight is 1 * min(1, 1.4 * 0.5) = 0.7, so X gets 0.7 / 2.7 of the traffic.
#[test]
fn locality_weights_with_health() {
    let mut x = healthy(0..5);
    x.extend((5..10).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let common = CommonLbConfig {
        locality_weighted: true,
        ..Default::default()
    };
    let b = Balancer::new(
        "c",
        &LbPolicy::RoundRobin,
        &common,
        cla(vec![
            locality("x", 0, Some(1), x),
            locality("y", 0, Some(2), healthy(100..110)),
            locality("z", 0, None, healthy(200..210)),
        ]),
    )
    .unwrap();
    let n = 27_000;
    let c = counts(&b, n, |_| None);
    let x_total: u64 = (0..5).map(|i| c.get(&key(i)).copied().unwrap_or(0)).sum();
    let y_total: u64 = (100..110)
        .map(|i| c.get(&key(i)).copied().unwrap_or(0))
        .sum();
    assert!(within(x_total, 7_000.0, 0.01), "{x_total}");
    assert!(within(y_total, 20_000.0, 0.01), "{y_total}");
    assert!(
        (200..210).all(|i| !c.contains_key(&key(i))),
        "a locality without weight gets nothing"
    );
    // The same with least request (per-locality pools, locality EDF).
    let mut x = healthy(0..5);
    x.extend((5..10).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let b = Balancer::new(
        "c",
        &LbPolicy::LeastRequest { choice_count: 2 },
        &common,
        cla(vec![
            locality("x", 0, Some(1), x),
            locality("y", 0, Some(2), healthy(100..110)),
        ]),
    )
    .unwrap();
    let c = counts(&b, n, |_| None);
    let x_total: u64 = (0..5).map(|i| c.get(&key(i)).copied().unwrap_or(0)).sum();
    assert!(within(x_total, 7_000.0, 0.01), "{x_total}");
}

#[test]
fn draining_endpoints_get_no_new_requests() {
    let mut eps = healthy(0..4);
    eps.push(ep(4, 1, HealthStatus::Draining));
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest { choice_count: 2 },
    ]
    .into_iter()
    .chain(hash_policies())
    {
        let b = lb(policy.clone(), vec![locality("z", 0, None, eps.clone())]);
        let c = counts(&b, 10_000, |i| {
            Some(mesh_route::hash::xxhash64(&i.to_le_bytes()))
        });
        assert!(!c.contains_key(&key(4)), "{policy:?}");
        assert_eq!(c.len(), 4, "{policy:?}");
    }
    // Even in panic (most endpoints unhealthy), a draining endpoint gets nothing.
    let mut eps: Vec<Endpoint> = (0..4).map(|i| ep(i, 1, HealthStatus::Unhealthy)).collect();
    eps.push(ep(4, 1, HealthStatus::Draining));
    let b = lb(LbPolicy::RoundRobin, vec![locality("z", 0, None, eps)]);
    assert_eq!(b.priority_load().panic, vec![true]);
    let c = counts(&b, 1_000, |_| None);
    assert!(!c.contains_key(&key(4)));
    assert_eq!(c.len(), 4);
    // An EDS update moving an endpoint to DRAINING takes effect on the next pick, and the
    // others keep their state.
    let b = lb(
        LbPolicy::RoundRobin,
        vec![locality("z", 0, None, healthy(0..3))],
    );
    let before: Vec<EndpointRef> = b.endpoints();
    let _inflight = before[1].start_request();
    let mut eps = healthy(0..3);
    eps[2].health = HealthStatus::Draining;
    b.update(cla(vec![locality("z", 0, None, eps)]));
    let after = b.endpoints();
    assert!(after[0].ptr_eq(&before[0]));
    assert_eq!(after[1].active_requests(), 1, "counters survive updates");
    let c = counts(&b, 1_000, |_| None);
    assert!(!c.contains_key(&key(2)));
}

#[test]
fn panic_threshold_spreads_over_all_hosts() {
    // 2 of 10 healthy (20% < 50%): panic, every host serves.
    let mut eps = healthy(0..2);
    eps.extend((2..10).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let b = lb(
        LbPolicy::RoundRobin,
        vec![locality("z", 0, None, eps.clone())],
    );
    assert_eq!(b.priority_load().panic, vec![true]);
    let c = counts(&b, 10_000, |_| None);
    assert_eq!(c.len(), 10);
    // Threshold 0 disables panic: only the healthy ones serve.
    let common = CommonLbConfig {
        healthy_panic_threshold: 0.0,
        ..Default::default()
    };
    let b = Balancer::new(
        "c",
        &LbPolicy::RoundRobin,
        &common,
        cla(vec![locality("z", 0, None, eps)]),
    )
    .unwrap();
    let c = counts(&b, 10_000, |_| None);
    assert_eq!(c.len(), 2);
}

#[test]
fn ejected_endpoints_are_skipped() {
    for policy in [
        LbPolicy::RoundRobin,
        LbPolicy::Random,
        LbPolicy::LeastRequest { choice_count: 2 },
    ]
    .into_iter()
    .chain(hash_policies())
    {
        let b = lb(policy.clone(), vec![locality("z", 0, None, healthy(0..10))]);
        let victim = b.endpoints()[3].clone();
        b.set_ejected(&victim, true);
        assert!(victim.is_ejected());
        let c = counts(&b, 10_000, |i| {
            Some(mesh_route::hash::xxhash64(&i.to_le_bytes()))
        });
        assert!(!c.contains_key(&key(3)), "{policy:?}");
        b.set_ejected(&victim, false);
        let c = counts(&b, 10_000, |i| {
            Some(mesh_route::hash::xxhash64(&i.to_le_bytes()))
        });
        assert!(
            c.contains_key(&key(3)),
            "{policy:?}: back after un-ejection"
        );
    }
}

/// Ejected endpoints count as unhealthy for priority loads and panic, as in Envoy.
#[test]
fn ejection_shifts_priority_load() {
    let b = lb(
        LbPolicy::RoundRobin,
        vec![
            locality("a", 0, None, healthy(0..10)),
            locality("b", 1, None, healthy(100..110)),
        ],
    );
    assert_eq!(b.priority_load().load, vec![100, 0]);
    let eps = b.endpoints();
    for e in &eps[..5] {
        b.set_ejected(e, true);
    }
    // 5 of 10 healthy at P0: 5 * 140 / 10 = 70.
    assert_eq!(b.priority_load().load, vec![70, 30]);
    for e in &eps[..5] {
        b.set_ejected(e, false);
    }
    assert_eq!(b.priority_load().load, vec![100, 0]);
}

#[test]
fn static_cluster_endpoints() {
    let cluster = Cluster {
        name: "static".into(),
        discovery: Discovery::Static(cla(vec![locality("z", 0, None, healthy(0..2))])),
        lb_policy: LbPolicy::Random,
        common_lb: CommonLbConfig::default(),
        connect_timeout: std::time::Duration::from_secs(1),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls: None,
        http_protocol: Default::default(),
    };
    let b = Balancer::for_cluster(&cluster, None).unwrap();
    assert_eq!(b.name(), "static");
    assert_eq!(b.endpoints().len(), 2);
    assert!(b.pick(&PickContext::new()).is_some());
}

/// A request started before an EDS update that changes the endpoint (here its weight) is
/// counted down on the same counter the new handle reads.
#[test]
fn in_flight_requests_survive_endpoint_changes() {
    let b = lb(
        LbPolicy::LeastRequest { choice_count: 2 },
        vec![locality("z", 0, None, healthy(0..2))],
    );
    let old = b.endpoints()[0].clone();
    let guard = old.start_request();
    let mut eps = healthy(0..2);
    eps[0].weight = 5;
    b.update(cla(vec![locality("z", 0, None, eps)]));
    let new = b.endpoints()[0].clone();
    assert!(
        !new.ptr_eq(&old),
        "a changed endpoint gets a new description"
    );
    assert_eq!(new.endpoint().weight, 5);
    assert_eq!(new.active_requests(), 1);
    drop(guard);
    assert_eq!(new.active_requests(), 0);
    b.set_ejected(&new, true);
    assert!(old.is_ejected(), "one flag per address");
}

/// In panic, Envoy's zone-aware balancers pick from all hosts of the priority, locality
/// weights ignored (`hostSourceToUse` returns `AllHosts` before choosing a locality).
#[test]
fn panic_ignores_locality_weights() {
    // X: weight 9, 1 of 10 healthy; Y: weight 1, 1 of 10 healthy: 10% healthy < 50%.
    let mut x = healthy(0..1);
    x.extend((1..10).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let mut y = healthy(100..101);
    y.extend((101..110).map(|i| ep(i, 1, HealthStatus::Unhealthy)));
    let common = CommonLbConfig {
        locality_weighted: true,
        ..Default::default()
    };
    let b = Balancer::new(
        "c",
        &LbPolicy::RoundRobin,
        &common,
        cla(vec![
            locality("x", 0, Some(9), x),
            locality("y", 0, Some(1), y),
        ]),
    )
    .unwrap();
    assert_eq!(b.priority_load().panic, vec![true]);
    let c = counts(&b, 20_000, |_| None);
    let x_total: u64 = (0..10).map(|i| c.get(&key(i)).copied().unwrap_or(0)).sum();
    assert!(within(x_total, 10_000.0, 0.02), "{x_total} of 20000 to X");
}
