//! Table tests for Istio's evaluation order and each Envoy RBAC matcher, through the
//! layer (a real tower stack; the inner service answers 200 "ok").

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mesh_authz::{
    AuthzLayer, AuthzMetrics, AuthzPolicies, AuthzPolicy, ConnectionAddrs, PolicyAction, principal,
};
use mesh_core::SpiffeId;
use mesh_core::extensions::PeerIdentity;
use mesh_core::model::{
    CidrRange, HeaderMatchRule, HeaderMatcher, Permission, Principal, RbacPolicy, Regex,
    StringMatcher,
};
use prometheus_client::registry::Registry;
use tower::{ServiceBuilder, ServiceExt, service_fn};

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const OTHER_NS: &str = "spiffe://cluster.local/ns/prod/sa/productpage";

fn exact(v: &str) -> StringMatcher {
    StringMatcher::Exact {
        value: v.into(),
        ignore_case: false,
    }
}

fn prefix(v: &str) -> StringMatcher {
    StringMatcher::Prefix {
        value: v.into(),
        ignore_case: false,
    }
}

fn header(name: &str, rule: HeaderMatchRule, invert: bool) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        rule,
        invert_match: invert,
        treat_missing_header_as_empty: false,
    }
}

fn method(m: &str) -> Permission {
    Permission::Header(header(":method", HeaderMatchRule::String(exact(m)), false))
}

fn policy(name: &str, action: PolicyAction, perm: Permission, who: Principal) -> AuthzPolicy {
    AuthzPolicy::new(
        name,
        action,
        RbacPolicy {
            name: name.into(),
            permissions: vec![perm],
            principals: vec![who],
        },
    )
}

fn allow_from(name: &str, who: Principal) -> AuthzPolicy {
    policy(name, PolicyAction::Allow, Permission::Any, who)
}

fn deny_from(name: &str, who: Principal) -> AuthzPolicy {
    policy(name, PolicyAction::Deny, Permission::Any, who)
}

fn allow_to(name: &str, perm: Permission) -> AuthzPolicy {
    policy(name, PolicyAction::Allow, perm, Principal::Any)
}

/// A request description: method, path (with query), caller, headers, addresses.
#[derive(Clone, Default)]
struct Req {
    method: &'static str,
    path: &'static str,
    peer: Option<&'static str>,
    headers: Vec<(&'static str, &'static str)>,
    remote: Option<&'static str>,
    local: Option<&'static str>,
}

fn from(peer: &'static str) -> Req {
    Req {
        peer: Some(peer),
        ..Req::default()
    }
}

impl Req {
    fn build(&self) -> Request<Full<Bytes>> {
        let mut b = Request::builder()
            .method(if self.method.is_empty() {
                "GET"
            } else {
                self.method
            })
            .uri(if self.path.is_empty() { "/" } else { self.path });
        for (n, v) in &self.headers {
            b = b.header(*n, *v);
        }
        let mut req = b.body(Full::new(Bytes::new())).unwrap();
        if let Some(p) = self.peer {
            req.extensions_mut()
                .insert(PeerIdentity(SpiffeId::new(p).unwrap()));
        }
        if let (Some(r), Some(l)) = (self.remote, self.local) {
            req.extensions_mut().insert(ConnectionAddrs {
                remote: r.parse::<SocketAddr>().unwrap(),
                local: l.parse::<SocketAddr>().unwrap(),
            });
        }
        req
    }
}

async fn call(
    layer: AuthzLayer,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    ));
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn allowed(policies: &[AuthzPolicy], req: &Req) -> bool {
    let layer = AuthzLayer::fixed(AuthzPolicies::new(policies.to_vec()));
    let (status, _, body) = call(layer, req.build()).await;
    match status {
        StatusCode::OK => true,
        StatusCode::FORBIDDEN => {
            assert_eq!(body, "RBAC: access denied");
            false
        }
        s => panic!("unexpected status {s}"),
    }
}

