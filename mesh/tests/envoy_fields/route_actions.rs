//! Route fields that decide whether a route forwards at all, or whether a route
//! configuration is taken: `non_forwarding_action` (matched, answered, never forwarded), and
//! `RouteAction.priority` / `WeightedCluster.total_weight`, whose values Envoy would not
//! honour the same way are NACKed while traffic keeps the configuration before them.

use envoy_types::pb::envoy::config::core::v3::RoutingPriority;
use envoy_types::pb::envoy::config::route::v3::NonForwardingAction;

use crate::harness::*;

/// A route for `/` on listener `r.test:80` with `action`.
fn only_route(action: RouteAction) -> Listener {
    listener(
        "r.test:80",
        hcm(routes(VirtualHost {
            routes: vec![forward(prefix("/"), action)],
            ..Default::default()
        })),
    )
}

/// `non_forwarding_action` on a client listener: the request that matches it is answered
/// (404, as no route) and never reaches a backend, nor falls through to the next route.
#[tokio::test]
async fn non_forwarding_action_answers_without_forwarding() {
    let l = listener(
        "r.test:80",
        hcm(routes(VirtualHost {
            routes: vec![
                Route {
                    r#match: Some(prefix("/local")),
                    action: Some(route::Action::NonForwardingAction(
                        NonForwardingAction::default(),
                    )),
                    ..Default::default()
                },
                forward(prefix("/"), to("a")),
            ],
            ..Default::default()
        })),
    );
    let f = start(vec![l]).await;
    let got = f.get("http://r.test/local", &[]).await;
    assert_eq!(got.status, 404, "{:?}", got.body);
    assert_eq!(f.a.calls(), 0, "not forwarded");
    let got = f.get("http://r.test/other", &[]).await;
    assert_eq!((got.status, got.header("x-backend")), (200, Some("a")));
}

/// Serves `next` after the mesh routed `/` to backend `a`: when `refused` names a field, the
/// update is NACKed with that field in the reason and requests still reach `a`; otherwise it
/// is taken and requests reach `b`.
async fn update(next: RouteAction, refused: Option<&str>) {
    let f = start(vec![only_route(to("a"))]).await;
    assert_eq!(
        f.get("http://r.test/", &[]).await.header("x-backend"),
        Some("a")
    );
    let ports = (f.a.port, f.b.port);
    let xds = f.xds.clone();
    f._config.send_modify(|s| {
        let s = Arc::make_mut(s);
        s.listeners = vec![only_route(next)];
        s.clusters = vec![
            cluster("a", &[ports.0], None),
            cluster("b", &[ports.1], None),
        ];
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = xds.status();
        if let Some(field) = refused {
            if let Some(n) = status.nacks.last() {
                assert!(n.reason.contains(field), "{field}: {}", n.reason);
                break;
            }
        } else if status.all_synced() && status.nacks.is_empty() && status.generation > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{refused:?}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want = if refused.is_some() { "a" } else { "b" };
    for _ in 0..4 {
        let got = f.get("http://r.test/", &[]).await;
        assert_eq!(
            got.header("x-backend"),
            Some(want),
            "{refused:?}: {:?}",
            got.body
        );
    }
}

/// `priority`: DEFAULT routes (the cluster's DEFAULT thresholds are the ones applied);
/// HIGH, whose own thresholds and pools are not modelled, is NACKed naming it.
#[tokio::test]
async fn route_priority_high_is_refused_and_default_routes() {
    let with = |p: RoutingPriority| RouteAction {
        priority: p as i32,
        ..to("b")
    };
    update(with(RoutingPriority::High), Some("priority")).await;
    update(with(RoutingPriority::Default), None).await;
}

/// `WeightedCluster.total_weight` (deprecated): a total other than the sum of the weights is
/// NACKed naming it; an equal one is taken.
#[tokio::test]
async fn weighted_cluster_total_weight_must_be_the_sum() {
    let weighted = |total: u32| RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(
            WeightedCluster {
                clusters: vec![weighted_cluster::ClusterWeight {
                    name: "b".into(),
                    weight: Some(UInt32Value { value: 3 }),
                    ..Default::default()
                }],
                total_weight: Some(UInt32Value { value: total }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    update(weighted(4), Some("total_weight")).await;
    update(weighted(3), None).await;
}
