//! Chaos run over real sockets: three endpoints on 127.0.0.1 (one answering 503 half the
//! time, one resetting every connection, one slow but healthy) behind mesh-route's
//! `Balancer`, a hyper client, and mesh-resilience's retries and outlier detection (the
//! detector ejecting through the `Balancer`'s `EjectableHosts`). Moved here from
//! mesh-resilience, which no longer depends on mesh-route.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::model::*;
use mesh_resilience::outlier::{OutlierDetector, OutlierLayer};
use mesh_resilience::policy::{EndpointError, PreviousHosts, UpstreamEndpoint};
use mesh_resilience::retry::{ReplayBody, RetryBudget, RetryConfig, RetryLayer};
use mesh_route::{Balancer, PickContext};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, ServiceExt};

#[derive(Clone, Copy)]
enum Behaviour {
    HalfUnavailable,
    Reset,
    Slow,
    AlwaysUnavailable,
}

async fn serve(b: Behaviour) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            if let Behaviour::Reset = b {
                drop(stream); // closed before any response

                continue;
            }
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        async move {
                            let status = match b {
                                Behaviour::HalfUnavailable if n.is_multiple_of(2) => 503,
                                Behaviour::AlwaysUnavailable => 503,
                                Behaviour::Slow => {
                                    tokio::time::sleep(Duration::from_millis(5)).await;
                                    200
                                }
                                _ => 200,
                            };
                            let mut r = Response::new(Full::new(Bytes::from_static(b"hello")));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn balancer(addrs: &[SocketAddr]) -> Arc<Balancer> {
    let cla = ClusterLoadAssignment {
        cluster_name: "chaos".into(),
        localities: vec![LocalityEndpoints {
            locality: Arc::new(Locality::default()),
            priority: 0,
            load_balancing_weight: None,
            endpoints: addrs
                .iter()
                .map(|a| Endpoint {
                    address: EndpointAddress::Socket(*a),
                    health: HealthStatus::Healthy,
                    weight: 1,
                    hostname: None,
                    tls_mode: TlsMode::Unset,
                })
                .collect(),
        }],
        ..Default::default()
    };
    // No panic mode: with two of three ejected the healthy one must carry everything.
    let common = CommonLbConfig {
        healthy_panic_threshold: 0.0,
        ..Default::default()
    };
    Arc::new(Balancer::new("chaos", &LbPolicy::RoundRobin, &common, Arc::new(cla)).unwrap())
}

type Body = ReplayBody<Full<Bytes>>;

/// One attempt: pick an endpoint (avoiding previous hosts), send with hyper, say which
/// endpoint answered.
fn endpoint_service(
    lb: Arc<Balancer>,
) -> impl tower::Service<
    Request<Body>,
    Response = Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let client: Client<_, Body> = Client::builder(TokioExecutor::new()).build_http();
    tower::service_fn(move |mut req: Request<Body>| {
        let lb = lb.clone();
        let client = client.clone();
        async move {
            let previous = req.extensions().get::<PreviousHosts>().cloned();
            let mut ep = lb.pick(&PickContext::new()).ok_or("no healthy upstream")?;
            if let Some(prev) = previous {
                for _ in 0..prev.max_attempts {
                    if !prev.contains(ep.hash_key()) {
                        break;
                    }
                    ep = lb.pick(&PickContext::new()).ok_or("no healthy upstream")?;
                }
            }
            let name: Arc<str> = ep.hash_key().into();
            *req.uri_mut() = format!("http://{name}/").parse()?;
            let _active = ep.start_request();
            match client.request(req).await {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(UpstreamEndpoint(name));
                    Ok(resp)
                }
                Err(e) => Err(Box::new(EndpointError {
                    endpoint: name,
                    source: Box::new(e),
                }) as BoxError),
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_and_outlier_detection_keep_requests_succeeding() {
    let half = serve(Behaviour::HalfUnavailable).await;
    let reset = serve(Behaviour::Reset).await;
    let slow = serve(Behaviour::Slow).await;
    let lb = balancer(&[half, reset, slow]);
    let od = OutlierDetector::new(
        lb.clone(),
        OutlierDetection {
            consecutive_5xx: 3,
            max_ejection_percent: 100,
            interval: Duration::from_secs(1),
            base_ejection_time: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let sweeper = od.spawn();
    let policy = RetryPolicy {
        retry_on: vec![RetryOn::Http5xx, RetryOn::Reset, RetryOn::ConnectFailure],
        num_retries: 3,
        per_try_timeout: Some(Duration::from_secs(2)),
        retry_previous_hosts: true,
        host_selection_retry_max_attempts: 3,
        back_off: RetryBackOff {
            base_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
        },
        ..Default::default()
    };
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryConfig::default()
                .policy(policy)
                .budget(RetryBudget::unlimited()),
        ))
        .layer(OutlierLayer::new(od.clone()))
        .service(endpoint_service(lb.clone()));

    let ok = Arc::new(AtomicU64::new(0));
    let total = 5_000u64;
    let workers = 50;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let svc = svc.clone();
        let ok = ok.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / workers {
                let req = Request::post("http://chaos/")
                    .body(Full::new(Bytes::from_static(b"ping")))
                    .unwrap();
                if let Ok(resp) = svc.clone().oneshot(req).await
                    && resp.status() == 200
                    && resp.into_body().collect().await.is_ok()
                {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    sweeper.abort();
    let ok = ok.load(Ordering::Relaxed);
    let states = od.endpoints();
    eprintln!("chaos: {ok}/{total} succeeded; endpoints: {states:#?}");
    assert!(ok * 1000 >= total * 999, "{ok} of {total} succeeded");
    assert!(
        od.is_ejected(&half.to_string()),
        "the 503 endpoint is ejected"
    );
    assert!(
        od.is_ejected(&reset.to_string()),
        "the resetting endpoint is ejected"
    );
    assert!(!od.is_ejected(&slow.to_string()), "the healthy one stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_retries_when_everything_fails() {
    let addrs = [
        serve(Behaviour::AlwaysUnavailable).await,
        serve(Behaviour::AlwaysUnavailable).await,
        serve(Behaviour::AlwaysUnavailable).await,
    ];
    let lb = balancer(&addrs);
    let budget = RetryBudget::percent(20.0, 3);
    let policy = RetryPolicy {
        retry_on: vec![RetryOn::Http5xx],
        num_retries: 5,
        back_off: RetryBackOff {
            base_interval: Duration::from_millis(1),
            max_interval: Duration::from_millis(2),
        },
        ..Default::default()
    };
    let max_seen = Arc::new(AtomicU64::new(0));
    let workers = 50u64;
    let inner = endpoint_service(lb);
    let b2 = budget.clone();
    let m2 = max_seen.clone();
    // Watch the budget at every attempt: retries in flight never exceed 20% of the 50
    // requests in flight (or the minimum of 3). The budget is checked when a retry is
    // admitted, as in Envoy, so the bound is on the peak of active requests.
    let watched = tower::service_fn(move |req: Request<Body>| {
        let allowed = ((workers as f64 * 0.2) as u64).max(3);
        let retries = b2.active_retries();
        assert!(
            retries <= allowed,
            "{retries} retries in flight, {allowed} allowed"
        );
        m2.fetch_max(retries, Ordering::Relaxed);
        inner.clone().oneshot(req)
    });
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryConfig::default().policy(policy).budget(budget.clone()),
        ))
        .service(watched);
    let total = 2_000u64;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..total / workers {
                let req = Request::get("http://x/")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let resp = svc.clone().oneshot(req).await.unwrap();
                assert_eq!(resp.status(), 503);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let retries = budget.retries_total();
    eprintln!(
        "budget: {total} requests, {retries} retries, {} refused by the budget, max {} in flight",
        budget.overflow_total(),
        max_seen.load(Ordering::Relaxed)
    );
    assert!(budget.overflow_total() > 0, "the budget refused retries");
    // Without a budget every request would make 5 retries.
    assert!(
        retries < total * 5 / 2,
        "{retries} retries for {total} requests"
    );
}
