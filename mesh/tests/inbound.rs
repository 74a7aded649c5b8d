//! xDS-configured servers end to end: the embedded control plane reads Istio YAML from a
//! directory, a real server built with `mesh::inbound` takes its inbound listener from it,
//! and mTLS clients with identities from the control plane's CA call it. Editing the YAML
//! changes who gets in, and whether plaintext is accepted, without restarting the server.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::extract::{ConnectInfo, Extension};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use mesh::inbound::{AuthzMetrics, InboundConnectInfo, InboundServer, ServingStatus};
use mesh::tls::client::MeshConnector;
use mesh::tls::config::ClientSettings;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{XdsClient, XdsClientConfig, channel};
use mesh::{IdentityStore, Mesh, PeerIdentity};
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use support::xds::{free_port, node, web_workload_yaml, xds_client};
use tokio::sync::watch;

fn allow_only(sa: &str) -> String {
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: web-callers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/{sa}]
"#
    )
}

/// A DENY policy for calls from `sa`; `dry_run` adds Istio's `istio.io/dry-run` annotation.
fn deny_caller(sa: &str, dry_run: bool) -> String {
    let annotations = if dry_run {
        ", annotations: {istio.io/dry-run: \"true\"}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-{sa}, namespace: default{annotations}}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/default/sa/{sa}]
"#
    )
}

fn peer_auth(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec: {{mtls: {{mode: {mode}}}}}\n"
    )
}

/// How long `/slow` takes.
const SLOW: Duration = Duration::from_secs(2);

struct Fixture {
    cp: ControlPlane,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    status: watch::Receiver<ServingStatus>,
    /// The server's authorization counters.
    metrics: AuthzMetrics,
    /// Requests that reached the app.
    reached: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The server's task (ends once shut down and drained).
    served: tokio::task::JoinHandle<()>,
}

fn identity(cp: &ControlPlane, sa: &str) -> IdentityStore {
    let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    IdentityStore::from_credentials(cp.ca().issue(&id, Duration::from_secs(3600)).unwrap()).unwrap()
}

/// How the `web` server is started.
#[derive(Clone, Copy, PartialEq)]
enum Server {
    /// `InboundServer::from_bootstrap` on 127.0.0.1.
    Inbound,
    /// `Mesh::serve_with_shutdown` on 0.0.0.0, the listener named from the pod IP.
    MeshServe,
    /// `axum::serve(mesh.listener(..), mesh.app(app))` with graceful shutdown, as the guide
    /// writes it.
    AxumServe,
    /// `axum::serve` on `mesh.inbound_server(..).listen()` with the bare router (no
    /// `mesh.app`): a mistake that must fail closed.
    AxumBare,
}

/// Starts the control plane on `security` and the `web` server; returns once it serves.
async fn start(security: &str) -> Fixture {
    start_with(security, Server::Inbound).await
}

