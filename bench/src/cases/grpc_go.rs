//! Case 10: a grpc-go proxyless client and server pair (`interop/grpc-go-xds`, grpc-go with
//! xDS credentials) under the same kind of config as case 7: the embedded control plane, a
//! `GRPC` port, ISTIO_MUTUAL, certificates from the same dev CA. grpc-go generates its own
//! load (`grpc-go-xds load`), so this case runs its loads itself instead of lanes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_tls::dev_ca::DevCa;
use mesh_xds::bootstrap::{Bootstrap, IstioNode};

use super::lanes::free_port;
use super::process::{ChildProcess, wait_until};
use super::{Case, CaseId, ExternalRun};
use crate::loadgen::{Lane, Load};
use crate::{Error, certs};

/// The grpc-go service.
const HOST: &str = "grpc-go-echo.bench.svc.cluster.local";
const PORT: u16 = 9091;

/// Case 10.
pub struct GrpcGoPair {
    bin: PathBuf,
    dir: tempfile::TempDir,
    server: ChildProcess,
    _cp: ControlPlane,
}

/// The Istio config of the grpc-go service, one workload on `port`. STRICT: a grpc-go
/// server takes only plaintext filter chains of a PERMISSIVE listener (gRFC A36 skips
/// chains that match on `transport_protocol: tls`), and case 7's server is mTLS only.
fn config(port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-go-echo, namespace: bench}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  workloadSelector: {{labels: {{app: grpc-go-echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: grpc-go-echo-1, namespace: bench}}
spec:
  address: 127.0.0.1
  ports: {{grpc: {port}}}
  labels: {{app: grpc-go-echo}}
  serviceAccount: grpc-go-echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: grpc-go-echo, namespace: bench}}
spec:
  host: {HOST}
  trafficPolicy: {{tls: {{mode: ISTIO_MUTUAL}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: bench}}
spec: {{mtls: {{mode: STRICT}}}}
"#
    )
}

fn node(app: &str, cert_dir: PathBuf) -> IstioNode {
    IstioNode {
        ip: [127, 0, 0, 1].into(),
        pod_name: format!("{app}-0"),
        namespace: "bench".into(),
        service_account: app.into(),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        cert_dir: Some(cert_dir),
        ..Default::default()
    }
}

/// The certificate files and xDS bootstrap Istio's agent writes for `app`, under `dir/app`;
/// returns the bootstrap's path.
fn workload(ca: &DevCa, dir: &Path, app: &str, xds: &str) -> Result<PathBuf, Error> {
    let certs_dir = dir.join(app);
    std::fs::create_dir_all(&certs_dir)?;
    let files = certs::write_pem(&certs_dir, "w", &certs::issue(ca, app)?)?;
    std::fs::rename(files.cert, certs_dir.join("cert-chain.pem"))?;
    std::fs::rename(files.key, certs_dir.join("key.pem"))?;
    std::fs::rename(files.root, certs_dir.join("root-cert.pem"))?;
    // `http://` on loopback: insecure channel credentials to the control plane, as the
    // mesh's own bootstrap; grpc-go takes the address without the scheme.
    let mut bootstrap =
        Bootstrap::istio_proxyless(node(app, certs_dir.clone()), &format!("http://{xds}"));
    for s in &mut bootstrap.xds_servers {
        s.server_uri = xds.to_owned();
    }
    let path = certs_dir.join("bootstrap.json");
    std::fs::write(&path, bootstrap.to_json())?;
    Ok(path)
}

impl GrpcGoPair {
    /// Starts the embedded control plane (CA in `ca_dir`, the same as `ca`) and the grpc-go
    /// xDS server `bin`, and waits until the server serves (its xDS listener arrived).
    pub async fn start(bin: &Path, ca: &DevCa, ca_dir: &Path) -> Result<Self, Error> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir)?;
        std::fs::write(config_dir.join("grpc-go.yaml"), config(port))?;
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
        let xds = cp.xds_addr().to_string();
        let server_bootstrap = workload(ca, dir.path(), "grpc-go-echo", &xds)?;
        workload(ca, dir.path(), "bench-go-client", &xds)?;

        let log = dir.path().join("server.log");
        let mut cmd = Command::new(bin);
        cmd.args(["server", &format!("127.0.0.1:{port}")])
            .env("GRPC_XDS_BOOTSTRAP", server_bootstrap);
        let mut server = ChildProcess::spawn("grpc-go server", cmd, &log)?;
        wait_until(Duration::from_secs(20), || {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            let running = server.check_running(&log);
            async move {
                running?;
                match out.lines().any(|l| l.trim() == "SERVING") {
                    true => Ok(()),
                    false => Err(format!("grpc-go server not SERVING yet: {out}").into()),
                }
            }
        })
        .await?;
        Ok(Self {
            bin: bin.into(),
            dir,
            server,
            _cp: cp,
        })
    }
}

