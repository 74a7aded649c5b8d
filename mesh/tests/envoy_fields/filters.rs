//! The listener-level fault filter, an optional unknown filter, and per-route, per-virtual
//! host, per-route-configuration and per-weighted-cluster overrides.

use super::harness::*;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, TokenBucket};

// ---- listener-level HTTP filters and their per-route overrides ----

const FAULT: &str = "envoy.filters.http.fault";

fn all() -> Option<FractionalPercent> {
    Some(FractionalPercent {
        numerator: 100,
        denominator: 0,
    })
}

/// A fault that aborts every request with `status`.
fn abort(status: u32) -> HttpFault {
    HttpFault {
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HttpStatus(status)),
            percentage: all(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A connection manager whose chain is: the fault filter (`fault`), an unknown optional
/// filter, the router.
fn with_fault(rc: RouteConfiguration, fault: HttpFault) -> HttpConnectionManager {
    let mut h = hcm(rc);
    let unknown = HttpFilter {
        name: "envoy.filters.http.not_known_here".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(
            envoy_types::pb::google::protobuf::Any {
                type_url: "type.googleapis.com/not.known.Here".into(),
                value: Vec::new(),
            },
        )),
        is_optional: true,
        ..Default::default()
    };
    let fault = HttpFilter {
        name: FAULT.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(fault))),
        ..Default::default()
    };
    h.http_filters.splice(0..0, [fault, unknown]);
    h
}

