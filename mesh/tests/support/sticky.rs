//! The sticky-session scenario of issue #16, whatever configures the client: every request
//! of one user reaches one endpoint, and removing an endpoint moves its users and few
//! others. Shared by mesh/tests/sticky_sessions.rs (embedded control plane) and
//! interop-tests/tests/istiod_sticky.rs (istiod), which include this file, and by
//! mesh/tests/locality.rs (its [`cart_service`]). Each includer uses part of it.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

/// The service the users call.
pub const HOST: &str = "cart.default.svc.cluster.local";

/// Users per scenario.
pub const USERS: usize = 20;

/// The cart service on `ports` of 127.0.0.1, plaintext, balanced by `lb` (a
/// DestinationRule `loadBalancer`).
pub fn config(ports: &[u16], lb: &str) -> String {
    let endpoints: Vec<String> = ports
        .iter()
        .map(|p| format!("{{address: 127.0.0.1, ports: {{http: {p}}}}}"))
        .collect();
    cart_service(
        &endpoints,
        &format!("tls: {{mode: DISABLE}}, loadBalancer: {lb}"),
    )
}

/// The cart service (a ServiceEntry with `endpoints`, YAML flow maps) and its
/// DestinationRule whose `trafficPolicy` holds `traffic_policy` (the inside of a flow map).
pub fn cart_service(endpoints: &[String], traffic_policy: &str) -> String {
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
  trafficPolicy: {{{traffic_policy}}}
"#,
        endpoints.join(", ")
    )
}

/// Five servers on 127.0.0.1 ports `base..base + 5`, each answering every request with its
/// own port. Fixed ports (above the kernel's ephemeral range, where nothing else binds) make
/// the hash ring, and so each user's endpoint, the same in every run: with random ports a
/// few runs in a hundred would see a ring where more users than the bound move.
pub async fn echo_ports(base: u16) -> Vec<u16> {
    let mut ports = Vec::new();
    for port in base..base + 5 {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("binding 127.0.0.1:{port}: {e}"));
        let app = axum::Router::new().fallback(move || async move { port.to_string() });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ports.push(port);
    }
    ports
}

/// Each user's endpoint over `rounds` requests per user (`call(user)` answers the port that
/// served it); panics if a user moved.
pub async fn placement<F, Fut>(call: F, rounds: usize) -> HashMap<usize, u16>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = u16>,
{
    let mut seen: HashMap<usize, BTreeSet<u16>> = HashMap::new();
    for _ in 0..rounds {
        for user in 0..USERS {
            seen.entry(user).or_default().insert(call(user).await);
        }
    }
    seen.into_iter()
        .map(|(user, ports)| {
            assert_eq!(ports.len(), 1, "user-{user} reached {ports:?}");
            (user, *ports.first().unwrap())
        })
        .collect()
}

/// The endpoint serving the most users of `placement`.
pub fn busiest(placement: &HashMap<usize, u16>) -> u16 {
    let mut count: HashMap<u16, usize> = HashMap::new();
    for p in placement.values() {
        *count.entry(*p).or_default() += 1;
    }
    *count.iter().max_by_key(|(_, n)| **n).unwrap().0
}

/// After `gone` was removed: its users all moved, the others mostly stayed. As in Envoy's
/// ring hash each remaining endpoint gets more points on the ring (min ring size / hosts),
/// so a few keys change owner (about 15% expected; a random balancer moves 80%).
pub fn assert_only_its_users_moved(
    before: &HashMap<usize, u16>,
    after: &HashMap<usize, u16>,
    gone: u16,
) {
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
