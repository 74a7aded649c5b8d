//! Our Istio CA client against a real istiod's CA (pilot-discovery built by
//! scripts/peers/istiod.sh, `MESH_ISTIOD_BIN`), over the 15012-like TLS port with real
//! authentication: a JWT checked against a JWKS (`JWT_RULE`), then our own certificate.
//!
//! istiod signs the identity it *authenticated*, not the one in the CSR: the tests check
//! both that the right identity comes back and that our client refuses a different one.

use std::time::{Duration, SystemTime};

use mesh_core::{SpiffeId, TrustDomain};
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_tls::ca::IstioCaClient;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::rotation::Rotation;
use mesh_tls::{CertProvider, IdentityStore, TlsError};
use rustls::pki_types::CertificateDer;

struct Setup {
    _work: tempfile::TempDir,
    ca: DevCa,
    issuer: TestIssuer,
    istiod: Istiod,
}

async fn setup() -> Option<Setup> {
    let bin = mesh_test_support::peer("MESH_ISTIOD_BIN")?;
    let work = tempfile::tempdir().unwrap();
    let ca = DevCa::with_intermediate(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let options = IstiodOptions {
        jwt_rule: Some(issuer.jwt_rule()),
        ..Default::default()
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Some(Setup {
        _work: work,
        ca,
        issuer,
        istiod,
    })
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")).unwrap()
}

impl Setup {
    fn client(&self, id: SpiffeId) -> IstioCaClient {
        IstioCaClient::new(self.istiod.secure_url(), id, vec![self.istiod.ca_root()])
            .with_server_name(ISTIOD_SERVER_NAME)
            .with_ttl(Duration::from_secs(3600))
    }

    /// A token file for `ns/sa` in `dir`.
    fn token_file(&self, dir: &tempfile::TempDir, ns: &str, sa: &str) -> std::path::PathBuf {
        let path = dir.path().join(format!("{ns}-{sa}.jwt"));
        let token = self
            .issuer
            .token(ns, sa, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(&path, token).unwrap();
        path
    }

    /// Fails with istiod's log when `result` is an error.
    fn ok<T>(&self, result: Result<T, TlsError>) -> T {
        result.unwrap_or_else(|e| panic!("{e}\nistiod log:\n{}", self.istiod.log_tail(30)))
    }
}

fn ca_message(err: &TlsError) -> &str {
    match err {
        TlsError::Ca(msg) => msg,
        other => panic!("want TlsError::Ca, got {other:?}"),
    }
}

#[tokio::test]
async fn token_authenticated_csr_gets_the_service_account_identity() {
    let Some(s) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let want = id("default", "reviews");
    let creds = s.ok(s
        .client(want.clone())
        .with_token_file(s.token_file(&dir, "default", "reviews"))
        .fetch()
        .await);
    assert_eq!(creds.id, want);
    // Leaf, then our intermediate; the root joined the bundle. istiod's cert_chain is
    // [leaf, cert-chain.pem (intermediate + root), root-cert.pem]: the client drops the last
    // root only, so one copy of the root may remain at the end of the chain (harmless: a
    // peer ignores it, but it costs bytes in every handshake).
    let intermediate =
        s.ca.issue(&want, Duration::from_secs(60))
            .unwrap()
            .chain
            .remove(1);
    assert_eq!(creds.chain[1], intermediate);
    assert!(
        creds.chain[2..].iter().all(|c| *c == s.ca.root_der()),
        "only the root may follow the intermediate"
    );
    assert_eq!(creds.roots, vec![s.ca.root_der()]);
    // The requested validity (1 h), after istiod's 2 min backdating of notBefore.
    let left = creds.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(
        left <= Duration::from_secs(3600) && left > Duration::from_secs(3500),
        "{left:?}"
    );
    let lifetime = creds.not_after.duration_since(creds.not_before).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600 + 120));
    // Usable as-is (SVID rules, key matches the leaf).
    IdentityStore::from_credentials(creds).unwrap();
}

#[tokio::test]
async fn missing_or_forged_tokens_are_refused() {
    let Some(s) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();

    // No credentials at all.
    let err = s
        .client(id("default", "reviews"))
        .fetch()
        .await
        .unwrap_err();
    assert!(ca_message(&err).contains("Unauthenticated"), "{err}");

    // A token for the wrong audience.
    let wrong_aud = dir.path().join("aud.jwt");
    let token = s
        .issuer
        .token_with(
            "system:serviceaccount:default:reviews",
            "not-istio-ca",
            Duration::from_secs(600),
        )
        .unwrap();
    std::fs::write(&wrong_aud, &token).unwrap();
    let err = s
        .client(id("default", "reviews"))
        .with_token_file(&wrong_aud)
        .fetch()
        .await
        .unwrap_err();
    let msg = ca_message(&err);
    assert!(msg.contains("Unauthenticated"), "{msg}");
    assert!(!msg.contains(&token), "the token leaked into the error");

    // A token whose signature does not verify (payload swapped for another subject).
    let good = s
        .issuer
        .token("default", "reviews", Duration::from_secs(600))
        .unwrap();
    let other = s
        .issuer
        .token("default", "admin", Duration::from_secs(600))
        .unwrap();
    let g: Vec<&str> = good.split('.').collect();
    let o: Vec<&str> = other.split('.').collect();
    let forged_path = dir.path().join("forged.jwt");
    std::fs::write(&forged_path, format!("{}.{}.{}", g[0], o[1], g[2])).unwrap();
    let err = s
        .client(id("default", "admin"))
        .with_token_file(&forged_path)
        .fetch()
        .await
        .unwrap_err();
    assert!(ca_message(&err).contains("Unauthenticated"), "{err}");
}

#[tokio::test]
async fn istiod_signs_the_authenticated_identity_and_we_refuse_another() {
    let Some(s) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    // Authenticated as reviews, asking for ratings: istiod ignores the CSR's SAN and signs
    // "reviews"; our client must not accept that as "ratings".
    let err = s
        .client(id("default", "ratings"))
        .with_token_file(s.token_file(&dir, "default", "reviews"))
        .fetch()
        .await
        .unwrap_err();
    match err {
        TlsError::WrongIdentityIssued { requested, got } => {
            assert_eq!(requested, id("default", "ratings").to_string());
            assert_eq!(got, id("default", "reviews").to_string());
        }
        other => panic!("want WrongIdentityIssued, got {other:?}"),
    }
}

#[tokio::test]
async fn renewal_authenticated_by_the_current_certificate() {
    let Some(s) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let token = s.token_file(&dir, "default", "reviews");
    let store = IdentityStore::new();
    let first = s.ok(s
        .client(id("default", "reviews"))
        .with_token_file(&token)
        .fetch()
        .await);
    store.publish(first).unwrap();
    let first_leaf = store.current().unwrap().chain[0].clone();

    // No token any more: the certificate istiod issued authenticates the renewal.
    std::fs::remove_file(&token).unwrap();
    let renewing = s
        .client(id("default", "reviews"))
        .with_client_certificate(store.clone());
    let second = s.ok(renewing.fetch().await);
    assert_eq!(second.id, id("default", "reviews"));
    assert_ne!(second.chain[0], first_leaf);

    // A certificate of another CA (same trust domain name) is not accepted.
    let stranger_ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let stranger = IdentityStore::from_credentials(
        stranger_ca
            .issue(&id("default", "reviews"), Duration::from_secs(600))
            .unwrap(),
    )
    .unwrap();
    let err = s
        .client(id("default", "reviews"))
        .with_client_certificate(stranger)
        .fetch()
        .await
        .unwrap_err();
    assert!(matches!(err, TlsError::Ca(_)), "{err:?}");
}

#[tokio::test]
async fn rotation_with_a_short_ttl_keeps_renewing() {
    let Some(s) = setup().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let store = IdentityStore::new();
    let client = s
        .client(id("default", "reviews"))
        .with_token_file(s.token_file(&dir, "default", "reviews"))
        .with_client_certificate(store.clone())
        .with_ttl(Duration::from_secs(4));
    let task = tokio::spawn(mesh_tls::CertSource::run(
        Box::new(Rotation::new(client)),
        store.clone(),
    ));
    let mut generations = store.subscribe();
    let mut leaves: Vec<CertificateDer<'static>> = Vec::new();
    // Renewal at half of a 4 s lifetime: four certificates within 15 s.
    let outcome = tokio::time::timeout(Duration::from_secs(15), async {
        while leaves.len() < 4 {
            generations.changed().await.unwrap();
            let creds = store.current().expect("a valid certificate is installed");
            assert_eq!(creds.id, id("default", "reviews"));
            let left = creds.not_after.duration_since(SystemTime::now()).unwrap();
            assert!(left <= Duration::from_secs(4), "{left:?}");
            if leaves.last() != Some(&creds.chain[0]) {
                leaves.push(creds.chain[0].clone());
            }
        }
    })
    .await;
    task.abort();
    assert!(
        outcome.is_ok(),
        "only {} certificates in 15 s; status {:?}\nistiod log:\n{}",
        leaves.len(),
        store.status(),
        s.istiod.log_tail(30)
    );
    // No failed renewal along the way.
    let stats = store.stats();
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert!(stats.rotations >= 4, "{stats:?}");
}
