//! Idle footprint (`mesh-bench --idle [SECS]`): what the mesh costs a process that does
//! nothing, and what an idle proxy holds.
//!
//! - Two child processes of this binary, started side by side, each with a tokio
//!   multi-threaded runtime serving [`crate::payload`] and calling itself once:
//!   **plain**, hyper HTTP/1.1 server and client, no mesh; **mesh**, a mesh-tls server and
//!   the facade's client with one identity, routing from the embedded control plane (run by
//!   the parent) over 10 clusters and 100 endpoints, all 10 resolved, the one request
//!   through the first. Reported: the resident memory of each one second after that request
//!   (and the mesh's delta), and wake-ups per second while idle over `SECS` (default 10).
//! - `mesh-proxy` in static mode (as in [`crate::coldstart`]) and Envoy with a static config:
//!   resident memory one second after each one's first routed request, and their wake-ups
//!   over the same window.
//!
//! A wake-up is a voluntary context switch of any thread of the process (each is a thread
//! going to sleep, so each is followed by a wake-up), summed from
//! `/proc/<pid>/task/*/status`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_core::TrustDomain;
use mesh_telemetry::metrics::IstioMetrics;
use mesh_tls::IdentityStore;
use mesh_tls::config::ServerSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{MeshAcceptor, serve_with_shutdown};
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};

use crate::cases::lanes::{AbortOnDrop, H1Lane, free_port, serve_h1};
use crate::loadgen::Lane;
use crate::{Error, certs, payload, procstat};

/// Clusters in the mesh child's config.
pub const CLUSTERS: usize = 10;
/// Endpoints over all clusters.
pub const ENDPOINTS: usize = 100;

/// The host of cluster `k`.
fn host(k: usize) -> String {
    format!("svc-{k}.bench.svc.cluster.local")
}

/// Istio config: [`CLUSTERS`] services of [`ENDPOINTS`] workloads in all. `svc-0` has one
/// endpoint, the mesh child's server on `port`; the others share the remaining 99 endpoints
/// (loopback addresses nothing listens on: they are resolved, never called).
pub fn config(port: u16) -> String {
    let mut y = String::new();
    let per = (ENDPOINTS - 1).div_ceil(CLUSTERS - 1);
    let mut left = ENDPOINTS - 1;
    for k in 0..CLUSTERS {
        let h = host(k);
        let _ = write!(
            y,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n\
             metadata: {{name: svc-{k}, namespace: bench}}\nspec:\n  hosts: [{h}]\n  \
             location: MESH_INTERNAL\n  resolution: STATIC\n  \
             ports: [{{number: 8080, name: http, protocol: HTTP}}]\n  \
             workloadSelector: {{labels: {{app: svc-{k}}}}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata: {{name: svc-{k}, namespace: bench}}\nspec:\n  host: {h}\n  \
             trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}\n---\n"
        );
        let endpoints: Vec<(String, u16)> = if k == 0 {
            vec![("127.0.0.1".into(), port)]
        } else {
            let n = per.min(left);
            left -= n;
            (0..n)
                .map(|j| (format!("127.0.{k}.{}", j + 1), 8080))
                .collect()
        };
        for (j, (addr, p)) in endpoints.into_iter().enumerate() {
            let _ = write!(
                y,
                "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\n\
                 metadata: {{name: svc-{k}-{j}, namespace: bench}}\nspec:\n  \
                 address: {addr}\n  ports: {{http: {p}}}\n  labels: {{app: svc-{k}}}\n  \
                 serviceAccount: echo\n---\n"
            );
        }
    }
    y
}

/// Resident memory and wake-ups of one process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Footprint {
    /// What runs.
    pub name: String,
    /// Resident memory one second after its first request, bytes.
    pub rss: u64,
    /// Of which anonymous (heap, stacks: `RssAnon`) and file-backed (the binary and
    /// libraries: `RssFile` + `RssShmem`), bytes; 0 where `/proc` does not say.
    #[serde(default)]
    pub rss_anon: u64,
    /// See `rss_anon`.
    #[serde(default)]
    pub rss_file: u64,
    /// Wake-ups per second while idle.
    pub wakeups_per_sec: f64,
}

