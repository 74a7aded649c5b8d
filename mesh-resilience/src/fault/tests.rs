use std::time::Duration;

use http::{Request, Response};
use mesh_core::model::*;
use tower::{BoxError, ServiceExt};
use tower_layer::Layer;

use super::*;

fn ok()
-> impl Service<Request<()>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    tower::service_fn(|_r: Request<()>| async {
        Ok::<_, BoxError>(Response::new(String::from("ok")))
    })
}

fn abort(kind: AbortKind, pct: Fraction) -> FaultConfig {
    FaultConfig {
        abort: Some(FaultAbort {
            kind,
            percentage: pct,
        }),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn fixed_delay_then_pass() {
    let cfg = FaultConfig {
        delay: Some(FaultDelay {
            kind: DelayKind::Fixed(Duration::from_secs(2)),
            percentage: Fraction::ALWAYS,
        }),
        ..Default::default()
    };
    let svc = FaultLayer::new(Some(cfg)).layer(ok());
    let start = tokio::time::Instant::now();
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn http_and_grpc_aborts() {
    let svc = FaultLayer::new(Some(abort(AbortKind::Http(503), Fraction::ALWAYS))).layer(ok());
    assert_eq!(
        svc.clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status(),
        503
    );
    let grpc = || {
        Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
    };
    let r = svc.oneshot(grpc()).await.unwrap();
    assert_eq!(r.headers()["grpc-status"], "14", "503 maps to UNAVAILABLE");
    let svc = FaultLayer::new(Some(abort(AbortKind::Grpc(8), Fraction::ALWAYS))).layer(ok());
    assert_eq!(
        svc.oneshot(grpc()).await.unwrap().headers()["grpc-status"],
        "8"
    );
}

#[tokio::test(start_paused = true)]
async fn percentage_is_honoured() {
    let svc =
        FaultLayer::new(Some(abort(AbortKind::Http(500), Fraction::new(30, 100)))).layer(ok());
    let mut aborted = 0;
    for _ in 0..2000 {
        if svc
            .clone()
            .oneshot(Request::new(()))
            .await
            .unwrap()
            .status()
            == 500
        {
            aborted += 1;
        }
    }
    assert!((450..750).contains(&aborted), "{aborted} of 2000 at 30%");
    let svc = FaultLayer::new(Some(abort(AbortKind::Http(500), Fraction::new(0, 100)))).layer(ok());
    assert_eq!(svc.oneshot(Request::new(())).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn header_control() {
    let cfg = FaultConfig {
        delay: Some(FaultDelay {
            kind: DelayKind::FromHeader,
            percentage: Fraction::ALWAYS,
        }),
        abort: Some(FaultAbort {
            kind: AbortKind::FromHeader,
            percentage: Fraction::ALWAYS,
        }),
        ..Default::default()
    };
    let svc = FaultLayer::new(Some(cfg)).layer(ok());
    let req = Request::builder()
        .header("x-envoy-fault-delay-request", "300")
        .header("x-envoy-fault-abort-request", "429")
        .body(())
        .unwrap();
    let start = tokio::time::Instant::now();
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 429);
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    let req = Request::builder()
        .header("x-envoy-fault-abort-request", "429")
        .header("x-envoy-fault-abort-request-percentage", "0")
        .body(())
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        200,
        "percentage header 0"
    );
    assert_eq!(
        svc.oneshot(Request::new(())).await.unwrap().status(),
        200,
        "no headers, no fault"
    );
}

#[tokio::test(start_paused = true)]
async fn header_matchers_and_route_override() {
    let mut cfg = abort(AbortKind::Http(503), Fraction::ALWAYS);
    cfg.headers = vec![HeaderMatcher {
        name: "x-user".into(),
        rule: HeaderMatchRule::Present(true),
        invert_match: false,
        treat_missing_header_as_empty: false,
    }];
    let svc = FaultLayer::new(None).layer(ok());
    let mut req = Request::builder()
        .header("x-user", "jason")
        .body(())
        .unwrap();
    req.extensions_mut().insert(Arc::new(cfg.clone()));
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 503);
    let mut req = Request::new(());
    req.extensions_mut().insert(Arc::new(cfg));
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        200,
        "header not matched"
    );

    let mut overrides = FilterOverrides::default();
    overrides.insert(
        FAULT_FILTER.into(),
        FilterOverride::Fault(abort(AbortKind::Http(418), Fraction::ALWAYS)),
    );
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(Arc::new(crate::policy::RoutePolicy {
            filter_overrides: overrides,
            ..Default::default()
        }));
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 418);
}

#[tokio::test(start_paused = true)]
async fn max_active_faults() {
    let cfg = FaultConfig {
        delay: Some(FaultDelay {
            kind: DelayKind::Fixed(Duration::from_secs(1)),
            percentage: Fraction::ALWAYS,
        }),
        max_active_faults: Some(1),
        ..Default::default()
    };
    let svc = FaultLayer::new(Some(cfg)).layer(ok());
    let first = tokio::spawn(svc.clone().oneshot(Request::new(())));
    tokio::task::yield_now().await;
    let start = tokio::time::Instant::now();
    svc.oneshot(Request::new(())).await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "second request not delayed"
    );
    first.await.unwrap().unwrap();
}
