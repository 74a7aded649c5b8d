//! Endpoints, priorities, localities, load-balancing policies and outlier detection.

use super::harness::*;
use envoy_types::pb::envoy::extensions::clusters::aggregate::v3::ClusterConfig as AggregateClusterConfig;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options, http_protocol_options::explicit_http_config,
};

// ---- cluster and endpoint fields ----

/// The listener `<cluster>.test:80`, every request to `cluster`.
fn via(cluster: &str) -> Listener {
    let vh = VirtualHost {
        routes: vec![forward(prefix("/"), to(cluster))],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

/// An endpoint on 127.0.0.1:`port` with `health` and `weight` (0: unset).
fn endpoint(port: u16, health: HealthStatus, weight: u32) -> LbEndpoint {
    let mut e = cluster("x", &[port], None)
        .load_assignment
        .unwrap()
        .endpoints
        .remove(0)
        .lb_endpoints
        .remove(0);
    e.health_status = health as i32;
    e.load_balancing_weight = (weight > 0).then_some(UInt32Value { value: weight });
    e
}

/// Endpoints of one locality (`zone`) at `priority`, with locality `weight` (0: unset).
fn locality(zone: &str, priority: u32, weight: u32, eps: Vec<LbEndpoint>) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: Some(Locality {
            zone: zone.into(),
            ..Default::default()
        }),
        lb_endpoints: eps,
        priority,
        load_balancing_weight: (weight > 0).then_some(UInt32Value { value: weight }),
        ..Default::default()
    }
}

/// A static cluster `name` with these endpoints, round robin.
fn with_endpoints(name: &str, endpoints: Vec<LocalityLbEndpoints>) -> Cluster {
    let mut c = cluster(name, &[], None);
    c.lb_policy = cluster::LbPolicy::RoundRobin as i32;
    let cla = c.load_assignment.as_mut().unwrap();
    cla.endpoints = endpoints;
    c
}

impl Fixture {
    /// How many of `n` requests to `<cluster>.test:80` backend `b` answered (the rest: `a`
    /// or the broken one).
    async fn to_b(&self, cluster: &str, n: usize) -> usize {
        let mut b = 0;
        for _ in 0..n {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            b += usize::from(got.header("x-backend") == Some("b"));
        }
        b
    }

