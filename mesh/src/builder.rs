//! [`MeshBuilder`]: identity source and config source (an xDS bootstrap or client, or any
//! [`ConfigSource`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mesh_admin::UpstreamMetrics;
use mesh_core::SpiffeId;
use mesh_core::config::ConfigSource;
use mesh_route::client::{ClusterStack, MeshClient, MeshClientConfig};
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, WorkloadInfo};
use mesh_telemetry::trace::{Propagation, SpanTags, TraceLayer};
use mesh_tls::config::ServerSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::source::{FileSource, FileSourceConfig};
use mesh_tls::{CertSource, IdentityStore};
use mesh_xds::bootstrap::Bootstrap;
use mesh_xds::client::channel::TlsConfigFn;
use mesh_xds::client::{IdentityTls, XdsClient, XdsClientConfig, channel_from_bootstrap_with};
use tower::Layer;

use crate::inbound::{AuthzMetrics, ISTIO_LISTENER_TEMPLATE};
use crate::{InboundSettings, Mesh, ResilienceStack};
use mesh_core::path::PathNormalization;

/// Why a [`Mesh`] cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No identity source was given, and the bootstrap names no certificate files.
    #[error(
        "no identity: call identity_source, identity_store or dev_ca, or use a bootstrap whose certificate_providers name the workload certificate (file_watcher)"
    )]
    NoIdentity,
    /// No config source was given.
    #[error("no config: call bootstrap, bootstrap_from_env, xds_client or config_source")]
    NoConfig,
    /// The bootstrap is invalid.
    #[error("xDS bootstrap: {0}")]
    Bootstrap(String),
    /// OpenTelemetry's environment variables ask for something unsupported (the error
    /// names the variable).
    #[error("tracing: {0}")]
    Tracing(String),
    /// The identity could not be created.
    #[error("identity: {0}")]
    Identity(#[from] mesh_tls::TlsError),
}

enum Identity {
    Store(IdentityStore),
    Source(Box<dyn CertSource>),
}

enum Config {
    Bootstrap(Box<Bootstrap>),
    Client(XdsClient),
    Source(Arc<dyn ConfigSource>),
}

/// [`identity_tls`], or, when the bootstrap's `server_name` is a SPIFFE ID, the same with
/// the server verified as that SPIFFE ID (chain to the mesh root, SVID rules) instead of by
/// DNS name: for `mesh_xds::client::channel_from_bootstrap_with`.
pub fn control_plane_tls(identity: IdentityStore) -> IdentityTls {
    Arc::new(move |expected: Option<&str>| match expected {
        None => identity_tls(identity.clone()),
        Some(id) => spiffe_tls(identity.clone(), id.to_owned()),
    })
}

fn spiffe_tls(identity: IdentityStore, expected: String) -> TlsConfigFn {
    Arc::new(move || {
        let id = SpiffeId::new(&expected).map_err(|e| format!("server_name {expected:?}: {e}"))?;
        let creds = identity
            .require()
            .map_err(|e| format!("no workload identity for TLS to the control plane: {e}"))?;
        let provider = mesh_tls::config::default_provider();
        let verifier = mesh_tls::verify::SpiffeServerVerifier::new(
            &creds.roots,
            &creds.trust_domain(),
            &mesh_tls::verify::PeerPolicy::identities([id]),
            &provider,
            mesh_tls::verify::VerifyStats::new(),
        )
        .map_err(|e| format!("mesh root: {e}"))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
            .map_err(|e| format!("workload certificate: {e}"))?;
        Ok(Arc::new(config))
    })
}

