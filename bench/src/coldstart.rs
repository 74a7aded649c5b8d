//! Cold start: from spawning a proxy process to its first successful routed mTLS request
//! (`mesh-bench --cold-start N`). The upstream, a mesh-tls server with the `echo` identity
//! serving [`crate::payload`] over HTTP/2, runs in the harness for the whole measurement;
//! each start spawns a fresh client-side proxy and sends `GET /payload` through its outbound
//! listener as soon as it accepts a connection, retrying every 0.2 ms until one answers 200.
//!
//! - `mesh-proxy` in static mode: `--mesh-config` (the Istio YAML of case 9, generated in
//!   process, no xDS server) and `--identity ca:` (its certificate issued by the local CA
//!   at start), so the time includes issuing the identity, loading and generating the
//!   config, and the first mTLS handshake;
//! - Envoy with a static config (listener, route, cluster and endpoint inline, certificate
//!   files already written): the same route to the same server;
//! - an in-process workload ([`workload`]): a child process of this binary that builds a
//!   `mesh::Mesh` as docs/getting-started.md does, against the embedded control plane the
//!   harness runs on loopback (xDS server and Istio CA, open to loopback callers, on the
//!   same Istio YAML), sends one routed mTLS request through `mesh.client()` and exits. It
//!   reports the instants of its milestones (certificate issued, first xDS response, routes
//!   ready, request sent, response); its time is from spawn to its 200 response.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_control::server::{CaAuth, ControlPlane, ControlPlaneOptions};

use mesh_tls::IdentityStore;
use mesh_tls::config::ServerSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{MeshAcceptor, serve_with_shutdown};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::cases::lanes::{AbortOnDrop, H1Lane, free_port};
use crate::cases::process::ChildProcess;
use crate::cases::{HOST, PORT, envoy, envoy_client, mesh_config};
use crate::loadgen::Lane;
use crate::{Error, certs, payload};

pub mod workload;

/// The start-up times of one proxy or workload, milliseconds, in the order measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ColdStarts {
    /// Which proxy or workload.
    pub name: String,
    /// Each start's time to the first 200.
    pub millis: Vec<f64>,
    /// The in-process workload's milestones, one per start (empty for the proxies).
    #[serde(default)]
    pub milestones: Vec<workload::Milestones>,
}

impl ColdStarts {
    /// The median start.
    pub fn median(&self) -> f64 {
        crate::report::median(self.millis.clone())
    }

    /// The slowest start.
    pub fn max(&self) -> f64 {
        self.millis.iter().copied().fold(0.0, f64::max)
    }
}

/// What every start needs: the CA's directory, mesh-proxy's config, Envoy's certificate
/// files, and the upstream server.
struct Setup {
    dir: tempfile::TempDir,
    ca_dir: std::path::PathBuf,
    config_dir: std::path::PathBuf,
    files: certs::PemFiles,
    server: SocketAddr,
    server_id: String,
    _task: AbortOnDrop,
}

impl Setup {
    async fn new(ca: &DevCa) -> Result<Self, Error> {
        let dir = tempfile::tempdir()?;
        let ca_dir = dir.path().join("ca");
        std::fs::create_dir(&ca_dir)?;
        ca.save(&ca_dir)?;
        let (server, task) = upstream(ca).await?;
        let config_dir = dir.path().join("mesh");
        std::fs::create_dir(&config_dir)?;
        std::fs::write(
            config_dir.join("bench.yaml"),
            mesh_config(server.port(), true),
        )?;
        let files = certs::write_pem(dir.path(), "client", &certs::issue(ca, "bench-client")?)?;
        let server_id = certs::spiffe_id(ca, "echo")?.to_string();
        Ok(Self {
            dir,
            ca_dir,
            config_dir,
            files,
            server,
            server_id,
            _task: task,
        })
    }

    /// `mesh-proxy` in static mode with its outbound listener on `port`.
    fn mesh_proxy(&self, bin: &Path, port: u16) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(["--mesh-config", &self.config_dir.display().to_string()])
            .args(["--identity", &format!("ca:{}", self.ca_dir.display())])
            .args(["--inbound", "off", "--admin", "off"])
            .args(["--outbound", &format!("127.0.0.1:{port}")])
            .args(["--name", "bench-client-0", "--namespace", "bench"])
            .args([
                "--service-account",
                "bench-client",
                "--label",
                "app=bench-client",
            ])
            .args(["--workers", "1"])
            .env("RUST_LOG", proxy_log_level());
        cmd
    }

    /// Envoy with a static config whose listener is on `port`.
    fn envoy(&self, bin: &Path, port: u16) -> Result<Command, Error> {
        let yaml = self.dir.path().join(format!("client-envoy-{port}.yaml"));
        std::fs::write(
            &yaml,
            envoy_client(port, self.server.port(), &self.files, &self.server_id),
        )?;
        Ok(envoy(bin, &yaml))
    }
}

