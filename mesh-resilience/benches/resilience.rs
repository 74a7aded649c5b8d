//! Per-request cost of the resilience layers with nothing failing, against the bare
//! service in the same run.
//!
//! `cargo bench -p mesh-resilience --bench resilience`

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use mesh_core::model::{CircuitBreakers, FaultConfig, RetryOn, RetryPolicy};
use mesh_resilience::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};
use mesh_resilience::fault::FaultLayer;
use mesh_resilience::policy::TimeoutPolicy;
use mesh_resilience::rate_limit::{RateLimitLayer, TokenBucket, TokenBucketConfig};
use mesh_resilience::retry::{ReplayBody, RetryConfig, RetryLayer};
use mesh_resilience::timeout::TimeoutLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("resilience");

    let bare = tower::service_fn(|_r: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    group.bench_function("bare service", |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = bare;
            async move {
                let req = Request::new(Full::new(Bytes::from_static(b"ping")));
                let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                assert_eq!(resp.status(), 200);
            }
        })
    });

    let inner = tower::service_fn(|_r: Request<ReplayBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    });
    let breaker = CircuitBreaker::new("bench", &CircuitBreakers::default());
    let bucket = TokenBucket::new(TokenBucketConfig {
        max_tokens: u32::MAX,
        tokens_per_fill: u32::MAX,
        fill_interval: Duration::from_secs(1),
    });
    let policy = RetryPolicy {
        retry_on: vec![RetryOn::Http5xx, RetryOn::Reset, RetryOn::ConnectFailure],
        num_retries: 2,
        per_try_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let stack = ServiceBuilder::new()
        .layer(RateLimitLayer::new(bucket))
        .layer(FaultLayer::new(Some(FaultConfig::default())))
        .layer(TimeoutLayer::new(TimeoutPolicy {
            timeout: Some(Duration::from_secs(15)),
            ..Default::default()
        }))
        .layer(RetryLayer::new(RetryConfig::default().policy(policy)))
        .layer(CircuitBreakerLayer::new(breaker))
        .service(inner);
    group.bench_function(
        "rate limit + fault + timeout + retry + circuit breaker",
        |b| {
            b.to_async(&rt).iter(|| {
                let mut svc = stack.clone();
                async move {
                    let req = Request::new(Full::new(Bytes::from_static(b"ping")));
                    let resp = svc.ready().await.unwrap().call(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
