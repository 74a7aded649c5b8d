//! Malformed and unauthorized CONNECTs, over real sockets: each gets ztunnel's answer and
//! is counted by reason (`mesh_hbone_refused_total{reason}`).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Method, Request, StatusCode};
use mesh_authz::{AuthzPolicies, AuthzPolicy, PolicyAction, principal};
use mesh_core::TrustDomain;
use mesh_core::model::{Permission, RbacPolicy};
use mesh_hbone::{HboneClient, HboneError, HboneMetrics, HboneTarget, Refusal};
use mesh_tls::client::MeshConnector;
use mesh_tls::config::ClientSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::verify::PeerPolicy;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one request (any method and authority) on a fresh mTLS HTTP/2 connection and
/// returns the status, or the stream error as a string.
async fn raw(
    ca: &DevCa,
    hbone: SocketAddr,
    method: Method,
    uri: &str,
) -> Result<StatusCode, String> {
    let connector = MeshConnector::new(
        store(ca, "productpage"),
        ClientSettings {
            peers: PeerPolicy::identities([id("reviews")]),
            alpn: vec![b"h2".to_vec()],
            ..Default::default()
        },
    );
    let tls = connector
        .connect(&format!("https://{hbone}").parse().unwrap())
        .await
        .unwrap()
        .into_inner();
    let (mut h2, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder().method(method).uri(uri).body(()).unwrap();
    let (resp, _send) = h2.send_request(req, true).map_err(|e| e.to_string())?;
    resp.await.map(|r| r.status()).map_err(|e| e.to_string())
}

fn deny_productpage_on(port: u16) -> AuthzPolicies {
    AuthzPolicies::new([AuthzPolicy::new(
        "deny-productpage",
        PolicyAction::Deny,
        RbacPolicy {
            name: "deny-productpage".into(),
            permissions: vec![Permission::DestinationPort(port)],
            principals: vec![principal::istio("cluster.local/ns/default/sa/productpage")],
        },
    )])
}

#[tokio::test]
async fn malformed_connects_are_refused_and_counted() {
    let ca = DevCa::new(td()).unwrap();
    let (_policies, rx) = tokio::sync::watch::channel(Arc::new(deny_productpage_on(TCP_PORT)));
    let metrics = HboneMetrics::default();
    let server = builder(store(&ca, "reviews"))
        .tunnel_policies(rx)
        .metrics(metrics.clone())
        .build();
    let hbone = spawn(server).await;

    let cases = [
        (
            Method::GET,
            format!("https://127.0.0.1:{HTTP_PORT}/"),
            StatusCode::METHOD_NOT_ALLOWED,
            Refusal::method,
        ),
        (
            Method::CONNECT,
            "127.0.0.1".to_string(),
            StatusCode::BAD_REQUEST,
            Refusal::authority,
        ),
        (
            Method::CONNECT,
            "127.0.0.1:0".to_string(),
            StatusCode::BAD_REQUEST,
            Refusal::authority,
        ),
        (
            Method::CONNECT,
            "reviews.default:9080".to_string(),
            StatusCode::BAD_REQUEST,
            Refusal::authority,
        ),
        (
            Method::CONNECT,
            format!("10.9.8.7:{HTTP_PORT}"),
            StatusCode::BAD_REQUEST,
            Refusal::not_local,
        ),
        (
            Method::CONNECT,
            "127.0.0.1:7777".to_string(),
            StatusCode::SERVICE_UNAVAILABLE,
            Refusal::no_handler,
        ),
        (
            Method::CONNECT,
            format!("127.0.0.1:{TCP_PORT}"),
            StatusCode::UNAUTHORIZED,
            Refusal::denied,
        ),
    ];
    for (method, uri, status, reason) in cases {
        let before = metrics.refused(reason);
        let got = raw(&ca, hbone, method.clone(), &uri).await;
        assert_eq!(got, Ok(status), "{method} {uri}");
        assert_eq!(
            metrics.refused(reason),
            before + 1,
            "{method} {uri}: {reason:?}"
        );
    }
    // The allowed port still works for the same caller.
    assert_eq!(
        raw(
            &ca,
            hbone,
            Method::CONNECT,
            &format!("127.0.0.1:{HTTP_PORT}")
        )
        .await,
        Ok(StatusCode::OK)
    );
    assert_eq!(metrics.tunnels(), 1);
}

#[tokio::test]
async fn a_connect_without_authority_never_reaches_a_handler() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;
    // h2 sends a CONNECT to "/" without :authority (and without :path). The HTTP/2 layer
    // refuses it as malformed (RFC 9113 8.5: RST_STREAM PROTOCOL_ERROR) before any handler
    // or counter of ours sees it.
    let got = raw(&ca, hbone, Method::CONNECT, "/").await;
    let err = got.expect_err("a CONNECT without :authority is reset");
    assert!(err.contains("protocol error"), "{err}");
    assert_eq!(metrics.tunnels(), 0);
}

