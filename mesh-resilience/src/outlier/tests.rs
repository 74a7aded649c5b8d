use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use mesh_core::hosts::EjectableHosts;
use mesh_core::model::*;
use tower::{BoxError, ServiceExt};
use tower_layer::Layer;

use super::*;
use crate::classify::{Classification, ErrorKind};
use crate::policy::{EndpointError, UpstreamEndpoint};

/// A host set as a balancer keeps it: `ip:port` keys and their ejection flags. (The real
/// one, mesh-route's `Balancer`, is tested with the detector in mesh-route's
/// tests/outlier_balancer.rs.)
#[derive(Debug)]
struct Hosts(Mutex<Vec<(String, bool)>>);

impl EjectableHosts for Hosts {
    fn host_counts(&self) -> (usize, usize) {
        let h = self.0.lock().unwrap();
        (h.len(), h.iter().filter(|(_, e)| *e).count())
    }

    fn set_ejected(&self, host: &str, ejected: bool) -> bool {
        let mut h = self.0.lock().unwrap();
        match h.iter_mut().find(|(k, _)| k == host) {
            Some((_, e)) => {
                *e = ejected;
                true
            }
            None => false,
        }
    }
}

/// Hosts 10.0.0.1:1 ..= 10.0.0.1:n.
fn balancer(n: u16) -> Arc<Hosts> {
    Arc::new(Hosts(Mutex::new(
        (1..=n).map(|p| (name(p), false)).collect(),
    )))
}

fn name(port: u16) -> String {
    format!("10.0.0.1:{port}")
}

fn status(s: u16) -> Classification {
    Classification::Response {
        status: StatusCode::from_u16(s).unwrap(),
        grpc: None,
    }
}

fn cfg() -> OutlierDetection {
    OutlierDetection {
        max_ejection_percent: 100,
        ..Default::default()
    }
}

/// The hosts a balancer may pick (not ejected).
fn picks(lb: &Hosts) -> Vec<String> {
    let mut v: Vec<String> =
        lb.0.lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| !e)
            .map(|(k, _)| k.clone())
            .collect();
    v.sort();
    v
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_ejects_and_a_success_resets_the_count() {
    let lb = balancer(3);
    let od = OutlierDetector::new(lb.clone(), cfg());
    for _ in 0..4 {
        od.record(&name(1), status(500));
    }
    od.record(&name(1), status(200));
    for _ in 0..4 {
        od.record(&name(1), status(500));
    }
    assert!(!od.is_ejected(&name(1)), "the success broke the streak");
    od.record(&name(1), status(500));
    assert!(od.is_ejected(&name(1)));
    assert_eq!(
        picks(&lb),
        vec![name(2), name(3)],
        "ejected from the host set"
    );
    let st = od.endpoints();
    assert!(st[0].ejected && st[0].ejection_multiplier == 1 && st[0].ejections_total == 1);
}

#[tokio::test(start_paused = true)]
async fn gateway_failures_need_their_enforcement() {
    let lb = balancer(3);
    let mut c = cfg();
    c.consecutive_5xx = 0; // off
    let od = OutlierDetector::new(lb.clone(), c);
    for _ in 0..10 {
        od.record(&name(1), status(503));
    }
    assert!(
        !od.is_ejected(&name(1)),
        "enforcing_consecutive_gateway_failure defaults to 0"
    );
    c.enforcing_consecutive_gateway_failure = 100;
    let od = OutlierDetector::new(lb, c);
    for _ in 0..10 {
        od.record(&name(1), status(500));
    }
    assert!(!od.is_ejected(&name(1)), "500 is not a gateway failure");
    for _ in 0..5 {
        od.record(&name(1), status(502));
    }
    assert!(od.is_ejected(&name(1)));
}

#[tokio::test(start_paused = true)]
async fn local_origin_failures_count_as_5xx_unless_split() {
    let lb = balancer(3);
    let od = OutlierDetector::new(lb.clone(), cfg());
    for _ in 0..5 {
        od.record(&name(1), Classification::Error(ErrorKind::ConnectFailure));
    }
    assert!(od.is_ejected(&name(1)));

    let mut c = cfg();
    c.split_external_local_origin_errors = true;
    c.consecutive_local_origin_failure = 3;
    let od = OutlierDetector::new(balancer(3), c);
    od.record(&name(2), Classification::Error(ErrorKind::Reset));
    od.record(&name(2), Classification::Error(ErrorKind::Reset));
    od.record(&name(2), status(500)); // an answer: the connection works
    od.record(&name(2), Classification::Error(ErrorKind::Reset));
    od.record(&name(2), Classification::Error(ErrorKind::Reset));
    assert!(!od.is_ejected(&name(2)));
    assert_eq!(
        od.endpoints()[0].consecutive_5xx,
        1,
        "local failures not counted as 5xx"
    );
    od.record(&name(2), Classification::Error(ErrorKind::Timeout));
    assert!(od.is_ejected(&name(2)));
}

#[tokio::test(start_paused = true)]
async fn ejection_time_grows_is_capped_and_ends_at_a_sweep() {
    let lb = balancer(3);
    let mut c = cfg();
    c.base_ejection_time = Duration::from_secs(30);
    c.max_ejection_time = Duration::from_secs(50);
    c.interval = Duration::from_secs(10);
    let od = OutlierDetector::new(lb.clone(), c);
    let sweeper = od.spawn();
    let eject = || {
        for _ in 0..5 {
            od.record(&name(1), status(500));
        }
    };
    let start = tokio::time::Instant::now();
    eject();
    assert_eq!(
        od.endpoints()[0].ejected_until,
        Some(start + Duration::from_secs(30))
    );
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert!(od.is_ejected(&name(1)));
    tokio::time::sleep(Duration::from_secs(2)).await; // the sweep at 30 s un-ejects
    assert!(!od.is_ejected(&name(1)));
    assert_eq!(picks(&lb).len(), 3, "back in the balancer");
    let now = tokio::time::Instant::now();
    eject();
    assert_eq!(od.endpoints()[0].ejection_multiplier, 2);
    assert_eq!(
        od.endpoints()[0].ejected_until,
        Some(now + Duration::from_secs(50)),
        "60 s capped at 50"
    );
    sweeper.abort();
}

