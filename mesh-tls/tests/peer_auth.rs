//! PeerAuthentication modes through `serve_peer_auth` on real sockets: PERMISSIVE serves a
//! plaintext client (HTTP/1.1 and HTTP/2) and an mTLS client on the same port, STRICT
//! refuses plaintext, DISABLE refuses mTLS, per-port overrides pick the mode by local port;
//! and Envoy 1.40 (`MESH_ENVOY_BIN`) as the client, with and without upstream mTLS, meets
//! the same three modes.

mod envoy_support;
mod mtls_support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use envoy_support::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_test_support::EnvoyProcess;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{ConnectionAddrs, MeshAcceptor, PeerAuthMode, PeerAuthentication};
use mesh_tls::svid::Rule;
use mesh_tls::verify::PeerPolicy;
use mesh_tls::{IdentityStore, PeerIdentity};
use mtls_support::*;
use tokio::net::TcpListener;

/// Answers with the caller's SPIFFE ID, or `plaintext`; 500 if the connection's
/// addresses are missing from the request.
async fn whoami(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ext = req.extensions();
    let body = match (ext.get::<ConnectionAddrs>(), ext.get::<PeerIdentity>()) {
        (None, _) => {
            let mut res = Response::new(Full::from("no ConnectionAddrs"));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(res);
        }
        (Some(_), Some(peer)) => peer.to_string(),
        (Some(_), None) => "plaintext".to_owned(),
    };
    Ok(Response::new(Full::from(body)))
}

/// Our server (sa/app) and a client identity (sa/client), both from one dev CA.
struct Mesh {
    server: MeshAcceptor,
    client: IdentityStore,
}

