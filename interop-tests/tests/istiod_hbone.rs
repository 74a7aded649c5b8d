//! HBONE under a real istiod (`MESH_ISTIOD_BIN`): istiod's proxyless generator sends a
//! WorkloadEntry labelled `networking.istio.io/tunnel: http` as a plain endpoint (no
//! `tunnel: http` metadata: its `supportTunnel` is false for proxyless nodes), so a client
//! without the opt-in dials it directly; with `MeshClientConfig::hbone_hosts` naming the
//! service, the same client config reaches it through a real `HboneServer` on its :15008
//! (the server counts the CONNECT).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mesh_core::model::TlsMode;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_hbone::HboneServer;
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::workload::{ControlPlaneAccess, Workload, WorkloadSpec, call};
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;

const HOST: &str = "ambient.default.svc.cluster.local";
const URL: &str = "http://ambient.default.svc.cluster.local:9080/";
const WORKLOAD: [u8; 4] = [127, 0, 19, 41];

fn config() -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ambient, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: ambient}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ambient, namespace: default}}
spec:
  address: 127.0.19.41
  labels: {{app: ambient, networking.istio.io/tunnel: http}}
  serviceAccount: ambient
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: ambient, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_labelled_workload_is_reached_through_hbone_with_the_opt_in() {
    let Some(bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("ambient.yaml"), config()).unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = Arc::new(TestIssuer::start().await.unwrap());
    let options = IstiodOptions {
        config_dir: Some(dir),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // The workload: an HBONE server on its :15008 (identity from the mesh's CA) answering
    // on 9080 inside the tunnel, and its own port 9080 counting direct connections.
    let id = SpiffeId::istio(ca.trust_domain(), "default", "ambient").unwrap();
    let store =
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap();
    let app = axum::Router::new().fallback(|| async { "through hbone" });
    let server = HboneServer::builder(store).http(9080, app).build();
    let tunnels = server.metrics().clone();
    let l = tokio::net::TcpListener::bind(SocketAddr::from((WORKLOAD, 15008)))
        .await
        .unwrap();
    tokio::spawn(server.serve(l, std::future::pending()));
    let direct = Arc::new(AtomicUsize::new(0));
    let l = tokio::net::TcpListener::bind(SocketAddr::from((WORKLOAD, 9080)))
        .await
        .unwrap();
    let seen = direct.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            seen.fetch_add(1, Ordering::Relaxed);
            drop(conn);
        }
    });

    let access = ControlPlaneAccess {
        ca_url: istiod.secure_url(),
        root: istiod.ca_root(),
        server_name: Some(ISTIOD_SERVER_NAME.into()),
        xds_url: istiod.secure_url(),
        tokens: Some(issuer.clone()),
        token_dir: work.path().into(),
        cert_ttl: Duration::from_secs(3600),
    };
    let caller = Workload::start(
        &access,
        WorkloadSpec::new("caller", "v1", "caller", [127, 0, 19, 40]),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // Without the opt-in: istiod's endpoint carries no tunnel marker and is dialled on 9080.
    let plain = &caller.client;
    let _ = call(plain, "GET", URL, &[]).await;
    let snapshot = plain.applied();
    let modes: Vec<TlsMode> = snapshot
        .endpoints
        .values()
        .flat_map(|c| c.localities.iter().flat_map(|l| &l.endpoints))
        .map(|e| e.tls_mode)
        .collect();
    eprintln!("istiod's proxyless EDS for the tunnel-labelled workload: {modes:?}");
    assert!(!modes.is_empty(), "no endpoints:\n{}", istiod.log_tail(30));
    assert!(!modes.contains(&TlsMode::Hbone), "{modes:?}");
    assert!(direct.load(Ordering::Relaxed) >= 1, "dialled directly");
    assert_eq!(tunnels.connections(), 0);

    // With the opt-in, the same xDS config goes through the tunnel.
    let config = MeshClientConfig {
        hbone_hosts: vec![HOST.into()],
        ..Default::default()
    };
    let tunnelled = MeshClient::new(caller.xds.clone(), caller.identity.clone(), config);
    let before = direct.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        match call(&tunnelled, "GET", URL, &[]).await {
            Ok((status, body)) if status == 200 => break body,
            other => assert!(
                Instant::now() < deadline,
                "never answered through the tunnel: {other:?}\n{}",
                istiod.log_tail(30)
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body, "through hbone");
    assert!(tunnels.tunnels() >= 1, "the request arrived as a CONNECT");
    assert_eq!(
        direct.load(Ordering::Relaxed),
        before,
        "nothing dialled 9080"
    );
}