fn fault_override(o: FilterConfig) -> std::collections::HashMap<String, Any> {
    std::collections::HashMap::from([(FAULT.to_owned(), pack_any(o))])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_filter_fields_and_overrides_act_on_real_requests() {
    use weighted_cluster::ClusterWeight;
    // The listener's fault: delay and abort as the request's headers say, only for
    // requests with `x-fault`, one delayed request at a time.
    let by_header = HttpFault {
        delay: Some(FaultDelay {
            fault_delay_secifier: Some(fault_delay::FaultDelaySecifier::HeaderDelay(
                fault_delay::HeaderDelay {},
            )),
            percentage: all(),
        }),
        abort: Some(FaultAbort {
            error_type: Some(fault_abort::ErrorType::HeaderAbort(
                fault_abort::HeaderAbort {},
            )),
            percentage: all(),
            ..Default::default()
        }),
        headers: vec![HeaderMatcher {
            name: "x-fault".into(),
            header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::PresentMatch(true)),
            ..Default::default()
        }],
        max_active_faults: Some(UInt32Value { value: 1 }),
        ..Default::default()
    };
    let wrapped = |config: Any| FilterConfig {
        config: Some(config),
        ..Default::default()
    };
    let route_with = |path: &str, o: FilterConfig| Route {
        typed_per_filter_config: fault_override(o),
        ..forward(prefix(path), to("a"))
    };
    let weighted = Route {
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
                WeightedCluster {
                    clusters: vec![ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 1 }),
                        typed_per_filter_config: std::collections::HashMap::from([(
                            FAULT.to_owned(),
                            pack_any(abort(421)),
                        )]),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            )),
            ..Default::default()
        })),
        ..forward(prefix("/weighted"), to("a"))
    };
    let vh = VirtualHost {
        routes: vec![
            route_with(
                "/off",
                FilterConfig {
                    disabled: true,
                    ..Default::default()
                },
            ),
            route_with("/wrapped", wrapped(pack_any(abort(420)))),
            route_with(
                "/optional",
                FilterConfig {
                    is_optional: true,
                    ..wrapped(Any {
                        type_url: "type.googleapis.com/not.known.Here".into(),
                        value: Vec::new(),
                    })
                },
            ),
            weighted,
            forward(prefix("/"), to("a")),
        ],
        ..Default::default()
    };
    let vh_level = VirtualHost {
        routes: vec![forward(prefix("/"), to("a"))],
        typed_per_filter_config: fault_override(wrapped(pack_any(abort(418)))),
        ..Default::default()
    };
    let rc_level = RouteConfiguration {
        typed_per_filter_config: fault_override(wrapped(pack_any(abort(419)))),
        ..routes(VirtualHost {
            routes: vec![forward(prefix("/"), to("a"))],
            ..Default::default()
        })
    };
    let f = start(vec![
        listener("faults.test:80", with_fault(routes(vh), by_header.clone())),
        listener(
            "faults-vh.test:80",
            with_fault(routes(vh_level), by_header.clone()),
        ),
        listener("faults-rc.test:80", with_fault(rc_level, by_header)),
    ])
    .await;
    let url = |p: &str| format!("http://faults.test:80{p}");
    let abort_418 = ("x-envoy-fault-abort-request", "418");
    // HttpFilter.is_optional: the unknown optional filter is skipped (else no listener).
    assert_eq!(f.get(&url("/"), &[]).await.status, 200);
    // FaultAbort.header_abort and HTTPFault.headers: the status the request names, only
    // for requests with x-fault.
    assert_eq!(
        f.get(&url("/"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        418
    );
    assert_eq!(f.get(&url("/"), &[abort_418]).await.status, 200);
    // FaultDelay.header_delay and HTTPFault.max_active_faults: of two concurrent requests
    // asking for 400 ms, one is delayed, the other (over the limit of 1) is not.
    let delayed = [("x-envoy-fault-delay-request", "400"), ("x-fault", "1")];
    let root = url("/");
    let (one, two) = tokio::join!(f.get(&root, &delayed), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        f.get(&root, &delayed).await
    });
    assert_eq!((one.status, two.status), (200, 200));
    assert!(one.took >= Duration::from_millis(390), "{:?}", one.took);
    assert!(two.took < Duration::from_millis(300), "{:?}", two.took);
    // FilterConfig.disabled: no fault on this route.
    assert_eq!(
        f.get(&url("/off"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        200
    );
    // FilterConfig.config: the wrapped override replaces the listener's fault.
    assert_eq!(f.get(&url("/wrapped"), &[]).await.status, 420);
    // FilterConfig.is_optional: an unknown optional override is skipped: the listener's
    // fault still acts.
    assert_eq!(
        f.get(&url("/optional"), &[abort_418, ("x-fault", "1")])
            .await
            .status,
        418
    );
    assert_eq!(f.get(&url("/optional"), &[]).await.status, 200);
    // ClusterWeight.typed_per_filter_config: the picked cluster's override.
    assert_eq!(f.get(&url("/weighted"), &[]).await.status, 421);
    // VirtualHost.typed_per_filter_config and RouteConfiguration.typed_per_filter_config.
    assert_eq!(f.get("http://faults-vh.test:80/", &[]).await.status, 418);
    assert_eq!(f.get("http://faults-rc.test:80/", &[]).await.status, 419);
}

/// A local rate limit of one request a minute, refusing with `status`, as gRPC
/// RESOURCE_EXHAUSTED when `exhausted`.
fn one_a_minute(status: u32, exhausted: bool) -> HttpFilter {
    let limit = LocalRateLimit {
        stat_prefix: "rl".into(),
        token_bucket: Some(TokenBucket {
            max_tokens: 1,
            tokens_per_fill: Some(UInt32Value { value: 1 }),
            fill_interval: ms(60_000),
        }),
        filter_enabled: Some(RuntimeFractionalPercent {
            default_value: all(),
            runtime_key: "unused".into(),
        }),
        filter_enforced: Some(RuntimeFractionalPercent {
            default_value: all(),
            runtime_key: "unused".into(),
        }),
        status: Some(HttpStatus {
            code: status as i32,
        }),
        rate_limited_as_resource_exhausted: exhausted,
        ..Default::default()
    };
    HttpFilter {
        name: "envoy.filters.http.local_ratelimit".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(limit))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_rate_limit_status_fields_shape_the_refusal() {
    let limited = |name: &str, status: u32, exhausted: bool| {
        let mut h = hcm(routes(VirtualHost {
            routes: vec![forward(prefix("/"), to("a"))],
            ..Default::default()
        }));
        h.http_filters.insert(0, one_a_minute(status, exhausted));
        listener(name, h)
    };
    let f = start(vec![
        limited("rl-http.test:80", 503, false),
        limited("rl-grpc.test:80", 503, true),
    ])
    .await;
    // HttpStatus.code: the second request in the minute is refused with 503, not 429.
    assert_eq!(f.get("http://rl-http.test:80/", &[]).await.status, 200);
    let got = f.get("http://rl-http.test:80/", &[]).await;
    assert_eq!((got.status, got.body()), (503, "local_rate_limited"));
    // LocalRateLimit.rate_limited_as_resource_exhausted: a refused gRPC call gets
    // RESOURCE_EXHAUSTED (8), not the status's UNAVAILABLE (14).
    let grpc = [("content-type", "application/grpc")];
    assert_eq!(f.get("http://rl-grpc.test:80/", &grpc).await.status, 200);
    let got = f.get("http://rl-grpc.test:80/", &grpc).await;
    assert_eq!(got.header("grpc-status"), Some("8"), "{got:?}");
    assert_eq!(f.a.calls(), 2, "the refused requests never left");
}
