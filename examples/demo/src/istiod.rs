//! The control plane the demo's workloads talk to: ours in process (`embedded`), or a real
//! istiod (`--control-plane istiod`).
//!
//! Embedded, the control plane is the directory watcher, the generators and the CA in this
//! process: every workload gets a `mesh_control::LocalSource` for its node (the resources
//! an xDS server would send it, decoded in process) and a certificate from the CA; no xDS
//! server runs and no port is opened for it.
//!
//! In istiod mode the demo starts `pilot-discovery discovery` on the same config directory
//! without Kubernetes (the interop harness `mesh_interop_tests::istiod`: a plugged-in CA in
//! `ROOT_CA_DIR`, every port on 127.0.0.1, `JWT_RULE` trusting a local token issuer), and
//! every workload bootstraps as an Istio proxyless workload: a service-account JWT, its
//! certificate from istiod's CA over TLS (renewed at half life), xDS over TLS with the node
//! of `Bootstrap::istio_proxyless` (`GENERATOR: grpc`). docs/istio.md explains each step and
//! what changes in a real Kubernetes mesh.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_control::generate::{GeneratorOptions, MeshGenerator};
use mesh_control::istio::{ConfigWatcher, WatchOptions};
use mesh_core::TrustDomain;
use mesh_interop_tests::istiod::{ISTIOD_SERVER_NAME, Istiod, IstiodOptions};
use mesh_interop_tests::jwt::TestIssuer;
use mesh_interop_tests::workload::{self as proxyless, ControlPlaneAccess, WorkloadSpec};
use mesh_tls::dev_ca::DevCa;

use crate::DemoError;
use crate::options::{ControlPlaneKind, DemoOptions};
use crate::stats::Telemetry;
use crate::workload::Workload;

/// `DEMO_CONTROL_PLANE_RESTART_SECS` (for scripts/soak, istiod mode): kill istiod (SIGKILL:
/// its streams are cut mid-flight) this often and start it again on the same ports, CA and
/// config, as a supervisor would.
const RESTART_ENV: &str = "DEMO_CONTROL_PLANE_RESTART_SECS";

/// How many times the restarter brought istiod back (reported by `/stats`).
pub(crate) static RESTARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A running control plane.
pub(crate) enum Plane {
    /// mesh-control in process.
    Embedded {
        /// The watched config directory.
        watcher: Box<ConfigWatcher>,
        /// The generators every workload's source shares.
        generator: MeshGenerator,
        /// The mesh CA.
        ca: Arc<DevCa>,
    },
    /// istiod as a child process (killed on drop).
    Istiod(Box<IstiodPlane>),
}

/// istiod, the token issuer it trusts, and the proxyless workloads' mesh parts (their
/// certificate renewal runs as long as they are held).
pub(crate) struct IstiodPlane {
    istiod: Arc<tokio::sync::Mutex<Istiod>>,
    /// `describe` of the running istiod (its addresses survive restarts).
    description: String,
    restarter: Option<tokio::task::JoinHandle<()>>,
    access: ControlPlaneAccess,
    held: Mutex<Vec<proxyless::Workload>>,
    _issuer: Arc<TestIssuer>,
    _work: tempfile::TempDir,
}

impl Plane {
    /// Starts the control plane `opts` asks for.
    pub(crate) async fn start(opts: &DemoOptions) -> Result<Plane, DemoError> {
        match opts.control_plane {
            ControlPlaneKind::Embedded => {
                let watcher = ConfigWatcher::start(&opts.config_dir, WatchOptions::default())
                    .await
                    .map_err(|e| DemoError(format!("control plane: {e}")))?;
                let td = TrustDomain::new("cluster.local").map_err(|e| DemoError(e.to_string()))?;
                let ca = DevCa::new(td).map_err(|e| DemoError(format!("mesh CA: {e}")))?;
                Ok(Plane::Embedded {
                    watcher: Box::new(watcher),
                    generator: MeshGenerator::new(GeneratorOptions::default()),
                    ca: Arc::new(ca),
                })
            }
            ControlPlaneKind::Istiod => Ok(Plane::Istiod(Box::new(start_istiod(opts).await?))),
        }
    }

    /// One line saying what runs where.
    pub(crate) fn describe(&self, opts: &DemoOptions) -> String {
        match self {
            Plane::Embedded { .. } => format!(
                "control plane: in process (each workload's config generated and decoded without xDS), \
                 config {}, CA in process (trust domain cluster.local)",
                opts.config_dir.display()
            ),
            Plane::Istiod(p) => p.description.clone(),
        }
    }

