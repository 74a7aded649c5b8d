use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use tower::{BoxError, ServiceExt};
use tower_layer::Layer;

use super::*;
use crate::policy::{RoutePolicy, TimeoutPolicy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An upstream answering after `delay`, with a body that sends one chunk then waits
/// `body_gap` before the next.
fn slow(
    delay: Duration,
    dropped: Arc<AtomicBool>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<
        StreamBody<
            tokio_stream::wrappers::ReceiverStream<Result<http_body::Frame<Bytes>, BoxError>>,
        >,
    >,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_req: Request<()>| {
        let dropped = dropped.clone();
        async move {
            struct OnDrop(Arc<AtomicBool>);
            impl Drop for OnDrop {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _guard = OnDrop(dropped);
            tokio::time::sleep(delay).await;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(http_body::Frame::data(Bytes::from_static(b"a"))))
                    .await;
                tokio::time::sleep(ms(300)).await;
                let _ = tx
                    .send(Ok(http_body::Frame::data(Bytes::from_static(b"b"))))
                    .await;
            });
            Ok::<_, BoxError>(Response::new(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
        }
    })
}

fn policy(timeout: u64) -> TimeoutPolicy {
    TimeoutPolicy {
        timeout: Some(ms(timeout)),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn route_timeout_answers_504_and_drops_the_attempt() {
    let dropped = Arc::new(AtomicBool::new(false));
    let svc = TimeoutLayer::new(policy(100)).layer(slow(ms(1000), dropped.clone()));
    let start = tokio::time::Instant::now();
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(start.elapsed(), ms(100));
    assert!(dropped.load(Ordering::SeqCst), "the inner future is freed");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "upstream request timeout");
}

#[tokio::test(start_paused = true)]
async fn fast_answers_pass_and_zero_disables() {
    let svc = TimeoutLayer::new(policy(100)).layer(slow(ms(50), Default::default()));
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
    let svc = TimeoutLayer::new(policy(0)).layer(slow(ms(50_000), Default::default()));
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
}

fn grpc_req(timeout: Option<&str>) -> Request<()> {
    let mut b = Request::builder().header("content-type", "application/grpc");
    if let Some(t) = timeout {
        b = b.header("grpc-timeout", t);
    }
    b.body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn grpc_gets_deadline_exceeded() {
    let svc = TimeoutLayer::new(policy(100)).layer(slow(ms(1000), Default::default()));
    let resp = svc.oneshot(grpc_req(None)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4");
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_header_is_honoured_and_capped() {
    let p = TimeoutPolicy {
        timeout: Some(ms(10_000)),
        grpc_timeout_header_max: Some(ms(500)),
        grpc_timeout_header_offset: Some(ms(20)),
        ..Default::default()
    };
    let svc = TimeoutLayer::new(p.clone()).layer(slow(ms(60_000), Default::default()));
    let start = tokio::time::Instant::now();
    let _ = svc.clone().oneshot(grpc_req(Some("200m"))).await.unwrap();
    assert_eq!(start.elapsed(), ms(180), "header minus offset");
    let start = tokio::time::Instant::now();
    let _ = svc.clone().oneshot(grpc_req(Some("5S"))).await.unwrap();
    assert_eq!(
        start.elapsed(),
        ms(500),
        "capped by grpc_timeout_header_max"
    );
    let start = tokio::time::Instant::now();
    let _ = svc
        .clone()
        .oneshot(grpc_req(Some("garbage")))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        ms(10_000),
        "a bad header falls back to the route timeout"
    );
    // Without grpc_timeout_header_max the caller's deadline still holds (proxyless
    // gRPC), within the route timeout.
    let svc = TimeoutLayer::new(policy(1000)).layer(slow(ms(60_000), Default::default()));
    let start = tokio::time::Instant::now();
    let _ = svc.clone().oneshot(grpc_req(Some("100m"))).await.unwrap();
    assert_eq!(start.elapsed(), ms(100));
    let start = tokio::time::Instant::now();
    let _ = svc.oneshot(grpc_req(Some("5S"))).await.unwrap();
    assert_eq!(start.elapsed(), ms(1000), "the route timeout is shorter");
}

#[tokio::test(start_paused = true)]
async fn grpc_gets_no_default_timeout() {
    // A route that set no timeout: Envoy's 15 s default, marked as such.
    let p = TimeoutPolicy {
        timeout: Some(ms(15_000)),
        timeout_is_default: true,
        ..Default::default()
    };
    let svc = TimeoutLayer::new(p).layer(slow(ms(20_000), Default::default()));
    let start = tokio::time::Instant::now();
    let resp = svc.clone().oneshot(grpc_req(None)).await.unwrap();
    assert!(resp.headers().get("grpc-status").is_none(), "answered");
    assert_eq!(start.elapsed(), ms(20_000), "a 20 s gRPC call passes");
    let start = tokio::time::Instant::now();
    let _ = svc.clone().oneshot(grpc_req(Some("2S"))).await.unwrap();
    assert_eq!(start.elapsed(), ms(2_000), "the caller's deadline holds");
    let start = tokio::time::Instant::now();
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(resp.status(), 504, "HTTP keeps Envoy's default");
    assert_eq!(start.elapsed(), ms(15_000));
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_ends_a_stalled_body() {
    let p = TimeoutPolicy {
        idle_timeout: Some(ms(200)),
        ..Default::default()
    };
    let svc = TimeoutLayer::new(p).layer(slow(ms(10), Default::default()));
    let mut body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "a");
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(is_timed_out(&*err));
    // a gap shorter than the idle timeout is fine
    let p = TimeoutPolicy {
        idle_timeout: Some(ms(400)),
        ..Default::default()
    };
    let svc = TimeoutLayer::new(p).layer(slow(ms(10), Default::default()));
    let body = svc.oneshot(Request::new(())).await.unwrap().into_body();
    assert_eq!(body.collect().await.unwrap().to_bytes(), "ab");
}

#[tokio::test(start_paused = true)]
async fn max_stream_duration_bounds_the_body_too() {
    let p = TimeoutPolicy {
        max_stream_duration: Some(ms(200)),
        ..Default::default()
    };
    let svc = TimeoutLayer::new(p).layer(slow(ms(100), Default::default()));
    let resp = svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.into_body().collect().await.is_err(),
        "stream ends at 200 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn route_policy_in_extensions_and_inner_timeouts() {
    let svc = TimeoutLayer::default().layer(slow(ms(1000), Default::default()));
    let mut req = Request::new(());
    req.extensions_mut().insert(Arc::new(RoutePolicy {
        timeout: Some(ms(300)),
        ..Default::default()
    }));
    let start = tokio::time::Instant::now();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 504);
    assert_eq!(start.elapsed(), ms(300));

    let failing = tower::service_fn(|_r: Request<()>| async {
        Err::<Response<String>, BoxError>(Box::new(TimedOut))
    });
    let svc = TimeoutLayer::default().layer(failing);
    assert_eq!(
        svc.oneshot(Request::new(())).await.unwrap().status(),
        504,
        "a per-try timeout"
    );
}
