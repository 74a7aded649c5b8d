//! A real Envoy for interop tests, started from a static YAML config and killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long Envoy gets to start (its admin port answering, or LIVE).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running Envoy (one worker thread, a dynamic base id so several run side by side),
/// its log in `<dir>/envoy.log`. Killed and reaped on drop.
///
/// ```no_run
/// let bin = mesh_test_support::peer("MESH_ENVOY_BIN").unwrap();
/// let dir = std::env::temp_dir();
/// let envoy = mesh_test_support::EnvoyProcess::start_live(&bin, &dir, "admin: ...");
/// println!("{}", envoy.get("/stats"));
/// ```
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    admin: SocketAddr,
    dir: PathBuf,
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EnvoyProcess {
    /// Writes `config` to `<dir>/envoy.yaml`, starts Envoy and waits until its admin port
    /// (which the config must bind, port 0 is fine) answers `/ready`, whatever the state:
    /// an Envoy waiting for its first xDS response is not LIVE yet.
    ///
    /// Panics with Envoy's log when it exits or is not up within 30 s.
    pub fn start(bin: &Path, dir: &Path, config: &str) -> EnvoyProcess {
        Self::launch(bin, dir, config, |_| true)
    }

    /// Like [`EnvoyProcess::start`], and waits until `/ready` says `LIVE` (listeners of a
    /// static config are bound).
    pub fn start_live(bin: &Path, dir: &Path, config: &str) -> EnvoyProcess {
        Self::launch(bin, dir, config, |body| body.contains("LIVE"))
    }

    fn launch(bin: &Path, dir: &Path, config: &str, ready: fn(&str) -> bool) -> EnvoyProcess {
        let config_path = dir.join("envoy.yaml");
        let admin_path = dir.join("admin-address");
        std::fs::write(&config_path, config).expect("write envoy.yaml");
        let _ = std::fs::remove_file(&admin_path);
        let log = std::fs::File::create(dir.join("envoy.log")).expect("create envoy.log");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .args([
                "--concurrency",
                "1",
                "--use-dynamic-base-id",
                "-l",
                "warning",
            ])
            .arg("--admin-address-path")
            .arg(&admin_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut envoy = EnvoyProcess {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 1)),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                panic!("envoy exited with {status}: {}", envoy.log());
            }
            if let Ok(addr) = std::fs::read_to_string(&admin_path)
                && let Ok(addr) = addr.trim().parse()
            {
                envoy.admin = addr;
                if admin_get(addr, "/ready").is_some_and(|b| ready(&b)) {
                    return envoy;
                }
            }
            assert!(
                Instant::now() < deadline,
                "envoy not ready after {START_TIMEOUT:?}: {}",
                envoy.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The directory holding `envoy.yaml` and `envoy.log`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Envoy's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default()
    }

    /// The body of an admin GET (`/config_dump`, `/clusters`, `/stats`...); empty when
    /// the admin port does not answer.
    pub fn get(&self, path: &str) -> String {
        admin_get(self.admin, path).unwrap_or_default()
    }
}

/// A blocking HTTP/1.1 GET to the admin port; the body, if any.
fn admin_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}
