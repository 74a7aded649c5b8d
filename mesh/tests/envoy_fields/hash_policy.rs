//! RouteAction.hash_policy on real requests: a ring-hash cluster over backends `a` and `b`,
//! and routes whose hash policies make a set of requests stick to one backend (or, without
//! the field, spread over both).

use route_action::HashPolicy;
use route_action::hash_policy::{self, PolicySpecifier};

use crate::harness::*;

fn header_policy(name: &str, rewrite: Option<(&str, &str)>, terminal: bool) -> HashPolicy {
    HashPolicy {
        policy_specifier: Some(PolicySpecifier::Header(hash_policy::Header {
            header_name: name.into(),
            regex_rewrite: rewrite.map(|(pattern, substitution)| RegexMatchAndSubstitute {
                pattern: Some(RegexMatcher {
                    regex: pattern.into(),
                    ..Default::default()
                }),
                substitution: substitution.into(),
            }),
        })),
        terminal,
    }
}

fn channel_policy() -> HashPolicy {
    HashPolicy {
        policy_specifier: Some(PolicySpecifier::FilterState(hash_policy::FilterState {
            key: "io.grpc.channel_id".into(),
        })),
        terminal: false,
    }
}

/// Route `path` to the ring-hash cluster with `policies`.
fn hashed(path: &str, policies: Vec<HashPolicy>) -> Route {
    let mut action = to("ring");
    action.hash_policy = policies;
    forward(prefix(path), action)
}

/// The backends (`a`, `b`) that answered `n` requests to `path`, the i-th with `headers(i)`.
async fn backends(
    f: &Fixture,
    path: &str,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> Vec<String> {
    let mut seen = Vec::new();
    for i in 0..n {
        let hs = headers(i);
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let got = f.get(&format!("http://hash.test{path}"), &hs).await;
        assert_eq!(got.status, 200, "{path} #{i}: {:?}", got.body);
        let tag = got.header("x-backend").unwrap().to_owned();
        if !seen.contains(&tag) {
            seen.push(tag);
        }
    }
    seen
}

/// `terminal` stops at the first policy that produced a hash; `regex_rewrite` hashes the
/// rewritten header value; `filter_state` `io.grpc.channel_id` hashes the client (gRPC A42):
/// each makes 16 requests that differ elsewhere reach one backend, where the same route
/// without the field spreads them over both (16 independent hashes on one backend: 2^-15).
#[tokio::test]
async fn hash_policy_fields_pin_requests_to_one_endpoint() {
    let l = listener(
        "hash.test:80",
        hcm(routes(VirtualHost {
            routes: vec![
                hashed(
                    "/terminal",
                    vec![
                        header_policy("x-a", None, true),
                        header_policy("x-b", None, false),
                    ],
                ),
                hashed(
                    "/chained",
                    vec![
                        header_policy("x-a", None, false),
                        header_policy("x-b", None, false),
                    ],
                ),
                hashed(
                    "/rewrite",
                    vec![header_policy(
                        "x-user",
                        Some(("-session-[0-9]+$", "")),
                        false,
                    )],
                ),
                hashed("/plain", vec![header_policy("x-user", None, false)]),
                hashed("/channel", vec![channel_policy()]),
                hashed("/none", vec![]),
            ],
            ..Default::default()
        })),
    );
    let f = start_with(vec![l], |p| {
        let mut ring = cluster("ring", &[p.a, p.b], None);
        ring.lb_policy = cluster::LbPolicy::RingHash as i32;
        vec![ring]
    })
    .await;
    let h = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };
    // terminal: x-a alone decides; without it x-b changes the hash.
    let ab = |i: usize| h(&[("x-a", "alice".into()), ("x-b", format!("b{i}"))]);
    assert_eq!(backends(&f, "/terminal", 16, ab).await.len(), 1, "terminal");
    assert_eq!(
        backends(&f, "/chained", 16, ab).await.len(),
        2,
        "not terminal"
    );
    // regex_rewrite: alice-session-N all hash as "alice".
    let user = |i: usize| h(&[("x-user", format!("alice-session-{i}"))]);
    assert_eq!(backends(&f, "/rewrite", 16, user).await.len(), 1, "rewrite");
    assert_eq!(
        backends(&f, "/plain", 16, user).await.len(),
        2,
        "no rewrite"
    );
    // filter_state io.grpc.channel_id: this client's requests all hash alike; with no
    // policy, a ring-hash cluster picks at random.
    let none = |_: usize| Vec::<(String, String)>::new();
    assert_eq!(
        backends(&f, "/channel", 16, none).await.len(),
        1,
        "channel id"
    );
    assert_eq!(backends(&f, "/none", 16, none).await.len(), 2, "no policy");
}
