//! Sticky sessions through a real istiod (`MESH_ISTIOD_BIN`): a DestinationRule's
//! `consistentHash.httpHeaderName: x-user` as istiod's proxyless generator sends it (ring
//! hash cluster, route hash policy) keeps every request of one user on one endpoint (1,000
//! requests, 20 users, 5 endpoints), and removing an endpoint moves only its users and few
//! others. The same scenario as mesh/tests/sticky_sessions.rs under the embedded control
//! plane.

#[path = "../../mesh/tests/support/sticky.rs"]
mod sticky;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_core::TrustDomain;
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::workload::{ControlPlaneAccess, Workload, WorkloadSpec};
use mesh_route::client::MeshClient;
use mesh_tls::dev_ca::DevCa;
use sticky::{HOST, assert_only_its_users_moved, busiest, config, echo_ports, placement};
use tower::ServiceExt;

const LB: &str = "{consistentHash: {httpHeaderName: x-user}}";

/// The port that served `user`'s request.
async fn call(client: &MeshClient, user: usize) -> u16 {
    let req = http::Request::get(format!("http://{HOST}:8080/cart"))
        .header("x-user", format!("user-{user}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = client.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_hash_from_istiod_keeps_each_user_on_one_endpoint() {
    let Some(bin) = mesh_test_support::peer("MESH_ISTIOD_BIN") else {
        return;
    };
    let ports = echo_ports(61120).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("config");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("cart.yaml"), config(&ports, LB)).unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = Arc::new(TestIssuer::start().await.unwrap());
    let options = IstiodOptions {
        config_dir: Some(dir.clone()),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let mut istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let access = ControlPlaneAccess {
        ca_url: istiod.secure_url(),
        root: istiod.ca_root(),
        server_name: Some(ISTIOD_SERVER_NAME.into()),
        xds_url: istiod.secure_url(),
        tokens: Some(issuer.clone()),
        token_dir: work.path().into(),
        cert_ttl: Duration::from_secs(3600),
    };
    let shop = Workload::start(
        &access,
        WorkloadSpec::new("shop", "v1", "shop", [127, 0, 0, 2]),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let client = shop.client.clone();

    // 1,000 requests: 20 users, 50 each, each user always on one endpoint.
    let before = placement(|u| call(&client, u), 50).await;
    let used: std::collections::BTreeSet<u16> = before.values().copied().collect();
    assert!(used.len() >= 3, "20 users on only {used:?}");

    // Remove the endpoint with the most users (istiod restarted to read the edit, a second
    // later for new versions): only its users move.
    let gone = busiest(&before);
    let rest: Vec<u16> = ports.iter().copied().filter(|p| *p != gone).collect();
    std::fs::write(dir.join("cart.yaml"), config(&rest, LB)).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    istiod.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let moved_user = *before.iter().find(|(_, p)| **p == gone).unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while call(&client, moved_user).await == gone {
        assert!(
            Instant::now() < deadline,
            "the endpoint was never removed:\n{}",
            istiod.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = placement(|u| call(&client, u), 5).await;
    assert_only_its_users_moved(&before, &after, gone);
}
