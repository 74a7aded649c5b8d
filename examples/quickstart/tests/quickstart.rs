//! docs/getting-started.md, "Your own service", step for step: the control plane started
//! as the guide says (`control-plane serve ... --ca-dir ... --ca-open`, the binary of
//! `cargo run -p control-plane`, on free ports),
//! then `quickstart hello`, then `quickstart call`, whose routed mTLS call must come back
//! from hello naming the caller. Then the control plane restarted on the same CA directory
//! keeps its root, and without `--ca-open` the caller fails within its timeout, saying
//! what the CA answered, and the control plane logs the refusal.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed (SIGINT first: an orderly stop) on drop.
struct Proc(Child);

impl Proc {
    /// SIGINT, then SIGKILL after 5 s; the exit status, `None` when it had to be killed.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.0.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `stdout` until a line starts with `prefix` (or 60 s).
fn wait_line(stdout: ChildStdout, prefix: &'static str) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with(prefix) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no `{prefix}` line"))
}

/// Collects `stderr` as it comes.
fn collect(stderr: ChildStderr) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// What `cargo run -p control-plane` runs. Not `cargo run` itself: `cargo test` holds the
/// build directory's lock while tests run. `cargo test --workspace` (scripts/test) builds it.
fn control_plane_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_quickstart")).with_file_name("control-plane");
    assert!(
        bin.exists(),
        "{} is missing: `cargo build -p control-plane` first",
        bin.display()
    );
    bin
}

/// Step 1 of the guide, on free ports, the CA kept in `ca_dir` and the root written to
/// `out_dir`; returns the process, the xDS and CA addresses it printed and its log.
fn control_plane(
    ca_dir: &Path,
    out_dir: &Path,
    open: bool,
) -> (Proc, String, String, Arc<Mutex<String>>) {
    let mut cmd = Command::new(control_plane_bin());
    cmd.current_dir(workspace())
        .args(["serve", "--config-dir", "examples/quickstart/config"])
        .arg("--ca-dir")
        .arg(ca_dir)
        .arg("--out-dir")
        .arg(out_dir)
        .args(["--xds-addr", "127.0.0.1:0", "--ca-addr", "127.0.0.1:0"])
        .args(["--debug-addr", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if open {
        cmd.arg("--ca-open");
    }
    let mut child = Proc(cmd.spawn().unwrap());
    let log = collect(child.0.stderr.take().unwrap());
    let line = wait_line(child.0.stdout.take().unwrap(), "serving ");
    // serving xds=127.0.0.1:NNN ca=127.0.0.1:MMM debug=off
    let field = |k: &str| {
        line.split(' ')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("{k} in {line}"))
            .to_owned()
    };
    let (xds, ca) = (field("xds="), field("ca="));
    (child, xds, ca, log)
}

fn quickstart(cmd: &str, xds: &str, ca: &str, root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    c.arg(cmd)
        .env("MESH_XDS_ADDR", format!("http://{xds}"))
        .env("MESH_CA_ADDR", format!("https://{ca}"))
        .env("MESH_ROOT_CERT", root)
        .env_remove("MESH_TOKEN_FILE");
    c
}

#[test]
fn the_getting_started_guide_runs_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (ca_dir, out_dir) = (tmp.path().join("ca"), tmp.path().join("out"));
    let root = out_dir.join("root-cert.pem");

    let (mut cp, xds, ca, cp_log) = control_plane(&ca_dir, &out_dir, true);
    let first_root = std::fs::read_to_string(&root).unwrap();

    let mut hello = quickstart("hello", &xds, &ca, &root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(Proc)
        .unwrap();
    let hello_log = collect(hello.0.stderr.take().unwrap());
    let serving = wait_line(hello.0.stdout.take().unwrap(), "hello: serving");
    assert_eq!(
        serving,
        "hello: serving on 127.0.0.1:18480 as spiffe://cluster.local/ns/default/sa/hello"
    );

    let out = quickstart("call", &xds, &ca, &root).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    // The answer came over mTLS from hello's identity, and hello saw the caller's.
    assert_eq!(
        stdout,
        "caller: 200 OK from spiffe://cluster.local/ns/default/sa/hello\n\
         hello, spiffe://cluster.local/ns/default/sa/caller\n"
    );
    assert_eq!(stderr, "", "a normal run prints no warning");

    // A normal stop (Ctrl-C), workloads first: graceful, and nothing printed on either side.
    let status = hello.stop().expect("hello stops on SIGINT");
    assert!(status.success(), "hello exits 0 on SIGINT: {status}");
    assert_eq!(
        *hello_log.lock().unwrap(),
        "",
        "hello's stop prints nothing"
    );
    let status = cp.stop().expect("the control plane stops on SIGINT");
    assert!(
        status.success(),
        "the control plane exits 0 on SIGINT: {status}"
    );
    // The one warning: --ca-open's, deliberate (loud at start).
    let cp_log = cp_log.lock().unwrap().clone();
    let warnings: Vec<&str> = cp_log
        .lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && !l.contains("(open mode)"))
        .collect();
    assert!(
        warnings.is_empty(),
        "the control plane's run and stop print no other warning: {cp_log}"
    );

    // Restarted on the same --ca-dir: the same root, so running workloads keep trusting it.
    let (_cp, xds, ca, log) = control_plane(&ca_dir, &out_dir, false);
    assert_eq!(std::fs::read_to_string(&root).unwrap(), first_root);

    // Without --ca-open (and no token) the CA refuses: the caller says so, in bounded time.
    let started = std::time::Instant::now();
    let out = quickstart("call", &xds, &ca, &root)
        .env("MESH_READY_TIMEOUT", "2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(
        stderr.contains("quickstart call: no workload certificate after 2s: "),
        "{stderr}"
    );
    assert!(
        stderr.contains("Unauthenticated"),
        "the CA's refusal: {stderr}"
    );
    // ... and the control plane logged the refusal.
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("refused a certificate request")
            && log.contains("no client certificate and no bearer token"),
        "{log}"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["hello", "--help"],
        &["call", "-h"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_quickstart"))
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{args:?}");
        assert!(
            stdout.contains("quickstart hello") && stdout.contains("MESH_CA_ADDR"),
            "{args:?}: {stdout}"
        );
    }
}