    /// How many of `n` requests to `<cluster>.test:80` failed.
    async fn failures(&self, cluster: &str, n: usize) -> usize {
        let mut failed = 0;
        for _ in 0..n {
            let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
            failed += usize::from(got.status != 200);
        }
        failed
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_and_load_balancing_fields_steer_real_requests() {
    use HealthStatus::{Draining, Healthy, Unhealthy};
    let names = [
        "unhealthy",
        "draining",
        "weights",
        "priorities",
        "overprovisioned",
        "localities",
        "panic",
        "wrr-locality",
        "round-robin-localities",
        "random-localities",
        "least-request-localities",
    ];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        let one = |zone: &str, prio: u32, eps: Vec<LbEndpoint>| vec![locality(zone, prio, 0, eps)];
        // Zones weighted 1 (backend a) to 3 (backend b), picked by a typed policy.
        let typed = |name: &str, policy: Any| {
            let mut c = with_endpoints(
                name,
                vec![
                    locality("zone-a", 0, 1, vec![endpoint(p.a, Healthy, 0)]),
                    locality("zone-b", 0, 3, vec![endpoint(p.b, Healthy, 0)]),
                ],
            );
            c.load_balancing_policy = Some(lb_policy(name, policy));
            c
        };
        let weighted = || {
            Some(LocalityLbConfig {
                locality_config_specifier: Some(
                    locality_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                        Default::default(),
                    ),
                ),
            })
        };
        let wrr = WrrLocality {
            endpoint_picking_policy: Some(lb_policy("rr", pack_any(RoundRobin::default()))),
        };
        let rr = RoundRobin {
            locality_lb_config: weighted(),
            ..Default::default()
        };
        let random = Random {
            locality_lb_config: weighted(),
        };
        let least = LeastRequest {
            locality_lb_config: weighted(),
            ..Default::default()
        };
        let mut overprovisioned = with_endpoints(
            "overprovisioned",
            vec![
                locality(
                    "z",
                    0,
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.broken, Unhealthy, 0)],
                ),
                locality("z", 1, 0, vec![endpoint(p.b, Healthy, 0)]),
            ],
        );
        overprovisioned.load_assignment.as_mut().unwrap().policy =
            Some(cluster_load_assignment::Policy {
                overprovisioning_factor: Some(UInt32Value { value: 200 }),
                ..Default::default()
            });
        let mut localities = with_endpoints(
            "localities",
            vec![
                locality("zone-a", 0, 1, vec![endpoint(p.a, Healthy, 0)]),
                locality("zone-b", 0, 3, vec![endpoint(p.b, Healthy, 0)]),
            ],
        );
        localities.common_lb_config = Some(cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        });
        let mut panic = with_endpoints(
            "panic",
            one(
                "z",
                0,
                vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Unhealthy, 0)],
            ),
        );
        panic.common_lb_config = Some(cluster::CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 60.0 }),
            ..Default::default()
        });
        vec![
            with_endpoints(
                "unhealthy",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Unhealthy, 0)],
                ),
            ),
            with_endpoints(
                "draining",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 0), endpoint(p.b, Draining, 0)],
                ),
            ),
            with_endpoints(
                "weights",
                one(
                    "z",
                    0,
                    vec![endpoint(p.a, Healthy, 1), endpoint(p.b, Healthy, 3)],
                ),
            ),
            with_endpoints(
                "priorities",
                vec![
                    locality("z", 0, 0, vec![endpoint(p.a, Healthy, 0)]),
                    locality("z", 1, 0, vec![endpoint(p.b, Healthy, 0)]),
                ],
            ),
            overprovisioned,
            localities,
            panic,
            typed("wrr-locality", pack_any(wrr)),
            typed("round-robin-localities", pack_any(rr)),
            typed("random-localities", pack_any(random)),
            typed("least-request-localities", pack_any(least)),
        ]
    })
    .await;
    // LbEndpoint.health_status: unhealthy and draining endpoints get no requests.
    assert_eq!(f.to_b("unhealthy", 40).await, 0);
    assert_eq!(f.to_b("draining", 40).await, 0);
    // LbEndpoint.load_balancing_weight: 3 of every 4 round-robin picks.
    let b = f.to_b("weights", 400).await;
    assert!(
        (280..=320).contains(&b),
        "b got {b} of 400 at weight 3 of 4"
    );
    // LocalityLbEndpoints.priority: priority 1 only when priority 0 cannot take the load.
    assert_eq!(f.to_b("priorities", 40).await, 0);
    // ClusterLoadAssignment.policy, Policy.overprovisioning_factor: half of priority 0 is
    // healthy; times 2.0 it keeps all the load (Envoy's default 1.4 would send 30% on).
    assert_eq!(f.to_b("overprovisioned", 100).await, 0);
    // LocalityLbEndpoints.load_balancing_weight and
    // CommonLbConfig.locality_weighted_lb_config: zone-b takes 3 of 4. (Each
    // LocalityLbEndpoints entry is weighted on its own: the Locality's names do not matter
    // here; with region ignored the split stayed 1:3.)
    let b = f.to_b("localities", 400).await;
    assert!(
        (260..=340).contains(&b),
        "zone-b got {b} of 400 at weight 3 of 4"
    );
    // CommonLbConfig.healthy_panic_threshold: 50% healthy is below 60%: panic mode spreads
    // over every endpoint, the unhealthy one too (the default, 50%, would not panic).
    let b = f.to_b("panic", 100).await;
    assert!(
        (25..=75).contains(&b),
        "the unhealthy endpoint got {b} of 100"
    );
    // Cluster.load_balancing_policy, LoadBalancingPolicy.policies,
    // Policy.typed_extension_config, TypedExtensionConfig.name and typed_config:
    // WrrLocality.endpoint_picking_policy, and the locality_lb_config
    // (LocalityLbConfig.locality_weighted_lb_config) of RoundRobin, Random and
    // LeastRequest: zone-b takes 3 of 4 (unweighted localities would split 1:1).
    for name in [
        "wrr-locality",
        "round-robin-localities",
        "random-localities",
        "least-request-localities",
    ] {
        let b = f.to_b(name, 400).await;
        assert!((250..=350).contains(&b), "{name}: zone-b got {b} of 400");
    }
}

