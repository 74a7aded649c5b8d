//! MeshClient against the embedded control plane and real mTLS servers: routing to the
//! right subset, identities on both sides, a server with the wrong identity, connection
//! reuse, and endpoint removal.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Extension;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::tls::config::ServerSettings;
use mesh::tls::server::{MeshAcceptor, serve_with_shutdown};
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh::{Mesh, PeerIdentity, Upstream};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use tower::ServiceExt;

const SERVICES: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: echo}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: default}
spec:
  host: echo.default.svc.cluster.local
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - name: canary
    match: [{headers: {x-canary: {exact: "1"}}}]
    route: [{destination: {host: echo.default.svc.cluster.local, subset: v2}}]
  - name: default
    route: [{destination: {host: echo.default.svc.cluster.local, subset: v1}}]
"#;

fn workload(name: &str, version: &str, port: u16, sa: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\n\
spec:\n  address: 127.0.0.1\n  ports: {{http: {port}}}\n  labels: {{app: echo, version: {version}}}\n  serviceAccount: {sa}\n"
    )
}

fn sa(name: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{name}")
}

struct Fixture {
    cp: ControlPlane,
    dir: tempfile::TempDir,
}

async fn control_plane(workloads: &str) -> Fixture {
    control_plane_with(SERVICES, workloads).await
}

async fn control_plane_with(services: &str, workloads: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), services).unwrap();
    std::fs::write(dir.path().join("workloads.yaml"), workloads).unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        watch_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .unwrap();
    Fixture { cp, dir }
}