async fn start_with(security: &str, how: Server) -> Fixture {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), web_workload_yaml(port, None)).unwrap();
    // `$PORT` in a policy stands for the server's port.
    let security = security.replace("$PORT", &port.to_string());
    std::fs::write(dir.path().join("security.yaml"), security).unwrap();
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: dir.path().into(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        watch_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .unwrap();
    let (bootstrap, xds) = xds_client(node("web"), cp.xds_addr());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics = AuthzMetrics::default();
    let reached = Arc::new(AtomicUsize::new(0));
    let counted = reached.clone();
    let app = axum::Router::new()
        .route(
            "/",
            get(|peer: Option<Extension<PeerIdentity>>| async move {
                match peer {
                    Some(Extension(p)) => format!("hello {p}"),
                    None => "hello plaintext".to_owned(),
                }
            }),
        )
        // A slow request, to be in flight when shutdown starts.
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SLOW).await;
                "slow done"
            }),
        )
        // What axum handlers see of the connection over `mesh.listener`.
        .route(
            "/conn",
            get(
                |ConnectInfo(c): ConnectInfo<InboundConnectInfo>| async move {
                    let peer = c.peer.map(|p| p.to_string());
                    format!(
                        "{} {} {}",
                        c.remote.ip(),
                        c.local,
                        peer.as_deref().unwrap_or("-")
                    )
                },
            ),
        )
        // Any other path: echo the target the app received (after path normalization).
        .fallback(|uri: http::Uri| async move { format!("path {uri}") })
        .layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                counted.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            },
        ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let stopped = async {
        let _ = stopped.await;
    };
    let (status, served) = match how {
        Server::Inbound => {
            let server = InboundServer::from_bootstrap(xds, identity(&cp, "web"), &bootstrap, addr)
                .unwrap()
                .drain_timeout(Duration::from_secs(2))
                .authz_metrics(metrics.clone());
            assert_eq!(
                server.listener_name(),
                format!("xds.istio.io/grpc/lds/inbound/127.0.0.1:{port}")
            );
            let mut status = server.status();
            let served = tokio::spawn(async move {
                server.serve_with_shutdown(app, stopped).await.unwrap();
            });
            tokio::time::timeout(
                Duration::from_secs(10),
                status.wait_for(ServingStatus::is_serving),
            )
            .await
            .expect("the server serves once its listener arrives")
            .unwrap();
            (status, served)
        }
        Server::MeshServe | Server::AxumServe | Server::AxumBare => {
            drop(xds);
            let mesh = Mesh::builder()
                .identity_store(identity(&cp, "web"))
                .bootstrap(bootstrap)
                .authz_metrics(metrics.clone())
                .build()
                .unwrap();
            let any: SocketAddr = ([0, 0, 0, 0], port).into();
            let served = match how {
                Server::MeshServe => tokio::spawn(async move {
                    mesh.serve_with_shutdown(any, app, stopped).await.unwrap();
                }),
                Server::AxumServe => {
                    // The guide's form.
                    let listener = mesh.listener(any).await.unwrap();
                    tokio::spawn(async move {
                        axum::serve(listener, mesh.app(app))
                            .with_graceful_shutdown(stopped)
                            .await
                            .unwrap();
                    })
                }
                _ => {
                    let server = mesh.inbound_server(any).unwrap();
                    let mut status = server.status();
                    let listener = server.listen().await.unwrap();
                    let served = tokio::spawn(async move {
                        axum::serve(listener, app)
                            .with_graceful_shutdown(stopped)
                            .await
                            .unwrap();
                    });
                    status.wait_for(ServingStatus::is_serving).await.unwrap();
                    served
                }
            };
            if how != Server::AxumBare {
                // Serving once a mesh caller gets an answer (allowed or denied).
                let probe = identity(&cp, "probe");
                eventually("the server serves", || async {
                    probe_get(&probe, addr).await.is_ok()
                })
                .await;
            }
            let (_, status) = watch::channel(ServingStatus::NotServing(
                "Mesh::serve: the test has no status".into(),
            ));
            (status, served)
        }
    };
    Fixture {
        cp,
        dir,
        addr,
        status,
        metrics,
        reached,
        _stop: stop,
        served,
    }
}

/// GET / over mTLS as `sa`: the status, or the error text if the connection failed.
async fn mtls_get(f: &Fixture, sa: &str) -> Result<(u16, String), String> {
    probe_get(&identity(&f.cp, sa), f.addr).await
}

async fn probe_get(id: &IdentityStore, addr: SocketAddr) -> Result<(u16, String), String> {
    let connector = MeshConnector::new(id.clone(), ClientSettings::default());
    let uri: http::Uri = format!("https://{addr}/").parse().unwrap();
    let stream = connector.connect(&uri).await.map_err(|e| e.to_string())?;
    http_get(TokioIo::new(stream.into_inner()), addr).await
}

async fn plaintext_get(f: &Fixture) -> Result<(u16, String), String> {
    let tcp = tokio::net::TcpStream::connect(f.addr)
        .await
        .map_err(|e| e.to_string())?;
    http_get(TokioIo::new(tcp), f.addr).await
}

async fn http_get<IO>(io: TokioIo<IO>, addr: SocketAddr) -> Result<(u16, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    http_get_path(io, addr, "/").await
}

/// GET `path` (sent as written: hyper does not normalize it) over mTLS as `sa`.
async fn mtls_get_path(f: &Fixture, sa: &str, path: &str) -> Result<(u16, String), String> {
    let connector = MeshConnector::new(identity(&f.cp, sa), ClientSettings::default());
    let uri: http::Uri = format!("https://{}/", f.addr).parse().unwrap();
    let stream = connector.connect(&uri).await.map_err(|e| e.to_string())?;
    http_get_path(TokioIo::new(stream.into_inner()), f.addr, path).await
}

