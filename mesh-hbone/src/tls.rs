//! HBONE's TLS settings on top of mesh-tls's SPIFFE verifiers: TLS 1.3 only, ALPN `h2`, no
//! session resumption (every connection re-verifies the peer), no SNI from the client (the
//! server picks its certificate by destination, as ztunnel does). Configs are rebuilt only
//! when the identity store publishes new credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mesh_core::SpiffeId;
use mesh_tls::config::{ALPN_H2, default_provider};
use mesh_tls::verify::{PeerPolicy, SpiffeClientVerifier, SpiffeServerVerifier, VerifyStats};
use mesh_tls::{IdentityStore, TlsError};
use rustls::{ClientConfig, ServerConfig};

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Server configs: the caller must present an SVID of a trust domain `peers` accepts.
pub(crate) struct ServerTls {
    store: IdentityStore,
    peers: PeerPolicy,
    stats: Arc<VerifyStats>,
    cache: Mutex<Option<(u64, Arc<ServerConfig>)>>,
}

impl ServerTls {
    pub(crate) fn new(store: IdentityStore, peers: PeerPolicy) -> Self {
        Self {
            store,
            peers,
            stats: VerifyStats::new(),
            cache: Mutex::new(None),
        }
    }

    pub(crate) fn stats(&self) -> &Arc<VerifyStats> {
        &self.stats
    }

    /// The config for a new connection; fails closed without credentials.
    pub(crate) fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let generation = self.store.generation();
        let creds = self.store.require()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, c)) = cache.as_ref()
            && *g == generation
        {
            return Ok(c.clone());
        }
        let provider = default_provider();
        let verifier = SpiffeClientVerifier::new(
            &creds.roots,
            &creds.trust_domain(),
            &self.peers,
            &provider,
            self.stats.clone(),
        )?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(TLS13)?
            .with_client_cert_verifier(Arc::new(verifier))
            .with_single_cert(creds.chain.clone(), creds.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let config = Arc::new(config);
        *cache = Some((generation, config.clone()));
        Ok(config)
    }
}

/// Client configs, one per destination identity (the server must present exactly it).
pub(crate) struct ClientTls {
    store: IdentityStore,
    stats: Arc<VerifyStats>,
    cache: Mutex<HashMap<SpiffeId, (u64, Arc<ClientConfig>)>>,
}

impl ClientTls {
    pub(crate) fn new(store: IdentityStore) -> Self {
        Self {
            store,
            stats: VerifyStats::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn store(&self) -> &IdentityStore {
        &self.store
    }

    pub(crate) fn stats(&self) -> &Arc<VerifyStats> {
        &self.stats
    }

    pub(crate) fn config(&self, server: &SpiffeId) -> Result<Arc<ClientConfig>, TlsError> {
        let generation = self.store.generation();
        let creds = self.store.require()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((g, c)) = cache.get(server)
            && *g == generation
        {
            return Ok(c.clone());
        }
        let provider = default_provider();
        let verifier = SpiffeServerVerifier::new(
            &creds.roots,
            &creds.trust_domain(),
            &PeerPolicy::identities([server.clone()]),
            &provider,
            self.stats.clone(),
        )?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(TLS13)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        config.resumption = rustls::client::Resumption::disabled();
        config.enable_sni = false;
        let config = Arc::new(config);
        // Entries of old generations are replaced as destinations are dialled again.
        cache.insert(server.clone(), (generation, config.clone()));
        Ok(config)
    }
}