const MESH_PROXY: &str = "mesh-proxy, static mode (--mesh-config, --identity ca:)";
const ENVOY: &str = "Envoy 1.40, static config";
const WORKLOAD: &str = "in-process workload (mesh::Mesh, Istio CA + ADS on loopback)";

/// The embedded control plane of the in-process workload: ADS and the Istio CA on
/// loopback, on the same Istio YAML and CA as the proxies.
struct ControlPlaneOnLoopback {
    cp: ControlPlane,
    root: std::path::PathBuf,
}

impl ControlPlaneOnLoopback {
    async fn start(setup: &Setup) -> Result<Self, Error> {
        let out_dir = setup.dir.path().join("cp");
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: setup.config_dir.clone(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: Some(([127, 0, 0, 1], 0).into()),
            debug_addr: None,
            ca_dir: Some(setup.ca_dir.clone()),
            out_dir: Some(out_dir.clone()),
            ca_auth: CaAuth {
                open: true,
                ..Default::default()
            },
            ..Default::default()
        })
        .await?;
        Ok(Self {
            cp,
            root: out_dir.join("root-cert.pem"),
        })
    }

    /// `mesh-bench --cold-start-child XDS CA ROOT` (`exe` is this binary).
    fn workload(&self, exe: &Path) -> Result<Command, Error> {
        let ca = self.cp.ca_addr().ok_or("the control plane runs no CA")?;
        let mut cmd = Command::new(exe);
        cmd.arg("--cold-start-child")
            .arg(format!("http://{}", self.cp.xds_addr()))
            .arg(format!("https://{ca}"))
            .arg(&self.root)
            .env("RUST_LOG", proxy_log_level());
        Ok(cmd)
    }
}

/// Measures `starts` cold starts of each proxy available and of the in-process workload
/// (when `workload_exe`, this binary, is given), interleaved (mesh-proxy, Envoy, workload,
/// mesh-proxy, ...), so load drift hits them alike.
pub async fn run(
    proxy: Option<&Path>,
    envoy_bin: Option<&Path>,
    workload_exe: Option<&Path>,
    starts: usize,
) -> Result<Vec<ColdStarts>, Error> {
    let ca = DevCa::new(mesh_core::TrustDomain::new("cluster.local")?)?;
    let setup = Setup::new(&ca).await?;
    let cp = match workload_exe {
        Some(_) => Some(ControlPlaneOnLoopback::start(&setup).await?),
        None => None,
    };

    // The proxies' logs, kept when MESH_BENCH_COLDSTART_LOGS names a directory (with
    // MESH_BENCH_PROXY_LOG=debug, say, to see where a start spends its time).
    let log_dir = std::env::var_os("MESH_BENCH_COLDSTART_LOGS")
        .map_or_else(|| setup.dir.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&log_dir)?;
    let mut out = Vec::new();
    for (present, name) in [
        (proxy.is_some(), MESH_PROXY),
        (envoy_bin.is_some(), ENVOY),
        (workload_exe.is_some(), WORKLOAD),
    ] {
        if present {
            out.push(ColdStarts {
                name: name.into(),
                millis: Vec::new(),
                milestones: Vec::new(),
            });
        }
    }
    for i in 0..starts {
        let mut k = 0;
        if let Some(bin) = proxy {
            let port = free_port()?;
            let cmd = setup.mesh_proxy(bin, port);
            let log = log_dir.join(format!("mesh-proxy-{i}.log"));
            let (ms, _child) = time_first_request(cmd, "mesh-proxy", &log, port).await?;
            out[k].millis.push(ms);
            k += 1;
        }
        if let Some(bin) = envoy_bin {
            let port = free_port()?;
            let cmd = setup.envoy(bin, port)?;
            let log = log_dir.join(format!("envoy-{i}.log"));
            let (ms, _child) = time_first_request(cmd, "Envoy", &log, port).await?;
            out[k].millis.push(ms);
            k += 1;
        }
        if let (Some(exe), Some(cp)) = (workload_exe, &cp) {
            let log = log_dir.join(format!("workload-{i}.log"));
            let m = time_workload(cp.workload(exe)?, &log).await?;
            out[k].millis.push(m.response);
            out[k].milestones.push(m);
        }
    }
    Ok(out)
}

