//! Fault matrix (docs/reliability.md): the CA goes down under a workload with short-lived
//! certificates. Real parts on loopback: mesh-control's Istio CA server (gRPC over TLS),
//! mesh-tls's Istio CA client and rotation, and an mTLS listener that takes its config
//! from the identity store per connection, as every mesh inbound does.
//!
//! - past half-life the renewal fails, the still-valid certificate keeps serving, and the
//!   rotation retries;
//! - past expiry the listener fails closed (no certificate, handshakes refused) and the
//!   store says why;
//! - the CA comes back on the same address: the next retry installs a new certificate and
//!   handshakes succeed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_control::ca::{IstioCaServer, RunningCaServer};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::ca::IstioCaClient;
use mesh_tls::config::{ClientConfigs, ClientSettings, ServerConfigs, ServerSettings};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::rotation::Rotation;
use mesh_tls::{IdentityStatus, IdentityStore};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "bootstrap-token-for-web";
/// Short enough that half-life and expiry come within seconds.
const TTL: Duration = Duration::from_secs(4);

fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&TrustDomain::new("cluster.local").unwrap(), "default", sa).unwrap()
}

async fn start_ca(ca: &Arc<DevCa>, addr: SocketAddr) -> RunningCaServer {
    IstioCaServer::new(ca.clone())
        .with_token(TOKEN, id("web"))
        .bind(addr)
        .await
        .unwrap()
}

/// An mTLS echo listener whose config comes from `store` for each connection; a
/// connection is closed at once when there is none (fail closed).
async fn mtls_listener(store: IdentityStore) -> SocketAddr {
    let configs = Arc::new(ServerConfigs::new(store, ServerSettings::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(config) = configs.config() else {
                continue; // dropped: no valid certificate
            };
            tokio::spawn(async move {
                if let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// One mTLS request from a caller with its own long-lived identity: the leaf the server
/// presented, or `None` when the handshake or the exchange failed.
async fn call(addr: SocketAddr, caller: &ClientConfigs) -> Option<Vec<u8>> {
    let config = caller.config().unwrap();
    let tcp = TcpStream::connect(addr).await.ok()?;
    let name = ServerName::try_from("web.default.svc").unwrap();
    let attempt = async {
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .ok()?;
        let mut buf = Vec::new();
        tls.read_to_end(&mut buf).await.ok()?;
        let leaf = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
        (buf == b"ok").then_some(leaf)
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

async fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn fault_ca_down_keeps_the_cert_past_half_life_fails_closed_at_expiry_and_recovers() {
    let ca = Arc::new(DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap());
    let server = start_ca(&ca, "127.0.0.1:0".parse().unwrap()).await;
    let ca_addr = server.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("istio-token");
    std::fs::write(&token, TOKEN).unwrap();

    let store = IdentityStore::new();
    let client = IstioCaClient::new(server.url(), id("web"), vec![server.root()])
        .with_server_name("istiod.istio-system.svc")
        .with_token_file(&token)
        .with_client_certificate(store.clone())
        .with_ttl(TTL);
    let rotation = Rotation::new(client).spawn(store.clone());
    let first = tokio::time::timeout(Duration::from_secs(10), store.ready())
        .await
        .expect("first certificate from the CA");

    let caller_store = IdentityStore::new();
    caller_store
        .publish(ca.issue(&id("caller"), Duration::from_secs(3600)).unwrap())
        .unwrap();
    let caller = ClientConfigs::new(caller_store, ClientSettings::default());
    let inbound = mtls_listener(store.clone()).await;
    assert_eq!(call(inbound, &caller).await, Some(first.chain[0].to_vec()));

    // The CA goes down.
    drop(server);
    let failures_before = store.stats().failures;

    // Past half-life: renewal failed (and is retried), the valid certificate serves on.
    assert!(
        wait_for(Duration::from_secs(4), || store.stats().failures
            > failures_before)
        .await,
        "no failed renewal while the CA is down"
    );
    assert!(matches!(store.status(), IdentityStatus::Available { .. }));
    assert_eq!(
        call(inbound, &caller).await,
        Some(first.chain[0].to_vec()),
        "the still-valid certificate must keep serving"
    );

    // Past expiry: fail closed, with the reason.
    let left = first
        .not_after
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(1100)).await;
    match store.status() {
        IdentityStatus::Unavailable { reason } => assert!(reason.contains("expired"), "{reason}"),
        other => panic!("want Unavailable after expiry, got {other:?}"),
    }
    assert!(
        store.current().is_none(),
        "an expired certificate is served"
    );
    assert_eq!(call(inbound, &caller).await, None, "handshake past expiry");
    let retries = store.stats().failures - failures_before;
    assert!(retries >= 2, "only {retries} renewal attempts while down");

    // The CA comes back on its address: the next retry (backoff 1, 2, 4, 8 s +-20%)
    // installs a new certificate and traffic flows again.
    let _server = start_ca(&ca, ca_addr).await;
    assert!(
        wait_for(Duration::from_secs(15), || store.current().is_some()).await,
        "no recovery after the CA came back: {:?}",
        store.status()
    );
    let renewed = store.current().unwrap();
    assert_ne!(renewed.chain[0], first.chain[0]);
    assert_eq!(
        call(inbound, &caller).await,
        Some(renewed.chain[0].to_vec())
    );
    rotation.abort();
}
