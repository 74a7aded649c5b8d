//! The Istio CA server (the dev CA served over the Istio CA gRPC API) against mesh-tls's
//! Istio CA client: token and client-certificate authentication, identity checks on both
//! sides, rotation.

use std::sync::Arc;
use std::time::Duration;

use mesh_control::ca::{CaSigner, IstioCaServer, RunningCaServer};
use mesh_core::SpiffeId;
use mesh_tls::ca::IstioCaClient;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::rotation::Rotation;
use mesh_tls::{CertProvider, IdentityStore, TlsError};

const TOKEN: &str = "bootstrap-token-for-web";

/// The dev CA, identities and polling, as mesh-tls's identity-source tests have them.
mod common {
    use std::time::Duration;

    use mesh_core::{SpiffeId, TrustDomain};
    use mesh_tls::Credentials;
    use mesh_tls::dev_ca::DevCa;

    pub fn td() -> TrustDomain {
        TrustDomain::new("cluster.local").unwrap()
    }

    /// `spiffe://cluster.local/ns/default/sa/<sa>`.
    pub fn id(sa: &str) -> SpiffeId {
        SpiffeId::istio(&td(), "default", sa).unwrap()
    }

    pub fn ca() -> DevCa {
        DevCa::new(td()).unwrap()
    }

    pub fn issue(ca: &DevCa, sa: &str, ttl: Duration) -> Credentials {
        ca.issue(&id(sa), ttl).unwrap()
    }

    /// Polls `cond` every 20 ms until it holds (true) or `limit` passes (false).
    pub async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if cond() {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn start(server: IstioCaServer) -> RunningCaServer {
    server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn token_file(dir: &tempfile::TempDir, token: &str) -> std::path::PathBuf {
    let path = dir.path().join("istio-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

fn client(server: &RunningCaServer, sa: &str) -> IstioCaClient {
    IstioCaClient::new(server.url(), common::id(sa), vec![server.root()])
        .with_server_name("istiod.istio-system.svc")
        .with_ttl(Duration::from_secs(600))
}

fn ca_err(err: &TlsError) -> &str {
    match err {
        TlsError::Ca(msg) => msg,
        other => panic!("want TlsError::Ca, got {other:?}"),
    }
}

#[tokio::test]
async fn token_authenticated_request_gets_the_requested_identity() {
    let ca = Arc::new(common::ca());
    let server = start(IstioCaServer::new(ca.clone()).with_token(TOKEN, common::id("web"))).await;
    let dir = tempfile::tempdir().unwrap();
    let creds = client(&server, "web")
        .with_token_file(token_file(&dir, TOKEN))
        .with_metadata("WorkloadName", "web-0")
        .fetch()
        .await
        .unwrap();
    assert_eq!(creds.id, common::id("web"));
    assert_eq!(creds.roots, vec![ca.root_der()]);
    // Validity as requested (600 s), from the dev CA's backdated notBefore.
    let left = creds
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_secs(600) && left > Duration::from_secs(590),
        "{left:?}"
    );
    // Usable as-is: the store accepts it (SVID rules, key matches leaf).
    IdentityStore::from_credentials(creds).unwrap();
}

#[tokio::test]
async fn wrong_or_missing_token_is_unauthenticated() {
    let ca = Arc::new(common::ca());
    let server = start(IstioCaServer::new(ca).with_token(TOKEN, common::id("web"))).await;
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server, "web")
        .with_token_file(token_file(&dir, "not-the-token"))
        .fetch()
        .await
        .unwrap_err();
    let msg = ca_err(&err);
    assert!(msg.contains("Unauthenticated"), "{msg}");
    assert!(
        !msg.contains("not-the-token"),
        "token leaked into the error: {msg}"
    );

    let err = client(&server, "web").fetch().await.unwrap_err();
    assert!(ca_err(&err).contains("Unauthenticated"), "{err}");
}

#[tokio::test]
async fn token_for_one_identity_cannot_get_another() {
    let ca = Arc::new(common::ca());
    let server = start(IstioCaServer::new(ca).with_token(TOKEN, common::id("web"))).await;
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server, "admin")
        .with_token_file(token_file(&dir, TOKEN))
        .fetch()
        .await
        .unwrap_err();
    let msg = ca_err(&err);
    assert!(msg.contains("PermissionDenied"), "{msg}");
    assert!(
        msg.contains("/sa/admin") && msg.contains("/sa/web"),
        "{msg}"
    );
}

#[tokio::test]
async fn renewal_with_the_current_client_certificate() {
    let ca = Arc::new(common::ca());
    let token_dir = tempfile::tempdir().unwrap();
    let token_path = token_dir.path().join("token");
    std::fs::write(&token_path, TOKEN).unwrap();
    let server =
        start(IstioCaServer::new(ca.clone()).with_token_file(&token_path, common::id("web"))).await;

    // Bootstrap with the token.
    let store = IdentityStore::new();
    let first = client(&server, "web")
        .with_token_file(&token_path)
        .fetch()
        .await
        .unwrap();
    store.publish(first.clone()).unwrap();

    // The token is gone; the current certificate authenticates the renewal.
    std::fs::remove_file(&token_path).unwrap();
    let renewing = client(&server, "web").with_client_certificate(store.clone());
    let second = renewing.fetch().await.unwrap();
    assert_eq!(second.id, common::id("web"));
    assert_ne!(second.chain[0], first.chain[0]);

    // Without a certificate (empty store) and without a token: refused.
    let err = client(&server, "web")
        .with_client_certificate(IdentityStore::new())
        .fetch()
        .await
        .unwrap_err();
    assert!(ca_err(&err).contains("Unauthenticated"), "{err}");

    // A certificate for "web" cannot obtain "admin".
    let err = client(&server, "admin")
        .with_client_certificate(store.clone())
        .fetch()
        .await
        .unwrap_err();
    assert!(ca_err(&err).contains("PermissionDenied"), "{err}");

    // A certificate from another CA is refused at the TLS layer.
    let stranger = IdentityStore::from_credentials(common::issue(
        &common::ca(),
        "web",
        Duration::from_secs(600),
    ))
    .unwrap();
    let err = client(&server, "web")
        .with_client_certificate(stranger)
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Ca(_)), "{err:?}");
}

