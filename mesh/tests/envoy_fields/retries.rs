//! Retry policies (conditions, back-off, host predicates) and route timeouts.

use super::harness::*;

// ---- retries ----

fn retry(on: &str, n: u32) -> RetryPolicy {
    RetryPolicy {
        retry_on: on.into(),
        num_retries: Some(UInt32Value { value: n }),
        ..Default::default()
    }
}

fn with_retry(path: &str, cluster: &str, r: RetryPolicy) -> Route {
    forward(
        prefix(path),
        RouteAction {
            retry_policy: Some(r),
            ..to(cluster)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_policy_fields_act_on_real_failures() {
    let codes = RetryPolicy {
        retriable_status_codes: vec![418],
        ..retry("retriable-status-codes", 2)
    };
    let headers = RetryPolicy {
        retriable_headers: vec![HeaderMatcher {
            name: "x-failed".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        }],
        ..retry("retriable-headers", 2)
    };
    let idle = RetryPolicy {
        per_try_idle_timeout: ms(150),
        ..retry("5xx", 1)
    };
    let vh = VirtualHost {
        routes: vec![
            with_retry("/codes", "a", codes),
            with_retry("/headers", "a", headers),
            with_retry("/idle", "a", idle),
            // No retry policy of its own: the virtual host's.
            forward(prefix("/vh"), to("a")),
        ],
        retry_policy: Some(retry("5xx", 2)),
        ..Default::default()
    };
    let f = start(vec![listener("retry.test:80", hcm(routes(vh)))]).await;
    let url = |p: &str| format!("http://retry.test:80{p}");

    // RetryPolicy.retriable_status_codes: 418 is retried, 419 is not.
    f.reset();
    let got = f
        .get(&url("/codes"), &[("x-fail", "2"), ("x-fail-status", "418")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");
    f.reset();
    let got = f
        .get(&url("/codes"), &[("x-fail", "2"), ("x-fail-status", "419")])
        .await;
    assert_eq!((got.status, f.a.calls()), (419, 1), "{got:?}");

    // RetryPolicy.retriable_headers: a 400 carrying x-failed is retried.
    f.reset();
    let got = f
        .get(
            &url("/headers"),
            &[("x-fail", "2"), ("x-fail-status", "400")],
        )
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");

    // VirtualHost.retry_policy: for a route that sets none.
    f.reset();
    let got = f.get(&url("/vh"), &[("x-fail", "2")]).await;
    assert_eq!((got.status, f.a.calls()), (200, 3), "{got:?}");

    // RetryPolicy.per_try_idle_timeout: the first attempt, silent for 1 s, is abandoned
    // after 150 ms and the retry answers at once.
    f.reset();
    let got = f
        .get(&url("/idle"), &[("x-delay-ms", "1000"), ("x-slow", "1")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 2), "{got:?}");
    assert!(got.took < Duration::from_millis(700), "{:?}", got.took);
}

/// The gaps between a backend's consecutive requests.
fn gaps(b: &Backend) -> Vec<Duration> {
    let seen = b.seen.lock().unwrap();
    seen.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_back_off_sets_the_wait_between_attempts() {
    use retry_policy::RetryBackOff;
    let backoff = |base, max| RetryPolicy {
        retry_back_off: Some(RetryBackOff {
            base_interval: ms(base),
            max_interval: ms(max),
        }),
        ..retry("5xx", 6)
    };
    let vh = VirtualHost {
        routes: vec![
            with_retry("/slow", "a", backoff(1000, 1000)),
            with_retry("/capped", "a", backoff(40, 40)),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("backoff.test:80", hcm(routes(vh)))]).await;
    // RetryBackOff.base_interval: waits drawn from [0, 1 s); the default (25 ms, at most
    // 250 ms) never waits 300 ms. All six below 300 ms: 0.3^6, under one in a thousand.
    f.reset();
    let got = f
        .get("http://backoff.test:80/slow", &[("x-fail", "6")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 7), "{got:?}");
    let waits = gaps(&f.a);
    assert!(
        waits.iter().any(|g| *g >= Duration::from_millis(300)),
        "{waits:?}"
    );
    // RetryBackOff.max_interval: every wait at most 40 ms (the default cap would be 400 ms).
    f.reset();
    let got = f
        .get("http://backoff.test:80/capped", &[("x-fail", "6")])
        .await;
    assert_eq!((got.status, f.a.calls()), (200, 7), "{got:?}");
    let waits = gaps(&f.a);
    assert!(
        waits.iter().all(|g| *g < Duration::from_millis(40 + 60)),
        "{waits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_host_predicate_moves_retries_to_another_endpoint() {
    use retry_policy::RetryHostPredicate;
    // Cluster `pair`: backend a and one that always answers 503, picked at random.
    // The predicate named, typed, or both.
    let predicate = |name: &str, typed: bool| RetryPolicy {
        retry_host_predicate: vec![RetryHostPredicate {
            name: name.into(),
            config_type: typed.then(|| {
                retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack_any(
                    PreviousHostsPredicate::default(),
                ))
            }),
        }],
        host_selection_retry_max_attempts: 30,
        ..retry("5xx", 1)
    };
    const NAME: &str = "envoy.retry_host_predicates.previous_hosts";
    let vh = VirtualHost {
        routes: vec![
            with_retry("/both", "pair", predicate(NAME, true)),
            with_retry("/named", "pair", predicate(NAME, false)),
            with_retry("/typed", "pair", predicate("my-predicate", true)),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("hosts.test:80", hcm(routes(vh)))]).await;
    // RetryPolicy.retry_host_predicate (previous_hosts, known by RetryHostPredicate.name or
    // by its typed_config) and host_selection_retry_max_attempts: the one retry never goes
    // back to the failed endpoint. Without the predicate a quarter of requests would fail
    // (503 twice); with Envoy's default of one re-pick, one in eight.
    for path in ["/both", "/named", "/typed"] {
        f.reset();
        let mut failed = 0;
        for _ in 0..60 {
            let got = f.get(&format!("http://hosts.test:80{path}"), &[]).await;
            failed += usize::from(got.status != 200);
        }
        assert_eq!(failed, 0, "{path}");
        assert_eq!(f.a.calls(), 60, "{path}: each request reached a once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_retries_are_not_capped_under_istios_proxyless_generator() {
    // The harness's node asks for istiod's proxyless generator (GENERATOR: grpc), whose
    // clusters carry no `max_retries` (only `max_requests`, gRFC A32): no retry limit there,
    // not Envoy's 3. Ten requests fail at once, slowly, so their ten retries overlap; under
    // a limit of 3 seven of them would overflow and answer 503.
    let vh = VirtualHost {
        routes: vec![with_retry("/", "limited", retry("5xx", 1))],
        ..Default::default()
    };
    use envoy_types::pb::envoy::config::cluster::v3::{CircuitBreakers, circuit_breakers};
    // Shaped as istiod sends a DestinationRule's `http2MaxRequests` to a proxyless node.
    let limited = |p: &Ports| {
        let mut c = cluster("limited", &[p.a], None);
        c.circuit_breakers = Some(CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_requests: Some(UInt32Value { value: 100 }),
                ..Default::default()
            }],
            ..Default::default()
        });
        vec![c]
    };
    let f = start_with(vec![listener("overlap.test:80", hcm(routes(vh)))], limited).await;
    let calls = (0..10).map(|_| {
        f.get(
            "http://overlap.test:80/",
            &[("x-fail", "10"), ("x-delay-ms", "300")],
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|g| g.status)
        .collect();
    assert_eq!(statuses, [200; 10], "every retry ran");
    assert_eq!(f.a.calls(), 20);
}

// ---- timeouts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeouts_end_slow_requests() {
    use route_action::MaxStreamDuration;
    let no_timeout = |action: RouteAction| RouteAction {
        timeout: ms(0),
        ..action
    };
    let vh = VirtualHost {
        routes: vec![
            forward(
                prefix("/route"),
                RouteAction {
                    timeout: ms(200),
                    ..to("a")
                },
            ),
            forward(
                prefix("/idle"),
                no_timeout(RouteAction {
                    idle_timeout: ms(150),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/grpc-max"),
                no_timeout(RouteAction {
                    max_stream_duration: Some(MaxStreamDuration {
                        grpc_timeout_header_max: ms(100),
                        ..Default::default()
                    }),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/grpc-offset"),
                no_timeout(RouteAction {
                    max_stream_duration: Some(MaxStreamDuration {
                        grpc_timeout_header_max: ms(0),
                        grpc_timeout_header_offset: ms(450),
                        ..Default::default()
                    }),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/old-grpc-max"),
                no_timeout(RouteAction {
                    max_grpc_timeout: ms(100),
                    ..to("a")
                }),
            ),
            forward(
                prefix("/old-grpc-offset"),
                no_timeout(RouteAction {
                    max_grpc_timeout: ms(0),
                    grpc_timeout_offset: ms(450),
                    ..to("a")
                }),
            ),
        ],
        ..Default::default()
    };
    let f = start(vec![listener("timeout.test:80", hcm(routes(vh)))]).await;
    let url = |p: &str| format!("http://timeout.test:80{p}");

    // RouteAction.timeout: 504 after 200 ms, not the backend's answer after 2 s.
    let got = f.get(&url("/route"), &[("x-delay-ms", "2000")]).await;
    assert_eq!(got.status, 504, "{got:?}");
    assert!(
        got.took >= Duration::from_millis(190) && got.took < Duration::from_millis(1000),
        "{:?}",
        got.took
    );

    // RouteAction.idle_timeout: 150 ms without a byte ends the stream (headers late) and
    // a body that stops for 1 s.
    let got = f.get(&url("/idle"), &[("x-delay-ms", "2000")]).await;
    assert_ne!(got.status, 200, "{got:?}");
    assert!(got.took < Duration::from_millis(1000), "{:?}", got.took);
    let got = f.get(&url("/idle"), &[("x-body-gap-ms", "1500")]).await;
    assert!(got.body.is_err(), "{got:?}");
    assert!(got.took < Duration::from_millis(1200), "{:?}", got.took);

    // MaxStreamDuration.grpc_timeout_header_max and the deprecated max_grpc_timeout: the
    // caller's 5 s grpc-timeout is cut to 100 ms; grpc_timeout_header_offset and the
    // deprecated grpc_timeout_offset: 600 ms less 450 ms.
    for (path, grpc_timeout, max) in [
        ("/grpc-max", "5S", 600),
        ("/old-grpc-max", "5S", 600),
        ("/grpc-offset", "600m", 450),
        ("/old-grpc-offset", "600m", 450),
    ] {
        let got = f
            .get(
                &url(path),
                &[
                    ("content-type", "application/grpc"),
                    ("grpc-timeout", grpc_timeout),
                    ("x-delay-ms", "2000"),
                ],
            )
            .await;
        assert_eq!(got.header("x-backend"), None, "{path}: {got:?}");
        assert!(
            got.took >= Duration::from_millis(90) && got.took < Duration::from_millis(max),
            "{path}: {:?}",
            got.took
        );
    }
}
