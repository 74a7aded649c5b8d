//! The in-process source (`LocalSource`) against the xDS path it replaces: for the same node
//! and the same listeners, its snapshot equals, field for field, what an `XdsClient`
//! receives from the control plane's xDS server; an edit of the directory produces a new
//! snapshot and an invalid one keeps the last; a resource the translation rejects is
//! reported with the reason an xDS client NACKs it with.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_control::generate::MeshGenerator;
use mesh_control::istio::{MeshConfig, WatchOptions};
use mesh_control::local::{LocalOptions, LocalSource};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::ClusterSpecifier;
use mesh_xds::bootstrap::IstioNode;
use mesh_xds::client::{Protocol, ResourceState, XdsClient, XdsClientConfig, channel};
use mesh_xds::resource::ResourceType;
use prost::Message;

const BOOKINFO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/config/bookinfo");
const SERVICES: [&str; 4] = [
    "productpage.default.svc.cluster.local:9080",
    "reviews.default.svc.cluster.local:9080",
    "ratings.default.svc.cluster.local:9080",
    "details.default.svc.cluster.local:9080",
];
const PRODUCTPAGE_INBOUND: &str = "xds.istio.io/grpc/lds/inbound/127.0.0.1:19080";
const REVIEWS: &str = "reviews.default.svc.cluster.local:9080";
const REVIEWS_V3: &str = "outbound|9080|v3|reviews.default.svc.cluster.local";

fn productpage() -> Node {
    IstioNode {
        pod_name: "productpage-v1".into(),
        service_account: "productpage".into(),
        labels: [("app", "productpage"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        workload_name: Some("productpage-v1".into()),
        ..Default::default()
    }
    .node_proto()
}

fn copy_bookinfo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(BOOKINFO).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    dir
}

fn client(addr: std::net::SocketAddr, protocol: Protocol, wildcard: bool) -> XdsClient {
    let config = XdsClientConfig {
        node: productpage(),
        protocol,
        wildcard_listeners: wildcard,
        wildcard_clusters: wildcard,
        ..Default::default()
    };
    XdsClient::new(
        config,
        channel::insecure(&format!("http://{addr}")).unwrap(),
    )
}

/// Waits until `f` holds (10 s at most).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn local(s: &LocalSource) -> Arc<ConfigSnapshot> {
    s.snapshots().borrow().clone()
}

fn assert_same(local: &ConfigSnapshot, xds: &ConfigSnapshot) {
    for (what, l, x) in [
        ("listeners", keys(&local.listeners), keys(&xds.listeners)),
        (
            "routes",
            keys(&local.route_configs),
            keys(&xds.route_configs),
        ),
        ("clusters", keys(&local.clusters), keys(&xds.clusters)),
        ("endpoints", keys(&local.endpoints), keys(&xds.endpoints)),
    ] {
        assert_eq!(l, x, "{what}");
    }
    // Field for field (the model's PartialEq).
    assert_eq!(local, xds);
}