async fn http_get_path<IO>(
    io: TokioIo<IO>,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    ))
}

/// Polls `check` until it holds (config edits reach the server asynchronously).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

/// Issue #21's bypass: STRICT, `DENY paths: [/admin*]`; the generated inbound listener
/// (normalize_path: true, as istiod's BASE) makes the server normalize before RBAC, so dot
/// segments and encodings cannot reach `/admin`, and the app gets the normalized path.
#[tokio::test]
async fn path_rules_cannot_be_bypassed_with_dot_segments_or_encodings() {
    let deny_admin = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
"#;
    let f = start(&format!("{}---\n{deny_admin}", peer_auth("STRICT"))).await;
    for path in [
        "/admin",
        "/x/../admin",
        "/./admin",
        "/%61dmin",
        "/%2e/admin/users",
        "/x/%2E%2E/admin",
        "/x/..;/admin",
        "/public/../admin?x=/../public",
    ] {
        let (code, body) = mtls_get_path(&f, "productpage", path).await.unwrap();
        assert_eq!(
            (code, body.as_str()),
            (403, "RBAC: access denied"),
            "{path}"
        );
    }
    for (path, seen) in [
        ("/x/../public/%7euser", "path /public/~user"),
        ("/public/./a?q=/../admin", "path /public/a?q=/../admin"),
    ] {
        let (code, body) = mtls_get_path(&f, "productpage", path).await.unwrap();
        assert_eq!((code, body.as_str()), (200, seen), "{path}");
    }
    let (code, _) = mtls_get_path(&f, "productpage", "/a%00").await.unwrap();
    assert_eq!(code, 400, "an invalid path is refused");
}

#[tokio::test]
async fn authorization_policy_from_yaml_is_enforced_and_edits_apply_live() {
    let f = start(&format!(
        "{}---\n{}",
        peer_auth("STRICT"),
        allow_only("productpage")
    ))
    .await;
    let (code, body) = mtls_get(&f, "productpage").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body,
        "hello spiffe://cluster.local/ns/default/sa/productpage"
    );
    let (code, body) = mtls_get(&f, "ratings").await.unwrap();
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));

    // Keep a connection open across the edit: policy changes reach it, no drain needed.
    let connector = MeshConnector::new(identity(&f.cp, "reviews"), ClientSettings::default());
    let uri: http::Uri = format!("https://{}/", f.addr).parse().unwrap();
    let stream = connector.connect(&uri).await.unwrap();
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream.into_inner()))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = || {
        http::Request::get("/")
            .header("host", f.addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    assert_eq!(kept.send_request(req()).await.unwrap().status(), 403);

    std::fs::write(
        f.dir.path().join("security.yaml"),
        format!("{}---\n{}", peer_auth("STRICT"), allow_only("reviews")),
    )
    .unwrap();
    eventually("reviews is allowed and productpage denied", || async {
        mtls_get(&f, "reviews").await.map(|r| r.0) == Ok(200)
            && mtls_get(&f, "productpage").await.map(|r| r.0) == Ok(403)
    })
    .await;
    let resp = kept.send_request(req()).await.unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the open connection sees the new policy"
    );
    assert!(f.status.borrow().is_serving());
    // STRICT: plaintext is not served.
    assert!(plaintext_get(&f).await.is_err());
}

