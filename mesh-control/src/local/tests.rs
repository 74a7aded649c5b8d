//! The local source's rules with the xDS server tests' generator (`svc<i>:80` listeners,
//! routes, EDS clusters and endpoints; a 0 s connect timeout makes every cluster invalid
//! for the client's translation).

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::{Discovery, EndpointAddress};
use mesh_xds::client::ResourceState;
use mesh_xds::resource::ResourceType;
use tokio::sync::watch;

use super::LocalSource;
use crate::xds_server::tests::{Cfg, Gen};

fn cfg(services: usize, connect_timeout_s: i64, endpoint_port: u32) -> Arc<Cfg> {
    Arc::new(Cfg {
        services,
        connect_timeout_s,
        endpoint_port,
    })
}

fn node() -> Node {
    Node {
        id: "local".into(),
        ..Default::default()
    }
}

fn source(first: Arc<Cfg>, wildcard: bool) -> (LocalSource, watch::Sender<Arc<Cfg>>) {
    let (tx, rx) = watch::channel(first);
    (LocalSource::with_generator(rx, node(), Gen, wildcard), tx)
}

async fn generations(s: &LocalSource, n: u64) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while s.generations() < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("generation {n} never came"));
}

fn current(s: &LocalSource) -> Arc<ConfigSnapshot> {
    s.snapshots().borrow().clone()
}

fn sizes(s: &ConfigSnapshot) -> [usize; 4] {
    [
        s.listeners.len(),
        s.route_configs.len(),
        s.clusters.len(),
        s.endpoints.len(),
    ]
}