/// Runs a table: (case name, policies, request, expected allowed).
async fn table(cases: Vec<(&str, Vec<AuthzPolicy>, Req, bool)>) {
    for (name, policies, req, want) in cases {
        assert_eq!(allowed(&policies, &req).await, want, "case {name}");
    }
}

#[tokio::test]
async fn evaluation_order() {
    let deny_reviews = deny_from(
        "deny-reviews",
        principal::istio("cluster.local/ns/default/sa/reviews"),
    );
    let allow_pp = allow_from(
        "allow-pp",
        principal::istio("cluster.local/ns/default/sa/productpage"),
    );
    let allow_reviews = allow_from("allow-reviews", principal::spiffe_id(REVIEWS));
    let audit_all = policy(
        "audit",
        PolicyAction::Audit,
        Permission::Any,
        Principal::Any,
    );
    let deny_all = deny_from("deny-all", Principal::Any);
    table(vec![
        ("no policy allows", vec![], from(REVIEWS), true),
        ("no policy allows plaintext", vec![], Req::default(), true),
        (
            "DENY only: match denies",
            vec![deny_reviews.clone()],
            from(REVIEWS),
            false,
        ),
        (
            "DENY only: no match allows",
            vec![deny_reviews.clone()],
            from(PRODUCTPAGE),
            true,
        ),
        (
            "ALLOW: match allows",
            vec![allow_pp.clone()],
            from(PRODUCTPAGE),
            true,
        ),
        (
            "ALLOW: no match denies",
            vec![allow_pp.clone()],
            from(REVIEWS),
            false,
        ),
        (
            "ALLOW: plaintext denied",
            vec![allow_pp.clone()],
            Req::default(),
            false,
        ),
        (
            "DENY before ALLOW",
            vec![allow_reviews.clone(), deny_reviews.clone()],
            from(REVIEWS),
            false,
        ),
        (
            "DENY miss then ALLOW match",
            vec![deny_reviews.clone(), allow_pp.clone()],
            from(PRODUCTPAGE),
            true,
        ),
        (
            "any of several ALLOW",
            vec![allow_pp.clone(), allow_reviews.clone()],
            from(REVIEWS),
            true,
        ),
        (
            "AUDIT never denies",
            vec![audit_all.clone()],
            from(REVIEWS),
            true,
        ),
        (
            "AUDIT is not an ALLOW",
            vec![audit_all.clone(), allow_pp.clone()],
            from(REVIEWS),
            false,
        ),
        (
            "dry-run DENY does not deny",
            vec![deny_all.clone().dry_run()],
            from(REVIEWS),
            true,
        ),
        (
            "dry-run ALLOW does not deny",
            vec![allow_pp.clone().dry_run()],
            from(REVIEWS),
            true,
        ),
        (
            "dry-run ALLOW does not allow",
            vec![allow_pp.clone().dry_run(), allow_reviews.clone()],
            from(PRODUCTPAGE),
            false,
        ),
    ])
    .await;
}