fn keys<T>(m: &mesh_core::config::ResourceMap<T>) -> Vec<String> {
    let mut k: Vec<String> = m.keys().map(|k| k.to_string()).collect();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_snapshot_equals_what_an_xds_client_receives() {
    let dir = copy_bookinfo();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: "127.0.0.1:0".parse().unwrap(),
        ca_addr: None,
        debug_addr: None,
        ..Default::default()
    })
    .await
    .unwrap();

    // On demand: the four services and productpage's own inbound listener.
    let xds = client(cp.xds_addr(), Protocol::StateOfTheWorld, false);
    let source = cp.local_source(productpage());
    for l in SERVICES.iter().chain([&PRODUCTPAGE_INBOUND]) {
        xds.subscribe_target(l).await.unwrap();
        source.demand(l);
    }
    source.readiness().wait_for(|r| *r).await.unwrap();
    let expected = local(&source);
    assert_eq!(expected.listeners.len(), 5);
    assert_eq!(
        expected.clusters.len(),
        6,
        "productpage, details, ratings v1, reviews v1-v3"
    );
    assert_eq!(expected.endpoints.len(), 6);
    until("the xDS client holds what the local source holds", || {
        xds.is_ready() && *xds.snapshot() == *expected
    })
    .await;
    assert_same(&expected, &xds.snapshot());
    // Both report the same resources as ACKED.
    let (l, x) = (source.status(), xds.status().await.unwrap());
    let names = |s: &mesh_xds::client::ClientStatus| {
        s.resources
            .iter()
            .map(|r| (r.kind, r.name.clone(), r.state))
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&l), names(&x));

    // Everything for the node: wildcard listeners and clusters over delta.
    let xds = client(cp.xds_addr(), Protocol::Delta, true);
    let all = LocalSource::watch_dir(
        dir.path(),
        WatchOptions::default(),
        productpage(),
        LocalOptions {
            wildcard: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    all.readiness().wait_for(|r| *r).await.unwrap();
    let expected = local(&all);
    assert!(expected.listeners.contains_key(PRODUCTPAGE_INBOUND));
    assert_eq!(
        expected.listeners.len(),
        5,
        "four client listeners, one inbound"
    );
    until("the wildcard xDS client holds everything", || {
        xds.is_ready() && *xds.snapshot() == *expected
    })
    .await;
    assert_same(&expected, &xds.snapshot());
    cp.shutdown().await;
}

fn weights(s: &ConfigSnapshot) -> Vec<u32> {
    let rc = s.route_config_of(REVIEWS).expect("reviews routes");
    let split = rc.virtual_hosts[0]
        .routes
        .iter()
        .find_map(|r| match &r.action {
            mesh_core::model::RouteAction::Forward(f) => match &f.cluster {
                ClusterSpecifier::Weighted(w) => Some(w.iter().map(|c| c.weight).collect()),
                _ => None,
            },
            _ => None,
        });
    split.expect("a weighted route")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_edit_is_a_new_snapshot_and_an_invalid_one_keeps_the_last() {
    let dir = copy_bookinfo();
    let source = LocalSource::watch_dir(
        dir.path(),
        WatchOptions {
            interval: Duration::from_millis(50),
        },
        productpage(),
        LocalOptions::default(),
    )
    .await
    .unwrap();
    source.demand(REVIEWS);
    source.readiness().wait_for(|r| *r).await.unwrap();
    let before = local(&source);
    assert_eq!(weights(&before), vec![90, 10]);
    let cluster_before = before.clusters[REVIEWS_V3].clone();

    let routing = dir.path().join("routing.yaml");
    let text = std::fs::read_to_string(&routing).unwrap();
    edit(
        &routing,
        &text
            .replace("weight: 90", "weight: 50")
            .replace("weight: 10", "weight: 50"),
    );
    let mut rx = source.snapshots();
    tokio::time::timeout(
        Duration::from_secs(5),
        rx.wait_for(|s| weights(s) == [50, 50]),
    )
    .await
    .expect("the edit applies")
    .unwrap();
    let after = local(&source);
    assert!(
        Arc::ptr_eq(&after.clusters[REVIEWS_V3], &cluster_before),
        "untouched resources keep their Arcs"
    );

    // Weights adding up to 110: rejected by validation, the last config stays.
    edit(&routing, &text.replace("weight: 10", "weight: 20"));
    let mut status = source.watch_status().expect("the source owns its watcher");
    tokio::time::timeout(Duration::from_secs(5), status.wait_for(|s| s.rejected > 0))
        .await
        .expect("the edit is rejected")
        .unwrap();
    assert!(
        Arc::ptr_eq(&local(&source), &after),
        "the last good snapshot stays"
    );
    let error = status.borrow().last_error.as_ref().unwrap().to_string();
    assert!(error.contains("routing.yaml"), "{error}");
}

fn edit(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Istio's generators, with reviews v3's connect timeout set to 0 s (which the client's
/// translation rejects) once `broken` is set.
#[derive(Clone)]
struct Breaking {
    inner: MeshGenerator,
    broken: Arc<AtomicBool>,
}

impl Generator<MeshConfig> for Breaking {
    fn node_key(&self, node: &Node) -> String {
        self.inner.node_key(node)
    }

    fn generate(&self, node: &Node, config: &MeshConfig) -> Result<Resources, GenerateError> {
        let mut r = self.inner.generate(node, config)?;
        if self.broken.load(Ordering::SeqCst) {
            let url = ResourceType::Cluster.type_url();
            let any = r.of_type(url).find(|(n, _)| *n == REVIEWS_V3).unwrap().1;
            let mut cluster = Cluster::decode(any.value.as_slice()).unwrap();
            cluster.connect_timeout = Some(Default::default());
            r.add(REVIEWS_V3, cluster);
        }
        Ok(r)
    }
}

/// Log lines, for checking what was logged.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

// Current thread: the source's task logs on the test's thread, into `Logs`.
#[tokio::test]
async fn a_rejected_resource_is_reported_as_an_xds_client_nacks_it() {
    let logs = Logs::default();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .finish(),
    );
    let generator = Breaking {
        inner: MeshGenerator::default(),
        broken: Arc::default(),
    };
    let (config, _) = MeshConfig::load_dir(BOOKINFO).unwrap();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(config));
    // The same generator behind an xDS server, and an xDS client of it.
    let server = XdsServer::new(generator.clone(), rx.clone(), ServerOptions::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.clone().serve(listener, std::future::pending()));
    let xds = client(addr, Protocol::StateOfTheWorld, false);
    xds.subscribe_target(REVIEWS).await.unwrap();
    let source = LocalSource::with_generator(rx, productpage(), generator.clone(), false);
    source.demand(REVIEWS);
    source.readiness().wait_for(|r| *r).await.unwrap();
    let good = local(&source);
    until("the client has reviews", || *xds.snapshot() == *good).await;

    generator.broken.store(true, Ordering::SeqCst);
    tx.send_modify(|_| {});
    let nacked = |s: &mesh_xds::client::ClientStatus| {
        s.get(ResourceType::Cluster, REVIEWS_V3)
            .filter(|r| r.state == ResourceState::Nacked)
            .cloned()
    };
    until("the local source rejects v3", || {
        nacked(&source.status()).is_some()
    })
    .await;
    let mut client_status = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client_status.is_none() {
        assert!(Instant::now() < deadline, "the client never NACKed");
        client_status = nacked(&xds.status().await.unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (l, x) = (nacked(&source.status()).unwrap(), client_status.unwrap());
    let reason = l.last_error.clone().unwrap();
    assert_eq!(l.last_error, x.last_error, "the same reason");
    assert!(reason.contains("connect_timeout"), "{reason}");
    assert!(l.has_value && x.has_value, "the last good version serves");
    // Both still serve the last good cluster.
    let now = local(&source);
    assert!(Arc::ptr_eq(
        &now.clusters[REVIEWS_V3],
        &good.clusters[REVIEWS_V3]
    ));
    assert_eq!(*xds.snapshot(), *now);
    // Logged with the NACK's line for the resource.
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line = format!("CDS {REVIEWS_V3:?}: {reason}");
    assert!(
        text.lines()
            .any(|l| l.contains("rejected by the xDS translation") && l.contains("rejected 1 of")),
        "{text}"
    );
    assert!(text.contains(&line), "{line}\n{text}");
    server.close();
}
