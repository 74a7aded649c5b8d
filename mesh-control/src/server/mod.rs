//! The control plane, wired: watch a config directory, regenerate and push xDS to every
//! client on each valid change, run the Istio CA, and serve debug endpoints.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_control::server::ServeError> {
//! use mesh_control::server::{ControlPlane, ControlPlaneOptions};
//!
//! let cp = ControlPlane::start(ControlPlaneOptions {
//!     config_dir: "examples/config/bookinfo".into(),
//!     ..Default::default()
//! })
//! .await?;
//! println!("xDS on {}, CA on {:?}", cp.xds_addr(), cp.ca_addr());
//! tokio::signal::ctrl_c().await.ok();
//! cp.shutdown().await;
//! # Ok(()) }
//! ```

mod debug;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::xds_server::{ServerOptions, XdsServer};
use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::dev_ca::DevCa;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::{IstioCaServer, RunningCaServer};
use crate::generate::{GeneratorOptions, MeshGenerator};
use crate::istio::{ConfigWatcher, MeshConfig, WatchOptions, WatchStatus};
use crate::local::LocalSource;

/// How callers of the CA prove who they are.
#[derive(Clone, Debug, Default)]
pub struct CaAuth {
    /// A file holding a bootstrap bearer token (re-read at every request) ...
    pub token_file: Option<PathBuf>,
    /// ... and the identity it proves (default `spiffe://<trust domain>/ns/default/sa/default`).
    pub token_identity: Option<String>,
    /// Accept client certificates chained to the mesh root (renewals). Default on.
    pub no_client_certificates: bool,
    /// Sign whatever an unauthenticated CSR asks for: loopback addresses only.
    pub open: bool,
}

/// Control plane settings. `Default` gives istiod's ports on loopback.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// The watched directory of Istio YAML.
    pub config_dir: PathBuf,
    /// ADS (plaintext gRPC, like istiod's 15010). Default `127.0.0.1:15010`.
    pub xds_addr: SocketAddr,
    /// The Istio CA (TLS gRPC, like istiod's 15012); `None` runs no CA.
    pub ca_addr: Option<SocketAddr>,
    /// Debug HTTP endpoints (`/debug/syncz`, ...); `None` serves none. Default
    /// `127.0.0.1:15014`.
    pub debug_addr: Option<SocketAddr>,
    /// A CA directory in Istio's `ROOT_CA_DIR` layout to sign with; created (and saved
    /// there) when empty. `None`: a fresh in-memory CA.
    pub ca_dir: Option<PathBuf>,
    /// Where to write `root-cert.pem` for data planes (Envoy, gRPC file watchers).
    pub out_dir: Option<PathBuf>,
    /// CA authentication.
    pub ca_auth: CaAuth,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// Config directory polling interval.
    pub watch_interval: Duration,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            config_dir: PathBuf::new(),
            xds_addr: ([127, 0, 0, 1], 15010).into(),
            ca_addr: Some(([127, 0, 0, 1], 15012).into()),
            debug_addr: Some(([127, 0, 0, 1], 15014).into()),
            ca_dir: None,
            out_dir: None,
            ca_auth: CaAuth::default(),
            trust_domain: "cluster.local".into(),
            watch_interval: WatchOptions::default().interval,
        }
    }
}

