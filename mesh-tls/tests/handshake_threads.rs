//! Handshakes run off the request workers on a multi-threaded runtime, and the connection
//! they open then serves requests on the caller's runtime: the key exchange of both sides is
//! observed through a crypto provider that records the thread it runs on.

mod mtls_support;

use std::sync::{Arc, Mutex};

use mesh_tls::IdentityStore;
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ClientConfigs, ClientSettings, ServerConfigs, ServerSettings};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::MeshAcceptor;
use mesh_tls::verify::PeerPolicy;
use mtls_support::*;
use rustls::crypto::{ActiveKeyExchange, CryptoProvider, SupportedKxGroup};
use rustls::{Error, NamedGroup};

/// Names of the threads each side's key exchanges started on.
type Seen = Arc<Mutex<Vec<String>>>;

/// A key-exchange group that records where it runs and delegates to the real one.
#[derive(Debug)]
struct Recording {
    inner: &'static dyn SupportedKxGroup,
    seen: Seen,
}

impl SupportedKxGroup for Recording {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let name = std::thread::current().name().unwrap_or("?").to_owned();
        self.seen.lock().unwrap().push(name);
        self.inner.start()
    }

    fn name(&self) -> NamedGroup {
        self.inner.name()
    }
}

/// The default provider with every key-exchange group recording into `seen`.
fn recording_provider(seen: &Seen) -> Arc<CryptoProvider> {
    let mut provider = (*mesh_tls::config::default_provider()).clone();
    provider.kx_groups = provider
        .kx_groups
        .iter()
        .map(|g| {
            let group: &'static dyn SupportedKxGroup = Box::leak(Box::new(Recording {
                inner: *g,
                seen: seen.clone(),
            }));
            group
        })
        .collect();
    Arc::new(provider)
}

/// Serves `whoami` with a recording server and calls it once through a recording client;
/// returns the thread names each side's key exchange ran on, and the answer.
async fn one_call() -> (Vec<String>, Vec<String>, String) {
    let ca = DevCa::new(td()).unwrap();
    let store = IdentityStore::from_credentials(ca.issue(&id("web"), HOUR).unwrap()).unwrap();
    let peers = PeerPolicy::identities([id("web")]);
    let (client_seen, server_seen) = (Seen::default(), Seen::default());
    let server = ServerConfigs::with_provider(
        store.clone(),
        ServerSettings {
            peers: peers.clone(),
            ..Default::default()
        },
        recording_provider(&server_seen),
    );
    let addr = spawn_server(MeshAcceptor::from_configs(Arc::new(server))).await;
    let client = ClientConfigs::with_provider(
        store,
        ClientSettings {
            peers,
            ..Default::default()
        },
        recording_provider(&client_seen),
    );
    let client = http_client(MeshConnector::from_configs(Arc::new(client)));
    let (_, body) = get_whoami(&client, addr).await.unwrap();
    let seen = |s: &Seen| s.lock().unwrap().clone();
    (seen(&client_seen), seen(&server_seen), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_multi_threaded_runtime_both_handshakes_run_on_the_handshake_threads() {
    let (client, server, body) = one_call().await;
    assert_eq!(
        body,
        id("web").to_string(),
        "the connection serves after the move"
    );
    assert!(!client.is_empty() && !server.is_empty());
    for name in client.iter().chain(&server) {
        assert_eq!(
            name, "mesh-tls-handshake",
            "client {client:?}, server {server:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime_handshakes_stay_on_it() {
    let here = std::thread::current().name().unwrap_or("?").to_owned();
    let (client, server, body) = one_call().await;
    assert_eq!(body, id("web").to_string());
    assert!(!client.is_empty() && !server.is_empty());
    for name in client.iter().chain(&server) {
        assert_eq!(name, &here);
    }
}
