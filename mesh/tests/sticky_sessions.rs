//! Sticky sessions as Istio users write them: a DestinationRule's
//! `loadBalancer.consistentHash.httpHeaderName` on a workload configured by the embedded
//! control plane in process. Every request of one user reaches one endpoint, and removing an
//! endpoint moves its users and few others (ring hash, as Envoy).

#[path = "support/sticky.rs"]
mod sticky;
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::Mesh;
use mesh::xds::bootstrap::IstioNode;
use sticky::{HOST, USERS, assert_only_its_users_moved, busiest, config, echo_ports, placement};
use tower::ServiceExt;

async fn mesh(dir: &std::path::Path) -> Mesh {
    let node = IstioNode {
        pod_name: "shop-0".into(),
        service_account: "shop".into(),
        labels: BTreeMap::from([("app".to_owned(), "shop".to_owned())]),
        ..Default::default()
    };
    support::local_mesh(&support::dev_ca(), dir, node).await
}

/// The port that served `user`'s request.
async fn call(client: &mesh::Client, user: usize) -> u16 {
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
async fn a_header_hash_keeps_each_user_on_one_endpoint() {
    let ports = echo_ports(61100).await;
    let dir = tempfile::tempdir().unwrap();
    let lb = "{consistentHash: {httpHeaderName: x-user}}";
    std::fs::write(dir.path().join("c.yaml"), config(&ports, lb)).unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();

    // 1,000 requests: 20 users, 50 each, each user always on one endpoint.
    let before = placement(|u| call(&client, u), 50).await;
    let used: BTreeSet<u16> = before.values().copied().collect();
    assert!(used.len() >= 3, "20 users on only {used:?}");

    // Remove the endpoint with the most users: only its users move.
    let gone = busiest(&before);
    let rest: Vec<u16> = ports.iter().copied().filter(|p| *p != gone).collect();
    std::fs::write(dir.path().join("c.yaml"), config(&rest, lb)).unwrap();
    let moved_user = *before.iter().find(|(_, p)| **p == gone).unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&client, moved_user).await == gone {
        assert!(Instant::now() < deadline, "the endpoint was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = placement(|u| call(&client, u), 5).await;
    assert_only_its_users_moved(&before, &after, gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_and_query_parameter_hashing_are_sticky_too() {
    let ports = echo_ports(61110).await;
    let dir = tempfile::tempdir().unwrap();
    let lb = "{consistentHash: {httpQueryParameterName: cart, maglev: {tableSize: 65537}}}";
    std::fs::write(dir.path().join("c.yaml"), config(&ports, lb)).unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();
    let mut by_cart: HashMap<usize, BTreeSet<u16>> = HashMap::new();
    for _ in 0..10 {
        for cart in 0..USERS {
            let req = http::Request::get(format!("http://{HOST}:8080/cart?cart={cart}"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = client.clone().oneshot(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let port: u16 = String::from_utf8_lossy(&body).parse().unwrap();
            by_cart.entry(cart).or_default().insert(port);
        }
    }
    assert!(by_cart.values().all(|p| p.len() == 1), "{by_cart:?}");
    let used: BTreeSet<u16> = by_cart.values().flatten().copied().collect();
    assert!(used.len() >= 3, "{used:?}");
}
