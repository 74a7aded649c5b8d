//! HBONE between our crate and a real Envoy 1.40, both ways, with Envoy configured as istiod
//! configures its own HBONE pieces (pilot/pkg/networking/core: `buildConnectOriginate`,
//! `buildConnectTerminateListener`, `buildInboundHBONEListeners`):
//!
//! - Envoy originates: a `connect_originate` cluster (HTTP/2 with `allow_connect`, istiod's
//!   window sizes and idle timeout, TLS 1.3 with our root and a URI SAN match) under a TCP
//!   proxy with a `tunneling_config`, to our `HboneServer`: HTTP and TCP inside, and an
//!   AuthorizationPolicy deny that Envoy sees as the tunnel refused.
//! - Envoy terminates: a `connect_terminate` listener (mTLS requiring a client certificate,
//!   HCM with the CONNECT upgrade, `allow_connect`, 100 streams) routing CONNECT to the
//!   `main_internal` internal listener that proxies to the app; our `HboneClient` dials it.
//!
//! Certificates for both sides come from one dev CA (SPIFFE IDs of `cluster.local`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router, routing::get};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction, principal};
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use mesh_core::model::{Permission, RbacPolicy};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_hbone::{HboneClient, HboneServer, HboneTarget, Refusal, TunnelIo};
use mesh_test_support::EnvoyProcess;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::{Credentials, IdentityStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);
const HTTP_PORT: u16 = 9080;
const TCP_PORT: u16 = 9000;
const DENIED_PORT: u16 = 9001;

fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&TrustDomain::new("cluster.local").unwrap(), "default", sa).unwrap()
}

use mesh_test_support::free_port;

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Envoy's chain, key and the root, as files; the `common_tls_context` istiod builds for
/// HBONE (`buildCommonConnectTLSContext`): ALPN h2, TLS 1.3, the peer's URI SAN matched.
fn tls_context(dir: &Path, creds: &Credentials, peer_san: &str) -> String {
    let chain: PathBuf = dir.join("chain.pem");
    let key = dir.join("key.pem");
    let root = dir.join("root.pem");
    std::fs::write(
        &chain,
        creds
            .chain
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect::<String>(),
    )
    .unwrap();
    let rustls_pki_types::PrivateKeyDer::Pkcs8(k) = &creds.key else {
        panic!("dev CA keys are PKCS#8")
    };
    std::fs::write(&key, pem("PRIVATE KEY", k.secret_pkcs8_der())).unwrap();
    std::fs::write(
        &root,
        creds
            .roots
            .iter()
            .map(|c| pem("CERTIFICATE", c))
            .collect::<String>(),
    )
    .unwrap();
    format!(
        r#"
          common_tls_context:
            alpn_protocols: ["h2"]
            tls_params: {{tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_3}}
            tls_certificates:
            - certificate_chain: {{filename: "{chain}"}}
              private_key: {{filename: "{key}"}}
            validation_context:
              trusted_ca: {{filename: "{root}"}}
              match_typed_subject_alt_names:
              - san_type: URI
                matcher: {{prefix: "{peer_san}"}}"#,
        chain = chain.display(),
        key = key.display(),
        root = root.display(),
    )
}

/// `GET /` answers `<caller> <tunnel destination>`.
fn whoami() -> Router {
    Router::new().route(
        "/",
        get(
            |Extension(peer): Extension<PeerIdentity>,
             Extension(addrs): Extension<ConnectionAddrs>| async move {
                format!("{peer} {}", addrs.local)
            },
        ),
    )
}

async fn echo(mut io: TunnelIo, _info: mesh_hbone::TunnelInfo) {
    let (mut r, mut w) = tokio::io::split(&mut io);
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// One outbound listener of Envoy: plain TCP in, tunnelled through `connect_originate` to
/// `authority` (istiod puts `%DOWNSTREAM_LOCAL_ADDRESS%` there; the test names the target).
fn originate_listener(name: &str, port: u16, authority: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: connect_originate
          tunneling_config: {{hostname: "{authority}"}}"#
    )
}