#[tokio::test]
async fn principals() {
    let istio = |v: &str| vec![allow_from("p", principal::istio(v))];
    let ns = |v: &str| vec![allow_from("p", principal::istio_namespace(v))];
    let regex = Principal::Authenticated(Some(StringMatcher::Regex(
        Regex::full("spiffe://cluster\\.local/ns/default/sa/(productpage|ratings)").unwrap(),
    )));
    table(vec![
        (
            "exact",
            istio("cluster.local/ns/default/sa/productpage"),
            from(PRODUCTPAGE),
            true,
        ),
        (
            "exact other sa",
            istio("cluster.local/ns/default/sa/productpage"),
            from(REVIEWS),
            false,
        ),
        (
            "exact other ns",
            istio("cluster.local/ns/default/sa/productpage"),
            from(OTHER_NS),
            false,
        ),
        (
            "exact with scheme",
            istio(PRODUCTPAGE),
            from(PRODUCTPAGE),
            true,
        ),
        (
            "prefix",
            istio("cluster.local/ns/default/*"),
            from(REVIEWS),
            true,
        ),
        (
            "prefix miss",
            istio("cluster.local/ns/default/*"),
            from(OTHER_NS),
            false,
        ),
        ("suffix", istio("*/sa/productpage"), from(OTHER_NS), true),
        (
            "suffix miss",
            istio("*/sa/productpage"),
            from(REVIEWS),
            false,
        ),
        ("any authenticated", istio("*"), from(REVIEWS), true),
        (
            "any authenticated: plaintext",
            istio("*"),
            Req::default(),
            false,
        ),
        (
            "regex",
            vec![allow_from("p", regex.clone())],
            from(PRODUCTPAGE),
            true,
        ),
        (
            "regex is whole-string",
            vec![allow_from("p", regex)],
            from("spiffe://cluster.local/ns/default/sa/productpage2"),
            false,
        ),
        ("namespace", ns("default"), from(REVIEWS), true),
        ("namespace miss", ns("default"), from(OTHER_NS), false),
        (
            "namespace is a whole segment",
            ns("def"),
            from(REVIEWS),
            false,
        ),
        (
            "namespace regex chars are literal",
            ns("d.fault"),
            from(REVIEWS),
            false,
        ),
        ("namespace prefix", ns("pro*"), from(OTHER_NS), true),
        ("namespace suffix", ns("*ault"), from(REVIEWS), true),
        ("namespace any", ns("*"), from(OTHER_NS), true),
        ("namespace: plaintext", ns("*"), Req::default(), false),
        (
            "not_principals",
            vec![deny_from(
                "p",
                principal::not(principal::istio_namespace("default")),
            )],
            from(OTHER_NS),
            false,
        ),
        (
            "not_principals: own ns passes",
            vec![deny_from(
                "p",
                principal::not(principal::istio_namespace("default")),
            )],
            from(REVIEWS),
            true,
        ),
        (
            "not_principals: plaintext is not in the ns",
            vec![deny_from(
                "p",
                principal::not(principal::istio_namespace("default")),
            )],
            Req::default(),
            false,
        ),
        (
            "deny unauthenticated (Istio notPrincipals [*])",
            vec![deny_from("p", principal::not(principal::istio("*")))],
            Req::default(),
            false,
        ),
        (
            "and: ns and sa",
            vec![allow_from(
                "p",
                Principal::And(vec![
                    principal::istio_namespace("prod"),
                    principal::istio("*/sa/productpage"),
                ]),
            )],
            from(PRODUCTPAGE),
            false,
        ),
        (
            "or",
            vec![allow_from(
                "p",
                Principal::Or(vec![
                    principal::spiffe_id(REVIEWS),
                    principal::spiffe_id(OTHER_NS),
                ]),
            )],
            from(OTHER_NS),
            true,
        ),
    ])
    .await;
}