    /// A workload's identity, config source and mesh, from this control plane, recording
    /// into `telemetry`.
    pub(crate) async fn workload(
        &self,
        name: &str,
        account: &str,
        version: &str,
        telemetry: &Telemetry,
    ) -> Result<Workload, String> {
        let who = (name, account, version);
        match self {
            Plane::Embedded {
                watcher,
                generator,
                ca,
            } => Workload::start(ca, watcher.config(), generator, who, telemetry),
            Plane::Istiod(p) => {
                // Every Bookinfo process listens on 127.0.0.1: the node's IP.
                let spec = WorkloadSpec::new(name, version, account, [127, 0, 0, 1]);
                let w = proxyless::Workload::start(&p.access, spec)
                    .await
                    .map_err(|e| e.to_string());
                let w = match w {
                    Ok(w) => w,
                    Err(e) => {
                        let log = p.istiod.lock().await.log_tail(20);
                        return Err(format!("{e}\nistiod log:\n{log}"));
                    }
                };
                // The same mesh as the embedded mode's workloads (resilience layers
                // configured by the VirtualServices and DestinationRules, telemetry).
                let out = Workload::new(
                    w.id.clone(),
                    w.identity.clone(),
                    w.xds.clone(),
                    who,
                    telemetry,
                )?;
                p.held
                    .lock()
                    .map_err(|_| "workload list poisoned".to_owned())?
                    .push(w);
                Ok(out)
            }
        }
    }

    /// Stops the control plane.
    pub(crate) async fn shutdown(self) {
        match self {
            // Dropping the watcher stops it; the sources keep their last config.
            Plane::Embedded { .. } => {}
            Plane::Istiod(p) => {
                if let Some(r) = &p.restarter {
                    r.abort();
                }
                // Workloads first: their xDS streams end as a client's normal close, not
                // as a failure when istiod goes away under them.
                let held = p.held.lock().map(|mut h| std::mem::take(&mut *h));
                for w in held.unwrap_or_default() {
                    w.xds.close().await;
                }
                p.istiod.lock().await.kill().await
            }
        }
    }
}

async fn start_istiod(opts: &DemoOptions) -> Result<IstiodPlane, DemoError> {
    // The binary reads its environment here, not the library crates.
    let bin = opts
        .istiod_bin
        .clone()
        .or_else(|| std::env::var_os("MESH_ISTIOD_BIN").map(PathBuf::from))
        .ok_or_else(|| {
            DemoError(
                "--control-plane istiod needs --istiod-bin or MESH_ISTIOD_BIN \
                 (build it: eval \"$(MESH_PEERS_DIR=$PWD/.cache/peers bash scripts/peers/istiod.sh)\")"
                    .into(),
            )
        })?;
    let work = tempfile::tempdir().map_err(|e| DemoError(format!("work directory: {e}")))?;
    let td = TrustDomain::new("cluster.local").map_err(|e| DemoError(e.to_string()))?;
    let ca = DevCa::with_intermediate(td).map_err(|e| DemoError(format!("istiod CA: {e}")))?;
    let issuer = Arc::new(
        TestIssuer::start()
            .await
            .map_err(|e| DemoError(format!("token issuer: {e}")))?,
    );
    let options = IstiodOptions {
        config_dir: Some(opts.config_dir.clone()),
        jwt_rule: Some(issuer.jwt_rule()),
        env: Vec::new(),
    };
    let istiod = Istiod::start(&bin, work.path(), &ca, options)
        .await
        .map_err(|e| DemoError(format!("istiod ({}): {e}", bin.display())))?;
    let access = ControlPlaneAccess {
        ca_url: istiod.secure_url(),
        root: istiod.ca_root(),
        server_name: Some(ISTIOD_SERVER_NAME.into()),
        xds_url: istiod.secure_url(),
        tokens: Some(issuer.clone()),
        token_dir: work.path().into(),
        cert_ttl: crate::workload::cert_ttl(),
    };
    let description = format!(
        "control plane: istiod, CA and xDS on {} (TLS, JWT auth), debug on http://{}/debug/syncz, config {}",
        istiod.secure_url(),
        istiod.addrs().http,
        opts.config_dir.display()
    );
    let istiod = Arc::new(tokio::sync::Mutex::new(istiod));
    let restarter = restart_every().map(|every| tokio::spawn(restart_loop(istiod.clone(), every)));
    Ok(IstiodPlane {
        istiod,
        description,
        restarter,
        access,
        held: Mutex::new(Vec::new()),
        _issuer: issuer,
        _work: work,
    })
}

/// The restart period asked for by [`RESTART_ENV`], if any.
fn restart_every() -> Option<Duration> {
    std::env::var(RESTART_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

/// Kills istiod every `every` and starts it again at once; says so on stderr.
async fn restart_loop(istiod: Arc<tokio::sync::Mutex<Istiod>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let started = std::time::Instant::now();
        let mut istiod = istiod.lock().await;
        match istiod.restart().await {
            Ok(()) => {
                let n = RESTARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                eprintln!(
                    "control plane: istiod killed and restarted ({n}), serving again after {:?}",
                    started.elapsed()
                );
            }
            Err(e) => eprintln!("control plane: istiod restart failed: {e}"),
        }
    }
}
