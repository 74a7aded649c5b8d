//! Case 4: our proxy pair (examples/proxy, `mesh-proxy --workers 1` each). Load generator
//! -> (HTTP/1.1) the client proxy's outbound listener -> `MeshClient` routing from xDS
//! (embedded control plane, same Istio config as case 9: `h2UpgradePolicy: UPGRADE`) ->
//! mTLS HTTP/2, multiplexed as between the Envoys of case 5 -> the server
//! proxy's STRICT inbound (authorization, Istio metrics) -> (HTTP/1.1) the app in the
//! harness process. Certificates: the same dev CA, as istio-agent style PEM files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_tls::dev_ca::DevCa;
use tokio::net::{TcpListener, TcpStream};

use super::in_process_mesh::{HOST, PORT, config};
use super::lanes::{AbortOnDrop, H1Lane, free_port, serve_h1};
use super::process::{ChildProcess, wait_until};
use super::{Case, CaseId};
use crate::alloc::Snapshot;
use crate::loadgen::Lane;
use crate::{Error, certs};

/// Where the proxy binary is.
#[derive(Clone, Debug, Default)]
pub struct ProxyPairConfig {
    /// The `mesh-proxy` binary (release build of examples/proxy).
    pub bin: Option<PathBuf>,
}

/// Case 4.
pub struct ProxyPair {
    entry: SocketAddr,
    authority: String,
    client: ChildProcess,
    server: ChildProcess,
    admins: [SocketAddr; 2],
    _app: AbortOnDrop,
    _cp: ControlPlane,
    _dir: tempfile::TempDir,
}

struct Side<'a> {
    name: &'a str,
    account: &'a str,
    labels: &'a [&'a str],
    args: Vec<String>,
}

impl ProxyPair {
    /// Starts the control plane, the app and both proxies, and waits until a request passes
    /// through them. Fails when the binary is missing.
    pub async fn start(proxy: &ProxyPairConfig, ca: &DevCa, ca_dir: &Path) -> Result<Self, Error> {
        let bin = match &proxy.bin {
            Some(bin) if bin.is_file() => bin.clone(),
            Some(bin) => return Err(format!("no proxy binary at {}", bin.display()).into()),
            None => {
                return Err(
                    "no proxy binary (build examples/proxy; set MESH_PROXY_BIN or pass \
                            --proxy)"
                        .into(),
                );
            }
        };
        let dir = tempfile::tempdir()?;
        let inbound = free_port()?;
        let config_dir = dir.path().join("config");
        std::fs::create_dir(&config_dir)?;
        std::fs::write(config_dir.join("bench.yaml"), config(inbound, true))?;
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: config_dir.clone(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: None,
            debug_addr: None,
            ca_dir: Some(ca_dir.into()),
            watch_interval: Duration::from_secs(5),
            ..Default::default()
        })
        .await?;
        let xds = format!("http://{}", cp.xds_addr());

        let app_listener = TcpListener::bind("127.0.0.1:0").await?;
        let app_port = app_listener.local_addr()?.port();
        let app = serve_h1(app_listener);
        let (outbound, client_admin, server_admin) = (free_port()?, free_port()?, free_port()?);
        let local = |p: u16| format!("127.0.0.1:{p}");