#[tokio::test]
async fn request_properties() {
    let get = || Req {
        method: "GET",
        path: "/api/v1/items?token=secret",
        peer: Some(REVIEWS),
        ..Req::default()
    };
    let with = |f: fn(&mut Req)| {
        let mut r = get();
        f(&mut r);
        r
    };
    let path = |m: StringMatcher| vec![allow_to("p", Permission::UrlPath(m))];
    let hdr = |h: HeaderMatcher| vec![allow_to("p", Permission::Header(h))];
    let addrs = |r: &mut Req| {
        r.remote = Some("10.1.2.3:40000");
        r.local = Some("10.0.0.1:8080");
    };
    let cidr = |ip: &str, len| CidrRange::new(ip.parse().unwrap(), len).unwrap();
    table(vec![
        ("method", vec![allow_to("p", method("GET"))], get(), true),
        (
            "method miss",
            vec![allow_to("p", method("POST"))],
            get(),
            false,
        ),
        (
            "path exact ignores query",
            path(exact("/api/v1/items")),
            get(),
            true,
        ),
        ("path prefix", path(prefix("/api/")), get(), true),
        ("path prefix miss", path(prefix("/admin")), get(), false),
        (
            "path suffix",
            path(StringMatcher::Suffix {
                value: "/items".into(),
                ignore_case: false,
            }),
            get(),
            true,
        ),
        (
            "path ignore case",
            path(StringMatcher::Exact {
                value: "/API/V1/ITEMS".into(),
                ignore_case: true,
            }),
            get(),
            true,
        ),
        (
            ":path header keeps the query",
            hdr(header(
                ":path",
                HeaderMatchRule::String(exact("/api/v1/items")),
                false,
            )),
            get(),
            false,
        ),
        (
            "header exact",
            hdr(header(
                "x-user",
                HeaderMatchRule::String(exact("alice")),
                false,
            )),
            with(|r| r.headers = vec![("x-user", "alice")]),
            true,
        ),
        (
            "header repeated values joined with ','",
            hdr(header(
                "x-user",
                HeaderMatchRule::String(exact("alice,bob")),
                false,
            )),
            with(|r| r.headers = vec![("x-user", "alice"), ("x-user", "bob")]),
            true,
        ),
        (
            "header present",
            hdr(header("x-user", HeaderMatchRule::Present(true), false)),
            with(|r| r.headers = vec![("x-user", "")]),
            true,
        ),
        (
            "header present: absent",
            hdr(header("x-user", HeaderMatchRule::Present(true), false)),
            get(),
            false,
        ),
        (
            "inverted header: other value",
            hdr(header(
                "x-user",
                HeaderMatchRule::String(exact("alice")),
                true,
            )),
            with(|r| r.headers = vec![("x-user", "bob")]),
            true,
        ),
        (
            "inverted header: absent fails (Envoy 1.40)",
            hdr(header(
                "x-user",
                HeaderMatchRule::String(exact("alice")),
                true,
            )),
            get(),
            false,
        ),
        (
            "header range",
            hdr(header(
                "x-n",
                HeaderMatchRule::Range { start: 1, end: 10 },
                false,
            )),
            with(|r| r.headers = vec![("x-n", "9")]),
            true,
        ),
        (
            "header range end exclusive",
            hdr(header(
                "x-n",
                HeaderMatchRule::Range { start: 1, end: 10 },
                false,
            )),
            with(|r| r.headers = vec![("x-n", "10")]),
            false,
        ),
        (
            ":authority from Host",
            hdr(header(
                ":authority",
                HeaderMatchRule::String(exact("reviews:9080")),
                false,
            )),
            with(|r| r.headers = vec![("host", "reviews:9080")]),
            true,
        ),
        (
            "destination port",
            vec![allow_to("p", Permission::DestinationPort(8080))],
            with(addrs),
            true,
        ),
        (
            "destination port miss",
            vec![allow_to("p", Permission::DestinationPort(9090))],
            with(addrs),
            false,
        ),
        (
            "destination port unknown",
            vec![allow_to("p", Permission::DestinationPort(8080))],
            get(),
            false,
        ),
        (
            "destination port range [start, end)",
            vec![allow_to(
                "p",
                Permission::DestinationPortRange {
                    start: 8000,
                    end: 8080,
                },
            )],
            with(addrs),
            false,
        ),
        (
            "destination ip",
            vec![allow_to(
                "p",
                Permission::DestinationIp(cidr("10.0.0.0", 24)),
            )],
            with(addrs),
            true,
        ),
        (
            "source ip",
            vec![allow_from(
                "p",
                Principal::DirectRemoteIp(cidr("10.1.0.0", 16)),
            )],
            with(addrs),
            true,
        ),
        (
            "source ip miss",
            vec![allow_from(
                "p",
                Principal::DirectRemoteIp(cidr("10.2.0.0", 16)),
            )],
            with(addrs),
            false,
        ),
        (
            "remote ip falls back to the peer address",
            vec![allow_from("p", Principal::RemoteIp(cidr("10.1.2.3", 32)))],
            with(addrs),
            true,
        ),
        (
            "not permission",
            vec![policy(
                "d",
                PolicyAction::Deny,
                Permission::Not(Box::new(method("GET"))),
                Principal::Any,
            )],
            get(),
            true,
        ),
        (
            "and permission",
            vec![allow_to(
                "p",
                Permission::And(vec![method("GET"), Permission::UrlPath(prefix("/admin"))]),
            )],
            get(),
            false,
        ),
        (
            "or permission",
            vec![allow_to(
                "p",
                Permission::Or(vec![method("POST"), Permission::UrlPath(prefix("/api"))]),
            )],
            get(),
            true,
        ),
    ])
    .await;
}