async fn http_get(addr: SocketAddr) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut out))
        .await
        .expect("Envoy answered")
        .unwrap();
    out
}

#[tokio::test]
async fn envoy_originates_hbone_to_our_server() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Our server: whoami over HTTP, an echo over TCP, and a port the policy denies Envoy.
    let deny = AuthzPolicy::new(
        "deny-envoy-9001",
        PolicyAction::Deny,
        RbacPolicy {
            name: "deny-envoy-9001".into(),
            permissions: vec![Permission::DestinationPort(DENIED_PORT)],
            principals: vec![principal::istio("cluster.local/ns/default/sa/envoy")],
        },
    );
    let (_policies, rx) = tokio::sync::watch::channel(Arc::new(AuthzPolicies::new([deny])));
    let store = IdentityStore::from_credentials(ca.issue(&id("reviews"), HOUR).unwrap()).unwrap();
    let server = HboneServer::builder(store)
        .http(HTTP_PORT, whoami())
        .tcp(TCP_PORT, echo)
        .tcp(DENIED_PORT, echo)
        .tunnel_policies(rx)
        .build();
    let metrics = server.metrics().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));

    let tls = tls_context(
        dir.path(),
        &ca.issue(&id("envoy"), HOUR).unwrap(),
        "spiffe://cluster.local/ns/default/sa/",
    )
    // Two columns less deep: a cluster's transport socket sits higher than a listener's.
    .replace("\n  ", "\n");
    let (http_in, tcp_in, denied_in) = (free_port(), free_port(), free_port());
    // The cluster as buildConnectOriginate makes it, with a static endpoint in place of
    // ORIGINAL_DST + upstream_port_override 15008 (the test's server is on a free port).
    let config = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:{http}{tcp}{denied}
  clusters:
  - name: connect_originate
    type: STATIC
    connect_timeout: 10s
    cleanup_interval: 60s
    load_assignment:
      cluster_name: connect_originate
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {hbone_port}}}}}}}
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options: {{idle_timeout: 3600s}}
        explicit_http_config:
          http2_protocol_options:
            allow_connect: true
            initial_stream_window_size: 4194304
            initial_connection_window_size: 16777216
    transport_socket:
      name: tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext{tls}
"#,
        http = originate_listener("out_http", http_in, &format!("127.0.0.1:{HTTP_PORT}")),
        tcp = originate_listener("out_tcp", tcp_in, &format!("127.0.0.1:{TCP_PORT}")),
        denied = originate_listener("out_denied", denied_in, &format!("127.0.0.1:{DENIED_PORT}")),
        hbone_port = hbone.port(),
    );
    let envoy = EnvoyProcess::start_live(&bin, dir.path(), &config);

    // HTTP inside: our app sees Envoy's SPIFFE ID and the CONNECT authority.
    let resp = http_get(format!("127.0.0.1:{http_in}").parse().unwrap()).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}\n{}", envoy.log());
    assert!(
        resp.ends_with(&format!(
            "spiffe://cluster.local/ns/default/sa/envoy 127.0.0.1:{HTTP_PORT}"
        )),
        "{resp}"
    );

    // TCP inside.
    let mut tcp = TcpStream::connect(("127.0.0.1", tcp_in)).await.unwrap();
    tcp.write_all(b"bytes through envoy's tunnel")
        .await
        .unwrap();
    let mut buf = [0u8; 28];
    tcp.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"bytes through envoy's tunnel");
    drop(tcp);

    // Denied: our server answers the CONNECT 401; Envoy closes the downstream connection
    // without a byte and counts a failed tunnel.
    let mut tcp = TcpStream::connect(("127.0.0.1", denied_in)).await.unwrap();
    let _ = tcp.write_all(b"let me in").await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got)).await;
    assert!(
        got.is_empty(),
        "nothing comes back through a refused tunnel"
    );
    assert_eq!(metrics.refused(Refusal::denied), 1);
    let stats = envoy.get("/stats?filter=connect_originate");
    // Envoy's TCP proxy takes the non-200 answer as a failed upstream connect.
    assert!(
        stats.contains("cluster.connect_originate.upstream_cx_connect_attempts_exceeded: 1"),
        "{stats}"
    );
    // Three tunnels, one mTLS connection (TLS 1.3), as Envoy pools HBONE.
    assert!(
        stats.contains("cluster.connect_originate.upstream_cx_total: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.connect_originate.ssl.versions.TLSv1.3: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("cluster.connect_originate.upstream_rq_total: 3"),
        "{stats}"
    );
    assert_eq!(metrics.tunnels(), 2);
}