#[tokio::test]
async fn a_denied_caller_sees_the_tunnel_refused() {
    let ca = DevCa::new(td()).unwrap();
    let (policies, rx) = tokio::sync::watch::channel(Arc::new(AuthzPolicies::new([])));
    let server = builder(store(&ca, "reviews")).tunnel_policies(rx).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let target = HboneTarget::new(SocketAddr::new(hbone.ip(), TCP_PORT), id("reviews")).via(hbone);
    client.connect(&target).await.unwrap();

    // A policy update applies to the next tunnel.
    policies
        .send(Arc::new(deny_productpage_on(TCP_PORT)))
        .unwrap();
    let err = client.connect(&target).await.unwrap_err();
    assert!(
        matches!(
            err,
            HboneError::Refused {
                status: StatusCode::UNAUTHORIZED,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(metrics.refused(Refusal::denied), 1);
}

#[tokio::test]
async fn plaintext_and_foreign_certificates_are_refused_at_the_handshake() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let verify = server.verify_stats().clone();
    let hbone = spawn(server).await;

    // Plaintext HTTP to 15008: the connection is closed without an HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(hbone).await.unwrap();
    tcp.write_all(b"CONNECT 127.0.0.1:9000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"HTTP/"), "no HTTP answer over plaintext");
    eventually("plaintext counted", || {
        metrics.refused(Refusal::tls_handshake) == 1
    })
    .await;

    // A client SVID from another trust domain (the client trusts our root, so the server
    // is the one that says no).
    let evil = DevCa::new(TrustDomain::new("evil.local").unwrap()).unwrap();
    let evil_id =
        mesh_core::SpiffeId::new("spiffe://evil.local/ns/default/sa/productpage").unwrap();
    let mut creds = evil.issue(&evil_id, HOUR).unwrap();
    creds.roots = vec![ca.root_der()];
    let evil_store = mesh_tls::IdentityStore::from_credentials(creds).unwrap();
    let client = HboneClient::new(evil_store);
    let target = HboneTarget::new(SocketAddr::new(hbone.ip(), TCP_PORT), id("reviews")).via(hbone);
    let err = client.connect(&target).await.unwrap_err();
    println!("foreign trust domain: {err}");
    eventually("foreign certificate counted", || {
        metrics.refused(Refusal::peer_rejected) == 1
    })
    .await;
    assert_eq!(verify.accepted(), 0);
    assert_eq!(metrics.tunnels(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_open_tunnels_share_ten_connections() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let target = HboneTarget::new(SocketAddr::new(hbone.ip(), TCP_PORT), id("reviews")).via(hbone);
    let tasks: Vec<_> = (0..1000u32)
        .map(|i| {
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let mut s = client.connect(&target).await?;
                s.write_all(&i.to_be_bytes()).await?;
                let mut back = [0u8; 4];
                s.read_exact(&mut back).await?;
                assert_eq!(u32::from_be_bytes(back), i);
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(s)
            })
        })
        .collect();
    // All 1000 held open at once.
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap().unwrap());
    }
    assert_eq!(open.len(), 1000);
    assert_eq!(metrics.tunnels(), 1000);
    assert_eq!(client.connections_dialled(), 10);
    assert_eq!(metrics.connections(), 10);
}

#[tokio::test]
async fn tls_1_2_is_refused() {
    use mesh_tls::config::default_provider;
    use mesh_tls::verify::{SpiffeServerVerifier, VerifyStats};

    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;

    // A client with a valid SVID that speaks only TLS 1.2.
    let creds = ca.issue(&id("productpage"), HOUR).unwrap();
    let provider = default_provider();
    let verifier = SpiffeServerVerifier::new(
        &creds.roots,
        &td(),
        &PeerPolicy::identities([id("reviews")]),
        &provider,
        VerifyStats::new(),
    )
    .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(hbone).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("reviews").unwrap();
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(handshake.is_err(), "a TLS 1.2 handshake must fail");
    eventually("TLS 1.2 counted", || {
        metrics.refused(Refusal::tls_handshake) == 1
    })
    .await;
    assert_eq!(metrics.connections(), 0);
}
