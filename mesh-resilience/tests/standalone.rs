//! Each layer alone, as its docs show it, on real traffic and without the mesh: real axum
//! and hyper servers on 127.0.0.1:0, hyper-util's legacy client wrapped with
//! `tower::ServiceBuilder` (retry, timeout, circuit breaker, outlier detection, fault) or
//! a hyper server with the layer in front of an axum `Router` (rate limit).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{any, get};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_core::hosts::EjectableHosts;
use mesh_core::model::{
    AbortKind, CircuitBreakers, DelayKind, FaultAbort, FaultConfig, FaultDelay, Fraction,
    OutlierDetection, RetryBackOff, RetryOn, RetryPolicy, Thresholds,
};
use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use mesh_resilience::fault::FaultLayer;
use mesh_resilience::outlier::{OutlierDetector, OutlierLayer};
use mesh_resilience::policy::{EndpointError, Priority, TimeoutPolicy, UpstreamEndpoint};
use mesh_resilience::rate_limit::{RateLimitLayer, TokenBucket, TokenBucketConfig};
use mesh_resilience::retry::{ReplayBody, RetryBudget, RetryConfig, RetryLayer};
use mesh_resilience::timeout::TimeoutLayer;
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder, ServiceExt};

/// An upstream on 127.0.0.1:0: `/flaky` answers 503 to its first `fail_first` requests
/// and then 200 with the request body echoed, `/slow` answers after `slow`, `/down` always
/// answers 503, anything else 200 `ok`. Counts every request.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
}

async fn upstream(fail_first: u64, slow: Duration) -> Upstream {
    let hits = Arc::new(AtomicU64::new(0));
    let flaky = Arc::new(AtomicU64::new(0));
    let count = |hits: &Arc<AtomicU64>| {
        let hits = hits.clone();
        move || {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    };
    let (c1, c2, c3, c4) = (count(&hits), count(&hits), count(&hits), count(&hits));
    let app = Router::new()
        .route(
            "/flaky",
            any(move |body: Bytes| async move {
                c1();
                if flaky.fetch_add(1, Ordering::SeqCst) < fail_first {
                    (StatusCode::SERVICE_UNAVAILABLE, Bytes::from_static(b"busy"))
                } else {
                    (StatusCode::OK, body)
                }
            }),
        )
        .route(
            "/slow",
            get(move || async move {
                c2();
                tokio::time::sleep(slow).await;
                "slow"
            }),
        )
        .route(
            "/down",
            get(move || async move {
                c3();
                StatusCode::SERVICE_UNAVAILABLE
            }),
        )
        .fallback(move || async move {
            c4();
            "ok"
        });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { addr, hits }
}

fn client<B>() -> Client<HttpConnector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build_http()
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{addr}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn text<B>(resp: http::Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

fn retry_policy(num_retries: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: vec![RetryOn::Http5xx, RetryOn::ConnectFailure, RetryOn::Reset],
        num_retries,
        back_off: RetryBackOff {
            base_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn retry_layer_around_a_hyper_util_client() {
    let up = upstream(2, Duration::ZERO).await;
    let budget = RetryBudget::unlimited();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryConfig::default()
                .policy(retry_policy(3))
                .budget(budget.clone()),
        ))
        .service(client::<ReplayBody<Full<Bytes>>>());
    let req = Request::post(format!("http://{}/flaky", up.addr))
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let resp = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        text(resp).await,
        "ping",
        "the body was replayed to the third attempt"
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 3, "two 503s, then 200");
    assert_eq!(budget.retries_total(), 2);

    // Out of retries: the last 503 is the answer.
    let up = upstream(10, Duration::ZERO).await;
    let resp = svc.oneshot(get_req(up.addr, "/flaky")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(up.hits.load(Ordering::SeqCst), 4, "1 attempt + 3 retries");

    // A refused connection is a connect failure, retried, then returned as the error.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let budget = RetryBudget::unlimited();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(
            RetryConfig::default()
                .policy(retry_policy(2))
                .budget(budget.clone()),
        ))
        .service(client::<ReplayBody<Full<Bytes>>>());
    assert!(svc.oneshot(get_req(addr, "/")).await.is_err());
    assert_eq!(budget.retries_total(), 2);
}

