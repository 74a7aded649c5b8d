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
            "routing.yaml:1: VirtualService default/reviews: spec.http[0].match[0].headers.end-user.regex: invalid regex `(jason`: unclosed group"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "routing.yaml:1: VirtualService default/reviews: spec.http[1].route: weights add up to 110, not 100"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s), config rejected"), "{stderr}");
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
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
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