#[tokio::test]
async fn dry_run_policy_is_counted_not_enforced_until_the_annotation_is_removed() {
    let f = start(&format!(
        "{}---\n{}",
        peer_auth("STRICT"),
        deny_caller("productpage", true)
    ))
    .await;
    // The dry-run DENY reaches the server as shadow rules of its RBAC filter.
    let ServingStatus::Serving(l) = f.status.borrow().clone() else {
        panic!("not serving")
    };
    let mesh::core::model::ListenerKind::Server(s) = &l.kind else {
        panic!("not a server listener")
    };
    let rbac: Vec<_> = s.filter_chains[0]
        .http_connection_manager
        .http_filters
        .iter()
        .filter_map(|f| match &f.config {
            mesh::core::model::HttpFilterConfig::Rbac(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rbac.len(), 1, "{rbac:#?}");
    assert_eq!(rbac[0].rules, mesh::core::model::RbacRuleSet::NoRules);
    assert!(
        matches!(&rbac[0].shadow_rules, mesh::core::model::RbacRuleSet::Rules(r) if r.policies.len() == 1),
        "{rbac:#?}"
    );
    assert_eq!(rbac[0].shadow_rules_stat_prefix, "istio_dry_run_deny_");

    // The matching caller is allowed, and counted as a shadow denial.
    assert_eq!(f.metrics.shadow_denied(), 0);
    let (code, body) = mtls_get(&f, "productpage").await.unwrap();
    assert_eq!(code, 200, "a dry-run policy never denies: {body}");
    assert_eq!(f.metrics.shadow_denied(), 1);
    assert_eq!(f.metrics.shadow_allowed(), 0);
    // Another caller: allowed, and a shadow allow.
    assert_eq!(mtls_get(&f, "ratings").await.map(|r| r.0), Ok(200));
    assert_eq!(f.metrics.shadow_denied(), 1);
    assert_eq!(f.metrics.shadow_allowed(), 1);
    assert_eq!((f.metrics.allowed(), f.metrics.denied()), (2, 0));

    // Without the annotation the same policy is enforced, no restart.
    std::fs::write(
        f.dir.path().join("security.yaml"),
        format!(
            "{}---\n{}",
            peer_auth("STRICT"),
            deny_caller("productpage", false)
        ),
    )
    .unwrap();
    eventually("productpage is denied", || async {
        mtls_get(&f, "productpage").await.map(|r| r.0) == Ok(403)
    })
    .await;
    assert_eq!(mtls_get(&f, "ratings").await.map(|r| r.0), Ok(200));
    // No dry-run policy is left: nothing more is counted as shadow.
    let shadow = (f.metrics.shadow_allowed(), f.metrics.shadow_denied());
    let (code, body) = mtls_get(&f, "productpage").await.unwrap();
    assert_eq!((code, body.as_str()), (403, "RBAC: access denied"));
    assert_eq!(
        (f.metrics.shadow_allowed(), f.metrics.shadow_denied()),
        shadow
    );
}

#[tokio::test]
async fn peer_authentication_edit_from_permissive_to_strict_refuses_plaintext() {
    let f = start(&peer_auth("PERMISSIVE")).await;
    // PERMISSIVE: the same port serves plaintext and mTLS (the ClientHello is sniffed).
    assert_eq!(
        plaintext_get(&f).await,
        Ok((200, "hello plaintext".to_owned()))
    );
    assert_eq!(
        mtls_get(&f, "ratings").await,
        Ok((
            200,
            "hello spiffe://cluster.local/ns/default/sa/ratings".to_owned()
        ))
    );
    let ServingStatus::Serving(l) = f.status.borrow().clone() else {
        panic!("not serving")
    };
    let mesh::core::model::ListenerKind::Server(s) = &l.kind else {
        panic!("not a server listener")
    };
    assert_eq!(s.filter_chains.len(), 2, "tls and raw_buffer chains");

    // An idle plaintext keep-alive connection, open across the change.
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", f.addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(kept.send_request(req).await.unwrap().status(), 200);

    std::fs::write(f.dir.path().join("security.yaml"), peer_auth("STRICT")).unwrap();
    // The chains changed: the old connection is drained (closed once idle).
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the old plaintext connection is drained")
        .unwrap()
        .unwrap();
    assert!(kept.is_closed());
    eventually("plaintext is refused", || async {
        plaintext_get(&f).await.is_err()
    })
    .await;
    assert_eq!(mtls_get(&f, "ratings").await.map(|r| r.0), Ok(200));

    // And back: plaintext is served again, no restart.
    std::fs::write(f.dir.path().join("security.yaml"), peer_auth("PERMISSIVE")).unwrap();
    eventually("plaintext is served again", || async {
        plaintext_get(&f).await.map(|r| r.0) == Ok(200)
    })
    .await;
}

#[tokio::test]
async fn not_serving_until_the_listener_exists() {
    // A listener name nobody serves: connections are accepted and closed.
    let f = start(&peer_auth("PERMISSIVE")).await;
    let port = free_port();
    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "ghost".into(),
        namespace: "default".into(),
        service_account: "ghost".into(),
        ..Default::default()
    };
    let uri = format!("http://{}", f.cp.xds_addr());
    let bootstrap = Bootstrap::istio_proxyless(node, &uri);
    let xds = XdsClient::new(
        XdsClientConfig {
            node: bootstrap.node_proto(),
            resource_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server =
        InboundServer::from_bootstrap(xds, identity(&f.cp, "ghost"), &bootstrap, addr).unwrap();
    let status = server.status();
    tokio::spawn(server.serve(axum::Router::new().route("/", get(|| async { "no" }))));
    // The control plane has no such listener: the server keeps not serving.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        matches!(&*status.borrow(), ServingStatus::NotServing(r) if r.contains("waiting for")),
        "{:?}",
        *status.borrow()
    );
    let ghost = Fixture {
        cp: f.cp,
        dir: f.dir,
        addr,
        status,
        metrics: f.metrics,
        reached: f.reached,
        _stop: f._stop,
        served: f.served,
    };
    assert!(plaintext_get(&ghost).await.is_err(), "not serving");
}

#[tokio::test]
async fn grpc_callers_over_http2_get_permission_denied() {
    let f = start(&format!(
        "{}---\n{}",
        peer_auth("STRICT"),
        allow_only("productpage")
    ))
    .await;
    let call = |sa: &'static str| {
        let f = &f;
        async move {
            let connector = MeshConnector::new(identity(&f.cp, sa), ClientSettings::default());
            let uri: http::Uri = format!("https://{}/", f.addr).parse().unwrap();
            let stream = connector.connect(&uri).await.unwrap();
            assert!(stream.is_h2(), "ALPN picks HTTP/2");
            let (mut send, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                TokioIo::new(stream.into_inner()),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            let req = http::Request::post(format!("http://{}/", f.addr))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            (
                resp.status().as_u16(),
                resp.headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_owned()),
            )
        }
    };
    // Denied: a trailers-only gRPC response, PERMISSION_DENIED (7).
    assert_eq!(call("ratings").await, (200, Some("7".to_owned())));
    // Allowed: the app's own answer (axum's POST on a GET route: 405, no grpc-status).
    assert_eq!(call("productpage").await, (405, None));
}

/// `Mesh::serve` is the control-plane-configured server: the PeerAuthentication mode and
/// the AuthorizationPolicies come from the embedded control plane's directory, and edits
/// apply without a restart.
#[tokio::test]
async fn mesh_serve_follows_peer_authentication_and_authorization_edits() {
    let f = start_with(
        &format!("{}---\n{}", peer_auth("STRICT"), allow_only("productpage")),
        Server::MeshServe,
    )
    .await;
    assert_eq!(mtls_get(&f, "productpage").await.map(|r| r.0), Ok(200));
    let denied = f.metrics.denied();
    assert_eq!(
        mtls_get(&f, "ratings").await,
        Ok((403, "RBAC: access denied".into()))
    );
    assert_eq!(
        f.metrics.denied(),
        denied + 1,
        "counted in the builder's metrics"
    );
    assert!(plaintext_get(&f).await.is_err(), "STRICT refuses plaintext");

    std::fs::write(
        f.dir.path().join("security.yaml"),
        format!("{}---\n{}", peer_auth("PERMISSIVE"), allow_only("ratings")),
    )
    .unwrap();
    eventually(
        "ratings allowed, productpage denied, plaintext served",
        || async {
            mtls_get(&f, "ratings").await.map(|r| r.0) == Ok(200)
            && mtls_get(&f, "productpage").await.map(|r| r.0) == Ok(403)
            // PERMISSIVE serves plaintext; the policy still wants a principal.
            && plaintext_get(&f).await.map(|r| r.0) == Ok(403)
        },
    )
    .await;

    std::fs::write(f.dir.path().join("security.yaml"), peer_auth("PERMISSIVE")).unwrap();
    eventually("no policy: plaintext allowed", || async {
        plaintext_get(&f).await == Ok((200, "hello plaintext".into()))
    })
    .await;
}

/// Until the control plane answers, `Mesh::serve` accepts and closes every connection:
/// no caller, mTLS or plaintext, reaches the app.
#[tokio::test]
async fn mesh_serve_fails_closed_until_the_control_plane_answers() {
    let ca = mesh::tls::dev_ca::DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let id = |sa: &str| {
        let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
            .parse()
            .unwrap();
        IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap()
    };
    // An xDS server that never answers: a port nobody listens on.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let node = IstioNode {
        ip: "127.0.0.1".parse().unwrap(),
        pod_name: "web".into(),
        namespace: "default".into(),
        service_account: "web".into(),
        ..Default::default()
    };
    let mesh = Mesh::builder()
        .identity_store(id("web"))
        .bootstrap(Bootstrap::istio_proxyless(node, &dead))
        .build()
        .unwrap();
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = mesh.inbound_server(addr).unwrap();
    assert_eq!(
        server.listener_name(),
        format!("xds.istio.io/grpc/lds/inbound/127.0.0.1:{port}")
    );
    let app = axum::Router::new().route("/", get(|| async { "reached the app" }));
    tokio::spawn(async move { mesh.serve(addr, app).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mtls = probe_get(&id("productpage"), addr).await;
    assert!(mtls.is_err(), "mTLS caller refused: {mtls:?}");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let plain = http_get(TokioIo::new(tcp), addr).await;
    assert!(plain.is_err(), "plaintext caller refused: {plain:?}");
}

/// `Mesh::serve_fixed` has no HCM: Istio's `BASE` by default, `NONE` when the builder says.
#[tokio::test]
async fn serve_fixed_normalizes_paths_with_base_unless_told_otherwise() {
    use mesh::core::config::StaticSource;
    use mesh::core::path::PathNormalization;
    use mesh::tls::server::PeerAuthMode;
    for (normalization, seen) in [
        (None, "path /a/b"),
        (Some(PathNormalization::NONE), "path /x/../a/%62"),
    ] {
        let mut builder = Mesh::builder()
            .identity_store(IdentityStore::new())
            .config_source(StaticSource::new(Default::default()));
        if let Some(n) = normalization {
            builder = builder.fixed_path_normalization(n);
        }
        let mesh = builder.build().unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let app =
            axum::Router::new().fallback(|uri: http::Uri| async move { format!("path {uri}") });
        tokio::spawn(async move {
            mesh.serve_fixed(addr, PeerAuthMode::Disable, app, std::future::pending())
                .await
        });
        let get = || async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            http_get_path(TokioIo::new(tcp), addr, "/x/../a/%62").await
        };
        eventually("serve_fixed serves", || async { get().await.is_ok() }).await;
        assert_eq!(get().await.unwrap(), (200, seen.to_owned()));
    }
}

/// One request of [`authorization_fields_act_on_requests`]: caller, method, path, `host`
/// header (`None`: the server's address), an `x-team` header, and the status expected.
type Call = (
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    u16,
);

/// Sends `call` over mTLS as its caller.
async fn mtls_call(f: &Fixture, call: &Call) -> u16 {
    let (sa, method, path, host, team, _) = *call;
    let connector = MeshConnector::new(identity(&f.cp, sa), ClientSettings::default());
    let uri: http::Uri = format!("https://{}/", f.addr).parse().unwrap();
    let stream = connector.connect(&uri).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream.into_inner()))
        .await
        .unwrap();
    tokio::spawn(conn);
    let addr = f.addr.to_string();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host.unwrap_or(&addr));
    if let Some(team) = team {
        req = req.header("x-team", team);
    }
    let resp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Each `from`, `to` and `when` field of an ALLOW rule, on requests to a server configured