/// A CA that signs a different identity than the caller authenticated as.
struct Liar {
    ca: DevCa,
    gives: SpiffeId,
}

impl CaSigner for Liar {
    fn sign(&self, csr: &str, _asked: &SpiffeId, ttl: Duration) -> Result<Vec<String>, TlsError> {
        self.ca.sign_csr(csr, &self.gives, ttl)
    }
}

#[tokio::test]
async fn wrong_identity_from_the_ca_is_rejected() {
    let ca = Arc::new(common::ca());
    // Same CA key material, so only the SAN is wrong.
    let liar = Liar {
        ca: {
            let dir = tempfile::tempdir().unwrap();
            ca.save(dir.path()).unwrap();
            DevCa::load(dir.path(), common::td()).unwrap()
        },
        gives: common::id("admin"),
    };
    let server = start(
        IstioCaServer::new(ca)
            .with_token(TOKEN, common::id("web"))
            .with_signer(Arc::new(liar)),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server, "web")
        .with_token_file(token_file(&dir, TOKEN))
        .fetch()
        .await
        .unwrap_err();
    match err {
        TlsError::WrongIdentityIssued { requested, got } => {
            assert_eq!(requested, common::id("web").to_string());
            assert_eq!(got, common::id("admin").to_string());
        }
        other => panic!("want WrongIdentityIssued, got {other:?}"),
    }
}

#[tokio::test]
async fn ca_with_an_untrusted_serving_certificate_is_refused() {
    let server =
        start(IstioCaServer::new(Arc::new(common::ca())).with_token(TOKEN, common::id("web")))
            .await;
    let dir = tempfile::tempdir().unwrap();
    let other_root = common::ca().root_der();
    let err = IstioCaClient::new(server.url(), common::id("web"), vec![other_root])
        .with_token_file(token_file(&dir, TOKEN))
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Ca(_)), "{err:?}");
}

#[tokio::test]
async fn rotation_over_the_istio_ca_renews_short_lived_certificates() {
    let ca = Arc::new(common::ca());
    let server = start(IstioCaServer::new(ca).with_token(TOKEN, common::id("web"))).await;
    let dir = tempfile::tempdir().unwrap();
    let store = IdentityStore::new();
    let client = client(&server, "web")
        .with_token_file(token_file(&dir, TOKEN))
        .with_client_certificate(store.clone())
        .with_ttl(Duration::from_secs(4));
    let task = Rotation::new(client).spawn(store.clone());

    let first = tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .unwrap();
    // 4 s certificates renew every ~1.6-2 s.
    assert!(
        common::wait_for(Duration::from_secs(15), || store.stats().rotations >= 3).await,
        "only {} rotations",
        store.stats().rotations
    );
    let now = store.current().unwrap();
    assert_ne!(now.chain[0], first.chain[0]);
    assert_eq!(now.id, common::id("web"));
    assert_eq!(store.stats().failures, 0, "{:?}", store.stats().last_error);
    task.abort();
}

#[tokio::test]
async fn ca_parts_serve_on_a_caller_owned_grpc_server() {
    let ca = Arc::new(common::ca());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parts = IstioCaServer::new(ca)
        .with_token(TOKEN, common::id("web"))
        .into_parts(listener)
        .unwrap();
    let url = format!("https://{}", parts.local_addr);
    let root = parts.root.clone();
    // The caller's own tonic server (where xDS services would be added too).
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(parts.service)
            .serve_with_incoming(parts.incoming),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = IdentityStore::new();
    let client = IstioCaClient::new(url, common::id("web"), vec![root])
        .with_server_name("localhost")
        .with_token_file(token_file(&dir, TOKEN));
    store.publish(client.fetch().await.unwrap()).unwrap();
    // Renewal by client certificate alone: the token file may be gone by then.
    let renewing = client
        .clone()
        .with_client_certificate(store.clone())
        .with_token_file(dir.path().join("missing"));
    let renewed = renewing.fetch().await.unwrap();
    assert_eq!(renewed.id, common::id("web"));
    // Without a certificate, the missing token file is an error naming it.
    let err = client
        .with_token_file(dir.path().join("missing"))
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("missing"), "{err}");
    server.abort();
}

#[tokio::test]
async fn empty_tokens_are_refused_on_both_sides() {
    let ca = Arc::new(common::ca());
    // The server: an empty token would match an empty `Bearer ` header.
    let err = IstioCaServer::new(ca.clone())
        .with_token("  ", common::id("web"))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    // The client: an empty token file is an error naming the file, not an empty header.
    let server = start(IstioCaServer::new(ca).with_token(TOKEN, common::id("web"))).await;
    let dir = tempfile::tempdir().unwrap();
    let err = client(&server, "web")
        .with_token_file(token_file(&dir, ""))
        .fetch()
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("istio-token") && err.to_string().contains("empty"),
        "{err}"
    );
}
