//! The negative matrix at a real TLS handshake over loopback, both directions: every bad
//! certificate is rejected, the error names the broken rule, and the rule's counter moves.
//! Also: the good case, fail-closed without credentials, and a stalled client that must
//! not block other handshakes.

mod mtls_support;

use std::time::{Duration, SystemTime};

use mesh_tls::dev_ca::{DevCa, IssueOptions};
use mesh_tls::svid::Rule;
use mesh_tls::verify::PeerPolicy;
use mesh_tls::{Credentials, IdentityStore, TlsError};
use mtls_support::*;
use tokio::net::{TcpListener, TcpStream};

/// One bad certificate and the rule it must trip.
struct Case {
    name: &'static str,
    rule: Rule,
    /// Words the error message must contain.
    message: &'static str,
    creds: Credentials,
}

/// Every bad certificate of the matrix, all claiming to be `sa/web` unless the case is
/// about the identity itself.
fn bad_certificates(ca: &DevCa) -> Vec<Case> {
    let web = id("web");
    let now = SystemTime::now();
    let opts = || IssueOptions::new(&web, HOUR);
    let issue = |f: &dyn Fn(&mut IssueOptions)| {
        let mut o = opts();
        f(&mut o);
        ca.issue_with(o).unwrap()
    };
    let other_root = DevCa::new(td()).unwrap();
    vec![
        Case {
            name: "expired",
            rule: Rule::Expired,
            message: "certificate expired at",
            creds: issue(&|o| {
                o.not_before = now - 2 * HOUR;
                o.not_after = now - HOUR;
            }),
        },
        Case {
            name: "not yet valid",
            rule: Rule::NotYetValid,
            message: "not yet valid",
            creds: issue(&|o| {
                o.not_before = now + HOUR;
                o.not_after = now + 2 * HOUR;
            }),
        },
        Case {
            name: "wrong trust domain",
            rule: Rule::WrongTrustDomain,
            message: "trust domain evil.org",
            creds: issue(&|o| o.uri_sans = vec!["spiffe://evil.org/ns/default/sa/web".into()]),
        },
        Case {
            name: "wrong service account",
            rule: Rule::UnexpectedIdentity,
            message: "spiffe://cluster.local/ns/default/sa/intruder is not an expected identity",
            creds: ca.issue(&id("intruder"), HOUR).unwrap(),
        },
        Case {
            name: "no URI SAN",
            rule: Rule::NoUriSan,
            message: "exactly one URI SAN, found none",
            creds: issue(&|o| {
                o.uri_sans.clear();
                o.dns_sans = vec!["web.default.svc".into()];
            }),
        },
        Case {
            name: "two URI SANs",
            rule: Rule::MultipleUriSans,
            message: "found 2 URI SANs",
            creds: issue(&|o| o.uri_sans.push(id("admin").to_string())),
        },
        Case {
            name: "CA leaf",
            rule: Rule::LeafIsCa,
            message: "leaf certificate is a CA",
            creds: issue(&|o| o.is_ca = true),
        },
        Case {
            name: "self-signed",
            rule: Rule::SelfSigned,
            message: "self-signed",
            creds: issue(&|o| o.self_signed = true),
        },
        Case {
            name: "untrusted root",
            rule: Rule::UntrustedChain,
            message: "certificate chain is not trusted",
            creds: other_root.issue(&web, HOUR).unwrap(),
        },
    ]
}

/// Only `sa/web` is acceptable, in both directions.
fn only_web() -> PeerPolicy {
    PeerPolicy::identities([id("web")])
}

