//! Least request's `choice_count` on real traffic: one request held at backend X, then
//! sequential requests over a cluster of X and Y. Each pick samples `choice_count` hosts
//! (with replacement) and takes the least loaded, so X, busy, is taken only when every
//! sample is X: about 1 in 4 with 2 choices, 1 in 65,536 with 16.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{LbConfig, LeastRequestLbConfig};

use crate::harness::*;

fn via(cluster: &str) -> Listener {
    let vh = VirtualHost {
        routes: vec![forward(prefix("/"), to(cluster))],
        ..Default::default()
    };
    listener(&format!("{cluster}.test:80"), hcm(routes(vh)))
}

/// How many of 40 requests reached the backend busy with a held request.
async fn to_busy(f: &Fixture, cluster: &str) -> usize {
    f.reset();
    let url = format!("http://{cluster}.test/");
    let held = f.get(&url, &[("x-delay-ms", "3000")]);
    let probe = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let busy = if f.a.calls() == 1 { &f.a } else { &f.b };
        assert_eq!(f.a.calls() + f.b.calls(), 1, "the held request arrived");
        for _ in 0..40 {
            assert_eq!(f.get(&url, &[]).await.status, 200);
        }
        busy.calls() - 1
    };
    let (_, n) = tokio::join!(held, probe);
    n
}

#[tokio::test]
async fn least_request_choice_count_avoids_the_busy_host() {
    let lr = |name: &str, a: u16, b: u16, choices: u32| {
        let mut c = cluster(name, &[a, b], None);
        c.lb_policy = cluster::LbPolicy::LeastRequest as i32;
        c.lb_config = Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            choice_count: Some(UInt32Value { value: choices }),
            ..Default::default()
        }));
        c
    };
    // The same through the typed policy (`load_balancing_policy`, LeastRequest).
    let typed = |a: u16, b: u16| {
        let mut c = cluster("typed", &[a, b], None);
        let least = LeastRequest {
            choice_count: Some(UInt32Value { value: 16 }),
            ..Default::default()
        };
        c.load_balancing_policy = Some(LoadBalancingPolicy {
            policies: vec![load_balancing_policy::Policy {
                typed_extension_config: Some(TypedExtensionConfig {
                    name: "least".into(),
                    typed_config: Some(pack_any(least)),
                }),
            }],
        });
        c
    };
    let f = start_with(vec![via("two"), via("sixteen"), via("typed")], |p| {
        vec![
            lr("two", p.a, p.b, 2),
            lr("sixteen", p.a, p.b, 16),
            typed(p.a, p.b),
        ]
    })
    .await;
    // 2 choices: both samples are the busy host for about 10 of 40 (none: 0.75^40 ≈ 1e-5).
    let two = to_busy(&f, "two").await;
    assert!((1..=25).contains(&two), "choice_count 2: {two} of 40");
    // 16 choices: the idle host is almost always among the samples.
    let sixteen = to_busy(&f, "sixteen").await;
    assert!(sixteen <= 1, "choice_count 16: {sixteen} of 40");
    let typed = to_busy(&f, "typed").await;
    assert!(typed <= 1, "LeastRequest.choice_count 16: {typed} of 40");
}