fn port(s: &ConfigSnapshot, cluster: &str) -> u16 {
    let cla = &s.endpoints[cluster];
    match &cla.localities[0].endpoints[0].address {
        EndpointAddress::Socket(a) => a.port(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_demand_brings_the_listener_and_what_it_references() {
    let (s, _tx) = source(cfg(3, 1, 1000), false);
    s.readiness().wait_for(|r| *r).await.unwrap();
    assert_eq!(sizes(&current(&s)), [0; 4], "nothing demanded yet");
    s.demand("svc1:80");
    // Answered before demand returns.
    let snap = current(&s);
    assert_eq!(sizes(&snap), [1; 4]);
    assert!(snap.route_config_of("svc1:80").is_some());
    assert!(matches!(
        snap.clusters["outbound|80||svc1"].discovery,
        Discovery::Eds { .. }
    ));
    s.demand("xds:///svc2:80");
    assert_eq!(sizes(&current(&s)), [2; 4]);
    // Demanding again changes nothing (no new snapshot).
    let mut rx = s.snapshots();
    rx.borrow_and_update();
    s.demand("svc2:80");
    assert!(!rx.has_changed().unwrap());
    // A listener the node does not have: absent, DOES_NOT_EXIST, still ready.
    s.demand("nope:80");
    let status = s.status();
    assert!(status.connected && status.ready);
    let nope = status.get(ResourceType::Listener, "nope:80").unwrap();
    assert_eq!(nope.state, ResourceState::DoesNotExist);
    let svc1 = status
        .get(ResourceType::Cluster, "outbound|80||svc1")
        .unwrap();
    assert_eq!((svc1.state, svc1.has_value), (ResourceState::Acked, true));
    assert_eq!(status.resources.len(), 9, "{status:#?}");
    assert_eq!(status.type_versions.len(), 4);
    // Not a listener name: ignored.
    s.demand("http://x:1");
    assert_eq!(s.status().resources.len(), 9);
}

#[tokio::test]
async fn wildcard_serves_everything_generated() {
    let (s, _tx) = source(cfg(3, 1, 1000), true);
    s.readiness().wait_for(|r| *r).await.unwrap();
    assert_eq!(sizes(&current(&s)), [3; 4]);
    assert_eq!(s.status().resources.len(), 12);
}

#[tokio::test]
async fn a_rejected_resource_keeps_its_last_good_version_and_is_nacked() {
    let (s, tx) = source(cfg(2, 1, 1000), false);
    s.demand("svc0:80");
    generations(&s, 1).await;
    let good = current(&s);
    assert_eq!(sizes(&good), [1; 4]);

    // Every cluster becomes invalid; the endpoints move (and are valid).
    tx.send(cfg(3, 0, 2000)).unwrap();
    generations(&s, 2).await;
    let snap = current(&s);
    let name = "outbound|80||svc0";
    assert!(
        Arc::ptr_eq(&snap.clusters[name], &good.clusters[name]),
        "the last good cluster keeps serving"
    );
    assert_eq!(port(&snap, name), 2000, "the valid endpoints apply");
    assert!(
        Arc::ptr_eq(&snap.listeners, &good.listeners),
        "unchanged resources keep their maps"
    );
    let status = s.status();
    let c = status.get(ResourceType::Cluster, name).unwrap();
    assert_eq!((c.state, c.has_value), (ResourceState::Nacked, true));
    let reason = c.last_error.as_deref().unwrap();
    assert!(reason.contains("connect_timeout"), "{reason}");

    // A resource that never had a good version is left out.
    s.demand("svc2:80");
    let snap = current(&s);
    assert!(snap.listeners.contains_key("svc2:80"));
    assert!(!snap.clusters.contains_key("outbound|80||svc2"));
    let c = s.status();
    let c = c.get(ResourceType::Cluster, "outbound|80||svc2").unwrap();
    assert_eq!((c.state, c.has_value), (ResourceState::Nacked, false));

    // Valid again: accepted.
    tx.send(cfg(3, 2, 2000)).unwrap();
    generations(&s, 3).await;
    assert_eq!(sizes(&current(&s)), [2; 4]);
    assert!(
        s.status()
            .resources
            .iter()
            .all(|r| r.state == ResourceState::Acked)
    );
}

#[tokio::test]
async fn removed_resources_leave_and_identical_generations_publish_nothing() {
    let (s, tx) = source(cfg(3, 1, 1000), false);
    s.demand("svc0:80");
    s.demand("svc2:80");
    generations(&s, 1).await;
    assert_eq!(sizes(&current(&s)), [2; 4]);
    let mut rx = s.snapshots();
    rx.borrow_and_update();

    // The same content again: nothing decoded, nothing published.
    tx.send(cfg(3, 1, 1000)).unwrap();
    generations(&s, 2).await;
    assert!(!rx.has_changed().unwrap());

    // svc2 is no longer generated: it leaves, with what only it referenced.
    tx.send(cfg(2, 1, 1000)).unwrap();
    generations(&s, 3).await;
    let snap = current(&s);
    assert_eq!(sizes(&snap), [1; 4]);
    assert!(snap.listeners.contains_key("svc0:80"));
    let status = s.status();
    let gone = status.get(ResourceType::Listener, "svc2:80").unwrap();
    assert_eq!(gone.state, ResourceState::DoesNotExist);
}

#[tokio::test]
async fn the_last_snapshot_stays_when_the_config_stops() {
    let (s, tx) = source(cfg(2, 1, 1000), false);
    generations(&s, 1).await;
    drop(tx);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Demands are still answered from the last generation.
    s.demand("svc1:80");
    assert_eq!(sizes(&current(&s)), [1; 4]);
    assert!(*s.readiness().borrow());
}

#[tokio::test]
async fn before_the_first_generation_demands_are_requested() {
    // A generator that is slow enough to look at the state before it finishes.
    struct Slow;
    impl crate::xds_server::Generator<Cfg> for Slow {
        fn node_key(&self, _: &Node) -> String {
            String::new()
        }
        fn generate(
            &self,
            node: &Node,
            cfg: &Cfg,
        ) -> Result<crate::xds_server::Resources, crate::xds_server::GenerateError> {
            std::thread::sleep(Duration::from_millis(200));
            crate::xds_server::Generator::generate(&Gen, node, cfg)
        }
    }
    let (_tx, rx) = watch::channel(cfg(1, 1, 1000));
    let s = LocalSource::with_generator(rx, node(), Slow, false);
    s.demand("svc0:80");
    let status = s.status();
    assert!(!status.ready && !status.connected);
    assert_eq!(status.resources[0].state, ResourceState::Requested);
    s.readiness().wait_for(|r| *r).await.unwrap();
    assert_eq!(
        sizes(&current(&s)),
        [1; 4],
        "answered by the first generation"
    );
}
