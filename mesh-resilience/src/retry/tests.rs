use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use mesh_core::model::{HeaderMatchRule, HeaderMatcher, RetryOn, RetryPolicy, StringMatcher};
use tower::{BoxError, ServiceExt};

use super::*;
use crate::policy::{PreviousHosts, RoutePolicy, UpstreamEndpoint};

/// What the fake upstream does on one attempt.
#[derive(Clone)]
enum Step {
    Status(u16),
    Header(u16, &'static str, &'static str),
    Err(std::io::ErrorKind),
    Hang,
}

#[derive(Clone, Default)]
struct Seen {
    bodies: Vec<Bytes>,
    previous: Vec<Option<PreviousHosts>>,
}

fn upstream(
    steps: Vec<Step>,
) -> (
    impl tower::Service<
        Request<ReplayBody<Full<Bytes>>>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
    Arc<Mutex<Seen>>,
) {
    let steps = Arc::new(Mutex::new(VecDeque::from(steps)));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    let svc = tower::service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        let steps = steps.clone();
        let seen = s2.clone();
        async move {
            let n = {
                let mut s = seen.lock().unwrap();
                s.previous
                    .push(req.extensions().get::<PreviousHosts>().cloned());
                s.previous.len()
            };
            let body = req.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().bodies.push(body);
            let step = steps
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or(Step::Status(200));
            let endpoint = UpstreamEndpoint(format!("10.0.0.{n}:80").into());
            let mut resp = Response::new(String::from("ok"));
            resp.extensions_mut().insert(endpoint);
            match step {
                Step::Status(s) => *resp.status_mut() = StatusCode::from_u16(s).unwrap(),
                Step::Header(s, k, v) => {
                    *resp.status_mut() = StatusCode::from_u16(s).unwrap();
                    resp.headers_mut().insert(k, v.parse().unwrap());
                }
                Step::Err(k) => return Err::<_, BoxError>(Box::new(std::io::Error::from(k))),
                Step::Hang => futures_pending().await,
            }
            Ok(resp)
        }
    });
    (svc, seen)
}

async fn futures_pending() {
    std::future::pending::<()>().await
}

fn policy(on: &[RetryOn], n: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.to_vec(),
        num_retries: n,
        ..Default::default()
    }
}

type Out = Result<Response<crate::timeout::TimeoutBody<String>>, BoxError>;

async fn run(p: RetryPolicy, steps: Vec<Step>) -> (Out, Seen) {
    let (svc, seen) = upstream(steps);
    let svc = RetryLayer::new(RetryConfig::default().policy(p)).layer(svc);
    let r = svc
        .oneshot(Request::new(Full::new(Bytes::from_static(b"payload"))))
        .await;
    let seen = seen.lock().unwrap().clone();
    (r, seen)
}

use tower_layer::Layer;

