use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use mesh_core::model::{CircuitBreakers, RetryBudget as BudgetCfg, Thresholds};
use tower::{BoxError, Service, ServiceExt};
use tower_layer::Layer;

use super::*;
use crate::policy::Priority;

fn limits(max_requests: u32, max_pending: u32) -> CircuitBreakers {
    CircuitBreakers {
        default: Thresholds {
            max_requests,
            max_pending_requests: max_pending,
            ..Default::default()
        },
        high: Thresholds::default(),
    }
}

/// An upstream that answers after 1 s.
fn slow()
-> impl Service<Request<()>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_r: Request<()>| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, BoxError>(Response::new(String::from("ok")))
    })
}

#[tokio::test(start_paused = true)]
async fn max_requests_overflow_is_an_immediate_flagged_503() {
    let breaker = CircuitBreaker::new("c", &limits(2, 10));
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(slow());
    let a = tokio::spawn(svc.clone().oneshot(Request::new(())));
    let b = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    assert_eq!(breaker.stats(Priority::Default).requests, 2);
    let start = tokio::time::Instant::now();
    let resp = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "answered at once");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-envoy-overloaded"], "true");
    assert_eq!(breaker.stats(Priority::Default).requests_overflow, 1);
    assert_eq!(a.await.unwrap().unwrap().status(), 200);
    assert_eq!(b.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        breaker.stats(Priority::Default).requests,
        0,
        "slots released"
    );
    // high priority has its own thresholds
    let mut req = Request::new(());
    req.extensions_mut().insert(Priority::High);
    let _held: Vec<_> = (0..2)
        .map(|_| breaker.try_request(Priority::Default).unwrap())
        .collect();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn grpc_overflow_is_unavailable() {
    let breaker = CircuitBreaker::new("c", &limits(0, 10));
    let svc = CircuitBreakerLayer::new(breaker).layer(slow());
    let req = Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "14");
    assert_eq!(resp.headers()["x-envoy-overloaded"], "true");
}

#[tokio::test(start_paused = true)]
async fn pending_requests_wait_for_readiness_up_to_the_limit() {
    // An inner service with one "connection": ready only while nothing is in flight.
    let inner = tower::limit::ConcurrencyLimit::new(slow(), 1);
    let breaker = CircuitBreaker::new("c", &limits(100, 1));
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(inner);
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    // the clone of ConcurrencyLimit shares the semaphore: the next request waits (pending)
    let second = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    assert_eq!(breaker.stats(Priority::Default).pending, 1);
    let third = svc.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(third.status(), 503, "over max_pending_requests");
    assert_eq!(breaker.stats(Priority::Default).pending_overflow, 1);
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(second.await.unwrap().unwrap().status(), 200);
    assert_eq!(breaker.stats(Priority::Default).pending, 0);
}

#[test]
fn connections_and_retry_limits() {
    let cfg = CircuitBreakers {
        default: Thresholds {
            max_connections: 1,
            max_retries: 1,
            ..Default::default()
        },
        high: Thresholds {
            retry_budget: Some(BudgetCfg {
                budget_percent: 50.0,
                min_retry_concurrency: 2,
            }),
            ..Default::default()
        },
    };
    let b = CircuitBreaker::new("c", &cfg);
    let c = b.try_connection(Priority::Default).unwrap();
    assert!(b.try_connection(Priority::Default).is_none());
    drop(c);
    assert!(b.try_connection(Priority::Default).is_some());
    let r = b.retry_budget(Priority::Default);
    let _g = r.try_retry().unwrap();
    assert!(r.try_retry().is_none());
    assert_eq!(b.stats(Priority::Default).retries_overflow, 1);
    let h = b.retry_budget(Priority::High);
    let _two: Vec<_> = (0..2).map(|_| h.try_retry().unwrap()).collect();
    assert!(
        h.try_retry().is_none(),
        "budget minimum of 2 with no active requests"
    );
}

/// Far more concurrent requests than the breaker allows: the excess gets fast 503s, and
/// once everything is answered no task or slot is left behind.
#[tokio::test(start_paused = true)]
async fn overload_fast_503s_and_no_task_leak() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let breaker = CircuitBreaker::new("c", &limits(50, 10));
    let svc = CircuitBreakerLayer::new(breaker.clone()).layer(slow());
    let mut handles = Vec::new();
    for _ in 0..10_000 {
        let svc = svc.clone();
        handles.push(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let resp = svc.oneshot(Request::new(())).await.unwrap();
            (resp.status().as_u16(), start.elapsed())
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for h in handles {
        let (status, took) = h.await.unwrap();
        match status {
            200 => ok += 1,
            503 => {
                rejected += 1;
                assert_eq!(took, Duration::ZERO, "rejections do not wait");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 50);
    assert_eq!(rejected, 9_950);
    let s = breaker.stats(Priority::Default);
    assert_eq!((s.requests, s.pending, s.requests_overflow), (0, 0, 9_950));
    assert_eq!(metrics.num_alive_tasks(), tasks_before, "no task leak");
    drop(svc);
    assert_eq!(Arc::strong_count(&breaker), 1, "no slot holds the breaker");
}
