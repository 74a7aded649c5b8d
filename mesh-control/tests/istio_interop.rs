//! Istio's own validation on our example config: istioctl 1.31 (built from the Go module proxy
//! by scripts/peers/istioctl.sh) runs Galley's schema validation (`istioctl validate`) and the
//! cross-resource analyzers (`istioctl analyze --use-kube=false`) offline.
//!
//! What we accept, Istio accepts; and where the rules overlap, a broken edit is rejected by
//! both. (istiod itself, `pilot-discovery --registries= --configDir`, cannot be started
//! without Kubernetes in Istio 1.31: see docs/istio-config.md.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mesh_control::istio::LoadReport;
use mesh_test_support::require_peer;

fn bookinfo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/config/bookinfo")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Runs istioctl; returns (exit code, stdout + stderr).
fn istioctl(bin: &Path, args: &[&str], files: &[PathBuf]) -> (i32, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(bin);
    cmd.args(args).env("HOME", home.path());
    for f in files {
        if args.first() == Some(&"validate") {
            cmd.arg("-f");
        }
        cmd.arg(f);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn istio_accepts_the_bookinfo_config() {
    let bin = require_peer!("MESH_ISTIOCTL_BIN");
    let files = yaml_files(&bookinfo());
    assert_eq!(files.len(), 5);
    assert!(LoadReport::from_dir(&bookinfo()).unwrap().errors.is_empty());

    let (code, out) = istioctl(&bin, &["validate"], &files);
    assert_eq!(code, 0, "{out}");
    for f in &files {
        assert!(
            out.contains(&format!("\"{}\" is valid", f.display())),
            "{out}"
        );
    }

    let (code, out) = istioctl(&bin, &["analyze", "--use-kube=false"], &files);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No validation issues found"), "{out}");
}

#[test]
fn istio_and_we_reject_the_same_broken_edit() {
    let bin = require_peer!("MESH_ISTIOCTL_BIN");
    let dir = tempfile::tempdir().unwrap();
    for f in yaml_files(&bookinfo()) {
        fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let routing = dir.path().join("routing.yaml");
    let text = fs::read_to_string(&routing)
        .unwrap()
        .replace("subset: v2", "subset: v4")
        .replace("exact: jason", "regex: \"ja(son\"");
    fs::write(&routing, text).unwrap();

    let ours: Vec<String> = LoadReport::from_dir(dir.path())
        .unwrap()
        .errors
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ours.len(), 2, "{ours:#?}");
    assert!(ours[0].contains("invalid regex `ja(son`"), "{ours:#?}");
    assert!(
        ours[1].contains(
            "subset `v4` is not defined by a DestinationRule for `reviews.default.svc.cluster.local`"
        ),
        "{ours:#?}"
    );

    let (code, out) = istioctl(
        &bin,
        &["analyze", "--use-kube=false"],
        &yaml_files(dir.path()),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("IST0101") && out.contains("reviews.default.svc.cluster.local+v4"),
        "{out}"
    );
    assert!(out.contains("IST0106") && out.contains("ja(son"), "{out}");
}
