//! Sticky sessions as Istio users write them: a DestinationRule's
//! `loadBalancer.consistentHash.httpHeaderName` on a workload configured by the embedded
//! control plane in process. Every request of one user reaches one endpoint, and removing an
//! endpoint moves its users and few others (ring hash, as Envoy).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::Mesh;
use mesh::xds::bootstrap::IstioNode;
use tower::ServiceExt;

const HOST: &str = "cart.default.svc.cluster.local";
const USERS: usize = 20;

fn config(ports: &[u16], lb: &str) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, ports: {{http: {p}}}}}"))
        .collect();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: cart, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  endpoints: [{}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: cart, namespace: default}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: DISABLE}}
    loadBalancer: {lb}
"#,
        endpoints.join(", ")
    )
}

/// A server answering with its own port.
async fn echo_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move || async move { port.to_string() });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

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

/// Each user's endpoint over `rounds` requests per user; panics if a user moved.
async fn placement(client: &mesh::Client, rounds: usize) -> HashMap<usize, u16> {
    let mut seen: HashMap<usize, BTreeSet<u16>> = HashMap::new();
    for _ in 0..rounds {
        for user in 0..USERS {
            seen.entry(user)
                .or_default()
                .insert(call(client, user).await);
        }
    }
    seen.into_iter()
        .map(|(user, ports)| {
            assert_eq!(ports.len(), 1, "user-{user} reached {ports:?}");
            (user, *ports.first().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_hash_keeps_each_user_on_one_endpoint() {
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.push(echo_port().await);
    }
    let dir = tempfile::tempdir().unwrap();
    let lb = "{consistentHash: {httpHeaderName: x-user}}";
    std::fs::write(dir.path().join("c.yaml"), config(&ports, lb)).unwrap();
    let m = mesh(dir.path()).await;
    let client = m.client();

    // 1,000 requests: 20 users, 50 each, each user always on one endpoint.
    let before = placement(&client, 50).await;
    let used: BTreeSet<u16> = before.values().copied().collect();
    assert!(used.len() >= 3, "20 users on only {used:?}");

    // Remove the endpoint with the most users: only its users move.
    let mut count: HashMap<u16, usize> = HashMap::new();
    for p in before.values() {
        *count.entry(*p).or_default() += 1;
    }
    let gone = *count.iter().max_by_key(|(_, n)| **n).unwrap().0;
    let rest: Vec<u16> = ports.iter().copied().filter(|p| *p != gone).collect();
    std::fs::write(dir.path().join("c.yaml"), config(&rest, lb)).unwrap();
    let moved_user = *before.iter().find(|(_, p)| **p == gone).unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&client, moved_user).await == gone {
        assert!(Instant::now() < deadline, "the endpoint was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = placement(&client, 5).await;
    // The removed endpoint's users all move. The others mostly stay: as in Envoy's ring
    // hash, each remaining endpoint gets more points on the ring (min ring size / hosts),
    // so a few keys change owner (about 15% expected here; a random balancer moves 80%).
    let (mut others, mut stayed) = (0, 0);
    for user in 0..USERS {
        if before[&user] == gone {
            assert_ne!(
                after[&user], gone,
                "user-{user} still on the removed endpoint"
            );
        } else {
            others += 1;
            stayed += usize::from(after[&user] == before[&user]);
        }
    }
    assert!(
        stayed * 10 >= others * 6,
        "only {stayed} of {others} users of the remaining endpoints stayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_and_query_parameter_hashing_are_sticky_too() {
    let mut ports = Vec::new();
    for _ in 0..5 {
        ports.push(echo_port().await);
    }
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
