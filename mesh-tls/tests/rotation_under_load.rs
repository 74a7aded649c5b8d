//! Short-lived certificates (3 s) replaced every second on both sides, under continuous
//! requests over one long-lived HTTP/2 connection and over a new HTTP/1.1 connection per
//! request: zero failed requests, new connections use the newest certificate, and the
//! long-lived connection outlives the certificate it started with. Real time, ~6 s.

mod mtls_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ALPN_HTTP11, ClientSettings};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::verify::PeerPolicy;
use mtls_support::*;

const TTL: Duration = Duration::from_secs(3);
const EVERY: Duration = Duration::from_millis(1000);
const TRAFFIC: Duration = Duration::from_secs(6);

/// Replaces the store's certificate every `EVERY` until the test ends.
fn rotate(ca: Arc<DevCa>, store: IdentityStore, sa: &'static str) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EVERY).await;
            store.publish(ca.issue(&id(sa), TTL).unwrap()).unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_no_request() {
    let ca = Arc::new(DevCa::new(td()).unwrap());
    let server = IdentityStore::from_credentials(ca.issue(&id("reviews"), TTL).unwrap()).unwrap();
    let client =
        IdentityStore::from_credentials(ca.issue(&id("productpage"), TTL).unwrap()).unwrap();
    let acceptor = acceptor(&server, PeerPolicy::identities([id("productpage")]));
    let addr = spawn_server(acceptor.clone()).await;
    rotate(ca.clone(), server.clone(), "reviews");
    rotate(ca.clone(), client.clone(), "productpage");

    let expect = PeerPolicy::identities([id("reviews")]);
    // One HTTP/2 connection, reused for every request.
    let pooled_connector = connector(&client, expect.clone());
    let pooled = http_client(pooled_connector.clone());
    // HTTP/1.1 without idle pooling: a new connection (and handshake) per request.
    let fresh_connector = MeshConnector::new(
        client.clone(),
        ClientSettings {
            peers: expect.clone(),
            alpn: vec![ALPN_HTTP11.to_vec()],
            ..Default::default()
        },
    );
    let fresh: Client<MeshConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(fresh_connector.clone());

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + TRAFFIC;
    let worker = |client: HttpClient| {
        let (ok, failed) = (ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while tokio::time::Instant::now() < deadline {
                match get_whoami(&client, addr).await {
                    Ok((_, body)) if body == id("productpage").to_string() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            errors
        })
    };
    let a = worker(pooled);
    let b = worker(fresh);
    let mut errors = a.await.unwrap();
    errors.extend(b.await.unwrap());

    let ok = ok.load(Ordering::Relaxed);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failed requests: {errors:?}"
    );
    assert!(ok > 100, "only {ok} requests");
    // Both sides rotated about every second; expired certificates were never usable.
    assert!(server.stats().rotations >= 5, "{:?}", server.stats());
    assert!(client.stats().rotations >= 5, "{:?}", client.stats());
    assert!(
        acceptor.configs().builds() >= 4,
        "server configs rebuilt per rotation"
    );
    assert!(
        fresh_connector.configs().builds() >= 4,
        "client configs rebuilt per rotation"
    );
    assert_eq!(acceptor.stats().rejected_total(), 0);
    // The HTTP/2 connection was never cut: one handshake for the whole run, although its
    // certificates expired twice over.
    assert_eq!(pooled_connector.stats().accepted(), 1);

    // A new connection presents the server's newest certificate.
    let before = server.latest().unwrap().chain[0].clone();
    let stream = fresh_connector
        .connect(&format!("http://{addr}").parse().unwrap())
        .await
        .unwrap();
    let tls = stream.into_inner();
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let after = server.latest().unwrap().chain[0].clone();
    assert!(
        presented == before || presented == after,
        "an older certificate was presented"
    );
}