/// Why the control plane cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The config directory is unreadable or invalid at start.
    #[error(transparent)]
    Config(#[from] crate::Error),
    /// The CA could not be created, loaded or started.
    #[error("CA: {0}")]
    Ca(#[from] mesh_tls::TlsError),
    /// A listen address is unusable.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which endpoint.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An output file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A setting is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// A running control plane. Dropping it stops everything; [`ControlPlane::shutdown`]
/// stops gracefully.
pub struct ControlPlane {
    xds: XdsServer<MeshConfig>,
    /// The xDS server's generator, shared with the local sources.
    generator: MeshGenerator,
    watcher: ConfigWatcher,
    ca: Arc<DevCa>,
    ca_server: Option<RunningCaServer>,
    xds_addr: SocketAddr,
    debug_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Logs rejected edits until the watcher stops; aborted on shutdown.
    logger: JoinHandle<()>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("xds_addr", &self.xds_addr)
            .field("debug_addr", &self.debug_addr)
            .field("ca_addr", &self.ca_addr())
            .finish_non_exhaustive()
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { what, addr, source })
}

fn load_or_create_ca(opts: &ControlPlaneOptions) -> Result<DevCa, ServeError> {
    let td = TrustDomain::new(&opts.trust_domain)
        .map_err(|e| ServeError::Invalid(format!("trust domain: {e}")))?;
    let Some(dir) = &opts.ca_dir else {
        return Ok(DevCa::new(td)?);
    };
    // `save` writes the key last: a directory with a key holds a whole CA; without one,
    // whatever a crash left is replaced.
    if dir.join(mesh_tls::dev_ca::files::CA_KEY).exists() {
        return Ok(DevCa::load(dir, td)?);
    }
    let ca = DevCa::new(td)?;
    ca.save(dir)?;
    tracing::info!(dir = %dir.display(), "created a new mesh CA");
    Ok(ca)
}

impl ControlPlane {
    /// Loads the config (it must be valid), creates or loads the CA, and starts serving.
    pub async fn start(opts: ControlPlaneOptions) -> Result<ControlPlane, ServeError> {
        let watcher = ConfigWatcher::start(
            &opts.config_dir,
            WatchOptions {
                interval: opts.watch_interval,
            },
        )
        .await?;
        let ca = Arc::new(load_or_create_ca(&opts)?);
        if let Some(out) = &opts.out_dir {
            let path = out.join(mesh_tls::dev_ca::files::ROOT_CERT);
            std::fs::create_dir_all(out)
                .and_then(|()| std::fs::write(&path, ca.root_pem()))
                .map_err(|source| ServeError::Write { path, source })?;
        }
        let ca_server = match opts.ca_addr {
            None => None,
            Some(addr) => Some(start_ca(&opts, ca.clone(), addr).await?),
        };
        let generator = MeshGenerator::new(GeneratorOptions {
            trust_domain: opts.trust_domain.clone(),
            ..GeneratorOptions::default()
        });
        let xds = XdsServer::new(
            generator.clone(),
            watcher.config(),
            ServerOptions::default(),
        );
        let (stop, stopped) = watch::channel(false);
        let stopped = Stopped(stopped);
        let listener = bind("xDS", opts.xds_addr).await?;
        let xds_addr = listener.local_addr().map_err(|source| ServeError::Bind {
            what: "xDS",
            addr: opts.xds_addr,
            source,
        })?;
        let mut tasks = Vec::new();
        {
            let xds = xds.clone();
            let mut stopped = stopped.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = xds
                    .serve(listener, async move { stopped.wait().await })
                    .await
                {
                    tracing::error!(error = %e, "xDS server stopped");
                }
            }));
        }
        tracing::info!(%xds_addr, config_dir = %opts.config_dir.display(), "xDS server listening");
        let mut debug_addr = None;
        if let Some(addr) = opts.debug_addr {
            let listener = bind("debug", addr).await?;
            debug_addr = listener.local_addr().ok();
            let state = debug::DebugState {
                xds: xds.clone(),
                config: watcher.config(),
                status: watcher.status(),
            };
            tasks.push(tokio::spawn(debug::serve(listener, state, stopped.clone())));
            tracing::info!(addr = ?debug_addr, "debug endpoints listening");
        }
        let logger = tokio::spawn(log_rejections(watcher.status()));
        Ok(ControlPlane {
            xds,
            generator,
            watcher,
            ca,
            ca_server,
            xds_addr,
            debug_addr,
            stop,
            tasks,
            logger,
        })
    }

    /// The ADS address.
    pub fn xds_addr(&self) -> SocketAddr {
        self.xds_addr
    }

    /// The debug HTTP address, if serving.
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.debug_addr
    }

    /// The CA's address, if serving.
    pub fn ca_addr(&self) -> Option<SocketAddr> {
        self.ca_server.as_ref().map(RunningCaServer::local_addr)
    }

    /// The mesh CA (to issue credentials in process, e.g. for tests and demos).
    pub fn ca(&self) -> &Arc<DevCa> {
        &self.ca
    }

    /// The mesh root certificate, PEM.
    pub fn root_pem(&self) -> String {
        self.ca.root_pem()
    }

    /// The xDS server (sync status, NACKs).
    pub fn xds(&self) -> &XdsServer<MeshConfig> {
        &self.xds
    }

    /// A config source for a workload in this process: the resources the xDS server would
    /// send `node` (a proxyless node), generated by the same generator and decoded in
    /// process, without a stream (see [`LocalSource`]).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn local_source(&self, node: Node) -> LocalSource {
        LocalSource::with_generator(self.watcher.config(), node, self.generator.clone(), false)
    }

    /// The config in force.
    pub fn config(&self) -> Arc<MeshConfig> {
        self.watcher.current()
    }

    /// The watcher's status (rejected edits and why).
    pub fn watch_status(&self) -> watch::Receiver<WatchStatus> {
        self.watcher.status()
    }

    /// Stops accepting, closes every stream and waits for the servers to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // Ends every ADS stream, so the gRPC server's graceful shutdown can complete.
        self.xds.close();
        self.logger.abort();
        let tasks = std::mem::take(&mut self.tasks);
        for t in tasks {
            if tokio::time::timeout(Duration::from_secs(2), t)
                .await
                .is_err()
            {
                tracing::debug!("a control-plane task did not stop in 2 s");
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.logger.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn start_ca(
    opts: &ControlPlaneOptions,
    ca: Arc<DevCa>,
    addr: SocketAddr,
) -> Result<RunningCaServer, ServeError> {
    let auth = &opts.ca_auth;
    let mut server = IstioCaServer::new(ca).with_client_certificates(!auth.no_client_certificates);
    if let Some(file) = &auth.token_file {
        let id = auth
            .token_identity
            .clone()
            .unwrap_or_else(|| format!("spiffe://{}/ns/default/sa/default", opts.trust_domain));
        let id = SpiffeId::new(&id)
            .map_err(|e| ServeError::Invalid(format!("CA token identity {id:?}: {e}")))?;
        server = server.with_token_file(file, id);
    }
    if auth.open {
        server = server.allow_unauthenticated();
    }
    // The CA server refuses an open signer on a non-loopback address, and a server with
    // no way to authenticate anyone.
    Ok(server.bind(addr).await?)
}

async fn log_rejections(mut status: watch::Receiver<WatchStatus>) {
    let mut seen = status.borrow_and_update().rejected;
    while status.changed().await.is_ok() {
        let s = status.borrow_and_update().clone();
        if s.rejected != seen {
            seen = s.rejected;
            if let Some(e) = &s.last_error {
                tracing::error!("config edit rejected; still serving the previous config:\n{e}");
            }
        }
    }
}

/// The stop signal, for every server task (a dropped sender also means stop).
#[derive(Clone)]
pub(crate) struct Stopped(watch::Receiver<bool>);

impl Stopped {
    pub(crate) async fn wait(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }
}