#[tokio::test]
async fn good_peers_handshake_both_ways() {
    let ca = DevCa::with_intermediate(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();
    let client = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();
    let acceptor = acceptor(&server, only_web());
    let addr = spawn_server(acceptor.clone()).await;
    let connector = connector(&client, only_web());
    let stream = connector
        .connect(&format!("http://{addr}").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(stream.peer().0, id("web"));
    assert!(stream.is_h2());
    assert_eq!(connector.stats().accepted(), 1);
    assert_eq!(connector.stats().rejected_total(), 0);
}

#[tokio::test]
async fn our_client_rejects_bad_servers() {
    let ca = DevCa::new(td()).unwrap();
    let client = IdentityStore::from_credentials(ca.issue(&id("client"), HOUR).unwrap()).unwrap();
    let connector = connector(&client, only_web());
    for case in bad_certificates(&ca) {
        let addr = raw_server(&case.creds).await;
        let before = connector.stats().rejected(case.rule);
        let err = connector
            .connect(&format!("http://{addr}").parse().unwrap())
            .await
            .expect_err(case.name);
        match &err {
            TlsError::Rejected(svid) => assert_eq!(svid.rule(), case.rule, "{}", case.name),
            other => panic!("{}: expected a rule rejection, got {other}", case.name),
        }
        let msg = err.to_string();
        assert!(msg.contains(case.message), "{}: {msg}", case.name);
        assert_eq!(
            connector.stats().rejected(case.rule),
            before + 1,
            "{}: counter",
            case.name
        );
    }
    assert_eq!(connector.stats().accepted(), 0);
    assert_eq!(connector.stats().rejected_total(), 9);
}

#[tokio::test]
async fn our_server_rejects_bad_clients() {
    let ca = DevCa::new(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("server"), HOUR).unwrap()).unwrap();
    let acceptor = acceptor(&server, only_web());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    for case in bad_certificates(&ca) {
        let client = tokio::spawn({
            let creds = case.creds.clone();
            let roots = vec![ca.root_der()];
            async move { raw_client_handshake(&creds, &roots, addr).await }
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let before = acceptor.stats().rejected(case.rule);
        let err = acceptor.accept(tcp).await.expect_err(case.name);
        match &err {
            TlsError::Rejected(svid) => assert_eq!(svid.rule(), case.rule, "{}", case.name),
            other => panic!("{}: expected a rule rejection, got {other}", case.name),
        }
        let msg = err.to_string();
        assert!(msg.contains(case.message), "{}: {msg}", case.name);
        assert_eq!(
            acceptor.stats().rejected(case.rule),
            before + 1,
            "{}",
            case.name
        );
        client.await.unwrap();
    }
    assert_eq!(acceptor.stats().accepted(), 0);
    assert_eq!(acceptor.stats().rejected_total(), 9);
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = DevCa::new(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("server"), HOUR).unwrap()).unwrap();
    let acceptor = acceptor(&server, PeerPolicy::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let root = ca.root_der();
    let client = tokio::spawn(async move {
        let config =
            rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .dangerous()
                .with_custom_certificate_verifier(std::sync::Arc::new(
                    mesh_tls::verify::SpiffeServerVerifier::new(
                        &[root],
                        &td(),
                        &PeerPolicy::default(),
                        &mesh_tls::config::default_provider(),
                        mesh_tls::verify::VerifyStats::new(),
                    )
                    .unwrap(),
                ))
                .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect("localhost".try_into().unwrap(), tcp)
            .await;
    });
    let (tcp, _) = listener.accept().await.unwrap();
    let err = acceptor.accept(tcp).await.expect_err("must be refused");
    assert!(
        matches!(&err, TlsError::Rejected(e) if e.rule() == Rule::NoCertificate),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "certificate rejected: no certificate presented"
    );
    assert_eq!(acceptor.stats().rejected(Rule::NoCertificate), 1);
    client.await.unwrap();
}

#[tokio::test]
async fn no_credentials_fails_closed_on_both_sides() {
    let ca = DevCa::new(td()).unwrap();
    let empty = IdentityStore::new();
    let good = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();

    // A server without credentials drops the connection before any TLS byte.
    let addr = spawn_server(acceptor(&empty, PeerPolicy::default())).await;
    let err = connector(&good, PeerPolicy::default())
        .connect(&format!("http://{addr}").parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Handshake(_)), "{err}");

    // A client without credentials does not even dial.
    let addr = spawn_server(acceptor(&good, PeerPolicy::default())).await;
    let err = connector(&empty, PeerPolicy::default())
        .connect(&format!("http://{addr}").parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::NoIdentity(_)), "{err}");
    assert!(
        err.to_string().contains("no certificate issued yet"),
        "{err}"
    );
}

#[tokio::test]
async fn a_stalled_client_does_not_block_the_accept_loop() {
    let ca = DevCa::new(td()).unwrap();
    let store = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();
    let addr = spawn_server(acceptor(&store, PeerPolicy::default())).await;
    // Opens TCP and never sends a ClientHello.
    let _stalled = TcpStream::connect(addr).await.unwrap();
    let client = http_client(connector(&store, PeerPolicy::default()));
    let (_, body) = tokio::time::timeout(Duration::from_secs(5), get_whoami(&client, addr))
        .await
        .expect("served while another handshake stalls")
        .unwrap();
    assert_eq!(body, id("web").to_string());
}

#[tokio::test(start_paused = true)]
async fn handshake_timeout_drops_silent_clients() {
    let ca = DevCa::new(td()).unwrap();
    let store = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();
    let acceptor = mesh_tls::server::MeshAcceptor::new(
        store,
        mesh_tls::config::ServerSettings {
            handshake_timeout: Duration::from_secs(3),
            ..Default::default()
        },
    );
    let (_client, server_side) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let err = acceptor.accept(server_side).await.err().unwrap();
    assert!(err.to_string().contains("timed out after 3s"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}
