//! `control-plane validate DIR`: exit status and messages.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/bookinfo")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_accepts_bookinfo() {
    let dir = bookinfo();
    let (code, stdout, stderr) = run(&["validate", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "valid: 4 ServiceEntry, 6 WorkloadEntry, 4 VirtualService, 4 DestinationRule, \
             1 PeerAuthentication, 3 AuthorizationPolicy (4 services, 6 workload endpoints)"
        ),
        "{stdout}"
    );
}

#[test]
fn validate_rejects_a_broken_copy_with_every_error() {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(bookinfo()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let routing = dir.path().join("routing.yaml");
    let text = fs::read_to_string(&routing)
        .unwrap()
        .replace("weight: 10", "weight: 20")
        .replace("exact: jason", "regex: \"(jason\"");
    fs::write(&routing, text).unwrap();
    fs::write(
        dir.path().join("k8s.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: x }\n",
    )
    .unwrap();

    let (code, _, stderr) = run(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(
        stderr.contains("k8s.yaml:1: skipped v1 ConfigMap"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "routing.yaml:15: VirtualService default/reviews: spec.http[0].match[0].headers.end-user.regex: invalid regex `(jason`: unclosed group"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "routing.yaml:21: VirtualService default/reviews: spec.http[1].route: weights add up to 110, not 100"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s), config rejected"), "{stderr}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["serve", "--help"],
        &["serve", "--config-dir", "x", "-h"],
        &["validate", "--help"],
    ] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(
            stdout.contains("control-plane serve --config-dir DIR [options]")
                && stdout.contains("--ca-dir DIR"),
            "{args:?}: {stdout}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&[]).0, 2);
    assert_eq!(run(&["validate", "/nonexistent/dir"]).0, 2);
    let (code, _, stderr) = run(&["serve"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--config-dir DIR is required"), "{stderr}");
    let (code, _, stderr) = run(&["serve", "--config-dir", "x", "--xds-addr", "nope"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--xds-addr nope: not an address"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&["serve", "--config-dir", "/nonexistent/dir"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read config directory"), "{stderr}");
}

#[test]
fn serve_runs_until_ctrl_c_and_exits_cleanly() {
    use std::io::{BufRead, BufReader, Read, Write};
    let out = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["serve", "--config-dir"])
        .arg(bookinfo())
        .args(["--xds-addr", "127.0.0.1:0", "--ca-addr", "127.0.0.1:0"])
        .args(["--debug-addr", "127.0.0.1:0", "--out-dir"])
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut log = String::new();
        let _ = stderr.read_to_string(&mut log);
        log
    });
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("serving xds=127.0.0.1:"), "{line}");
    let debug = line.split("debug=").nth(1).unwrap().trim().to_string();
    // The debug endpoint serves the loaded config; the root is written for data planes.
    let mut s = std::net::TcpStream::connect(&debug).unwrap();
    write!(
        s,
        "GET /debug/configz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(body.contains("reviews.default.svc.cluster.local"), "{body}");
    let root = fs::read_to_string(out.path().join("root-cert.pem")).unwrap();
    assert!(root.starts_with("-----BEGIN CERTIFICATE-----"));

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve did not exit on SIGINT"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Without --ca-dir the root dies with the process: said once, loudly; an orderly stop
    // adds no warning or error.
    let log = log.join().unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("no --ca-dir: the CA's root lives in memory"),
        "{log}"
    );
}

#[test]
fn serve_refuses_an_open_ca_off_loopback() {
    let (code, _, stderr) = run(&[
        "serve",
        "--config-dir",
        bookinfo().to_str().unwrap(),
        "--xds-addr",
        "127.0.0.1:0",
        "--debug-addr",
        "off",
        "--ca-addr",
        "0.0.0.0:0",
        "--ca-open",
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "refusing to run an unauthenticated (open) CA signer on non-loopback address"
        ),
        "{stderr}"
    );
}

/// Starts `serve` with `--ca-dir ca_dir` and the CA on loopback; returns the child once it
/// serves, or its exit code and stderr when it fails to start.
fn serve_with_ca_dir(
    ca_dir: &std::path::Path,
    out: &std::path::Path,
) -> Result<std::process::Child, (i32, String)> {
    use std::io::{BufRead, BufReader, Read};
    let mut child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["serve", "--config-dir"])
        .arg(bookinfo())
        .args(["--xds-addr", "127.0.0.1:0", "--ca-addr", "127.0.0.1:0"])
        .args(["--debug-addr", "off", "--ca-dir"])
        .arg(ca_dir)
        .arg("--out-dir")
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    if line.starts_with("serving ") {
        return Ok(child);
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Err((status.code().unwrap_or(-1), stderr))
}

fn stop(mut child: std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
#[test]
fn the_ca_dir_is_private_and_a_readable_key_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let base = tempfile::tempdir().unwrap();
    let ca_dir = base.path().join("ca");
    let child = serve_with_ca_dir(&ca_dir, base.path()).unwrap();
    stop(child);
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join("ca-key.pem")), 0o600);
    let mut names: Vec<_> = fs::read_dir(&ca_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Nothing but Istio's four files: no temporary file left behind.
    assert_eq!(
        names,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "root-cert.pem"
        ]
    );
    // The same CA is loaded again.
    let root = fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    let out = tempfile::tempdir().unwrap();
    stop(serve_with_ca_dir(&ca_dir, out.path()).unwrap());
    assert_eq!(
        fs::read_to_string(out.path().join("root-cert.pem")).unwrap(),
        root
    );
    // A key others can read is refused, naming the file and the fix.
    fs::set_permissions(ca_dir.join("ca-key.pem"), fs::Permissions::from_mode(0o644)).unwrap();
    let (code, stderr) = serve_with_ca_dir(&ca_dir, out.path()).unwrap_err();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("ca-key.pem") && stderr.contains("chmod 600"),
        "{stderr}"
    );
}

#[test]
fn a_crash_while_creating_the_ca_leaves_no_half_written_ca() {
    // What a crash before the last rename leaves: certificates, a temporary key, no key.
    let base = tempfile::tempdir().unwrap();
    let ca_dir = base.path().join("ca");
    let first = serve_with_ca_dir(&ca_dir, base.path()).unwrap();
    stop(first);
    // The key is the commit point: written (renamed into place) after every certificate.
    let written = |name: &str| fs::metadata(ca_dir.join(name)).unwrap().modified().unwrap();
    for cert in ["ca-cert.pem", "cert-chain.pem", "root-cert.pem"] {
        assert!(
            written("ca-key.pem") >= written(cert),
            "{cert} written after the key"
        );
    }
    let stale_root = fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    fs::rename(ca_dir.join("ca-key.pem"), ca_dir.join(".tmp-crashed")).unwrap();
    // The next start makes a whole new CA rather than loading certificates without a key.
    let out = tempfile::tempdir().unwrap();
    stop(serve_with_ca_dir(&ca_dir, out.path()).unwrap());
    let root = fs::read_to_string(ca_dir.join("root-cert.pem")).unwrap();
    assert_ne!(root, stale_root, "the stale certificates were kept");
    assert_eq!(
        fs::read_to_string(out.path().join("root-cert.pem")).unwrap(),
        root
    );
    // And that CA loads: key and certificates belong together.
    let again = tempfile::tempdir().unwrap();
    stop(serve_with_ca_dir(&ca_dir, again.path()).unwrap());
    assert_eq!(
        fs::read_to_string(again.path().join("root-cert.pem")).unwrap(),
        root
    );
}