#[tokio::test]
async fn grpc_denial_is_trailers_only_permission_denied() {
    let layer = AuthzLayer::fixed(AuthzPolicies::new(vec![deny_from("d", Principal::Any)]));
    let req = Req {
        method: "POST",
        path: "/pkg.Svc/Method",
        headers: vec![("content-type", "application/grpc+proto")],
        ..Req::default()
    };
    let (status, headers, body) = call(layer, req.build()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "7");
    assert_eq!(headers["grpc-message"], "RBAC: access denied");
    assert_eq!(headers["content-type"], "application/grpc");
    assert!(body.is_empty());
    // Not gRPC: a content type that only starts with the same letters.
    let layer = AuthzLayer::fixed(AuthzPolicies::new(vec![deny_from("d", Principal::Any)]));
    let req = Req {
        headers: vec![("content-type", "application/grpc-web")],
        ..Req::default()
    };
    assert_eq!(call(layer, req.build()).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn policy_edits_apply_to_the_next_request() {
    let allow_pp = allow_from(
        "allow-pp",
        principal::istio("cluster.local/ns/default/sa/productpage"),
    );
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(AuthzPolicies::new(vec![allow_pp])));
    let layer = AuthzLayer::new(rx);
    let svc = ServiceBuilder::new().layer(layer).service(service_fn(
        |_req: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let status = |r: Req| {
        let svc = svc.clone();
        async move { svc.oneshot(r.build()).await.unwrap().status() }
    };
    assert_eq!(status(from(REVIEWS)).await, StatusCode::FORBIDDEN);
    assert_eq!(status(from(PRODUCTPAGE)).await, StatusCode::OK);
    tx.send(Arc::new(AuthzPolicies::new(vec![allow_from(
        "allow-reviews",
        principal::spiffe_id(REVIEWS),
    )])))
    .unwrap();
    assert_eq!(status(from(REVIEWS)).await, StatusCode::OK);
    assert_eq!(status(from(PRODUCTPAGE)).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn metrics_count_enforced_and_shadow_decisions() {
    let mut registry = Registry::default();
    let metrics = AuthzMetrics::register(&mut registry);
    let policies = AuthzPolicies::new(vec![
        deny_from("deny-reviews", principal::spiffe_id(REVIEWS)),
        deny_from("dry-deny-pp", principal::spiffe_id(PRODUCTPAGE)).dry_run(),
    ]);
    for who in [REVIEWS, PRODUCTPAGE, OTHER_NS] {
        let layer = AuthzLayer::fixed(policies.clone()).with_metrics(metrics.clone());
        call(layer, from(who).build()).await;
    }
    assert_eq!((metrics.allowed(), metrics.denied()), (2, 1));
    assert_eq!((metrics.shadow_allowed(), metrics.shadow_denied()), (2, 1));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("authz_shadow_requests_total{decision=\"deny\"} 1"),
        "{text}"
    );
}