fn status(r: &Out) -> u16 {
    r.as_ref().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn retries_5xx_until_success_replaying_the_body() {
    let (r, seen) = run(
        policy(&[RetryOn::Http5xx], 3),
        vec![Step::Status(500), Step::Status(503)],
    )
    .await;
    assert_eq!(status(&r), 200);
    assert_eq!(seen.bodies, vec![Bytes::from_static(b"payload"); 3]);
}

#[tokio::test(start_paused = true)]
async fn num_retries_bounds_attempts() {
    let (r, seen) = run(policy(&[RetryOn::Http5xx], 2), vec![Step::Status(503); 10]).await;
    assert_eq!(status(&r), 503, "the last attempt's answer is returned");
    assert_eq!(seen.bodies.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn gateway_error_is_only_502_503_504() {
    let (r, seen) = run(policy(&[RetryOn::GatewayError], 2), vec![Step::Status(500)]).await;
    assert_eq!((status(&r), seen.bodies.len()), (500, 1));
    let (r, seen) = run(policy(&[RetryOn::GatewayError], 2), vec![Step::Status(502)]).await;
    assert_eq!((status(&r), seen.bodies.len()), (200, 2));
}

#[tokio::test(start_paused = true)]
async fn connect_failure_and_reset() {
    use std::io::ErrorKind::*;
    let (r, seen) = run(
        policy(&[RetryOn::ConnectFailure], 1),
        vec![Step::Err(ConnectionRefused)],
    )
    .await;
    assert_eq!((status(&r), seen.bodies.len()), (200, 2));
    let (r, seen) = run(
        policy(&[RetryOn::ConnectFailure], 1),
        vec![Step::Err(ConnectionReset)],
    )
    .await;
    assert!(r.is_err(), "a reset is not a connect failure");
    assert_eq!(seen.bodies.len(), 1);
    let (r, _) = run(
        policy(&[RetryOn::Reset], 1),
        vec![Step::Err(ConnectionReset)],
    )
    .await;
    assert_eq!(status(&r), 200);
    let (r, _) = run(
        policy(&[RetryOn::Http5xx], 1),
        vec![Step::Err(ConnectionReset)],
    )
    .await;
    assert_eq!(status(&r), 200, "5xx covers resets");
}

#[tokio::test(start_paused = true)]
async fn retriable_4xx_status_codes_and_headers() {
    let (r, _) = run(policy(&[RetryOn::Retriable4xx], 1), vec![Step::Status(409)]).await;
    assert_eq!(status(&r), 200);
    let (r, _) = run(policy(&[RetryOn::Retriable4xx], 1), vec![Step::Status(404)]).await;
    assert_eq!(status(&r), 404);

    let mut p = policy(&[RetryOn::RetriableStatusCodes], 1);
    p.retriable_status_codes = vec![418];
    let (r, _) = run(p, vec![Step::Status(418)]).await;
    assert_eq!(status(&r), 200);

    let mut p = policy(&[RetryOn::RetriableHeaders], 1);
    p.retriable_headers = vec![HeaderMatcher {
        name: "x-retry-me".into(),
        rule: HeaderMatchRule::String(StringMatcher::Exact {
            value: "yes".into(),
            ignore_case: false,
        }),
        invert_match: false,
        treat_missing_header_as_empty: false,
    }];
    let (r, _) = run(p.clone(), vec![Step::Header(200, "x-retry-me", "yes")]).await;
    assert_eq!(status(&r), 200);
    assert!(
        r.unwrap().headers().get("x-retry-me").is_none(),
        "second attempt answered"
    );
    let (r, _) = run(p, vec![Step::Header(200, "x-retry-me", "no")]).await;
    assert_eq!(r.unwrap().headers()["x-retry-me"], "no");
}

#[tokio::test(start_paused = true)]
async fn grpc_statuses() {
    for (code, on) in [
        ("1", RetryOn::GrpcCancelled),
        ("4", RetryOn::GrpcDeadlineExceeded),
        ("8", RetryOn::GrpcResourceExhausted),
        ("13", RetryOn::GrpcInternal),
        ("14", RetryOn::GrpcUnavailable),
    ] {
        let (r, seen) = run(
            policy(&[on], 1),
            vec![Step::Header(200, "grpc-status", code)],
        )
        .await;
        assert_eq!(seen.bodies.len(), 2, "{on:?}");
        assert!(r.unwrap().headers().get("grpc-status").is_none());
    }
    let (_, seen) = run(
        policy(&[RetryOn::GrpcUnavailable], 1),
        vec![Step::Header(200, "grpc-status", "13")],
    )
    .await;
    assert_eq!(
        seen.bodies.len(),
        1,
        "INTERNAL is not retried under unavailable"
    );
}

#[tokio::test(start_paused = true)]
async fn per_try_timeout_abandons_a_slow_attempt() {
    let mut p = policy(&[RetryOn::Http5xx], 1);
    p.per_try_timeout = Some(Duration::from_millis(100));
    let start = tokio::time::Instant::now();
    let (r, seen) = run(p.clone(), vec![Step::Hang]).await;
    assert_eq!(status(&r), 200);
    assert_eq!(seen.bodies.len(), 2);
    assert!(start.elapsed() >= Duration::from_millis(100));
    let (r, _) = run(p, vec![Step::Hang, Step::Hang]).await;
    let err = r.unwrap_err();
    assert!(crate::timeout::is_timed_out(&*err), "{err}");
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_are_bounded_by_the_jittered_ceiling() {
    let mut p = policy(&[RetryOn::Http5xx], 3);
    p.back_off.base_interval = Duration::from_millis(100);
    p.back_off.max_interval = Duration::from_millis(1000);
    let start = tokio::time::Instant::now();
    let (_, seen) = run(p, vec![Step::Status(503); 3]).await;
    assert_eq!(seen.bodies.len(), 4);
    // ceilings 100 + 300 + 700 ms
    assert!(
        start.elapsed() < Duration::from_millis(1100),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn previous_hosts_are_passed_to_the_next_attempt() {
    let mut p = policy(&[RetryOn::Http5xx], 2);
    p.retry_previous_hosts = true;
    p.host_selection_retry_max_attempts = 3;
    let (_, seen) = run(p, vec![Step::Status(503), Step::Status(503)]).await;
    assert_eq!(seen.previous[0], None);
    let second = seen.previous[1].clone().unwrap();
    assert_eq!(second.hosts, vec![Arc::<str>::from("10.0.0.1:80")]);
    assert_eq!(second.max_attempts, 3);
    assert!(seen.previous[2].as_ref().unwrap().contains("10.0.0.2:80"));
    let (_, seen) = run(policy(&[RetryOn::Http5xx], 1), vec![Step::Status(503)]).await;
    assert!(seen.previous[1].is_none(), "only with retry_previous_hosts");
}

#[tokio::test(start_paused = true)]
async fn budget_overflow_stops_retries() {
    let (svc, seen) = upstream(vec![Step::Status(503); 5]);
    let budget = RetryBudget::max_retries(0);
    let svc = RetryLayer::new(
        RetryConfig::default()
            .policy(policy(&[RetryOn::Http5xx], 3))
            .budget(budget.clone()),
    )
    .layer(svc);
    let r = svc.oneshot(Request::new(Full::new(Bytes::new()))).await;
    assert_eq!(status(&r), 503);
    assert_eq!(seen.lock().unwrap().bodies.len(), 1);
    assert_eq!(budget.overflow_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_past_the_cap_is_sent_once_and_not_retried() {
    let (svc, seen) = upstream(vec![Step::Status(503)]);
    let svc = RetryLayer::new(
        RetryConfig::default()
            .policy(policy(&[RetryOn::Http5xx], 3))
            .buffer_cap(4),
    )
    .layer(svc);
    let r = svc
        .oneshot(Request::new(Full::new(Bytes::from_static(b"payload"))))
        .await;
    assert_eq!(status(&r), 503);
    assert_eq!(
        seen.lock().unwrap().bodies,
        vec![Bytes::from_static(b"payload")]
    );
}

#[tokio::test(start_paused = true)]
async fn streamed_body_is_recorded_while_it_streams() {
    // A body of unknown length, in three chunks, within the cap: replayed whole.
    let chunks = vec![
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"ab"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"cd"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"ef"))),
    ];
    let body = StreamBody::new(futures_iter(chunks));
    let replay = ReplayBody::new(body, 6);
    let again = replay.try_clone().unwrap();
    assert_eq!(replay.collect().await.unwrap().to_bytes(), "abcdef");
    assert!(!again.is_capped());
    assert_eq!(again.collect().await.unwrap().to_bytes(), "abcdef");

    let chunks = vec![
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"ab"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"cdefg"))),
    ];
    let replay = ReplayBody::new(StreamBody::new(futures_iter(chunks)), 6);
    let again = replay.try_clone().unwrap();
    assert_eq!(
        replay.collect().await.unwrap().to_bytes(),
        "abcdefg",
        "the first attempt gets it all"
    );
    assert!(again.is_capped());
    assert!(again.collect().await.is_err(), "but it cannot be replayed");
}

#[tokio::test(start_paused = true)]
async fn an_ended_body_replays_empty_and_direct_bodies_do_not() {
    use http_body::Body as _;
    // A GET's body has ended before the first attempt: every attempt gets it (empty).
    let replay = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 6);
    assert!(replay.is_end_stream() && !replay.is_capped());
    assert_eq!(replay.size_hint().exact(), Some(0));
    let again = replay.try_clone().expect("an ended body is replayable");
    assert!(replay.collect().await.unwrap().to_bytes().is_empty());
    assert!(again.collect().await.unwrap().to_bytes().is_empty());
    // Unrecorded (no retry policy): never replayable, ended or not.
    let direct = ReplayBody::direct(http_body_util::Empty::<Bytes>::new());
    assert!(direct.is_capped() && direct.try_clone().is_none());
    let direct = ReplayBody::direct(Full::new(Bytes::from_static(b"x")));
    assert!(direct.is_capped() && direct.try_clone().is_none());
    assert_eq!(direct.collect().await.unwrap().to_bytes(), "x");
}

#[tokio::test(start_paused = true)]
async fn a_body_left_without_clones_stops_recording() {
    let chunks = vec![
        Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"ab"))),
        Ok(http_body::Frame::data(Bytes::from_static(b"cd"))),
    ];
    let mut replay = ReplayBody::new(StreamBody::new(futures_iter(chunks)), 64);
    let spare = replay.try_clone().unwrap();
    let first = replay.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "ab");
    assert!(!replay.is_capped(), "recorded while a clone may replay it");
    // The spare is gone: nothing can replay this body any more, so nothing is kept.
    drop(spare);
    let second = replay.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(second, "cd");
    assert!(replay.is_capped() && replay.try_clone().is_none());
}