#[tokio::test(start_paused = true)]
async fn multiplier_decays_while_healthy() {
    let mut c = cfg();
    c.base_ejection_time = Duration::from_secs(10);
    let od = OutlierDetector::new(balancer(3), c);
    for _ in 0..5 {
        od.record(&name(1), status(500));
    }
    tokio::time::advance(Duration::from_secs(11)).await;
    od.sweep(); // un-ejected, multiplier stays 1
    assert_eq!(od.endpoints()[0].ejection_multiplier, 1);
    od.sweep(); // a healthy interval
    assert_eq!(od.endpoints()[0].ejection_multiplier, 0);
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_but_at_least_one() {
    let lb = balancer(4);
    let mut c = cfg();
    c.max_ejection_percent = 10;
    let od = OutlierDetector::new(lb.clone(), c);
    for p in [1, 2] {
        for _ in 0..5 {
            od.record(&name(p), status(500));
        }
    }
    assert!(od.is_ejected(&name(1)), "one host may always be ejected");
    assert!(!od.is_ejected(&name(2)), "a second would pass 10%");
    let mut c = cfg();
    c.max_ejection_percent = 50;
    let od = OutlierDetector::new(balancer(4), c);
    for p in [1, 2, 3] {
        for _ in 0..5 {
            od.record(&name(p), status(500));
        }
    }
    let ejected = od.endpoints().iter().filter(|e| e.ejected).count();
    assert_eq!(ejected, 2);
}

#[tokio::test(start_paused = true)]
async fn success_rate_ejection() {
    let lb = balancer(6);
    let mut c = cfg();
    c.consecutive_5xx = 0;
    c.success_rate.request_volume = 100;
    c.success_rate.minimum_hosts = 5;
    let od = OutlierDetector::new(lb.clone(), c);
    for p in 1..=6 {
        for i in 0..100 {
            // host 6 fails half its requests, the others 1 in 100
            let fail = if p == 6 { i % 2 == 0 } else { i == 0 };
            od.record(&name(p), status(if fail { 500 } else { 200 }));
        }
    }
    od.sweep();
    let ejected: Vec<_> = od
        .endpoints()
        .into_iter()
        .filter(|e| e.ejected)
        .map(|e| e.endpoint.to_string())
        .collect();
    assert_eq!(ejected, vec![name(6)]);
    // below the minimum of hosts with enough volume, nothing happens
    let od = OutlierDetector::new(balancer(6), cfg());
    for i in 0..100 {
        od.record(&name(1), status(if i % 2 == 0 { 500 } else { 200 }));
    }
    od.sweep();
    assert!(!od.is_ejected(&name(1)));
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejection() {
    let mut c = cfg();
    c.consecutive_5xx = 0;
    c.failure_percentage.enforcing_percentage = 100;
    c.failure_percentage.minimum_hosts = 2;
    c.failure_percentage.request_volume = 50;
    c.failure_percentage.threshold = 85;
    let od = OutlierDetector::new(balancer(3), c);
    for i in 0..50 {
        od.record(&name(1), status(if i % 10 == 0 { 200 } else { 500 })); // 90% failures
        od.record(&name(2), status(200));
        od.record(&name(3), status(if i < 40 { 500 } else { 200 })); // 80%
    }
    od.sweep();
    assert!(od.is_ejected(&name(1)));
    assert!(!od.is_ejected(&name(3)), "below the 85% threshold");
}

#[tokio::test(start_paused = true)]
async fn the_layer_records_responses_and_errors_per_endpoint() {
    let od = OutlierDetector::new(balancer(3), cfg());
    let svc = tower::service_fn(|req: Request<u16>| async move {
        let port = *req.body();
        if port == 2 {
            return Err::<Response<()>, BoxError>(Box::new(EndpointError {
                endpoint: name(2).into(),
                source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            }));
        }
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        resp.extensions_mut()
            .insert(UpstreamEndpoint(name(port).into()));
        Ok(resp)
    });
    let svc = OutlierLayer::new(od.clone()).layer(svc);
    for _ in 0..5 {
        let _ = svc.clone().oneshot(Request::new(1)).await;
        let _ = svc.clone().oneshot(Request::new(2)).await;
    }
    assert!(od.is_ejected(&name(1)));
    assert!(od.is_ejected(&name(2)));
}

#[tokio::test(start_paused = true)]
async fn only_hosts_of_the_set_are_ejected_and_its_count_bounds_ejections() {
    let lb = balancer(2);
    let mut c = cfg();
    c.max_ejection_percent = 50;
    let od = OutlierDetector::new(lb.clone(), c);
    for _ in 0..5 {
        od.record("10.0.0.9:9", status(500));
    }
    assert!(!od.is_ejected("10.0.0.9:9"), "no longer in the cluster");
    assert_eq!(od.ejections_total(), 0);
    // a host already ejected in the set counts against max_ejection_percent
    assert!(lb.set_ejected(&name(2), true));
    for _ in 0..5 {
        od.record(&name(1), status(500));
    }
    assert!(
        !od.is_ejected(&name(1)),
        "half the hosts are ejected already"
    );
    assert_eq!(picks(&lb), vec![name(1)]);
}
