//! DNS clusters' refresh period and jitter on real traffic: `STRICT_DNS` clusters whose
//! names resolve through mesh-route's hosts table (`mesh_route::cluster::hosts`, the seam
//! for names a program resolves its own way), moved from one loopback backend to another
//! while requests flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::harness::*;
use super::outlier::via;
use mesh_route::cluster::hosts;

const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 19, 21);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 19, 22);

/// A backend on `ip`:`port` (0: any) answering `x-backend: <tag>`; its port.
async fn tagged(ip: Ipv4Addr, port: u16, tag: &'static str) -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((ip, port)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let resp = Response::builder()
                        .header("x-backend", tag)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// A STRICT_DNS cluster `name` over `<name>.dns.test`:`port`, re-resolved every `refresh`
/// plus up to `jitter`.
fn strict_dns(name: &str, port: u16, refresh: u64, jitter: Option<u64>) -> Cluster {
    let mut c = cluster(name, &[port], None);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::StrictDns as i32,
    ));
    let ep = &mut c.load_assignment.as_mut().unwrap().endpoints[0].lb_endpoints[0];
    let Some(lb_endpoint::HostIdentifier::Endpoint(e)) = &mut ep.host_identifier else {
        unreachable!()
    };
    let Some(address::Address::SocketAddress(sa)) = &mut e.address.as_mut().unwrap().address else {
        unreachable!()
    };
    sa.address = format!("{name}.dns.test");
    c.dns_refresh_rate = ms(refresh);
    c.dns_jitter = jitter.and_then(ms);
    c
}

impl Fixture {
    /// Who answers `<cluster>.test:80` now.
    async fn answerer(&self, cluster: &str) -> String {
        let got = self.get(&format!("http://{cluster}.test:80/"), &[]).await;
        got.header("x-backend").unwrap_or("none").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_refresh_rate_and_jitter_pace_re_resolution() {
    let port = tagged(FIRST, 0, "first").await;
    tagged(SECOND, port, "second").await;
    let names = ["refresh-100ms", "refresh-60s", "jitter-1h"];
    for name in names {
        hosts::set(&format!("{name}.dns.test"), &[IpAddr::V4(FIRST)]);
    }
    let f = start_with(names.iter().map(|n| via(n)).collect(), |_| {
        vec![
            strict_dns("refresh-100ms", port, 100, None),
            strict_dns("refresh-60s", port, 60_000, None),
            strict_dns("jitter-1h", port, 100, Some(3_600_000)),
        ]
    })
    .await;
    // Each cluster's first resolution, at once: the first backend.
    for name in names {
        let deadline = Instant::now() + Duration::from_secs(5);
        while f.answerer(name).await != "first" {
            assert!(Instant::now() < deadline, "{name}: never resolved");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The names move to the second backend.
    for name in names {
        hosts::set(&format!("{name}.dns.test"), &[IpAddr::V4(SECOND)]);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Cluster.dns_refresh_rate: resolved again every 100 ms, the cluster follows within a
    // second; every 60 s, it does not (Envoy's default, 5 s, would not either).
    assert_eq!(f.answerer("refresh-100ms").await, "second");
    assert_eq!(f.answerer("refresh-60s").await, "first");
    // Cluster.dns_jitter: every 100 ms plus up to an hour at random, the next resolution
    // comes (but for a 1 in 3,000 chance) after this test.
    assert_eq!(f.answerer("jitter-1h").await, "first");
    for name in names {
        hosts::remove(&format!("{name}.dns.test"));
    }
}