#[tokio::test]
async fn our_client_originates_hbone_to_envoy() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The app behind Envoy: plain HTTP (Envoy's inbound side hands it the tunnel's bytes).
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    let router = Router::new().route("/", get(|| async { "hello from behind envoy" }));
    tokio::spawn(async move { axum::serve(app, router).await });

    let tls = tls_context(
        dir.path(),
        &ca.issue(&id("envoy"), HOUR).unwrap(),
        "spiffe://cluster.local/ns/default/sa/",
    );
    let terminate = free_port();
    let config = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
static_resources:
  listeners:
  - name: connect_terminate
    address: {{socket_address: {{address: 127.0.0.1, port_value: {terminate}}}}}
    filter_chains:
    - name: default
      transport_socket:
        name: tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true{tls}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: connect_terminate
          stream_idle_timeout: 0s
          upgrade_configs: [{{upgrade_type: CONNECT}}]
          http2_protocol_options: {{allow_connect: true, max_concurrent_streams: 100}}
          route_config:
            virtual_hosts:
            - name: default
              domains: ["*"]
              routes:
              - match: {{connect_matcher: {{}}}}
                route:
                  cluster: main_internal
                  upgrade_configs: [{{upgrade_type: CONNECT, connect_config: {{}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  - name: main_internal
    internal_listener: {{}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: main_internal
          cluster: inbound_app
  clusters:
  - name: main_internal
    load_assignment:
      cluster_name: main_internal
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{envoy_internal_address: {{server_listener_name: main_internal}}}}}}
    transport_socket:
      name: internal_upstream
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport
        transport_socket:
          name: raw_buffer
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
  - name: inbound_app
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: inbound_app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app_port}}}}}}}
"#,
        app_port = app_addr.port(),
    );
    let envoy = EnvoyProcess::start_live(&bin, dir.path(), &config);
    let envoy_hbone: SocketAddr = format!("127.0.0.1:{terminate}").parse().unwrap();

    let store =
        IdentityStore::from_credentials(ca.issue(&id("productpage"), HOUR).unwrap()).unwrap();
    let client = HboneClient::new(store);

    // HTTP inside, through hyper-util's client over our connector.
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(client.connector(id("envoy")).hbone_port(terminate));
    let resp = http
        .get(format!("http://{app_addr}/").parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", envoy.log()));
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello from behind envoy");

    // Raw bytes inside (an HTTP/1.1 request written by hand), on the pooled connection.
    let target = HboneTarget::new(app_addr, id("envoy")).via(envoy_hbone);
    let mut stream = client.connect(&target).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.ends_with("hello from behind envoy"), "{out}");
    assert_eq!(client.connections_dialled(), 1);

    // Envoy saw CONNECT streams over one mTLS connection.
    let stats = envoy.get("/stats?filter=connect_terminate");
    assert!(
        stats.contains("http.connect_terminate.downstream_cx_http2_total: 1"),
        "{stats}"
    );
    assert!(
        stats.contains("http.connect_terminate.downstream_rq_total: 2"),
        "{stats}"
    );

    // A server that is not the expected identity is refused by our client.
    let wrong = HboneTarget::new(app_addr, id("reviews")).via(envoy_hbone);
    assert!(client.connect(&wrong).await.is_err());
}
