//! Full mTLS handshakes per second on one core, in memory (client and server in one
//! thread, no sockets), with our SPIFFE verifiers and config cache versus plain rustls
//! with its WebPKI verifiers, on the same certificates, provider and protocol settings.
//!
//! `cargo bench -p mesh-tls --bench handshake`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::IdentityStore;
use mesh_tls::config::{
    ClientConfigs, ClientSettings, ServerConfigs, ServerSettings, default_provider,
};
use mesh_tls::dev_ca::{DevCa, IssueOptions};
use mesh_tls::verify::PeerPolicy;
use rustls::client::WebPkiServerVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// Drives one complete handshake between fresh connections, in memory.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) {
    let name = "web.default.svc".try_into().unwrap();
    let mut c = ClientConnection::new(client.clone(), name).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            s.read_tls(&mut rd).unwrap();
            s.process_new_packets().unwrap();
        }
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            c.read_tls(&mut rd).unwrap();
            c.process_new_packets().unwrap();
        }
    }
    assert!(c.peer_certificates().is_some() && s.peer_certificates().is_some());
}

fn bench(cr: &mut Criterion) {
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = DevCa::new(td.clone()).unwrap();
    // A DNS SAN as well, so the WebPKI baseline can verify the server name; our verifier
    // ignores it.
    let issue = |sa: &str| {
        let id = SpiffeId::istio(&td, "default", sa).unwrap();
        let mut opts = IssueOptions::new(&id, Duration::from_secs(3600));
        opts.dns_sans = vec!["web.default.svc".into()];
        ca.issue_with(opts).unwrap()
    };
    let server_creds = issue("web");
    let client_creds = issue("client");
    let provider = default_provider();

    // Ours: config caches over identity stores, SPIFFE verifiers with exact identities.
    let server_store = IdentityStore::from_credentials(server_creds.clone()).unwrap();
    let client_store = IdentityStore::from_credentials(client_creds.clone()).unwrap();
    let server_configs = ServerConfigs::new(
        server_store,
        ServerSettings {
            peers: PeerPolicy::identities([client_creds.id.clone()]),
            ..Default::default()
        },
    );
    let client_configs = ClientConfigs::new(
        client_store,
        ClientSettings {
            peers: PeerPolicy::identities([server_creds.id.clone()]),
            ..Default::default()
        },
    );

    // Baseline: plain rustls, WebPKI verifiers, same provider, ALPN and no resumption.
    let mut roots = RootCertStore::empty();
    roots.add(ca.root_der()).unwrap();
    let roots = Arc::new(roots);
    let mut base_server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .unwrap(),
        )
        .with_single_cert(server_creds.chain.clone(), server_creds.key.clone_key())
        .unwrap();
    base_server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    base_server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    base_server.send_tls13_tickets = 0;
    let mut base_client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_webpki_verifier(
            WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .unwrap(),
        )
        .with_client_auth_cert(client_creds.chain.clone(), client_creds.key.clone_key())
        .unwrap();
    base_client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    base_client.resumption = rustls::client::Resumption::disabled();
    let (base_client, base_server) = (Arc::new(base_client), Arc::new(base_server));

    let mut group = cr.benchmark_group("mtls_handshake");
    group.throughput(Throughput::Elements(1));
    group.bench_function("rustls_webpki_baseline", |b| {
        b.iter(|| handshake(&base_client, &base_server))
    });
    group.bench_function("mesh_spiffe", |b| {
        b.iter(|| {
            // Per connection, as the acceptor and connector do: read the cached configs.
            let client = client_configs.config().unwrap();
            let server = server_configs.config().unwrap();
            handshake(&client, &server)
        })
    });
    group.finish();

    // Criterion runs the two one after the other; on a shared machine the load drifts
    // between them. Interleaved rounds give a ratio that drift does not bias.
    if std::env::args().any(|a| a == "--bench") {
        let (rounds, per) = (40, 25);
        let (mut base, mut mesh) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            for _ in 0..per {
                handshake(&base_client, &base_server);
            }
            base.push(t.elapsed() / per);
            let t = Instant::now();
            for _ in 0..per {
                let client = client_configs.config().unwrap();
                let server = server_configs.config().unwrap();
                handshake(&client, &server);
            }
            mesh.push(t.elapsed() / per);
        }
        base.sort();
        mesh.sort();
        let (b, m) = (base[rounds / 2], mesh[rounds / 2]);
        println!(
            "interleaved A/B, median of {rounds} rounds x {per}: baseline {:.0}/s, mesh {:.0}/s, \
             mesh/baseline = {:.3}",
            1.0 / b.as_secs_f64(),
            1.0 / m.as_secs_f64(),
            b.as_secs_f64() / m.as_secs_f64()
        );
    }
    assert_eq!(server_configs.builds(), 1, "the config cache was rebuilt");
    assert!(server_configs.stats().accepted() > 0);
    assert_eq!(server_configs.stats().rejected_total(), 0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
