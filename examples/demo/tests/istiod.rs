//! The demo under a real istiod (`--control-plane istiod`, issue 10): the same Bookinfo
//! workloads take their certificates and config from istiod (`MESH_ISTIOD_BIN`); the
//! weighted split and the header route must be observed over mTLS.

use std::time::Duration;

use demo::{ControlPlaneKind, DemoOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_under_istiod() {
    let Some(bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let opts = DemoOptions {
        duration: Some(Duration::from_secs(3)),
        rate: 100,
        jason_percent: 20,
        admin_addr: ([127, 0, 0, 1], 0).into(),
        quiet: true,
        control_plane: ControlPlaneKind::Istiod,
        istiod_bin: Some(bin),
        ..Default::default()
    };
    let summary = run(opts, std::future::pending()).await.expect("demo runs");
    println!("{}", summary.render());
    let c = &summary.counts;
    let get = |r: &str, s: &str| c.by_route.get(&(r.into(), s.into())).copied().unwrap_or(0);
    let split = get("split", "v1") + get("split", "v2") + get("split", "v3");
    assert!(split >= 150, "too few split requests: {split}");
    // istiod's 90/10 split (binomial sd at n = 240 is about 2 points).
    let share = summary.v3_share();
    assert!((0.03..=0.17).contains(&share), "v3 share {share}");
    assert_eq!(get("split", "v2"), 0, "v2 only through the header route");
    assert!(get("jason", "v2") > 0);
    assert_eq!(
        get("jason", "v1") + get("jason", "v3"),
        0,
        "jason always v2"
    );
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
    assert_eq!(c.errors.values().sum::<u64>(), 0, "errors: {:?}", c.errors);
    assert!(summary.passed());
}
