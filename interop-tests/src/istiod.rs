//! istiod (`pilot-discovery discovery`) as a local process, without Kubernetes.
//!
//! What [`Istiod::start`] sets up, and why:
//! - `--registries=` (no Kubernetes, no other registry) and `--configDir=DIR`: Istio YAML
//!   (ServiceEntry, WorkloadEntry, VirtualService, ...) read from files and watched;
//! - `ROOT_CA_DIR`: our [`DevCa`] written in Istio's plugged-in CA layout, so istiod signs
//!   workload certificates (and its own serving certificate) with a CA the test knows;
//! - `ISTIOD_CUSTOM_HOST=localhost`: an extra DNS SAN on istiod's serving certificate (it
//!   always has `istiod.istio-system.svc`, which clients use as the TLS server name);
//! - `JWT_RULE`: callers authenticate with tokens from [`crate::jwt::TestIssuer`] (and, once
//!   they hold a certificate from this CA, with it as a TLS client certificate);
//! - every listener on a free port of 127.0.0.1 (gRPC 15010-like plaintext, secure gRPC
//!   15012-like TLS, HTTP 8080-like debug, monitoring, webhook, ControlZ).
//!
//! The process is killed when the [`Istiod`] is dropped; its output goes to `istiod.log` in
//! the work directory (see [`Istiod::log_tail`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use mesh_tls::dev_ca::DevCa;
use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::HarnessError;

/// The DNS name on istiod's serving certificate that clients verify.
pub const ISTIOD_SERVER_NAME: &str = "istiod.istio-system.svc";

/// How long istiod may take to open its secure port.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run istiod with.
#[derive(Clone, Debug, Default)]
pub struct IstiodOptions {
    /// The `--configDir` (Istio YAML files). An empty directory is created when `None`.
    pub config_dir: Option<PathBuf>,
    /// The `JWT_RULE` (see [`crate::jwt::TestIssuer::jwt_rule`]); without it only client
    /// certificates authenticate.
    pub jwt_rule: Option<String>,
    /// Extra environment variables (e.g. `PILOT_DEBOUNCE_AFTER`).
    pub env: Vec<(String, String)>,
}

/// The addresses istiod listens on.
#[derive(Clone, Copy, Debug)]
pub struct IstiodAddrs {
    /// Plaintext xDS (`--grpcAddr`, 15010 in a cluster).
    pub grpc: SocketAddr,
    /// TLS xDS and CA (`--secureGRPCAddr`, 15012 in a cluster).
    pub secure_grpc: SocketAddr,
    /// Debug HTTP (`--httpAddr`, 8080 in a cluster): `/debug/syncz`, `/debug/configz`, ...
    pub http: SocketAddr,
    /// Prometheus metrics (`--monitoringAddr`, 15014 in a cluster).
    pub monitoring: SocketAddr,
}

impl IstiodAddrs {
    fn free() -> Result<Self, HarnessError> {
        Ok(Self {
            grpc: free_port()?,
            secure_grpc: free_port()?,
            http: free_port()?,
            monitoring: free_port()?,
        })
    }
}

/// A running istiod. Killed on drop.
#[derive(Debug)]
pub struct Istiod {
    bin: PathBuf,
    work: PathBuf,
    options: IstiodOptions,
    addrs: IstiodAddrs,
    ca_root: CertificateDer<'static>,
    child: Option<Child>,
}

impl Istiod {
    /// Writes `ca` into `work/cacerts` (istiod's `ROOT_CA_DIR`), starts `bin` and waits
    /// until its secure gRPC port accepts connections (istiod opens it last, after the CA).
    pub async fn start(
        bin: &Path,
        work: &Path,
        ca: &DevCa,
        options: IstiodOptions,
    ) -> Result<Self, HarnessError> {
        let cacerts = work.join("cacerts");
        std::fs::create_dir_all(&cacerts)
            .map_err(HarnessError::io(format!("creating {}", cacerts.display())))?;
        ca.save(&cacerts)
            .map_err(|e| HarnessError::Crypto(format!("writing ROOT_CA_DIR: {e}")))?;
        let mut istiod = Self {
            bin: bin.to_owned(),
            work: work.to_owned(),
            options,
            addrs: IstiodAddrs::free()?,
            ca_root: ca.root_der(),
            child: None,
        };
        // A port taken between choosing it and istiod's bind is chosen again, not a failure.
        for _ in 0..2 {
            match istiod.spawn().await {
                Err(HarnessError::NotReady(log)) if log.contains("address already in use") => {
                    istiod.addrs = IstiodAddrs::free()?;
                }
                done => return done.map(|()| istiod),
            }
        }
        istiod.spawn().await.map(|()| istiod)
    }