/// A cluster's load-balancing policy: `policy` alone.
fn lb_policy(name: &str, policy: Any) -> LoadBalancingPolicy {
    LoadBalancingPolicy {
        policies: vec![load_balancing_policy::Policy {
            typed_extension_config: Some(TypedExtensionConfig {
                name: name.into(),
                typed_config: Some(policy),
            }),
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_detection_fields_eject_or_spare_a_failing_endpoint() {
    let pct = |v: u32| Some(UInt32Value { value: v });
    // Cluster `pair` behind each: backend a and one that always answers 503, at random.
    let detector = |name: &str, od: OutlierDetection, p: &Ports| {
        let mut c = cluster(name, &[p.a, p.broken], None);
        c.outlier_detection = Some(OutlierDetection {
            interval: ms(150),
            base_ejection_time: ms(60_000),
            max_ejection_percent: pct(50),
            ..od
        });
        c
    };
    // Only the detector under test enforces.
    let quiet = OutlierDetection {
        enforcing_consecutive_5xx: pct(0),
        enforcing_success_rate: pct(0),
        enforcing_consecutive_gateway_failure: pct(0),
        ..Default::default()
    };
    let failure_percentage = |volume: u32, hosts: u32| OutlierDetection {
        failure_percentage_threshold: pct(50),
        enforcing_failure_percentage: pct(100),
        failure_percentage_minimum_hosts: pct(hosts),
        failure_percentage_request_volume: pct(volume),
        ..quiet.clone()
    };
    let success_rate = |stdev: u32, enforcing: u32| OutlierDetection {
        enforcing_success_rate: pct(enforcing),
        success_rate_minimum_hosts: pct(2),
        success_rate_request_volume: pct(5),
        success_rate_stdev_factor: pct(stdev),
        ..quiet.clone()
    };
    let names = [
        "consecutive-unenforced",
        "fp",
        "fp-low-volume",
        "fp-few-hosts",
        "sr",
        "sr-wide",
        "sr-unenforced",
    ];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        vec![
            detector(
                "consecutive-unenforced",
                OutlierDetection {
                    consecutive_5xx: pct(3),
                    ..quiet.clone()
                },
                p,
            ),
            detector("fp", failure_percentage(5, 2), p),
            detector("fp-low-volume", failure_percentage(1000, 2), p),
            detector("fp-few-hosts", failure_percentage(5, 3), p),
            detector("sr", success_rate(500, 100), p),
            detector("sr-wide", success_rate(1900, 100), p),
            detector("sr-unenforced", success_rate(500, 0), p),
        ]
    })
    .await;
    // Traffic to every cluster, then three intervals for the detectors to run.
    for name in names {
        f.failures(name, 40).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut after = BTreeMap::new();
    for name in names {
        after.insert(name, f.failures(name, 40).await);
    }
    // Ejected: enforcing_failure_percentage, failure_percentage_minimum_hosts (2) and
    // failure_percentage_request_volume (5) met (the 100% failing endpoint is over any
    // failure_percentage_threshold, so that field is not shown here);
    // success_rate_stdev_factor 0.5 puts the 0% endpoint below mean - 0.5 stdev, with
    // success_rate_minimum_hosts 2 and success_rate_request_volume 5 met.
    assert_eq!(after["fp"], 0, "{after:?}");
    assert_eq!(after["sr"], 0, "{after:?}");
    // Spared (about half the requests still fail): enforcing_consecutive_5xx 0;
    // request volume 1000 not reached; 3 hosts needed; Envoy's stdev factor 1.9 puts the
    // threshold below 0%; enforcing_success_rate 0.
    for spared in [
        "consecutive-unenforced",
        "fp-low-volume",
        "fp-few-hosts",
        "sr-wide",
        "sr-unenforced",
    ] {
        assert!(after[spared] >= 8, "{spared}: {after:?}");
    }
}

/// The listener `<cluster>.test:80`: every request to `cluster`, retried once on 5xx.
fn via_with_retry(cluster: &str) -> Listener {
    let vh = VirtualHost {
        routes: vec![forward(
            prefix("/"),
            RouteAction {
                retry_policy: Some(RetryPolicy {
                    retry_on: "5xx".into(),
                    num_retries: Some(UInt32Value { value: 1 }),
                    ..Default::default()
                }),
                ..to(cluster)
            },
        )],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budgets_allow_or_refuse_retries() {
    use envoy_types::pb::envoy::config::cluster::v3::CircuitBreakers;
    use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::{
        Thresholds, thresholds::RetryBudget,
    };
    use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
    let budget = |name: &str, priority: RoutingPriority, pct: f64, min: u32, p: &Ports| {
        let mut c = cluster(name, &[p.a], None);
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![Thresholds {
                priority: priority as i32,
                retry_budget: Some(RetryBudget {
                    budget_percent: Some(Percent { value: pct }),
                    min_retry_concurrency: Some(UInt32Value { value: min }),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        c
    };
    let names = ["no-budget", "full-budget", "min-one", "high-only"];
    let f = start_with(names.iter().map(|n| via_with_retry(n)).collect(), |p| {
        vec![
            budget("no-budget", RoutingPriority::Default, 0.0, 0, p),
            budget("full-budget", RoutingPriority::Default, 100.0, 0, p),
            budget("min-one", RoutingPriority::Default, 0.0, 1, p),
            budget("high-only", RoutingPriority::High, 0.0, 0, p),
        ]
    })
    .await;
    let fail_once = [("x-fail", "1")];
    // RetryBudget.budget_percent: 0% of active requests, and no minimum: no retry.
    f.reset();
    let got = f.get("http://no-budget.test:80/", &fail_once).await;
    assert_eq!((got.status, f.a.calls()), (503, 1), "{got:?}");
    // RetryBudget.budget_percent: 100% of the one active request: one retry (Envoy's 20%
    // would allow none).
    f.reset();
    let got = f.get("http://full-budget.test:80/", &fail_once).await;
    assert_eq!((got.status, f.a.calls()), (200, 2), "{got:?}");
    // RetryBudget.min_retry_concurrency: one retry is always allowed.
    f.reset();
    let got = f.get("http://min-one.test:80/", &fail_once).await;
    assert_eq!((got.status, f.a.calls()), (200, 2), "{got:?}");
    // Thresholds.priority: a HIGH budget leaves DEFAULT-priority routes alone.
    f.reset();
    let got = f.get("http://high-only.test:80/", &fail_once).await;
    assert_eq!((got.status, f.a.calls()), (200, 2), "{got:?}");
}

/// `envoy.extensions.upstreams.http.v3.HttpProtocolOptions` with `config` explicit.
fn explicit(config: explicit_http_config::ProtocolConfig) -> (String, Any) {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(config),
                },
            ),
        ),
        ..Default::default()
    };
    (
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        pack_any(options),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_fields_pick_the_http_version() {
    use explicit_http_config::ProtocolConfig;
    let names = ["h2", "h1", "downstream"];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        let with = |name: &str, config: ProtocolConfig| {
            let mut c = cluster(name, &[p.a], None);
            c.typed_extension_protocol_options = [explicit(config)].into_iter().collect();
            c
        };
        // The deprecated cluster-level HTTP/2 field: typed extension options would replace
        // protocol_selection.
        let mut downstream = cluster("downstream", &[p.a], None);
        downstream.http2_protocol_options = Some(Default::default());
        downstream.protocol_selection =
            cluster::ClusterProtocolSelection::UseDownstreamProtocol as i32;
        vec![
            with(
                "h2",
                ProtocolConfig::Http2ProtocolOptions(Default::default()),
            ),
            with(
                "h1",
                ProtocolConfig::HttpProtocolOptions(Default::default()),
            ),
            downstream,
        ]
    })
    .await;
    let version = |f: &Fixture| f.a.last().version;
    // Cluster.typed_extension_protocol_options, HttpProtocolOptions.explicit_http_config
    // and ExplicitHttpConfig.http2_protocol_options: HTTP/2 to the backend.
    assert_eq!(f.get("http://h2.test:80/", &[]).await.status, 200);
    assert_eq!(version(&f), http::Version::HTTP_2);
    // ExplicitHttpConfig.http_protocol_options: HTTP/1.1.
    assert_eq!(f.get("http://h1.test:80/", &[]).await.status, 200);
    assert_eq!(version(&f), http::Version::HTTP_11);
    // Cluster.protocol_selection USE_DOWNSTREAM_PROTOCOL: the caller's HTTP/1.1 goes out
    // as HTTP/1.1 although the cluster is configured for HTTP/2 (its deprecated
    // http2_protocol_options).
    assert_eq!(f.get("http://downstream.test:80/", &[]).await.status, 200);
    assert_eq!(version(&f), http::Version::HTTP_11);
}

/// An EDS cluster `name` whose endpoints (backend `port`) come as the resource
/// `service_name`, from `source`.
fn eds(
    name: &str,
    service_name: &str,
    source: config_source::ConfigSourceSpecifier,
    port: u16,
) -> Cluster {
    let mut c = cluster(name, &[port], None);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Eds as i32,
    ));
    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ConfigSource {
            config_source_specifier: Some(source),
            ..Default::default()
        }),
        service_name: service_name.into(),
    });
    c.load_assignment.as_mut().unwrap().cluster_name = service_name.into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eds_and_aggregate_clusters_find_their_endpoints() {
    use config_source::ConfigSourceSpecifier as Source;
    let names = ["eds-ads", "eds-self", "aggregate"];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        let mut empty = with_endpoints(
            "all-unhealthy",
            vec![locality(
                "z",
                0,
                0,
                vec![endpoint(p.a, HealthStatus::Unhealthy, 0)],
            )],
        );
        empty.lb_policy = cluster::LbPolicy::RoundRobin as i32;
        let mut aggregate = cluster("aggregate", &[], None);
        aggregate.load_assignment = None;
        aggregate.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::ClusterType(
            cluster::CustomClusterType {
                name: "envoy.clusters.aggregate".into(),
                typed_config: Some(pack_any(AggregateClusterConfig {
                    clusters: vec!["all-unhealthy".into(), "b".into()],
                })),
            },
        ));
        aggregate.lb_policy = cluster::LbPolicy::ClusterProvided as i32;
        vec![
            eds(
                "eds-ads",
                "endpoints-of-eds-ads",
                Source::Ads(AggregatedConfigSource {}),
                p.b,
            ),
            eds(
                "eds-self",
                "endpoints-of-eds-self",
                Source::Self_(Default::default()),
                p.b,
            ),
            empty,
            aggregate,
        ]
    })
    .await;
    // Cluster.EdsClusterConfig.eds_config (ConfigSource.ads, ConfigSource.self),
    // EdsClusterConfig.service_name and ClusterLoadAssignment.cluster_name: the endpoints
    // named `endpoints-of-<cluster>` reach backend b.
    for name in ["eds-ads", "eds-self"] {
        let got = f.get(&format!("http://{name}.test:80/"), &[]).await;
        assert_eq!(got.header("x-backend"), Some("b"), "{name}: {got:?}");
    }
    // Cluster.CustomClusterType.name (envoy.clusters.aggregate): the first child with a
    // healthy endpoint takes the requests.
    assert_eq!(f.to_b("aggregate", 10).await, 10);
    assert_eq!(f.a.calls(), 0);
}