/// The TLS config of each connection to the control plane when the bootstrap names no
/// root file: the workload identity's trust bundle (the mesh root) verifies the server, and
/// its certificate is the client certificate (istiod authenticates a workload by it).
pub fn identity_tls(identity: IdentityStore) -> TlsConfigFn {
    Arc::new(move || {
        let creds = identity
            .require()
            .map_err(|e| format!("no workload identity for TLS to the control plane: {e}"))?;
        let mut roots = rustls::RootCertStore::empty();
        for root in &creds.roots {
            roots
                .add(root.clone())
                .map_err(|e| format!("mesh root: {e}"))?;
        }
        let config =
            rustls::ClientConfig::builder_with_provider(mesh_tls::config::default_provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
                .map_err(|e| format!("workload certificate: {e}"))?;
        Ok(Arc::new(config))
    })
}

/// Builds a [`Mesh`]: pick where the identity comes from and where the config comes from.
///
/// Identity: [`MeshBuilder::identity_source`] takes any mesh-tls source (PEM files with
/// `FileSource`, the Istio CA with `Rotation::new(IstioCaClient::..)`, SPIRE with
/// `SpireSource`), [`MeshBuilder::dev_ca`] issues from an in-process dev CA, and
/// [`MeshBuilder::identity_store`] shares a store you already have.
///
/// Config: an xDS control plane ([`MeshBuilder::bootstrap`],
/// [`MeshBuilder::bootstrap_from_env`], [`MeshBuilder::xds_client`]), or any other
/// [`ConfigSource`] ([`MeshBuilder::config_source`]: a `StaticSource` built in code, the
/// embedded control plane in process with `mesh_control::LocalSource`).
#[derive(Default)]
pub struct MeshBuilder {
    identity: Option<Identity>,
    config: Option<Config>,
    client: MeshClientConfig,
    stack: Option<Arc<dyn ClusterStack>>,
    metrics: Option<IstioMetrics>,
    upstream: Option<UpstreamMetrics>,
    workload: WorkloadInfo,
    server: ServerSettings,
    pod_ip: Option<IpAddr>,
    authz: Option<AuthzMetrics>,
    fixed_path_normalization: PathNormalization,
}

impl std::fmt::Debug for MeshBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshBuilder")
            .field("client", &self.client)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl MeshBuilder {
    /// Credentials from a source that keeps them current (files, Istio CA, SPIRE).
    pub fn identity_source(mut self, source: impl CertSource) -> Self {
        self.identity = Some(Identity::Source(Box::new(source)));
        self
    }

    /// Credentials from an existing store.
    pub fn identity_store(mut self, store: IdentityStore) -> Self {
        self.identity = Some(Identity::Store(store));
        self
    }

    /// Credentials for `id` issued now by an in-process dev CA (tests, demos), valid one
    /// day.
    pub fn dev_ca(self, ca: &DevCa, id: &SpiffeId) -> Result<Self, BuildError> {
        let creds = ca.issue(id, std::time::Duration::from_secs(24 * 3600))?;
        Ok(self.identity_store(IdentityStore::from_credentials(creds)?))
    }

    /// xDS from a gRPC A27 bootstrap (e.g. [`Bootstrap::istio_proxyless`]).
    pub fn bootstrap(mut self, bootstrap: Bootstrap) -> Self {
        self.config = Some(Config::Bootstrap(Box::new(bootstrap)));
        self
    }

    /// xDS from `GRPC_XDS_BOOTSTRAP` / `GRPC_XDS_BOOTSTRAP_CONFIG`.
    ///
    /// With no identity given, the identity comes from the bootstrap's `file_watcher`
    /// certificate provider (see [`bootstrap_identity`]): under Istio's agent in its
    /// `grpc-agent` mode this one call is all a workload needs.
    pub fn bootstrap_from_env(self) -> Result<Self, BuildError> {
        let b = Bootstrap::from_env().map_err(|e| BuildError::Bootstrap(e.to_string()))?;
        Ok(self.bootstrap(b))
    }

    /// xDS from an existing client.
    pub fn xds_client(mut self, client: XdsClient) -> Self {
        self.config = Some(Config::Client(client));
        self
    }

    /// Config from any source instead of an xDS client: a
    /// [`StaticSource`](mesh_core::config::StaticSource) built in code, the embedded
    /// control plane in this process (`mesh_control::LocalSource`), a test's. The mesh has
    /// no [`Mesh::xds`] then (give an [`XdsClient`] with [`MeshBuilder::xds_client`] to keep
    /// its status and subscriptions at hand).
    pub fn config_source(mut self, source: impl ConfigSource) -> Self {
        self.config = Some(Config::Source(Arc::new(source)));
        self
    }

    /// MeshClient settings.
    pub fn client_config(mut self, config: MeshClientConfig) -> Self {
        self.client = config;
        self
    }

    /// The layers around each cluster (default: [`ResilienceStack`], feeding
    /// [`Mesh::upstream_metrics`]; pass [`PlainStack`](mesh_route::client::PlainStack) for
    /// one attempt per request). A stack given here is not observed: to export its
    /// clusters, give it `ResilienceStack::observe(move |name, r| u.track(name, r.into()))`
    /// with `u` the set passed to [`MeshBuilder::upstream_metrics`].
    pub fn cluster_stack(mut self, stack: impl ClusterStack) -> Self {
        self.stack = Some(Arc::new(stack));
        self
    }

    /// The metric families to record into (default: new ones, see [`Mesh::metrics`]).
    pub fn metrics(mut self, metrics: IstioMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The per-cluster upstream state to export (default: a new set, see
    /// [`Mesh::upstream_metrics`]).
    pub fn upstream_metrics(mut self, upstream: UpstreamMetrics) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// This workload's labels for Istio's metrics (`source_workload`, `source_app`, ...).
    pub fn workload(mut self, workload: WorkloadInfo) -> Self {
        self.workload = workload;
        self
    }

    /// Server-side mTLS settings (accepted peers, ALPN).
    pub fn server_settings(mut self, settings: ServerSettings) -> Self {
        self.server = settings;
        self
    }

    /// The workload's own IP, which names the inbound listener of servers on unspecified
    /// addresses (`0.0.0.0:port`); default: the bootstrap node's `INSTANCE_IPS`.
    pub fn pod_ip(mut self, ip: IpAddr) -> Self {
        self.pod_ip = Some(ip);
        self
    }

    /// The path normalization of [`Mesh::serve_fixed`]'s servers, which have no HTTP
    /// connection manager to say (default: Istio's `BASE`). [`Mesh::serve`] takes it from
    /// the inbound listener instead.
    pub fn fixed_path_normalization(mut self, normalization: PathNormalization) -> Self {
        self.fixed_path_normalization = normalization;
        self
    }

    /// Counts the authorization decisions of [`Mesh::serve`]'s servers into `metrics`
    /// (from [`AuthzMetrics::register`]); default: counters nobody exports.
    pub fn authz_metrics(mut self, metrics: AuthzMetrics) -> Self {
        self.authz = Some(metrics);
        self
    }

    /// Starts the identity source and the xDS client, if any (on the current Tokio runtime).
    pub fn build(self) -> Result<Mesh, BuildError> {
        let identity = match self.identity {
            Some(i) => i,
            None => match &self.config {
                Some(Config::Bootstrap(b)) => bootstrap_identity(b)?
                    .map(|s| Identity::Source(Box::new(s)))
                    .ok_or(BuildError::NoIdentity)?,
                _ => return Err(BuildError::NoIdentity),
            },
        };
        let identity = match identity {
            Identity::Store(s) => s,
            Identity::Source(src) => {
                let store = IdentityStore::new();
                tokio::spawn(src.run(store.clone()));
                store
            }
        };
        let mut inbound = InboundSettings {
            template: ISTIO_LISTENER_TEMPLATE.to_owned(),
            pod_ip: self.pod_ip,
            authz: self.authz.unwrap_or_default(),
            fixed_path_normalization: self.fixed_path_normalization,
        };
        let mut xds_needs_identity = false;
        let xds = match self.config.ok_or(BuildError::NoConfig)? {
            Config::Client(c) => Ok(c),
            Config::Bootstrap(b) => {
                if let Some(t) = &b.server_listener_resource_name_template {
                    inbound.template = t.clone();
                }
                inbound.pod_ip = inbound.pod_ip.or_else(|| instance_ip(&b));
                let config = XdsClientConfig::from_bootstrap(&b)
                    .map_err(|e| BuildError::Bootstrap(e.to_string()))?;
                // Noted when the channel takes the workload certificate for its TLS.
                let uses_identity = Arc::new(AtomicBool::new(false));
                let tls = control_plane_tls(identity.clone());
                let noted = uses_identity.clone();
                let tls: IdentityTls = Arc::new(move |expected: Option<&str>| {
                    noted.store(true, Ordering::Relaxed);
                    tls(expected)
                });
                let channel = channel_from_bootstrap_with(
                    &b,
                    mesh_tls::config::default_provider(),
                    Some(tls),
                )
                .map_err(|e| BuildError::Bootstrap(e.to_string()))?;
                xds_needs_identity = uses_identity.load(Ordering::Relaxed);
                Ok(XdsClient::try_new(config, channel)
                    .map_err(|e| BuildError::Bootstrap(e.to_string()))?)
            }
            Config::Source(s) => Err(s),
        };
        let (xds, source): (Option<XdsClient>, Arc<dyn ConfigSource>) = match xds {
            Ok(c) => (Some(c.clone()), Arc::new(c)),
            Err(s) => (None, s),
        };
        let upstream = self.upstream.unwrap_or_default();
        let stack = self.stack.unwrap_or_else(|| {
            let u = upstream.clone();
            Arc::new(ResilienceStack::new().observe(move |name, r| u.track(name, r.into())))
        });
        let metrics = self.metrics.unwrap_or_default();
        let mut client_config = self.client;
        // Tunnels to HBONE endpoints count in istio_tcp_* and carry our baggage, as
        // `Mesh::hbone_client()`'s do.
        if client_config.pool.hbone.is_none() {
            client_config.pool.hbone = Some(crate::hbone_metrics::client(
                &identity,
                &metrics,
                &self.workload,
            ));
        }
        let mesh_client =
            MeshClient::with_shared_stack(source.clone(), identity.clone(), client_config, stack);
        let tags = SpanTags::from_workload(&self.workload);
        #[cfg(feature = "otlp")]
        let otlp = crate::otel::from_env(&service_name(&self.workload))
            .map_err(|e| BuildError::Tracing(e.to_string()))?;
        // Outermost: the client span covers the whole call, retries included.
        let client = TraceLayer::client(Propagation::Both)
            .with_tags(tags.clone())
            .layer(tower::Layer::layer(
                &IstioMetricsLayer::source(&metrics, self.workload.clone()),
                mesh_client.clone(),
            ));
        Ok(Mesh {
            identity,
            xds,
            xds_needs_identity,
            source,
            client,
            mesh_client,
            metrics,
            upstream,
            workload: self.workload,
            server: self.server,
            inbound,
            trace_server: TraceLayer::server(Propagation::Both).with_tags(tags),
            #[cfg(feature = "otlp")]
            otlp,
        })
    }
}

/// How often certificate files are read at least: an agent renews them without notice, and
/// a stale certificate fails handshakes once it expires.
const CERT_FILE_POLL: Duration = Duration::from_secs(1);

/// The workload identity a bootstrap names: the `file_watcher` certificate provider
/// `default` (the instance Istio's agent writes and its xDS TLS contexts reference), or the
/// only provider when there is one. Its files are watched (read every `refresh_interval`,
/// and at least every second) and a renewed certificate replaces the old one. `None` when
/// the bootstrap has no such provider, or it names no certificate (CA file only).
pub fn bootstrap_identity(b: &Bootstrap) -> Result<Option<FileSource>, BuildError> {
    let providers = &b.certificate_providers;
    let Some((name, provider)) = providers.get_key_value("default").or_else(|| {
        (providers.len() == 1)
            .then(|| providers.iter().next())
            .flatten()
    }) else {
        return Ok(None);
    };
    let fw = provider
        .file_watcher()
        .map_err(|e| BuildError::Bootstrap(format!("certificate_providers.{name}: {e}")))?;
    let refresh = fw
        .refresh()
        .map_err(|e| BuildError::Bootstrap(format!("certificate_providers.{name}: {e}")))?;
    let (Some(cert_chain), Some(key), Some(roots)) = (
        fw.certificate_file,
        fw.private_key_file,
        fw.ca_certificate_file,
    ) else {
        return Ok(None);
    };
    Ok(Some(FileSource::new(FileSourceConfig {
        cert_chain,
        key,
        roots,
        poll_interval: refresh.min(CERT_FILE_POLL),
    })))
}

/// The `service.name` when `OTEL_SERVICE_NAME` does not give one: the workload's canonical
/// service, app or workload name.
#[cfg(feature = "otlp")]
fn service_name(w: &WorkloadInfo) -> String {
    [&w.canonical_service, &w.app, &w.workload]
        .into_iter()
        .find(|v| !v.is_empty() && *v != "unknown")
        .cloned()
        .unwrap_or_else(|| "unknown_service".into())
}

/// The first of the bootstrap node's `INSTANCE_IPS`.
fn instance_ip(b: &Bootstrap) -> Option<IpAddr> {
    let ips = b.node.metadata.get("INSTANCE_IPS")?.as_str()?;
    ips.split(',').next()?.trim().parse().ok()
}