/// The whole idle run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleRun {
    /// Idle window, seconds.
    pub window_secs: f64,
    /// 1-minute load average before and after.
    pub load_average: (Option<f64>, Option<f64>),
    /// The processes, plain app first, then the mesh app, then the proxies run.
    pub processes: Vec<Footprint>,
}

impl IdleRun {
    /// The mesh app's RSS minus the plain app's, bytes (may be negative).
    pub fn mesh_rss_delta(&self) -> Option<i64> {
        let rss = |i: usize| self.processes.get(i).map(|p| p.rss as i64);
        Some(rss(1)? - rss(0)?)
    }

    /// The report as markdown.
    pub fn markdown(&self) -> String {
        let la = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
        let mut s = format!(
            "Idle footprint, {:.0} s idle window; 1-minute load average {} before, {} after\n\n\
             | process | RSS 1 s after first request | anonymous (heap, stacks) | file-backed (binary) | wake-ups/s idle |\n|---|---|---|---|---|\n",
            self.window_secs,
            la(self.load_average.0),
            la(self.load_average.1)
        );
        for p in &self.processes {
            let _ = writeln!(
                s,
                "| {} | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} |",
                p.name,
                mib(p.rss),
                mib(p.rss_anon),
                mib(p.rss_file),
                p.wakeups_per_sec
            );
        }
        if let Some(d) = self.mesh_rss_delta() {
            let _ = writeln!(
                s,
                "\nMesh app - plain app RSS: {:+.1} MiB (target <= 5 MiB)",
                d as f64 / (1024.0 * 1024.0)
            );
        }
        s
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// `RssAnon` and `RssFile` + `RssShmem` of `pid`, bytes (0 for a line `/proc` lacks).
fn rss_split(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("RssAnon:"), kib("RssFile:") + kib("RssShmem:"))
}

/// A child whose first line on stdout says it is ready; killed when dropped.
struct Ready(Child);

impl Drop for Ready {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(args: &[String]) -> Result<Ready, Error> {
    let exe = std::env::current_exe()?;
    let mut child = Ready(
        Command::new(exe)
            .arg("--idle-child")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let out = child.0.stdout.take().ok_or("child has no stdout")?;
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    if line.trim() != "ready" {
        return Err(format!("idle child {args:?} failed before its first request").into());
    }
    Ok(child)
}

/// Runs the idle measurement: the two apps, then the proxies given.
pub async fn run(
    proxy: Option<&Path>,
    envoy_bin: Option<&Path>,
    window: Duration,
) -> Result<IdleRun, Error> {
    let load_before = procstat::load_average();
    let dir = tempfile::tempdir()?;
    let ca = DevCa::new(TrustDomain::new("cluster.local")?)?;
    let ca_dir = dir.path().join("ca");
    std::fs::create_dir(&ca_dir)?;
    ca.save(&ca_dir)?;
    let mesh_port = free_port()?;
    let config_dir = dir.path().join("config");
    std::fs::create_dir(&config_dir)?;
    std::fs::write(config_dir.join("idle.yaml"), config(mesh_port))?;
    let cp = ControlPlane::start(ControlPlaneOptions {
        config_dir: config_dir.clone(),
        xds_addr: ([127, 0, 0, 1], 0).into(),
        ca_addr: None,
        debug_addr: None,
        ca_dir: Some(ca_dir.clone()),
        watch_interval: Duration::from_secs(5),
        ..Default::default()
    })
    .await?;
    let xds = format!("http://{}", cp.xds_addr());

    // Both apps start at once and are measured over the same window.
    let plain_port = free_port()?.to_string();
    let mesh_args = vec![
        "mesh".into(),
        xds,
        ca_dir.display().to_string(),
        mesh_port.to_string(),
    ];
    let (plain, mesh) = tokio::task::spawn_blocking(move || {
        Ok::<_, Error>((
            spawn_child(&["plain".into(), plain_port])?,
            spawn_child(&mesh_args)?,
        ))
    })
    .await??;
    let mut procs: Vec<(String, u32)> = vec![
        (
            "plain app: hyper HTTP/1.1 server + client".into(),
            plain.0.id(),
        ),
        (
            format!(
                "mesh app: mesh-tls server + mesh client, one identity, {CLUSTERS} clusters, \
                 {ENDPOINTS} endpoints"
            ),
            mesh.0.id(),
        ),
    ];

    // The proxies, after their first request (as the cold-start harness starts them).
    let proxies = crate::coldstart::start_after_first_request(&ca, proxy, envoy_bin).await?;
    for (name, pid) in proxies.processes() {
        procs.push((format!("{name}, idle"), pid));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss: Vec<u64> = procs
        .iter()
        .map(|(_, pid)| procstat::pid_rss(*pid))
        .collect::<std::io::Result<_>>()?;
    let split: Vec<(u64, u64)> = procs.iter().map(|(_, pid)| rss_split(*pid)).collect();
    let before: Vec<u64> = procs
        .iter()
        .map(|(_, pid)| procstat::pid_wakeups(*pid))
        .collect::<std::io::Result<_>>()?;
    let t = std::time::Instant::now();
    tokio::time::sleep(window).await;
    let secs = t.elapsed().as_secs_f64();
    let mut processes = Vec::new();
    for ((((name, pid), rss), before), (rss_anon, rss_file)) in
        procs.iter().zip(rss).zip(before).zip(split)
    {
        let after = procstat::pid_wakeups(*pid)?;
        processes.push(Footprint {
            name: name.clone(),
            rss,
            rss_anon,
            rss_file,
            wakeups_per_sec: after.saturating_sub(before) as f64 / secs,
        });
    }
    drop((plain, mesh, proxies, cp));
    Ok(IdleRun {
        window_secs: secs,
        load_average: (load_before, procstat::load_average()),
        processes,
    })
}

/// `mesh-bench --idle-child plain PORT` or `--idle-child mesh XDS CA_DIR PORT`: one of the
/// two apps. Prints `ready` after its first request, then idles until killed.
pub fn child(args: &[String]) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let keep = match args {
            [kind, port] if kind == "plain" => plain_app(port.parse()?).await?,
            [kind, xds, ca_dir, port] if kind == "mesh" => {
                mesh_app(xds, Path::new(ca_dir), port.parse()?).await?
            }
            _ => return Err(format!("--idle-child: unexpected arguments {args:?}").into()),
        };
        println!("ready");
        std::future::pending::<()>().await;
        drop(keep);
        Ok(())
    })
}

async fn plain_app(port: u16) -> Result<Box<dyn Send>, Error> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let server = serve_h1(listener);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut lane = H1Lane::new(tcp, &format!("localhost:{port}")).await?;
    lane.send().await?;
    Ok(Box::new((server, lane)))
}

