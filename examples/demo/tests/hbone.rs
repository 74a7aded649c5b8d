//! `demo --hbone` (ambient mode) for a few seconds: every workload serves HBONE on its own
//! address, every call travels through a tunnel, and the traffic succeeds as without it.

use std::time::Duration;

use demo::{DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_over_hbone() {
    let opts = DemoOptions {
        duration: Some(Duration::from_secs(3)),
        rate: 50,
        admin_addr: ([127, 0, 0, 1], 0).into(),
        admin_grpc_addr: ([127, 0, 0, 1], 0).into(),
        quiet: true,
        hbone: true,
        ..Default::default()
    };
    let summary = run(opts, std::future::pending()).await.expect("demo runs");
    println!("{}", summary.render());
    let c = &summary.counts;
    let requests: u64 = c.by_route.values().sum();
    assert!(requests >= 75, "too few requests: {requests}");
    assert_eq!(c.errors.values().sum::<u64>(), 0, "errors: {:?}", c.errors);
    // At least one tunnel per caller and callee workload: loadgen -> productpage,
    // productpage -> details and reviews v1, v2, v3, reviews v2 and v3 -> ratings.
    assert!(c.hbone_tunnels >= 7, "tunnels: {}", c.hbone_tunnels);
    let sa = |s: &str| format!("spiffe://cluster.local/ns/default/sa/{s}");
    for (client, server) in [
        ("loadgen", "productpage"),
        ("productpage", "reviews"),
        ("productpage", "details"),
        ("reviews", "ratings"),
    ] {
        assert!(
            c.peers.contains_key(&(sa(client), sa(server))),
            "{client} -> {server} not seen: {:?}",
            c.peers
        );
    }
}

#[tokio::test]
async fn hbone_needs_the_embedded_control_plane() {
    let opts = DemoOptions {
        hbone: true,
        control_plane: demo::ControlPlaneKind::Istiod,
        ..Default::default()
    };
    let err = run(opts, std::future::pending()).await.unwrap_err();
    assert!(err.0.contains("--hbone needs"), "{err}");
}