/// from the YAML: one request the rule admits (200) and one it does not (403), so a field
/// the generator dropped (an empty rule admits everything) fails its row.
#[tokio::test]
async fn authorization_fields_act_on_requests() {
    let rows: [(&str, &[Call]); 15] = [
        (
            "from: [{source: {notPrincipals: [cluster.local/ns/default/sa/ratings]}}]",
            &[
                ("reviews", "GET", "/", None, None, 200),
                ("ratings", "GET", "/", None, None, 403),
            ],
        ),
        (
            "from: [{source: {namespaces: [default]}}]",
            &[("reviews", "GET", "/", None, None, 200)],
        ),
        (
            "from: [{source: {namespaces: [other]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "from: [{source: {notNamespaces: [default]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "from: [{source: {ipBlocks: [10.0.0.0/8]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "from: [{source: {ipBlocks: [127.0.0.1/32]}}]",
            &[("reviews", "GET", "/", None, None, 200)],
        ),
        (
            "from: [{source: {notIpBlocks: [127.0.0.0/8]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "to: [{operation: {hosts: [web.example]}}]",
            &[
                ("reviews", "GET", "/", Some("web.example"), None, 200),
                ("reviews", "GET", "/", Some("other.example"), None, 403),
            ],
        ),
        (
            "to: [{operation: {notHosts: [web.example]}}]",
            &[
                ("reviews", "GET", "/", Some("web.example"), None, 403),
                ("reviews", "GET", "/", Some("other.example"), None, 200),
            ],
        ),
        (
            "to: [{operation: {ports: [\"$PORT\"]}}]",
            &[("reviews", "GET", "/", None, None, 200)],
        ),
        (
            "to: [{operation: {ports: [\"1\"]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "to: [{operation: {notPorts: [\"$PORT\"]}}]",
            &[("reviews", "GET", "/", None, None, 403)],
        ),
        (
            "to: [{operation: {methods: [GET], notPaths: [/admin*]}}]",
            &[
                ("reviews", "GET", "/", None, None, 200),
                ("reviews", "POST", "/", None, None, 403),
                ("reviews", "GET", "/admin", None, None, 403),
            ],
        ),
        (
            "to: [{operation: {notMethods: [POST]}}]",
            &[
                ("reviews", "GET", "/", None, None, 200),
                ("reviews", "POST", "/", None, None, 403),
            ],
        ),
        (
            "when: [{key: \"request.headers[x-team]\", values: [a, b], notValues: [b]}]",
            &[
                ("reviews", "GET", "/", None, Some("a"), 200),
                ("reviews", "GET", "/", None, Some("b"), 403),
                ("reviews", "GET", "/", None, Some("c"), 403),
            ],
        ),
    ];
    for (rule, calls) in rows {
        let policy = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: web, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  action: ALLOW\n  rules: [{{{rule}}}]\n"
        );
        let f = start(&format!("{}---\n{policy}", peer_auth("STRICT"))).await;
        for call in calls {
            assert_eq!(mtls_call(&f, call).await, call.5, "{rule}: {call:?}");
        }
    }
}

/// A workload PeerAuthentication for `app` (its `spec` fields in flow YAML after `selector`).
fn workload_peer_auth(app: &str, rest: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {app}, namespace: default}}\nspec: {{selector: {{matchLabels: {{app: {app}}}}}, {rest}}}\n"
    )
}

/// PeerAuthentication's selector and portLevelMtls on connections: (namespace mode, the
/// workload policy, whether plaintext is served). mTLS callers are served in every row.
#[tokio::test]
async fn peer_authentication_selector_and_port_level_mtls_act() {
    let rows = [
        // The selector picks the workload: its mode wins over the namespace's.
        (
            "STRICT",
            workload_peer_auth("web", "mtls: {mode: PERMISSIVE}"),
            true,
        ),
        // A selector for another workload leaves the namespace's mode.
        (
            "STRICT",
            workload_peer_auth("other", "mtls: {mode: PERMISSIVE}"),
            false,
        ),
        // The port's mode wins over the workload's and the namespace's.
        (
            "STRICT",
            workload_peer_auth("web", "portLevelMtls: {\"$PORT\": {mode: PERMISSIVE}}"),
            true,
        ),
        (
            "PERMISSIVE",
            workload_peer_auth(
                "web",
                "mtls: {mode: PERMISSIVE}, portLevelMtls: {\"$PORT\": {mode: STRICT}}",
            ),
            false,
        ),
        // Another port's setting leaves this one's.
        (
            "STRICT",
            workload_peer_auth("web", "portLevelMtls: {\"1\": {mode: PERMISSIVE}}"),
            false,
        ),
    ];
    for (namespace, workload, plaintext) in rows {
        let f = start(&format!("{}---\n{workload}", peer_auth(namespace))).await;
        let what = format!("{namespace} + {workload}");
        assert_eq!(plaintext_get(&f).await.is_ok(), plaintext, "{what}");
        assert_eq!(
            mtls_get(&f, "reviews").await.map(|r| r.0),
            Ok(200),
            "{what}"
        );
    }
}

/// The guide's `axum::serve(mesh.listener(addr).await?, mesh.app(app))`: the control
/// plane's mTLS mode and AuthorizationPolicies apply per connection and request, edits
/// included, and handlers see the caller through `PeerIdentity` and `ConnectInfo`.
#[tokio::test]
async fn axum_serve_on_the_mesh_listener_follows_peer_authentication_and_policies() {
    let f = start_with(
        &format!("{}---\n{}", peer_auth("STRICT"), allow_only("productpage")),
        Server::AxumServe,
    )
    .await;
    assert_eq!(
        mtls_get(&f, "productpage").await,
        Ok((
            200,
            "hello spiffe://cluster.local/ns/default/sa/productpage".into()
        ))
    );
    assert_eq!(
        mtls_get_path(&f, "productpage", "/conn").await,
        Ok((
            200,
            format!(
                "127.0.0.1 {} spiffe://cluster.local/ns/default/sa/productpage",
                f.addr
            )
        ))
    );
    let (denied, reached) = (f.metrics.denied(), f.reached.load(Ordering::SeqCst));
    assert_eq!(
        mtls_get(&f, "ratings").await,
        Ok((403, "RBAC: access denied".into()))
    );
    assert_eq!(f.metrics.denied(), denied + 1, "counted");
    assert_eq!(
        f.reached.load(Ordering::SeqCst),
        reached,
        "denied before the app"
    );
    assert!(plaintext_get(&f).await.is_err(), "STRICT refuses plaintext");

    std::fs::write(f.dir.path().join("security.yaml"), peer_auth("PERMISSIVE")).unwrap();
    eventually("PERMISSIVE and no policy: plaintext served", || async {
        plaintext_get(&f).await == Ok((200, "hello plaintext".into()))
    })
    .await;
}

/// Serving the bare router on the mesh listener would skip the per-request policies: every
/// connection is closed before the app is reached instead.
#[tokio::test]
async fn axum_serve_without_mesh_app_fails_closed() {
    let f = start_with(&peer_auth("PERMISSIVE"), Server::AxumBare).await;
    let mtls = mtls_get(&f, "productpage").await;
    assert!(mtls.is_err(), "mTLS caller refused: {mtls:?}");
    let plain = plaintext_get(&f).await;
    assert!(plain.is_err(), "plaintext caller refused: {plain:?}");
    assert_eq!(
        f.reached.load(Ordering::SeqCst),
        0,
        "the app was never reached"
    );
}

/// Graceful shutdown under `axum::serve`: slow requests in flight when the signal comes
/// all complete with 200, new connections are refused from then on, and `serve` returns
/// once the last one is answered.
#[tokio::test]
async fn axum_serve_graceful_shutdown_loses_no_request_in_flight() {
    let f = start_with(&peer_auth("PERMISSIVE"), Server::AxumServe).await;
    let before = f.reached.load(Ordering::SeqCst);
    let in_flight: Vec<_> = ["productpage", "reviews", "ratings", "details", "probe"]
        .into_iter()
        .map(|sa| {
            let id = identity(&f.cp, sa);
            let addr = f.addr;
            tokio::spawn(async move {
                let connector = MeshConnector::new(id, ClientSettings::default());
                let uri: http::Uri = format!("https://{addr}/").parse().unwrap();
                let stream = connector.connect(&uri).await.map_err(|e| e.to_string())?;
                http_get_path(TokioIo::new(stream.into_inner()), addr, "/slow").await
            })
        })
        .collect();
    eventually("every slow request reached the app", || async {
        f.reached.load(Ordering::SeqCst) == before + in_flight.len()
    })
    .await;
    let started = std::time::Instant::now();
    drop(f._stop);
    // New connections are refused while the slow ones are still running.
    let mut refused = false;
    for _ in 0..20 {
        if tokio::net::TcpStream::connect(f.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "new connections refused after shutdown started");
    assert!(
        started.elapsed() < SLOW,
        "refused before the slow requests ended"
    );
    for r in in_flight {
        assert_eq!(r.await.unwrap(), Ok((200, "slow done".into())));
    }
    tokio::time::timeout(Duration::from_secs(5), f.served)
        .await
        .expect("serve returns once drained")
        .unwrap();
}