#[tokio::test]
async fn timeout_layer_around_a_hyper_util_client() {
    let up = upstream(0, Duration::from_secs(5)).await;
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(TimeoutPolicy {
            timeout: Some(Duration::from_millis(100)),
            ..Default::default()
        }))
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let resp = svc
        .clone()
        .oneshot(get_req(up.addr, "/slow"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(text(resp).await, "upstream request timeout");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(up.hits.load(Ordering::SeqCst), 1);

    let resp = svc.oneshot(get_req(up.addr, "/fast")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "in time");
}

#[tokio::test]
async fn circuit_breaker_layer_around_a_hyper_util_client() {
    let up = upstream(0, Duration::from_millis(300)).await;
    let limits = CircuitBreakers {
        default: Thresholds {
            max_requests: 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let breaker = CircuitBreaker::new("slow", &limits);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            let req = get_req(up.addr, "/slow");
            tokio::spawn(async move {
                let resp = svc.oneshot(req).await.unwrap();
                let at = start.elapsed();
                let overloaded = resp.headers().get("x-envoy-overloaded").cloned();
                (resp.status(), overloaded, at, text(resp).await)
            })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for call in calls {
        let (status, overloaded, at, body) = call.await.unwrap();
        if status == StatusCode::OK {
            ok += 1;
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(overloaded.unwrap(), "true");
            assert!(body.ends_with("reset reason: overflow"), "{body}");
            assert!(
                at < Duration::from_millis(300),
                "refused at once, not after {at:?}"
            );
            refused += 1;
        }
    }
    assert_eq!((ok, refused), (2, 3));
    assert_eq!(breaker.stats(Priority::Default).requests_overflow, 3);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        2,
        "overflow never reached the server"
    );
}

/// The crate docs' stack: timeout -> retry (budget from the breaker) -> circuit breaker
/// -> hyper-util client.
#[tokio::test]
async fn the_layers_together_around_a_hyper_util_client() {
    let up = upstream(2, Duration::from_secs(5)).await;
    let limits = CircuitBreakers {
        default: Thresholds {
            max_requests: 100,
            max_retries: 3,
            ..Default::default()
        },
        ..Default::default()
    };
    let breaker = CircuitBreaker::new("reviews", &limits);
    let retry = RetryConfig::default()
        .policy(RetryPolicy {
            per_try_timeout: Some(Duration::from_secs(1)),
            ..retry_policy(2)
        })
        .budget(breaker.retry_budget(Priority::Default));
    let svc = ServiceBuilder::new()
        .layer(TimeoutLayer::new(TimeoutPolicy {
            timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        }))
        .layer(RetryLayer::new(retry))
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .service(client::<ReplayBody<Full<Bytes>>>());
    let resp = svc
        .clone()
        .oneshot(get_req(up.addr, "/flaky"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "two retries");
    assert_eq!(breaker.retry_budget(Priority::Default).retries_total(), 2);
    let resp = svc.oneshot(get_req(up.addr, "/slow")).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::GATEWAY_TIMEOUT,
        "the route timeout"
    );
}

/// A host set a load balancer would keep: addresses and ejection flags, round robin over
/// the hosts not ejected.
struct Hosts {
    hosts: Mutex<Vec<(SocketAddr, bool)>>,
    next: AtomicUsize,
}

impl EjectableHosts for Hosts {
    fn host_counts(&self) -> (usize, usize) {
        let h = self.hosts.lock().unwrap();
        (h.len(), h.iter().filter(|(_, e)| *e).count())
    }

    fn set_ejected(&self, host: &str, ejected: bool) -> bool {
        let mut h = self.hosts.lock().unwrap();
        match h.iter_mut().find(|(a, _)| a.to_string() == host) {
            Some((_, e)) => {
                *e = ejected;
                true
            }
            None => false,
        }
    }
}

impl Hosts {
    fn pick(&self) -> Option<SocketAddr> {
        let h = self.hosts.lock().unwrap();
        let up: Vec<SocketAddr> = h.iter().filter(|(_, e)| !e).map(|(a, _)| *a).collect();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (!up.is_empty()).then(|| up[n % up.len()])
    }
}

#[tokio::test]
async fn outlier_layer_around_a_hyper_util_client() {
    let bad = upstream(0, Duration::ZERO).await;
    let good = upstream(0, Duration::ZERO).await;
    let hosts = Arc::new(Hosts {
        hosts: Mutex::new(vec![(bad.addr, false), (good.addr, false)]),
        next: AtomicUsize::new(0),
    });
    let detector = OutlierDetector::new(
        hosts.clone(),
        OutlierDetection {
            max_ejection_percent: 50,
            ..Default::default()
        },
    );
    // One attempt: pick a host, send with hyper-util, name the host in the response (or
    // the error) for the outlier layer.
    let client = client::<Full<Bytes>>();
    let picker = hosts.clone();
    let endpoints = tower::service_fn(move |mut req: Request<Full<Bytes>>| {
        let client = client.clone();
        let host = picker.pick();
        async move {
            let host = host.ok_or("no healthy upstream")?;
            let path = if host == bad.addr { "/down" } else { "/" };
            *req.uri_mut() = format!("http://{host}{path}").parse()?;
            let name: Arc<str> = host.to_string().into();
            match client.request(req).await {
                Ok(mut resp) => {
                    resp.extensions_mut().insert(UpstreamEndpoint(name));
                    Ok(resp)
                }
                Err(e) => Err(BoxError::from(EndpointError {
                    endpoint: name,
                    source: Box::new(e),
                })),
            }
        }
    });
    let svc = ServiceBuilder::new()
        .layer(OutlierLayer::new(detector.clone()))
        .service(endpoints);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let resp = svc.clone().oneshot(get_req(good.addr, "/")).await.unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert!(
        detector.is_ejected(&bad.addr.to_string()),
        "5 consecutive 5xx"
    );
    assert!(!detector.is_ejected(&good.addr.to_string()));
    assert_eq!(hosts.host_counts(), (2, 1));
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        5,
        "ejected after its fifth 503"
    );
    assert!(
        statuses[10..].iter().all(|s| *s == 200),
        "after the ejection every request goes to the healthy host: {statuses:?}"
    );
}

#[tokio::test]
async fn fault_layer_around_a_hyper_util_client() {
    let up = upstream(0, Duration::ZERO).await;
    let abort = FaultConfig {
        abort: Some(FaultAbort {
            kind: AbortKind::Http(503),
            percentage: Fraction::ALWAYS,
        }),
        ..Default::default()
    };
    let svc = ServiceBuilder::new()
        .layer(FaultLayer::new(Some(abort)))
        .service(client::<Full<Bytes>>());
    let resp = svc.oneshot(get_req(up.addr, "/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        up.hits.load(Ordering::SeqCst),
        0,
        "aborted before the upstream"
    );

    let delay = FaultConfig {
        delay: Some(FaultDelay {
            kind: DelayKind::Fixed(Duration::from_millis(200)),
            percentage: Fraction::ALWAYS,
        }),
        ..Default::default()
    };
    let svc = ServiceBuilder::new()
        .layer(FaultLayer::new(Some(delay)))
        .service(client::<Full<Bytes>>());
    let start = Instant::now();
    let resp = svc.oneshot(get_req(up.addr, "/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(up.hits.load(Ordering::SeqCst), 1, "delayed, then sent");
}

#[tokio::test]
async fn rate_limit_layer_in_front_of_an_axum_router() {
    let bucket = TokenBucket::new(TokenBucketConfig {
        max_tokens: 2,
        tokens_per_fill: 1,
        fill_interval: Duration::from_secs(3600),
    });
    let app = Router::new().route("/", get(|| async { "hello" }));
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(bucket.clone()))
        .service(app);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let client = client::<Full<Bytes>>();
    for _ in 0..2 {
        let resp = client.request(get_req(addr, "/")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(text(resp).await, "hello");
    }
    let resp = client.request(get_req(addr, "/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["x-envoy-ratelimited"], "true");
    assert_eq!(text(resp).await, "local_rate_limited");
}
