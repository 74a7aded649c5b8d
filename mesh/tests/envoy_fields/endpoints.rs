//! Where a cluster's endpoints come from and how they are spoken to: an EDS resource that
//! never comes (`ConfigSource.initial_fetch_timeout`) and the deprecated cluster-level
//! HTTP/1 options (`Cluster.http_protocol_options`), on real requests.

use super::harness::*;
use super::outlier::via;
use envoy_types::pb::envoy::config::core::v3::Http1ProtocolOptions;

/// An EDS cluster `name` (backend `port`) whose endpoints, the resource `service`, come over
/// ADS with `initial_fetch_timeout` `timeout`; `served`: the server has them.
fn eds(name: &str, port: u16, timeout: Option<PbDuration>, served: bool) -> Cluster {
    let service = format!("endpoints-of-{name}");
    let mut c = cluster(name, &[port], None);
    c.cluster_discovery_type = Some(cluster::ClusterDiscoveryType::Type(
        cluster::DiscoveryType::Eds as i32,
    ));
    c.eds_cluster_config = Some(cluster::EdsClusterConfig {
        eds_config: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            initial_fetch_timeout: timeout,
            ..Default::default()
        }),
        service_name: service.clone(),
    });
    // The harness serves an EDS cluster's load_assignment as its own resource.
    let cla = c.load_assignment.as_mut().unwrap();
    cla.cluster_name = if served {
        service
    } else {
        "someone-else".into()
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eds_resource_that_never_comes_fails_requests_after_its_fetch_timeout() {
    let names = ["served", "never-300ms"];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        vec![
            eds("served", p.b, ms(300), true),
            eds("never-300ms", p.b, ms(300), false),
        ]
    })
    .await;
    assert_eq!(
        f.get("http://served.test:80/", &[])
            .await
            .header("x-backend"),
        Some("b")
    );
    // ConfigSource.initial_fetch_timeout: 300 ms after the cluster asked for its endpoints
    // the resource does not exist, and the cluster has none: 503 at once, where the
    // client's resolve_timeout (5 s) would hold the request.
    let got = f.get("http://never-300ms.test:80/", &[]).await;
    assert_eq!(got.status, 503, "{got:?}");
    assert!(got.took < Duration::from_secs(3), "{got:?}");
    assert_eq!(f.b.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_options_are_taken_empty_and_refused_when_set() {
    let names = ["h1-options", "h1-options-set"];
    let f = start_with(names.iter().map(|n| via(n)).collect(), |p| {
        let with = |name: &str, o: Http1ProtocolOptions| {
            let mut c = cluster(name, &[p.a], None);
            c.http_protocol_options = Some(o);
            c
        };
        vec![
            with("h1-options", Http1ProtocolOptions::default()),
            with(
                "h1-options-set",
                Http1ProtocolOptions {
                    accept_http_10: true,
                    ..Default::default()
                },
            ),
        ]
    })
    .await;
    // Cluster.http_protocol_options: empty, the cluster speaks HTTP/1.1 (hyper's codec);
    // an option set (accept_http_10 here) is refused with the cluster: no request reaches
    // the backend.
    let got = f.get("http://h1-options.test:80/", &[]).await;
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(f.a.last().version, http::Version::HTTP_11);
    f.reset();
    let got = f.get("http://h1-options-set.test:80/", &[]).await;
    assert_eq!((got.status, f.a.calls()), (503, 0), "{got:?}");
}