/// A Mesh for service account `account`, identity from the control plane's CA.
fn mesh(cp: &ControlPlane, account: &str) -> Mesh {
    let node = IstioNode {
        pod_name: account.into(),
        service_account: account.into(),
        labels: BTreeMap::from([("app".to_owned(), account.to_owned())]),
        ..Default::default()
    };
    let uri = format!("http://{}", cp.xds_addr());
    let bootstrap = Bootstrap::istio_proxyless(node, &uri);
    let xds = XdsClient::new(
        XdsClientConfig {
            node: bootstrap.node_proto(),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    Mesh::builder()
        .dev_ca(cp.ca(), &sa(account).parse().unwrap())
        .unwrap()
        .xds_client(xds)
        .build()
        .unwrap()
}

/// An echo server for `version` on `port` with identity `account`; counts handshakes.
async fn echo(
    cp: &ControlPlane,
    version: &'static str,
    port: u16,
    account: &str,
) -> Arc<AtomicU64> {
    let m = mesh(cp, account);
    let acceptor = MeshAcceptor::new(m.identity().clone(), ServerSettings::default());
    let stats = acceptor.stats().clone();
    let handshakes = Arc::new(AtomicU64::new(0));
    let h = handshakes.clone();
    let app = axum::Router::new()
        .route(
            "/{*path}",
            get(move |Extension(peer): Extension<PeerIdentity>| async move {
                format!("{version} {peer}")
            }),
        )
        // What the server saw: protocol, :authority (URI authority) and Host.
        .route(
            "/authority",
            get(|req: http::Request<axum::body::Body>| async move {
                let host = req.headers().get("host").and_then(|h| h.to_str().ok());
                format!(
                    "{:?} {} {}",
                    req.version(),
                    req.uri().authority().map_or("-", |a| a.as_str()),
                    host.unwrap_or("-")
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(serve_with_shutdown(
        listener,
        acceptor,
        app,
        std::future::pending(),
    ));
    tokio::spawn(async move {
        loop {
            h.store(stats.accepted(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    handshakes
}

async fn get_echo(
    client: &mesh::Client,
    canary: bool,
) -> (u16, String, Option<Upstream>, Option<PeerIdentity>) {
    let mut req = http::Request::get("http://echo.default.svc.cluster.local:8080/hello");
    if canary {
        req = req.header("x-canary", "1");
    }
    let resp = client
        .clone()
        .oneshot(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let up = resp.extensions().get::<Upstream>().cloned();
    let peer = resp.extensions().get::<PeerIdentity>().cloned();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        up,
        peer,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_to_subsets_over_mtls_with_identities_and_reuses_connections() {
    let f = control_plane(
        &(workload("echo-v1", "v1", 29181, "echo") + &workload("echo-v2", "v2", 29182, "echo")),
    )
    .await;
    let v1 = echo(&f.cp, "v1", 29181, "echo").await;
    let _v2 = echo(&f.cp, "v2", 29182, "echo").await;
    let caller = mesh(&f.cp, "caller");
    caller
        .resolve("echo.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let client = caller.client();

    let (status, body, up, peer) = get_echo(&client, false).await;
    assert_eq!(status, 200, "{body}");
    // The server saw our identity; we saw the server's.
    assert_eq!(body, format!("v1 {}", sa("caller")));
    assert_eq!(peer.unwrap().to_string(), sa("echo"));
    let up = up.unwrap();
    assert_eq!(
        &*up.cluster,
        "outbound|8080|v1|echo.default.svc.cluster.local"
    );
    assert_eq!(&*up.endpoint, "127.0.0.1:29181");

    let (status, body, up, _) = get_echo(&client, true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("v2 "), "{body}");
    assert_eq!(&*up.unwrap().route, "canary");

    // HTTP/1.1 keep-alive: sequential requests reuse pooled connections. hyper returns a
    // connection to the pool just after the body ends, and a request sent in that instant
    // dials a new one (which then joins the pool), so allow a few, far fewer than requests.
    for _ in 0..20 {
        assert_eq!(get_echo(&client, false).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let handshakes = v1.load(Ordering::Relaxed);
    assert!(
        (1..=3).contains(&handshakes),
        "{handshakes} handshakes for 21 requests to v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_server_identity_is_refused() {
    // The config says echo runs as sa/echo; this server holds sa/intruder.
    let f = control_plane(
        &(workload("echo-v1", "v1", 29183, "echo") + &workload("echo-v2", "v2", 29186, "echo")),
    )
    .await;
    let _v1 = echo(&f.cp, "v1", 29183, "intruder").await;
    let caller = mesh(&f.cp, "caller");
    caller
        .resolve("echo.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let client = caller.client();
    let (status, body, _, peer) = get_echo(&client, false).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("upstream connect error"), "{body}");
    assert!(peer.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_removal_moves_traffic() {
    let both = workload("echo-v1a", "v1", 29184, "echo")
        + &workload("echo-v1b", "v1", 29185, "echo")
        + &workload("echo-v2", "v2", 29187, "echo");
    let f = control_plane(&both).await;
    let _a = echo(&f.cp, "v1", 29184, "echo").await;
    let _b = echo(&f.cp, "v1", 29185, "echo").await;
    let caller = mesh(&f.cp, "caller");
    caller
        .resolve("echo.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let client = caller.client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (s, _, up, _) = get_echo(&client, false).await;
        assert_eq!(s, 200);
        seen.insert(up.unwrap().endpoint.to_string());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");

    // Remove 29185: once the new EDS arrives, no request goes there.
    std::fs::write(
        f.dir.path().join("workloads.yaml"),
        workload("echo-v1a", "v1", 29184, "echo") + &workload("echo-v2", "v2", 29187, "echo"),
    )
    .unwrap();
    let mut snapshots = caller.xds().expect("an xDS client").watch();
    tokio::time::timeout(
        Duration::from_secs(10),
        snapshots.wait_for(|s| {
            s.endpoints.values().any(|a| {
                let n: usize = a.localities.iter().map(|l| l.endpoints.len()).sum();
                a.cluster_name.contains("|v1|echo") && n == 1
            })
        }),
    )
    .await
    .expect("EDS update")
    .unwrap();
    // The client rebuilds in a task: wait until it routes with that snapshot.
    caller.mesh_client().caught_up().await;
    for _ in 0..20 {
        let (s, _, up, _) = get_echo(&client, false).await;
        assert_eq!(s, 200);
        assert_eq!(&*up.unwrap().endpoint, "127.0.0.1:29184");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_carries_the_request_authority_over_reused_connections() {
    // An HTTP2 port: Istio's cluster talks HTTP/2 upstream (ALPN h2 over mTLS).
    let services = SERVICES.replace("protocol: HTTP}", "protocol: HTTP2}");
    let f = control_plane_with(
        &services,
        &(workload("echo-v1", "v1", 29188, "echo") + &workload("echo-v2", "v2", 29189, "echo")),
    )
    .await;
    let v1 = echo(&f.cp, "v1", 29188, "echo").await;
    let caller = mesh(&f.cp, "caller");
    caller
        .resolve("echo.default.svc.cluster.local:8080")
        .await
        .unwrap();
    let client = caller.client();
    let get = |client: mesh::Client| async move {
        let req = http::Request::get("http://echo.default.svc.cluster.local:8080/authority")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = client.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    // HTTP/2 (ALPN): :authority is what the caller asked for, not the endpoint's address,
    // and no Host header travels next to it.
    assert_eq!(
        get(client.clone()).await,
        "HTTP/2.0 echo.default.svc.cluster.local:8080 -"
    );
    for _ in 0..20 {
        get(client.clone()).await;
    }
    // 21 sequential requests: one connection (one handshake) to v1.
    assert_eq!(v1.load(Ordering::Relaxed), 1, "handshakes to v1");
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..50 {
        set.spawn(get(client.clone()));
    }
    while let Some(r) = set.join_next().await {
        assert!(r.unwrap().starts_with("HTTP/2.0 "));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    // 50 concurrent ones: at most one connection per worker thread (the pool's default).
    let n = v1.load(Ordering::Relaxed);
    assert!((1..=2).contains(&n), "{n} handshakes to v1");
}
