//! Interop with a real Envoy 1.40 (`MESH_ENVOY_BIN`), both directions, with Istio-style
//! SPIFFE certificates from the dev CA:
//! - our client -> an Envoy listener that requires client certificates and matches our URI
//!   SAN exactly; a client with another identity is refused by Envoy;
//! - Envoy upstream TLS (client certificate + SAN match) -> our server, which sees Envoy's
//!   SPIFFE ID as `PeerIdentity`; an impostor server and a server that does not accept
//!   Envoy's identity both fail.

mod envoy_support;
mod mtls_support;

use std::net::SocketAddr;

use bytes::Bytes;
use envoy_support::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use mesh_test_support::EnvoyProcess;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::svid::Rule;
use mesh_tls::verify::PeerPolicy;
use mesh_tls::{IdentityStore, PeerIdentity, TlsError};
use mtls_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_to_envoy_listener_requiring_client_certs() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let ca = DevCa::new(td()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, root) = write_envoy_certs(dir.path(), &ca.issue(&envoy_id(), HOUR).unwrap());
    let port = free_port();
    let config = format!(
        r#"
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  listeners:
  - name: mtls_in
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true{tls}
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: mtls_in
          codec_type: AUTO
          route_config:
            response_headers_to_add:
            - header: {{key: x-peer-uri-san, value: "%DOWNSTREAM_PEER_URI_SAN%"}}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{prefix: "/"}}
                direct_response: {{status: 200, body: {{inline_string: "hello from envoy"}}}}{ROUTER}
"#,
        tls = tls_context(&chain, &key, &root, id("app").as_str()),
    );
    let _envoy = EnvoyProcess::start_live(&bin, dir.path(), &config);
    let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();

    // Our client, identity sa/app, expecting sa/envoy: accepted both ways.
    let app = IdentityStore::from_credentials(ca.issue(&id("app"), HOUR).unwrap()).unwrap();
    let client = http_client(connector(&app, PeerPolicy::identities([envoy_id()])));
    for _ in 0..3 {
        let resp = client.get(uri.clone()).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.extensions().get::<PeerIdentity>().map(|p| p.0.clone()),
            Some(envoy_id()),
            "the connection reports Envoy's SPIFFE ID"
        );
        assert_eq!(resp.headers()["x-peer-uri-san"], id("app").as_str());
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello from envoy");
    }

    // A client with another identity from the same CA: Envoy's SAN match refuses it.
    let intruder =
        IdentityStore::from_credentials(ca.issue(&id("intruder"), HOUR).unwrap()).unwrap();
    let client = http_client(connector(&intruder, PeerPolicy::identities([envoy_id()])));
    let err = client.get(uri.clone()).await.unwrap_err();
    let msg = error_chain(&err);
    // With TLS 1.3 the client finishes its side before Envoy checks the client certificate,
    // so the refusal can also surface as a connection that closed before it was ready.
    assert!(
        msg.contains("alert")
            || msg.contains("reset")
            || msg.contains("closed")
            || msg.contains("not ready"),
        "Envoy must refuse the handshake: {msg}"
    );

    // Our client expecting another server identity refuses Envoy, naming the rule.
    let picky = connector(&app, PeerPolicy::identities([id("reviews")]));
    let err = picky.connect(&uri).await.unwrap_err();
    assert!(
        matches!(&err, TlsError::Rejected(e) if e.rule() == Rule::UnexpectedIdentity),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("sa/envoy is not an expected identity"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_upstream_tls_to_our_server() {
    let bin = mesh_test_support::require_peer!("MESH_ENVOY_BIN");
    let ca = DevCa::new(td()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (chain, key, root) = write_envoy_certs(dir.path(), &ca.issue(&envoy_id(), HOUR).unwrap());

    // Three servers of ours: the real sa/app; an impostor (sa/impostor) Envoy must refuse;
    // and sa/app that only accepts sa/someone-else, so it refuses Envoy.
    let store = |sa| IdentityStore::from_credentials(ca.issue(&id(sa), HOUR).unwrap()).unwrap();
    let good = acceptor(&store("app"), PeerPolicy::default());
    let good_addr = spawn_server(good.clone()).await;
    let impostor_addr = spawn_server(acceptor(&store("impostor"), PeerPolicy::default())).await;
    let picky = acceptor(&store("app"), PeerPolicy::identities([id("someone-else")]));
    let picky_addr = spawn_server(picky.clone()).await;

    let port = free_port();
    let tls = tls_context(&chain, &key, &root, id("app").as_str());
    let cluster = |name: &str, addr: SocketAddr| {
        format!(
            r#"
  - name: {name}
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: app.default.svc.cluster.local{tls}"#,
            port = addr.port(),
            tls = tls.replace("\n          ", "\n        "),
        )
    };
    let route = |prefix: &str, cluster: &str| {
        format!(
            r#"
              - match: {{prefix: "{prefix}"}}
                route: {{cluster: {cluster}, prefix_rewrite: "/"}}"#
        )
    };
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
              routes:{r1}{r2}{r3}{ROUTER}
  clusters:{c1}{c2}{c3}
"#,
        r1 = route("/good", "good"),
        r2 = route("/impostor", "impostor"),
        r3 = route("/picky", "picky"),
        c1 = cluster("good", good_addr),
        c2 = cluster("impostor", impostor_addr),
        c3 = cluster("picky", picky_addr),
    );
    let _envoy = EnvoyProcess::start_live(&bin, dir.path(), &config);

    let plain: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let get = |path: &str| {
        let plain = plain.clone();
        let uri: http::Uri = format!("http://127.0.0.1:{port}{path}").parse().unwrap();
        async move {
            let resp = plain.get(uri).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };

    // Envoy presents sa/envoy; our server echoes the PeerIdentity it saw.
    for _ in 0..3 {
        let (status, body) = get("/good").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, envoy_id().as_str());
    }
    assert!(good.stats().accepted() >= 1);

    // The impostor's certificate does not match Envoy's SAN matcher.
    let (status, body) = get("/impostor").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("TLS") || body.contains("connection"),
        "{body}"
    );

    // Our server does not accept Envoy's identity.
    let (status, body) = get("/picky").await;
    assert_eq!(status, 503, "{body}");
    assert!(picky.stats().rejected(Rule::UnexpectedIdentity) >= 1);
    assert_eq!(picky.stats().accepted(), 0);
}