async fn mesh_app(xds: &str, ca_dir: &Path, port: u16) -> Result<Box<dyn Send>, Error> {
    let ca = DevCa::load(ca_dir, TrustDomain::new("cluster.local")?)?;
    let server_store = IdentityStore::from_credentials(certs::issue(&ca, "echo")?)?;
    let acceptor = MeshAcceptor::new(server_store, ServerSettings::default());
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let server = AbortOnDrop(tokio::spawn(async move {
        let _ = serve_with_shutdown(
            listener,
            acceptor,
            tower::service_fn(payload::app),
            std::future::pending(),
        )
        .await;
    }));
    let node = IstioNode {
        pod_name: "idle-0".into(),
        namespace: "bench".into(),
        service_account: "bench-client".into(),
        labels: BTreeMap::from([("app".to_owned(), "idle".to_owned())]),
        ..Default::default()
    };
    let bootstrap = Bootstrap::istio_proxyless(node, xds);
    let client = XdsClient::new(
        XdsClientConfig {
            node: bootstrap.node_proto(),
            ..Default::default()
        },
        channel::insecure(xds)?,
    );
    let mesh = mesh::Mesh::builder()
        .identity_store(IdentityStore::from_credentials(certs::issue(
            &ca,
            "bench-client",
        )?)?)
        .xds_client(client)
        .metrics(IstioMetrics::new())
        .build()?;
    for k in 0..CLUSTERS {
        mesh.resolve(&format!("{}:8080", host(k))).await?;
    }
    let uri: http::Uri = format!("http://{}:8080{}", host(0), payload::PATH).parse()?;
    let mut lane = crate::cases::lanes::ServiceLane::new(mesh.client(), uri);
    lane.send().await?;
    Ok(Box::new((server, mesh, lane)))
}