fn mesh(ca: &DevCa) -> Mesh {
    let store = |sa| IdentityStore::from_credentials(ca.issue(&id(sa), HOUR).unwrap()).unwrap();
    Mesh {
        server: acceptor(&store("app"), PeerPolicy::default()),
        client: store("client"),
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn spawn(listener: TcpListener, acceptor: &MeshAcceptor, peer_auth: PeerAuthentication) {
    tokio::spawn(mesh_tls::server::serve_peer_auth(
        listener,
        acceptor.clone(),
        peer_auth,
        tower::service_fn(whoami),
        std::future::pending(),
    ));
}

async fn serve_in(mode: PeerAuthMode, acceptor: &MeshAcceptor) -> SocketAddr {
    let (listener, addr) = bind().await;
    spawn(listener, acceptor, PeerAuthentication::new(mode));
    addr
}

/// A plaintext GET `/`: the body, or the error.
async fn plaintext_get(addr: SocketAddr, http2: bool) -> Result<String, String> {
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let resp = client.get(uri).await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if status != StatusCode::OK {
        return Err(format!("status {status}: {body}"));
    }
    Ok(body)
}

async fn mtls_get(client: &IdentityStore, addr: SocketAddr) -> Result<String, String> {
    let client = http_client(connector(client, PeerPolicy::identities([id("app")])));
    get_whoami(&client, addr).await.map(|(_, body)| body)
}

#[tokio::test]
async fn permissive_serves_plaintext_and_mtls_on_the_same_port() {
    let ca = DevCa::new(td()).unwrap();
    let m = mesh(&ca);
    let addr = serve_in(PeerAuthMode::Permissive, &m.server).await;

    assert_eq!(plaintext_get(addr, false).await.unwrap(), "plaintext");
    assert_eq!(
        plaintext_get(addr, true).await.unwrap(),
        "plaintext",
        "HTTP/2 preface"
    );
    assert_eq!(
        mtls_get(&m.client, addr).await.unwrap(),
        id("client").as_str()
    );
    assert_eq!(m.server.stats().accepted(), 1);

    // A TLS client whose certificate another CA signed is still refused: PERMISSIVE is
    // not "any TLS".
    let stranger = DevCa::new(td()).unwrap().issue(&id("x"), HOUR).unwrap();
    let roots = ca.issue(&id("client"), HOUR).unwrap().roots.clone();
    raw_client_handshake(&stranger, &roots, addr).await;
    assert_eq!(m.server.stats().rejected(Rule::UntrustedChain), 1);
    assert_eq!(m.server.stats().accepted(), 1);
}

#[tokio::test]
async fn strict_refuses_plaintext() {
    let ca = DevCa::new(td()).unwrap();
    let m = mesh(&ca);
    let addr = serve_in(PeerAuthMode::Strict, &m.server).await;

    // The server answers the plaintext request with a TLS alert and closes.
    plaintext_get(addr, false).await.unwrap_err();
    plaintext_get(addr, true).await.unwrap_err();
    assert_eq!(
        mtls_get(&m.client, addr).await.unwrap(),
        id("client").as_str()
    );
}

#[tokio::test]
async fn disable_serves_plaintext_only() {
    let ca = DevCa::new(td()).unwrap();
    let m = mesh(&ca);
    let addr = serve_in(PeerAuthMode::Disable, &m.server).await;

    assert_eq!(plaintext_get(addr, false).await.unwrap(), "plaintext");
    mtls_get(&m.client, addr).await.unwrap_err();
    assert_eq!(
        m.server.stats().accepted(),
        0,
        "no handshake in DISABLE mode"
    );
}

#[tokio::test]
async fn port_level_modes_override_the_workload_mode() {
    let ca = DevCa::new(td()).unwrap();
    let m = mesh(&ca);
    let (strict_l, strict) = bind().await;
    let (disable_l, disable) = bind().await;
    let (permissive_l, permissive) = bind().await;
    let peer_auth = PeerAuthentication::new(PeerAuthMode::Strict)
        .with_port(disable.port(), PeerAuthMode::Disable)
        .with_port(permissive.port(), PeerAuthMode::Permissive);
    for l in [strict_l, disable_l, permissive_l] {
        spawn(l, &m.server, peer_auth.clone());
    }

    plaintext_get(strict, false).await.unwrap_err();
    assert_eq!(
        mtls_get(&m.client, strict).await.unwrap(),
        id("client").as_str()
    );

    assert_eq!(plaintext_get(disable, false).await.unwrap(), "plaintext");
    mtls_get(&m.client, disable).await.unwrap_err();

    assert_eq!(plaintext_get(permissive, false).await.unwrap(), "plaintext");
    assert_eq!(
        mtls_get(&m.client, permissive).await.unwrap(),
        id("client").as_str()
    );
}

/// Envoy listens in plaintext and forwards `/<mode>/tls` with upstream mTLS (its own
/// SPIFFE certificate, our server's ID required) and `/<mode>/plain` without TLS, to our
/// server in each mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_as_client_with_and_without_mtls() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let ca = DevCa::new(td()).unwrap();
    let m = mesh(&ca);
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, root) = write_envoy_certs(dir.path(), &ca.issue(&envoy_id(), HOUR).unwrap());
    let tls =
        tls_context(&chain, &key, &root, id("app").as_str()).replace("\n          ", "\n        ");

    let modes = [
        ("permissive", PeerAuthMode::Permissive),
        ("strict", PeerAuthMode::Strict),
        ("disable", PeerAuthMode::Disable),
    ];
    let mut routes = String::new();
    let mut clusters = String::new();
    for (name, mode) in modes {
        let addr = serve_in(mode, &m.server).await;
        for (kind, socket) in [
            (
                "tls",
                format!(
                    r#"
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: app.default.svc.cluster.local{tls}"#
                ),
            ),
            ("plain", String::new()),
        ] {
            routes.push_str(&format!(
                r#"
              - match: {{prefix: "/{name}/{kind}"}}
                route: {{cluster: {name}_{kind}, prefix_rewrite: "/"}}"#
            ));
            clusters.push_str(&format!(
                r#"
  - name: {name}_{kind}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}_{kind}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}{socket}"#,
                port = addr.port()
            ));
        }
    }
    let port = free_port();
    let config = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: plain_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: plain_in
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:{routes}{ROUTER}
  clusters:{clusters}
"#
    );
    let envoy = EnvoyProcess::start_live(&bin, dir.path(), &config);
    let envoy_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let get = |path: &'static str| async move {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let uri: http::Uri = format!("http://{envoy_addr}{path}").parse().unwrap();
        let resp = client.get(uri).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };

    // `None`: Envoy cannot talk to our server and answers 502 (our TLS alert is not
    // HTTP) or 503 (its TLS handshake failed).
    let envoy_spiffe = envoy_id().to_string();
    let cases: [(&str, Option<&str>); 6] = [
        ("/permissive/tls", Some(&envoy_spiffe)),
        ("/permissive/plain", Some("plaintext")),
        ("/strict/tls", Some(&envoy_spiffe)),
        ("/strict/plain", None),
        ("/disable/tls", None),
        ("/disable/plain", Some("plaintext")),
    ];
    for (path, want) in cases {
        let (status, body) = get(path).await;
        match want {
            Some(want) => {
                assert_eq!(status, StatusCode::OK, "{path}: {body}\n{}", envoy.log());
                assert_eq!(body, want, "{path}");
            }
            None => assert!(
                status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE,
                "{path}: {status} {body}"
            ),
        }
    }
}
