//! The upstream metrics and `/clusters` view of one cluster with live state.

use std::sync::Arc;

use mesh_core::model::*;
use mesh_resilience::circuit_breaker::CircuitBreaker;
use mesh_resilience::classify::Classification;
use mesh_resilience::outlier::OutlierDetector;
use mesh_resilience::policy::Priority;
use mesh_route::Balancer;
use prometheus_client::registry::Registry;
use serde_json::json;

use super::*;

fn balancer() -> Arc<Balancer> {
    let ep = |port, health| Endpoint {
        address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
        health,
        weight: 1,
        hostname: None,
        tls_mode: TlsMode::Unset,
    };
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        localities: vec![LocalityEndpoints {
            locality: Arc::new(Locality::default()),
            priority: 0,
            load_balancing_weight: None,
            endpoints: vec![
                ep(1, HealthStatus::Healthy),
                ep(2, HealthStatus::Healthy),
                ep(3, HealthStatus::Draining),
            ],
        }],
        ..Default::default()
    };
    Arc::new(
        Balancer::new(
            "c",
            &LbPolicy::RoundRobin,
            &CommonLbConfig::default(),
            Arc::new(cla),
        )
        .unwrap(),
    )
}

fn scrape(m: &UpstreamMetrics) -> String {
    let mut registry = Registry::default();
    m.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
}

#[test]
fn membership_ejections_overflows_and_retries() {
    let b = balancer();
    let breaker = CircuitBreaker::new(
        "c",
        &CircuitBreakers {
            default: Thresholds {
                max_requests: 1,
                max_retries: 1,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let outlier = OutlierDetector::new(
        b.clone(),
        OutlierDetection {
            consecutive_5xx: 2,
            max_ejection_percent: 100,
            ..Default::default()
        },
    );
    let m = UpstreamMetrics::new();
    m.track(
        "outbound|80||c",
        ClusterSources {
            balancer: Some(b.clone()),
            breaker: Some(breaker.clone()),
            outlier: Some(outlier.clone()),
            pool: Some(Arc::new(|| PoolStats {
                endpoints: Some(2),
                ..Default::default()
            })),
        },
    );
    // Two 503s in a row eject 10.0.0.1:1.
    let fail = Classification::Response {
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        grpc: None,
    };
    outlier.record("10.0.0.1:1", fail);
    outlier.record("10.0.0.1:1", fail);
    // One request admitted, the next two overflow; one retry admitted, one refused.
    let _slot = breaker.try_request(Priority::Default).unwrap();
    assert!(breaker.try_request(Priority::Default).is_none());
    assert!(breaker.try_request(Priority::Default).is_none());
    let budget = breaker.retry_budget(Priority::Default);
    let _r = budget.try_retry().unwrap();
    assert!(budget.try_retry().is_none());

    let t = scrape(&m);
    let c = "{cluster_name=\"outbound|80||c\"}";
    assert_eq!(value(&t, &format!("mesh_cluster_membership_total{c}")), 3.0);
    // One draining, one ejected: one endpoint takes new requests.
    assert_eq!(
        value(&t, &format!("mesh_cluster_membership_healthy{c}")),
        1.0
    );
    assert_eq!(
        value(
            &t,
            "mesh_cluster_endpoints{cluster_name=\"outbound|80||c\",health=\"DRAINING\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &t,
            &format!("mesh_cluster_outlier_detection_ejections_active{c}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &t,
            &format!("mesh_cluster_outlier_detection_ejections_enforced_total{c}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &t,
            &format!("mesh_cluster_upstream_rq_pending_overflow_total{c}")
        ),
        2.0
    );
    assert_eq!(
        value(&t, &format!("mesh_cluster_upstream_rq_retry_total{c}")),
        1.0
    );
    assert_eq!(
        value(
            &t,
            &format!("mesh_cluster_upstream_rq_retry_overflow_total{c}")
        ),
        1.0
    );
    assert_eq!(
        value(
            &t,
            "mesh_cluster_circuit_breakers_active{cluster_name=\"outbound|80||c\",priority=\"default\",resource=\"requests\"}"
        ),
        1.0
    );
    assert_eq!(value(&t, &format!("mesh_cluster_pool_endpoints{c}")), 2.0);

    let j = m.clusters_json();
    let hosts = j["cluster_statuses"][0]["host_statuses"]
        .as_array()
        .unwrap();
    assert_eq!(hosts.len(), 3);
    let h1 = hosts
        .iter()
        .find(|h| h["address"]["socket_address"]["port_value"] == 1)
        .unwrap();
    assert_eq!(h1["health_status"]["failed_outlier_check"], true);
    assert_eq!(h1["outlier_detection"]["ejections_total"], 1);
    assert_eq!(
        j["cluster_statuses"][0]["circuit_breakers"]["default"]["requests_overflow"],
        2
    );

    // A second workload's client of the same cluster is a series of its own.
    let other = CircuitBreaker::new("c", &CircuitBreakers::default());
    m.for_workload("reviews-v2").track(
        "outbound|80||c",
        ClusterSources {
            breaker: Some(other.clone()),
            ..Default::default()
        },
    );
    let t = scrape(&m);
    assert_eq!(
        value(
            &t,
            &format!("mesh_cluster_upstream_rq_pending_overflow_total{c}")
        ),
        2.0
    );
    assert_eq!(
        value(
            &t,
            "mesh_cluster_upstream_rq_pending_overflow_total{cluster_name=\"outbound|80||c\",workload=\"reviews-v2\"}"
        ),
        0.0
    );
    let j = m.clusters_json();
    assert_eq!(j["cluster_statuses"][1]["workload"], "reviews-v2", "{j}");
    assert!(j["cluster_statuses"][0].get("workload").is_none(), "{j}");
    m.for_workload("reviews-v2").forget("outbound|80||c");
    drop(other);

    // The cluster leaves the config: its state is dropped, and so are its series.
    drop((b, breaker, outlier, _slot, _r, budget));
    let t = scrape(&m);
    assert!(!t.contains("outbound|80||c"), "{t}");
    assert_eq!(m.clusters_json()["cluster_statuses"], json!([]));
}