    /// The listening addresses.
    pub fn addrs(&self) -> IstiodAddrs {
        self.addrs
    }

    /// `https://127.0.0.1:<secure port>`, the CA and TLS xDS address.
    pub fn secure_url(&self) -> String {
        format!("https://{}", self.addrs.secure_grpc)
    }

    /// `http://127.0.0.1:<grpc port>`, the plaintext xDS address.
    pub fn plaintext_url(&self) -> String {
        format!("http://{}", self.addrs.grpc)
    }

    /// The root certificate of the plugged-in CA: it verifies istiod's serving certificate
    /// and every workload certificate istiod issues.
    pub fn ca_root(&self) -> CertificateDer<'static> {
        self.ca_root.clone()
    }

    /// The last `lines` lines of istiod's output (for failure messages).
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fetches a path from istiod's debug HTTP server (e.g. `/debug/syncz`) as a string.
    pub async fn debug_get(&self, path: &str) -> Result<String, HarnessError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = TcpStream::connect(self.addrs.http)
            .await
            .map_err(HarnessError::io("connecting to istiod's debug port"))?;
        let req = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
        conn.write_all(req.as_bytes())
            .await
            .map_err(HarnessError::io("writing a debug request"))?;
        let mut out = String::new();
        conn.read_to_string(&mut out)
            .await
            .map_err(HarnessError::io("reading a debug response"))?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or(out))
    }

    /// Kills the process (a crash: streams are cut).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills istiod and starts it again on the same ports, CA and config.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        self.kill().await;
        self.spawn().await
    }

    fn log_path(&self) -> PathBuf {
        self.work.join("istiod.log")
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        let config_dir = match &self.options.config_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = self.work.join("config");
                std::fs::create_dir_all(&dir)
                    .map_err(HarnessError::io(format!("creating {}", dir.display())))?;
                dir
            }
        };
        let mesh = self.work.join("mesh.yaml");
        std::fs::write(&mesh, "trustDomain: cluster.local\n")
            .map_err(HarnessError::io(format!("writing {}", mesh.display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(HarnessError::io("opening istiod.log"))?;
        let log2 = log
            .try_clone()
            .map_err(HarnessError::io("opening istiod.log"))?;
        let a = self.addrs;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("discovery")
            .arg("--registries=")
            .arg(format!("--configDir={}", config_dir.display()))
            .arg(format!("--meshConfig={}", mesh.display()))
            .arg(format!(
                "--networksConfig={}",
                self.work.join("mesh-networks.yaml").display()
            ))
            .arg(format!("--grpcAddr={}", a.grpc))
            .arg(format!("--secureGRPCAddr={}", a.secure_grpc))
            .arg(format!("--httpAddr={}", a.http))
            .arg(format!("--monitoringAddr={}", a.monitoring))
            .arg(format!("--httpsAddr={}", free_port()?))
            .arg("--ctrlz_address=127.0.0.1")
            .arg(format!("--ctrlz_port={}", free_port()?.port()))
            .arg("--domain=cluster.local")
            .env("ROOT_CA_DIR", self.work.join("cacerts"))
            .env("ISTIOD_CUSTOM_HOST", "localhost")
            .env("POD_NAMESPACE", "istio-system")
            // No Kubernetes: nothing may look for a kubeconfig of the machine.
            .env_remove("KUBECONFIG")
            .env("KUBECONFIG", "/nonexistent")
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true);
        if let Some(rule) = &self.options.jwt_rule {
            cmd.env("JWT_RULE", rule);
        }
        for (k, v) in &self.options.env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(HarnessError::io(format!("starting {}", self.bin.display())))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(HarnessError::NotReady(format!(
                    "istiod exited ({status}) before opening {}:\n{}",
                    a.secure_grpc,
                    self.log_tail(40)
                )));
            }
            if TcpStream::connect(a.secure_grpc).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill().await;
                return Err(HarnessError::NotReady(format!(
                    "istiod did not open {} within {START_TIMEOUT:?}:\n{}",
                    a.secure_grpc,
                    self.log_tail(40)
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.child = Some(child);
        Ok(())
    }
}

/// A free port of 127.0.0.1 outside the ephemeral range (see [`mesh_test_support::free_port`]).
pub fn free_port() -> Result<SocketAddr, HarnessError> {
    Ok(SocketAddr::from((
        [127, 0, 0, 1],
        mesh_test_support::free_port(),
    )))
}