fn futures_iter<T>(items: Vec<T>) -> impl futures::Stream<Item = T> {
    tokio_stream::iter(items)
}

#[tokio::test(start_paused = true)]
async fn policy_from_request_extensions_wins() {
    let (svc, seen) = upstream(vec![Step::Status(503); 5]);
    let svc = RetryLayer::new(RetryConfig::default()).layer(svc); // no static policy
    let mut req = Request::new(Full::new(Bytes::new()));
    req.extensions_mut().insert(Arc::new(RoutePolicy {
        retry_policy: Some(Arc::new(policy(&[RetryOn::Http5xx], 1))),
        ..Default::default()
    }));
    let r = svc.clone().oneshot(req).await;
    assert_eq!(status(&r), 503);
    assert_eq!(
        seen.lock().unwrap().bodies.len(),
        2,
        "route policy: one retry"
    );

    let mut req = Request::new(Full::new(Bytes::new()));
    req.extensions_mut()
        .insert(Arc::new(policy(&[RetryOn::Http5xx], 2)));
    let _ = svc.clone().oneshot(req).await;
    assert_eq!(
        seen.lock().unwrap().bodies.len(),
        5,
        "request override: two retries"
    );

    let _ = svc.oneshot(Request::new(Full::new(Bytes::new()))).await;
    assert_eq!(seen.lock().unwrap().bodies.len(), 6, "no policy: no retry");
}