        let start = |side: Side<'_>| -> Result<(ChildProcess, PathBuf), Error> {
            let id_dir = dir.path().join(side.name);
            std::fs::create_dir(&id_dir)?;
            certs::write_istio_files(&id_dir, &certs::issue(ca, side.account)?)?;
            let mut cmd = Command::new(&bin);
            cmd.args(&side.args)
                .args(["--xds", &xds, "--name", &format!("{}-0", side.name)])
                .args(["--namespace", "bench", "--service-account", side.account])
                .arg("--identity")
                .arg(format!("files:{}", id_dir.display()))
                .args(["--workers", "1"])
                .env("RUST_LOG", "warn");
            for l in side.labels {
                cmd.args(["--label", l]);
            }
            let log = dir.path().join(format!("{}.log", side.name));
            Ok((ChildProcess::spawn(side.name, cmd, &log)?, log))
        };
        let (server, server_log) = start(Side {
            name: "server proxy",
            account: "echo",
            labels: &["app=echo", "version=v1"],
            args: vec![
                "--inbound".into(),
                local(inbound),
                "--app".into(),
                local(app_port),
                "--outbound".into(),
                "off".into(),
                "--admin".into(),
                local(server_admin),
                "--mtls".into(),
                "strict".into(),
            ],
        })?;
        let (client, client_log) = start(Side {
            name: "client proxy",
            account: "bench-client",
            labels: &["app=bench-client"],
            args: vec![
                "--inbound".into(),
                "off".into(),
                "--outbound".into(),
                local(outbound),
                "--admin".into(),
                local(client_admin),
            ],
        })?;
        let mut pair = Self {
            entry: ([127, 0, 0, 1], outbound).into(),
            authority: format!("{HOST}:{PORT}"),
            client,
            server,
            admins: [
                ([127, 0, 0, 1], client_admin).into(),
                ([127, 0, 0, 1], server_admin).into(),
            ],
            _app: app,
            _cp: cp,
            _dir: dir,
        };
        let (entry, authority) = (pair.entry, pair.authority.clone());
        let probe = wait_until(Duration::from_secs(30), || {
            let authority = authority.clone();
            async move {
                let tcp = TcpStream::connect(entry).await?;
                let mut lane = H1Lane::new(tcp, &authority).await?;
                lane.send().await
            }
        })
        .await;
        if let Err(e) = probe {
            pair.server.check_running(&server_log)?;
            pair.client.check_running(&client_log)?;
            return Err(format!("proxy pair: {e}").into());
        }
        Ok(pair)
    }
}

impl Case for ProxyPair {
    fn id(&self) -> CaseId {
        CaseId::ProxyPair
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(self.entry).await?;
            tcp.set_nodelay(true)?;
            Ok(Box::new(H1Lane::new(tcp, &self.authority).await?) as Box<dyn Lane>)
        })
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![
            (self.client.name.clone(), self.client.pid()),
            (self.server.name.clone(), self.server.pid()),
        ]
    }

    fn process_allocations(&self) -> BoxFuture<'_, Option<Snapshot>> {
        Box::pin(async move {
            let mut total = Snapshot::default();
            for admin in self.admins {
                let s = scrape_allocations(admin).await?;
                total.allocs += s.allocs;
                total.bytes += s.bytes;
            }
            Some(total)
        })
    }

    fn describe(&self) -> String {
        "hyper HTTP/1.1 client -> client `mesh-proxy` (`--workers 1`; outbound listener, \
         `MeshClient` routing from the embedded control plane with the same Istio config as \
         case 9, whose `h2UpgradePolicy: UPGRADE` makes the upstream HTTP/2) -> one \
         multiplexed mTLS HTTP/2 connection (as the Envoy pair) -> server `mesh-proxy` \
         (`--workers 1`; STRICT inbound, \
         authorization, Istio metrics) -> HTTP/1.1 -> the hyper app in the harness process; \
         identities from PEM files issued by the same dev CA"
            .into()
    }
}

/// A proxy's allocation counters from its admin port (`None` when it was built without
/// `count-allocs` or does not answer). The scrape's own allocations (a few hundred) count
/// too: noise next to a measured run's thousands of requests.
async fn scrape_allocations(admin: SocketAddr) -> Option<Snapshot> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(admin).await.ok()?;
    tcp.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut text))
        .await
        .ok()?
        .ok()?;
    parse_allocations(&text)
}

fn parse_allocations(exposition: &str) -> Option<Snapshot> {
    let value = |name: &str| {
        exposition.lines().find_map(|l| {
            let v = l.strip_prefix(name)?.strip_prefix(' ')?;
            v.trim().parse::<f64>().ok().map(|v| v as u64)
        })
    };
    Some(Snapshot {
        allocs: value("mesh_heap_allocations_total")?,
        bytes: value("mesh_heap_allocated_bytes_total")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_counters_are_read_from_the_exposition() {
        let text = "# HELP mesh_heap_allocations_total x\n# TYPE mesh_heap_allocations_total counter\n\
                    mesh_heap_allocations_total 1234\nmesh_heap_allocated_bytes_total 5.5e4\n";
        assert_eq!(
            parse_allocations(text),
            Some(Snapshot {
                allocs: 1234,
                bytes: 55_000
            })
        );
        assert_eq!(parse_allocations("mesh_xds_ready 1\n"), None);
    }
}