/// Runs the in-process workload to its exit and returns its milestones.
async fn time_workload(mut cmd: Command, log: &Path) -> Result<workload::Milestones, Error> {
    let err = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err));
    let (spawned, out) = tokio::task::spawn_blocking(move || {
        let spawned = workload::now_ns();
        let out = cmd.spawn()?.wait_with_output()?;
        Ok::<_, std::io::Error>((spawned, out))
    })
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = std::fs::read_to_string(log).unwrap_or_default();
        return Err(format!("in-process workload: {}\n{stdout}{stderr}", out.status).into());
    }
    workload::parse_report(&stdout, spawned)
}

/// Proxies started as [`run`] starts them, each left running after its first routed
/// request (for the idle footprint); killed when dropped.
pub struct Started {
    procs: Vec<(String, ChildProcess)>,
    _setup: Option<Setup>,
}

impl Started {
    /// Name and pid of each proxy.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.procs
            .iter()
            .map(|(n, c)| (n.clone(), c.pid()))
            .collect()
    }
}

/// Starts each proxy given, one after the other, and returns once each has routed its first
/// request.
pub async fn start_after_first_request(
    ca: &DevCa,
    proxy: Option<&Path>,
    envoy_bin: Option<&Path>,
) -> Result<Started, Error> {
    if proxy.is_none() && envoy_bin.is_none() {
        return Ok(Started {
            procs: Vec::new(),
            _setup: None,
        });
    }
    let setup = Setup::new(ca).await?;
    let mut procs = Vec::new();
    if let Some(bin) = proxy {
        let port = free_port()?;
        let log = setup.dir.path().join("mesh-proxy.log");
        let (_, child) =
            time_first_request(setup.mesh_proxy(bin, port), "mesh-proxy", &log, port).await?;
        procs.push((MESH_PROXY.to_owned(), child));
    }
    if let Some(bin) = envoy_bin {
        let port = free_port()?;
        let log = setup.dir.path().join("envoy.log");
        let (_, child) = time_first_request(setup.envoy(bin, port)?, "Envoy", &log, port).await?;
        procs.push((ENVOY.to_owned(), child));
    }
    Ok(Started {
        procs,
        _setup: Some(setup),
    })
}

/// `RUST_LOG` of the proxies: `MESH_BENCH_PROXY_LOG`, else `warn`.
fn proxy_log_level() -> String {
    std::env::var("MESH_BENCH_PROXY_LOG").unwrap_or_else(|_| "warn".into())
}

/// The mesh-tls server of the `echo` workload (SPIFFE mTLS, HTTP/2 or HTTP/1.1 by ALPN).
async fn upstream(ca: &DevCa) -> Result<(SocketAddr, AbortOnDrop), Error> {
    let store = IdentityStore::from_credentials(certs::issue(ca, "echo")?)?;
    let acceptor = MeshAcceptor::new(store, ServerSettings::default());
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = tower::service_fn(payload::app);
    let task = tokio::spawn(async move {
        let _ = serve_with_shutdown(listener, acceptor, app, std::future::pending()).await;
    });
    Ok((addr, AbortOnDrop(task)))
}

/// Spawns `cmd` and returns the milliseconds until a request through `port` answered 200,
/// and the process (killed when dropped).
async fn time_first_request(
    cmd: Command,
    name: &str,
    log: &Path,
    port: u16,
) -> Result<(f64, ChildProcess), Error> {
    let entry: SocketAddr = ([127, 0, 0, 1], port).into();
    let authority = format!("{HOST}:{PORT}");
    let started = Instant::now();
    let mut child = ChildProcess::spawn(name, cmd, log)?;
    let deadline = started + Duration::from_secs(20);
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(entry).await?;
            tcp.set_nodelay(true)?;
            H1Lane::new(tcp, &authority).await?.send().await
        };
        match attempt.await {
            Ok(()) => return Ok((started.elapsed().as_secs_f64() * 1e3, child)),
            Err(e) if Instant::now() > deadline => {
                child.check_running(log)?;
                return Err(format!("{name}: no answer 20 s after start: {e}").into());
            }
            // A spin with a short pause: tokio's timer would round up to 1 ms.
            Err(_) => std::thread::sleep(Duration::from_micros(200)),
        }
    }
}
