//! rustls configs built from the [`IdentityStore`], and the choice of
//! crypto provider ([`default_provider`]).
//!
//! The provider is always passed explicitly (`builder_with_provider`), never taken from a
//! process-wide default, so linking mesh-tls into a program that installs another default
//! changes nothing here. With the default `ring` feature the provider is *ring*; with only
//! `aws-lc-rs` it is aws-lc-rs; with both, *ring* (smaller, no C toolchain needed beyond
//! `cc`, and fast enough for ECDSA P-256 handshakes).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::crypto::CryptoProvider;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use mesh_core::model::TlsParams;
use rustls::{ClientConfig, ServerConfig};

use crate::params::narrow;
pub use crate::provider::default_provider;
use crate::verify::{PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, VerifyStats};
use crate::{Credentials, IdentityStore, TlsError};

/// ALPN id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// What the server side accepts and offers.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Which clients to accept (default: any identity of our own trust domain).
    pub peers: PeerPolicy,
    /// ALPN protocols, most preferred first (default: `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// A handshake not finished within this time is dropped (default 10 s).
    pub handshake_timeout: Duration,
    /// Versions, TLS 1.2 suites and groups accepted (Envoy's `tls_params`; default: all
    /// the provider implements).
    pub params: TlsParams,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            peers: PeerPolicy::default(),
            alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
            handshake_timeout: Duration::from_secs(10),
            params: TlsParams::default(),
        }
    }
}

/// What the client side expects and offers.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// Which servers to accept (set `peers.identities` to the expected SPIFFE IDs).
    pub peers: PeerPolicy,
    /// ALPN protocols, most preferred first (default: `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// TCP connect plus TLS handshake must finish within this time (default 10 s).
    pub connect_timeout: Duration,
    /// Versions, TLS 1.2 suites and groups offered (Envoy's `tls_params`; default: all
    /// the provider implements).
    pub params: TlsParams,
    /// The SNI to send (Envoy's `UpstreamTlsContext.sni`; a DNS name). `None`: the URI's
    /// host when it is a DNS name, none for an IP address.
    pub sni: Option<String>,
    /// Present the workload's certificate (mTLS, the default). `false`: TLS without a
    /// client certificate, as Envoy and gRPC do for an `UpstreamTlsContext` that names no
    /// `tls_certificate_provider_instance`; the server is verified either way.
    pub client_certificate: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            peers: PeerPolicy::default(),
            alpn: vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()],
            connect_timeout: Duration::from_secs(10),
            params: TlsParams::default(),
            sni: None,
            client_certificate: true,
        }
    }
}

/// One config built for one store generation.
struct Cached<T> {
    generation: u64,
    config: Arc<T>,
}

/// The shared part of both caches: the store, the provider, the counters and the config
/// built for the newest generation.
struct Source<T> {
    store: IdentityStore,
    provider: Arc<CryptoProvider>,
    stats: Arc<VerifyStats>,
    builds: AtomicU64,
    cache: ArcSwapOption<Cached<T>>,
}

impl<T> Source<T> {
    fn new(store: IdentityStore, provider: Arc<CryptoProvider>) -> Self {
        Self {
            store,
            provider,
            stats: VerifyStats::new(),
            builds: AtomicU64::new(0),
            cache: ArcSwapOption::empty(),
        }
    }

    /// The config for the current credentials (fail closed), built by `build` only when
    /// the store published new ones. The generation is read first: a publish racing with
    /// us makes the cache rebuild once more, never serve stale credentials as new.
    fn config(
        &self,
        build: impl FnOnce(&Credentials) -> Result<T, TlsError>,
    ) -> Result<Arc<T>, TlsError> {
        let generation = self.store.generation();
        let creds = self.store.require()?;
        if let Some(c) = self.cache.load().as_ref()
            && c.generation == generation
        {
            return Ok(c.config.clone());
        }
        let config = Arc::new(build(&creds)?);
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.cache.store(Some(Arc::new(Cached {
            generation,
            config: config.clone(),
        })));
        Ok(config)
    }
}

/// rustls `ServerConfig`s for the store's current credentials, rebuilt only when the
/// store publishes new ones. Cheap to read per connection.
pub struct ServerConfigs {
    src: Source<ServerConfig>,
    settings: ServerSettings,
}

impl ServerConfigs {
    /// Configs for `store`, with the [default provider](default_provider).
    pub fn new(store: IdentityStore, settings: ServerSettings) -> Self {
        Self::with_provider(store, settings, default_provider())
    }

    /// Configs for `store` with an explicit crypto provider.
    pub fn with_provider(
        store: IdentityStore,
        settings: ServerSettings,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            src: Source::new(store, provider),
            settings,
        }
    }

    /// The config for a new connection; an error (fail closed) when there are no valid
    /// credentials.
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        self.src.config(|creds| self.build(creds))
    }

    fn build(&self, creds: &Credentials) -> Result<ServerConfig, TlsError> {
        let verifier = SpiffeClientVerifier::new(
            &creds.roots,
            &creds.trust_domain(),
            &self.settings.peers,
            &self.src.provider,
            self.src.stats.clone(),
        )?;
        let (provider, versions) = narrow(&self.src.provider, &self.settings.params)?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(creds.chain.clone(), creds.key.clone_key())?;
        config.alpn_protocols = self.settings.alpn.clone();
        // No resumption: every connection re-verifies the peer's current certificate.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }

    /// The settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// Verification counters of every config built here.
    pub fn stats(&self) -> &Arc<VerifyStats> {
        &self.src.stats
    }

    /// How many configs were built (one per credential generation in use).
    pub fn builds(&self) -> u64 {
        self.src.builds.load(Ordering::Relaxed)
    }

    /// The identity store.
    pub fn store(&self) -> &IdentityStore {
        &self.src.store
    }
}