/// Parses the `grpc-go-xds load` line: `ok N errors N rps F p50_us F ... cpu_ms F`.
fn parse_load(out: &str) -> Result<ExternalRun, Error> {
    let line = out
        .lines()
        .find(|l| l.starts_with("ok "))
        .ok_or_else(|| format!("no result line in {out:?}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let get = |key: &str| -> Result<f64, Error> {
        let i = words
            .iter()
            .position(|w| *w == key)
            .ok_or_else(|| format!("no {key} in {line:?}"))?;
        let v = words.get(i + 1).ok_or_else(|| format!("no {key} value"))?;
        Ok(v.parse()?)
    };
    Ok(ExternalRun {
        ok: get("ok")? as u64,
        errors: get("errors")? as u64,
        rps: get("rps")?,
        p50_us: get("p50_us")?,
        p90_us: get("p90_us")?,
        p99_us: get("p99_us")?,
        max_us: get("max_us")?,
        cpu_ms: get("cpu_ms")?,
        first_error: None,
    })
}

impl Case for GrpcGoPair {
    fn id(&self) -> CaseId {
        CaseId::GrpcGoPair
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async { Err("the grpc-go pair generates its own load".into()) })
    }

    fn processes(&self) -> Vec<(String, u32)> {
        vec![(self.server.name.clone(), self.server.pid())]
    }

    fn supports(&self, load: Load) -> bool {
        // grpc-go-xds load runs closed loops only.
        !matches!(load, Load::Rate { .. })
    }

    fn run_load(
        &self,
        load: Load,
        warmup: Duration,
        duration: Duration,
    ) -> Option<BoxFuture<'_, Result<ExternalRun, Error>>> {
        Some(Box::pin(async move {
            let bootstrap = self.dir.path().join("bench-go-client/bootstrap.json");
            let mut cmd = Command::new(&self.bin);
            cmd.args([
                "load",
                &format!("xds:///{HOST}:{PORT}"),
                &load.connections().to_string(),
                &warmup.as_secs_f64().to_string(),
                &duration.as_secs_f64().to_string(),
            ])
            .env("GRPC_XDS_BOOTSTRAP", bootstrap);
            // The run ends by itself after warmup + duration.
            let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                return Err(format!("grpc-go load: {}: {stderr}", out.status).into());
            }
            let mut run = parse_load(&stdout)?;
            run.first_error = stderr
                .lines()
                .find_map(|l| l.strip_prefix("first error: "))
                .map(str::to_owned);
            Ok(run)
        }))
    }

    fn describe(&self) -> String {
        "unary gRPC `Health/Check` between a grpc-go v1.84 proxyless pair \
         (`interop/grpc-go-xds`: `grpc-go-xds load`, one channel with xDS client credentials, \
         one goroutine per lane calling back to back -> `xds.NewGRPCServer` with xDS server \
         credentials, a separate process), configured by the embedded control plane as \
         case 7 (a `GRPC` port, ISTIO_MUTUAL, certificate files from the same dev CA); the \
         client's CPU is its own report, the server's is measured; no fixed-rate load"
            .into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_line_is_parsed() {
        let r = parse_load(
            "ok 1200 errors 2 rps 400.5 p50_us 900 p90_us 1500 p99_us 3000 max_us 9000 cpu_ms 812.5\n",
        )
        .unwrap();
        assert_eq!((r.ok, r.errors), (1200, 2));
        assert_eq!(
            (r.rps, r.p50_us, r.p99_us, r.cpu_ms),
            (400.5, 900.0, 3000.0, 812.5)
        );
        assert!(parse_load("nothing").is_err());
    }
}