#[tokio::test(start_paused = true)]
async fn per_try_idle_timeout_bounds_the_wait_for_headers() {
    let mut p = policy(&[RetryOn::Http5xx], 1);
    p.per_try_idle_timeout = Some(Duration::from_millis(40));
    p.per_try_timeout = Some(Duration::from_millis(500));
    let start = tokio::time::Instant::now();
    let (r, seen) = run(p, vec![Step::Hang]).await;
    assert_eq!(status(&r), 200);
    assert_eq!(seen.bodies.len(), 2);
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "the idle timeout fired first"
    );
}

#[tokio::test(start_paused = true)]
async fn per_try_idle_timeout_bounds_gaps_in_the_response_body() {
    let mut p = policy(&[RetryOn::Http5xx], 1);
    p.per_try_idle_timeout = Some(Duration::from_millis(40));
    // Headers at once, then one chunk, then a body that stalls.
    let svc = RetryLayer::new(RetryConfig::default().policy(p)).layer(tower::service_fn(
        |_req: Request<ReplayBody<Full<Bytes>>>| async {
            use futures::StreamExt;
            let first = Ok::<_, Infallible>(http_body::Frame::data(Bytes::from_static(b"first")));
            let frames = futures::stream::iter(vec![first]).chain(futures::stream::pending());
            Ok::<_, BoxError>(Response::new(StreamBody::new(frames)))
        },
    ));
    let resp = svc
        .oneshot(Request::new(Full::new(Bytes::new())))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    let start = tokio::time::Instant::now();
    let err = body.frame().await.unwrap().unwrap_err();
    assert!(crate::timeout::is_timed_out(&*err), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(40));
}