/// rustls `ClientConfig`s for the store's current credentials, rebuilt only when the
/// store publishes new ones.
pub struct ClientConfigs {
    src: Source<ClientConfig>,
    settings: ClientSettings,
}

impl ClientConfigs {
    /// Configs for `store`, with the [default provider](default_provider).
    pub fn new(store: IdentityStore, settings: ClientSettings) -> Self {
        Self::with_provider(store, settings, default_provider())
    }

    /// Configs for `store` with an explicit crypto provider.
    pub fn with_provider(
        store: IdentityStore,
        settings: ClientSettings,
        provider: Arc<CryptoProvider>,
    ) -> Self {
        Self {
            src: Source::new(store, provider),
            settings,
        }
    }

    /// The config for a new connection; an error (fail closed) when there are no valid
    /// credentials.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        self.src.config(|creds| self.build(creds))
    }

    fn build(&self, creds: &Credentials) -> Result<ClientConfig, TlsError> {
        let verifier = SpiffeServerVerifier::new(
            &creds.roots,
            &creds.trust_domain(),
            &self.settings.peers,
            &self.src.provider,
            self.src.stats.clone(),
        )?;
        let (provider, versions) = narrow(&self.src.provider, &self.settings.params)?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier));
        let mut config = if self.settings.client_certificate {
            builder.with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())?
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = self.settings.alpn.clone();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }

    /// The settings.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Verification counters of every config built here.
    pub fn stats(&self) -> &Arc<VerifyStats> {
        &self.src.stats
    }

    /// How many configs were built (one per credential generation in use).
    pub fn builds(&self) -> u64 {
        self.src.builds.load(Ordering::Relaxed)
    }

    /// The identity store.
    pub fn store(&self) -> &IdentityStore {
        &self.src.store
    }
}

#[cfg(test)]
#[cfg(feature = "dev-ca")] // certificates from the dev CA
mod tests {
    use super::*;
    use crate::dev_ca::DevCa;
    use mesh_core::{SpiffeId, TrustDomain};

    #[test]
    fn configs_are_cached_per_generation_and_fail_closed() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = DevCa::new(td.clone()).unwrap();
        let id = SpiffeId::istio(&td, "default", "web").unwrap();
        let store = IdentityStore::new();
        let server = ServerConfigs::new(store.clone(), ServerSettings::default());
        let client = ClientConfigs::new(store.clone(), ClientSettings::default());
        let err = server.config().unwrap_err();
        assert!(
            err.to_string().contains("no valid workload identity"),
            "{err}"
        );
        assert!(client.config().is_err());

        store
            .publish(ca.issue(&id, Duration::from_secs(60)).unwrap())
            .unwrap();
        let a = server.config().unwrap();
        let b = server.config().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(server.builds(), 1);
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        client.config().unwrap();
        client.config().unwrap();
        assert_eq!(client.builds(), 1);

        store
            .publish(ca.issue(&id, Duration::from_secs(60)).unwrap())
            .unwrap();
        let c = server.config().unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(server.builds(), 2);
    }

    /// Moves what each side has to send to the other until neither has more.
    fn pump(c: &mut rustls::ClientConnection, s: &mut rustls::ServerConnection) {
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).unwrap();
            }
            let mut rd = &to_server[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets().unwrap();
            let mut to_client = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut to_client).unwrap();
            }
            let mut rd = &to_client[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets().unwrap();
            if to_server.is_empty() && to_client.is_empty() {
                return;
            }
        }
    }

    /// Envoy's `disable_stateful_session_resumption` (and no tickets): a client that keeps
    /// sessions and asks to resume gets a full handshake every time, so each connection
    /// re-verifies the peer's current certificate.
    #[test]
    fn the_server_never_resumes_a_session() {
        let td = TrustDomain::new("cluster.local").unwrap();
        let ca = DevCa::new(td.clone()).unwrap();
        let id = SpiffeId::istio(&td, "default", "web").unwrap();
        let store = IdentityStore::new();
        store
            .publish(ca.issue(&id, Duration::from_secs(60)).unwrap())
            .unwrap();
        let server = ServerConfigs::new(store.clone(), ServerSettings::default());
        let mut client = (*ClientConfigs::new(store, ClientSettings::default())
            .config()
            .unwrap())
        .clone();
        client.resumption = rustls::client::Resumption::in_memory_sessions(8);
        let client = Arc::new(client);
        let name = rustls::pki_types::ServerName::try_from("web.default.svc").unwrap();
        for _ in 0..3 {
            let mut c = rustls::ClientConnection::new(client.clone(), name.clone()).unwrap();
            let mut s = rustls::ServerConnection::new(server.config().unwrap()).unwrap();
            pump(&mut c, &mut s);
            assert!(!c.is_handshaking() && !s.is_handshaking());
            assert_eq!(c.handshake_kind(), Some(rustls::HandshakeKind::Full));
        }
    }
}
