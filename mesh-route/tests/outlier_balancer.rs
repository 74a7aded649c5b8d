//! mesh-resilience's outlier detection over mesh-route's `Balancer`, through the
//! `EjectableHosts` trait the balancer implements: ejected endpoints leave the picks (and
//! the priority loads), come back when their time is up, and `max_ejection_percent`
//! counts the balancer's endpoints.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use mesh_core::hosts::EjectableHosts;
use mesh_core::model::*;
use mesh_resilience::classify::{Classification, ErrorKind};
use mesh_resilience::outlier::OutlierDetector;
use mesh_route::{Balancer, PickContext};

fn ep(port: u16, priority: u32) -> LocalityEndpoints {
    LocalityEndpoints {
        locality: Arc::new(Locality::default()),
        priority,
        load_balancing_weight: None,
        endpoints: vec![Endpoint {
            address: EndpointAddress::Socket(([10, 0, 0, 1], port).into()),
            health: HealthStatus::Healthy,
            weight: 1,
            hostname: None,
            tls_mode: TlsMode::Unset,
        }],
    }
}

fn balancer(localities: Vec<LocalityEndpoints>) -> Arc<Balancer> {
    let cla = ClusterLoadAssignment {
        cluster_name: "c".into(),
        localities,
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

fn name(port: u16) -> String {
    format!("10.0.0.1:{port}")
}

fn picks(lb: &Balancer) -> Vec<String> {
    let mut v: Vec<String> = (0..20)
        .filter_map(|r| {
            lb.pick(&PickContext::with_random(r))
                .map(|e| e.hash_key().to_owned())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn status(s: u16) -> Classification {
    Classification::Response {
        status: StatusCode::from_u16(s).unwrap(),
        grpc: None,
    }
}

#[test]
fn balancer_host_set() {
    let lb = balancer(vec![ep(1, 0), ep(2, 0)]);
    assert_eq!(lb.host_counts(), (2, 0));
    assert!(EjectableHosts::set_ejected(&*lb, &name(1), true));
    assert_eq!(lb.host_counts(), (2, 1));
    assert_eq!(picks(&lb), vec![name(2)]);
    assert!(
        !EjectableHosts::set_ejected(&*lb, "10.0.0.9:9", true),
        "unknown host"
    );
    assert!(EjectableHosts::set_ejected(&*lb, &name(1), false));
    assert_eq!(picks(&lb), vec![name(1), name(2)]);
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoints_leave_the_picks_until_their_time_is_up() {
    let lb = balancer(vec![ep(1, 0), ep(2, 0), ep(3, 0)]);
    let od = OutlierDetector::new(
        lb.clone(),
        OutlierDetection {
            max_ejection_percent: 100,
            base_ejection_time: Duration::from_secs(30),
            interval: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let sweeper = od.spawn();
    for _ in 0..5 {
        od.record(&name(1), status(500));
    }
    assert!(od.is_ejected(&name(1)));
    assert_eq!(picks(&lb), vec![name(2), name(3)], "the balancer skips it");
    tokio::time::sleep(Duration::from_secs(31)).await; // the sweep at 30 s un-ejects
    assert!(!od.is_ejected(&name(1)));
    assert_eq!(picks(&lb).len(), 3, "back in the balancer");
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_counts_the_balancers_endpoints() {
    let lb = balancer(vec![ep(1, 0), ep(2, 0), ep(3, 0), ep(4, 0)]);
    let od = OutlierDetector::new(
        lb.clone(),
        OutlierDetection {
            max_ejection_percent: 50,
            ..Default::default()
        },
    );
    for p in [1, 2, 3] {
        for _ in 0..5 {
            od.record(&name(p), Classification::Error(ErrorKind::ConnectFailure));
        }
    }
    assert_eq!(lb.host_counts(), (4, 2));
    assert_eq!(picks(&lb), vec![name(3), name(4)]);
    for _ in 0..5 {
        od.record("10.0.0.9:9", status(503));
    }
    assert!(!od.is_ejected("10.0.0.9:9"), "not in the cluster");
}

#[tokio::test(start_paused = true)]
async fn an_ejection_moves_load_to_the_next_priority() {
    // One endpoint per priority: with P0's only endpoint ejected, P0 has no healthy
    // capacity and every pick lands on P1 (the plan is rebuilt on ejection, as in Envoy).
    let lb = balancer(vec![ep(1, 0), ep(2, 1)]);
    assert_eq!(picks(&lb), vec![name(1)]);
    let od = OutlierDetector::new(
        lb.clone(),
        OutlierDetection {
            max_ejection_percent: 100,
            ..Default::default()
        },
    );
    for _ in 0..5 {
        od.record(&name(1), status(502));
    }
    assert_eq!(picks(&lb), vec![name(2)]);
}
