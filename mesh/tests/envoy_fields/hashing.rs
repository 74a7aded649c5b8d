//! Ring hash and Maglev settings on real traffic: requests hashed on an `x-user` header,
//! one distinct user per request, and the backends that answered counted.

use super::harness::*;
use envoy_types::pb::envoy::extensions::load_balancing_policies::common::v3::locality_lb_config::LocalityWeightedLbConfig;
use envoy_types::pb::envoy::extensions::load_balancing_policies::maglev::v3::Maglev;
use envoy_types::pb::envoy::extensions::load_balancing_policies::ring_hash::v3::{
    RingHash, ring_hash,
};
use envoy_types::pb::google::protobuf::UInt64Value;
use xxhash_rust::xxh64::xxh64;

/// The listener `<cluster>.test:80`: every request to `cluster`, hashed on `x-user`.
fn hashed_via(cluster: &str) -> Listener {
    let hash_policy = route_action::HashPolicy {
        policy_specifier: Some(route_action::hash_policy::PolicySpecifier::Header(
            route_action::hash_policy::Header {
                header_name: "x-user".into(),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    let vh = VirtualHost {
        routes: vec![forward(
            prefix("/"),
            RouteAction {
                hash_policy: vec![hash_policy],
                ..to(cluster)
            },
        )],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

fn u64v(v: u64) -> Option<UInt64Value> {
    Some(UInt64Value { value: v })
}

/// `cluster` balanced by the typed policy `policy` alone.
fn typed(mut c: Cluster, policy: Any) -> Cluster {
    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![load_balancing_policy::Policy {
            typed_extension_config: Some(TypedExtensionConfig {
                name: "hash".into(),
                typed_config: Some(policy),
            }),
        }],
    });
    c
}

/// The cluster's legacy ring hash policy with `config`.
fn legacy_ring(mut c: Cluster, config: cluster::RingHashLbConfig) -> Cluster {
    c.lb_policy = cluster::LbPolicy::RingHash as i32;
    c.lb_config = Some(cluster::LbConfig::RingHashLbConfig(config));
    c
}

/// Two localities: zone-a (backend a) weighted 1, zone-b (backend b) weighted 3.
fn zones_1_to_3(name: &str, p: &Ports) -> Cluster {
    let mut c = cluster(name, &[], None);
    let one = |port: u16| {
        cluster("x", &[port], None)
            .load_assignment
            .unwrap()
            .endpoints
    };
    let zone = |zone: &str, port: u16, weight: u32| LocalityLbEndpoints {
        locality: Some(Locality {
            zone: zone.into(),
            ..Default::default()
        }),
        load_balancing_weight: Some(UInt32Value { value: weight }),
        ..one(port).remove(0)
    };
    c.load_assignment.as_mut().unwrap().endpoints =
        vec![zone("zone-a", p.a, 1), zone("zone-b", p.b, 3)];
    c
}

impl Fixture {
    /// The backend (`x-backend`) that answered each user `user-0` .. `user-<n-1>`.
    async fn by_user(&self, cluster: &str, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let user = format!("user-{i}");
            let got = self
                .get(&format!("http://{cluster}.test:80/"), &[("x-user", &user)])
                .await;
            out.push(got.header("x-backend").unwrap_or("none").to_owned());
        }
        out
    }
}

fn distinct(backends: &[String]) -> usize {
    backends
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_and_maglev_settings_place_hashed_requests() {
    use cluster::ring_hash_lb_config::HashFunction as Legacy;
    let names = [
        "ring-default",
        "ring-murmur",
        "legacy-default",
        "legacy-murmur",
        "ring-max-2",
        "legacy-max-2",
        "ring-min-2",
        "maglev-default",
        "maglev-table-2",
        "ring-zones",
        "ring-zones-weighted",
        "maglev-zones",
        "maglev-zones-weighted",
    ];
    let f = start_with(names.iter().map(|n| hashed_via(n)).collect(), |p| {
        let two = |name: &str| cluster(name, &[p.a, p.b], None);
        let three = |name: &str| cluster(name, &[p.a, p.b, p.broken], None);
        let ring = |r: RingHash| pack_any(r);
        let murmur = ring_hash::HashFunction::MurmurHash2 as i32;
        let weighted = Some(LocalityWeightedLbConfig::default());
        vec![
            typed(two("ring-default"), ring(RingHash::default())),
            typed(
                two("ring-murmur"),
                ring(RingHash {
                    hash_function: murmur,
                    ..Default::default()
                }),
            ),
            legacy_ring(two("legacy-default"), Default::default()),
            legacy_ring(
                two("legacy-murmur"),
                cluster::RingHashLbConfig {
                    hash_function: Legacy::MurmurHash2 as i32,
                    ..Default::default()
                },
            ),
            typed(
                three("ring-max-2"),
                ring(RingHash {
                    minimum_ring_size: u64v(1),
                    maximum_ring_size: u64v(2),
                    ..Default::default()
                }),
            ),
            legacy_ring(
                three("legacy-max-2"),
                cluster::RingHashLbConfig {
                    minimum_ring_size: u64v(1),
                    maximum_ring_size: u64v(2),
                    ..Default::default()
                },
            ),
            typed(
                two("ring-min-2"),
                ring(RingHash {
                    minimum_ring_size: u64v(2),
                    ..Default::default()
                }),
            ),
            typed(three("maglev-default"), pack_any(Maglev::default())),
            typed(
                three("maglev-table-2"),
                pack_any(Maglev {
                    table_size: u64v(2),
                    ..Default::default()
                }),
            ),
            typed(zones_1_to_3("ring-zones", p), ring(RingHash::default())),
            typed(
                zones_1_to_3("ring-zones-weighted", p),
                ring(RingHash {
                    locality_weighted_lb_config: weighted,
                    ..Default::default()
                }),
            ),
            typed(zones_1_to_3("maglev-zones", p), pack_any(Maglev::default())),
            typed(
                zones_1_to_3("maglev-zones-weighted", p),
                pack_any(Maglev {
                    locality_weighted_lb_config: weighted,
                    ..Default::default()
                }),
            ),
        ]
    })
    .await;
    let (a, b) = (f.a.port, f.b.port);

    // RingHash.hash_function and Cluster.RingHashLbConfig.hash_function: the same two
    // endpoints hashed with MurmurHash2 instead of xxHash make another ring, so that about
    // half the users land elsewhere (each user is sticky under either).
    for (xx, murmur) in [
        ("ring-default", "ring-murmur"),
        ("legacy-default", "legacy-murmur"),
    ] {
        let with_xx = f.by_user(xx, 100).await;
        let with_murmur = f.by_user(murmur, 100).await;
        assert_eq!(
            with_murmur,
            f.by_user(murmur, 100).await,
            "{murmur}: sticky"
        );
        let moved = with_xx
            .iter()
            .zip(&with_murmur)
            .filter(|(x, m)| x != m)
            .count();
        assert!(
            (15..=85).contains(&moved),
            "{murmur}: {moved} of 100 users moved"
        );
    }

    // RingHash.maximum_ring_size and Cluster.RingHashLbConfig.maximum_ring_size: a ring of
    // at most 2 entries has no room for the third of 3 equal endpoints: it gets no user.
    for name in ["ring-max-2", "legacy-max-2"] {
        let got = f.by_user(name, 100).await;
        assert_eq!(distinct(&got), 2, "{name}: {got:?}");
    }

    // RingHash.minimum_ring_size: 2 is enough for one entry per endpoint, so the ring is
    // exactly xxHash64("127.0.0.1:<port>_0") of each, and a user (xxHash64 of the header)
    // goes to the first entry at or after its hash, wrapping. (The default 1,024 entries
    // would interleave the endpoints finely: about half the users elsewhere.)
    let entry = |port: u16| (xxh64(format!("127.0.0.1:{port}_0").as_bytes(), 0), port);
    let mut ring = [entry(a), entry(b)];
    ring.sort();
    let expected: Vec<String> = (0..100)
        .map(|i| {
            let h = xxh64(format!("user-{i}").as_bytes(), 0);
            let port = ring.iter().find(|e| e.0 >= h).unwrap_or(&ring[0]).1;
            (if port == a { "a" } else { "b" }).to_owned()
        })
        .collect();
    assert_eq!(f.by_user("ring-min-2", 100).await, expected);

    // Maglev.table_size: a table of 2 slots holds 2 of 3 equal endpoints; the default
    // (65,537) all 3.
    assert_eq!(distinct(&f.by_user("maglev-default", 100).await), 3);
    assert_eq!(distinct(&f.by_user("maglev-table-2", 100).await), 2);

    // RingHash.locality_weighted_lb_config and Maglev.locality_weighted_lb_config: zones
    // weighted 1 and 3 give zone-b's endpoint three quarters of the users; without it the
    // two endpoints share them evenly (locality weights ignored).
    let share_b = |got: Vec<String>| got.iter().filter(|g| *g == "b").count();
    for (plain, weighted) in [
        ("ring-zones", "ring-zones-weighted"),
        ("maglev-zones", "maglev-zones-weighted"),
    ] {
        let even = share_b(f.by_user(plain, 400).await);
        let more = share_b(f.by_user(weighted, 400).await);
        assert!((140..=260).contains(&even), "{plain}: b took {even} of 400");
        assert!(
            (250..=350).contains(&more),
            "{weighted}: b took {more} of 400"
        );
    }
}
