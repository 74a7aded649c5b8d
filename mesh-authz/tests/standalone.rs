//! `AuthzLayer` alone, as the crate docs show it: on an axum `Router` with
//! `tower::ServiceBuilder`, served over real HTTP by `axum::serve` on 127.0.0.1, no mesh.
//! A `map_request` in front of the layer puts the connection's addresses
//! (`ConnectionAddrs`, from axum's `ConnectInfo`) and, standing in for an mTLS server, the
//! caller's `PeerIdentity` (here from a test header) into the request's extensions.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_authz::{
    AuthzLayer, AuthzPolicies, AuthzPolicy, ConnectionAddrs, PeerIdentity, PolicyAction, principal,
};
use mesh_core::SpiffeId;
use mesh_core::model::{CidrRange, Permission, Principal, RbacPolicy, StringMatcher};
use tokio::sync::watch;
use tower::ServiceBuilder;

const PRODUCTPAGE: &str = "spiffe://cluster.local/ns/default/sa/productpage";
const RATINGS: &str = "spiffe://cluster.local/ns/default/sa/ratings";

/// The header this test's stand-in for an mTLS server reads the caller's identity from.
const TEST_PEER: &str = "x-test-peer";

fn prefix(v: &str) -> StringMatcher {
    StringMatcher::Prefix {
        value: v.into(),
        ignore_case: false,
    }
}

/// The crate docs' policy: DENY /admin/* unless the caller is on 10.0.0.0/8.
fn deny_admin_from_outside() -> AuthzPolicy {
    AuthzPolicy::new(
        "deny-admin-from-outside",
        PolicyAction::Deny,
        RbacPolicy {
            name: "deny-admin-from-outside".into(),
            permissions: vec![Permission::UrlPath(prefix("/admin/"))],
            principals: vec![Principal::Not(Box::new(Principal::DirectRemoteIp(
                CidrRange::new([10, 0, 0, 0].into(), 8).unwrap(),
            )))],
        },
    )
}

/// Serves the docs' app on 127.0.0.1:0; returns its address.
async fn serve(policies: watch::Receiver<Arc<AuthzPolicies>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/admin/stats", get(|| async { "stats" }))
        .route("/hello", get(|| async { "hello" }))
        .route("/reviews/{id}", get(|| async { "reviews" }))
        .layer(
            ServiceBuilder::new()
                .map_request(move |mut req: Request<axum::body::Body>| {
                    let remote = req
                        .extensions()
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0);
                    if let Some(remote) = remote {
                        req.extensions_mut()
                            .insert(ConnectionAddrs { remote, local });
                    }
                    // An mTLS server would insert the verified peer; this test trusts a header.
                    let peer = req
                        .headers()
                        .get(TEST_PEER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| SpiffeId::new(v).ok());
                    if let Some(id) = peer {
                        req.extensions_mut().insert(PeerIdentity(id));
                    }
                    req
                })
                .layer(AuthzLayer::new(policies)),
        );
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    local
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

async fn get_as(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    peer: Option<&str>,
    grpc: bool,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(p) = peer {
        req = req.header(TEST_PEER, p);
    }
    if grpc {
        req = req.header(http::header::CONTENT_TYPE, "application/grpc");
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn authz_layer_on_an_axum_router_over_real_http() {
    let (policies, rx) =
        watch::channel(Arc::new(AuthzPolicies::new(
            vec![deny_admin_from_outside()],
        )));
    let addr = serve(rx).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // DENY only: 127.0.0.1 is outside 10.0.0.0/8, so /admin/* is denied, the rest allowed.
    let (status, _, body) = get_as(&client, addr, "/admin/stats", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, "RBAC: access denied");
    let (status, _, body) = get_as(&client, addr, "/hello", None, false).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let (status, headers, _) = get_as(&client, addr, "/admin/stats", None, true).await;
    assert_eq!(status, StatusCode::OK, "gRPC denials are trailers-only");
    assert_eq!(headers["grpc-status"], "7", "PERMISSION_DENIED");

    // New policies through the watch, applied from the next request on (same connection
    // pool, no restart): ALLOW /reviews/* from productpage only, and /hello to anyone on
    // this server's port (matched against ConnectionAddrs.local).
    let allow_productpage = AuthzPolicy::new(
        "allow-productpage",
        PolicyAction::Allow,
        RbacPolicy {
            name: "allow-productpage".into(),
            permissions: vec![Permission::UrlPath(prefix("/reviews/"))],
            principals: vec![principal::istio("cluster.local/ns/default/sa/productpage")],
        },
    );
    let allow_hello_on_port = AuthzPolicy::new(
        "allow-hello-on-port",
        PolicyAction::Allow,
        RbacPolicy {
            name: "allow-hello-on-port".into(),
            permissions: vec![Permission::And(vec![
                Permission::DestinationPort(addr.port()),
                Permission::UrlPath(prefix("/hello")),
            ])],
            principals: vec![Principal::Any],
        },
    );
    policies
        .send(Arc::new(AuthzPolicies::new(vec![
            deny_admin_from_outside(),
            allow_productpage,
            allow_hello_on_port,
        ])))
        .unwrap();

    let (status, _, body) = get_as(&client, addr, "/reviews/1", Some(PRODUCTPAGE), false).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "reviews"));
    let (status, _, _) = get_as(&client, addr, "/reviews/1", Some(RATINGS), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another service account");
    let (status, _, _) = get_as(&client, addr, "/reviews/1", None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no identity (plaintext)");
    let (status, _, _) = get_as(&client, addr, "/hello", None, false).await;
    assert_eq!(status, StatusCode::OK, "the destination port matches");
    let (status, _, _) = get_as(&client, addr, "/admin/stats", Some(PRODUCTPAGE), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "DENY wins over ALLOW");
}
