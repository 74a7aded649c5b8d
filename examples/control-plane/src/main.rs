//! `control-plane`: the embedded control plane as a command.
//!
//! ```text
//! control-plane validate DIR          check an Istio config directory; exit 1 on errors
//! control-plane serve --config-dir DIR   (not implemented yet: the xDS server comes later)
//! ```

use std::path::Path;
use std::process::ExitCode;

use mesh_control::istio::{Kind, LoadReport, MeshConfig};

const USAGE: &str = "usage:
  control-plane validate DIR            check an Istio config directory (exit 1 on errors)
  control-plane serve --config-dir DIR  serve xDS from a config directory (not implemented yet)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["validate", dir] => validate(Path::new(dir)),
        ["serve", "--config-dir", _dir] => {
            eprintln!("control-plane: `serve` is not implemented yet (the xDS server comes later)");
            ExitCode::from(2)
        }
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn validate(dir: &Path) -> ExitCode {
    let report = match LoadReport::from_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "{}: {} error(s), config rejected",
            dir.display(),
            report.errors.len()
        );
        return ExitCode::FAILURE;
    }
    let count = |k: Kind| {
        report
            .resources
            .iter()
            .filter(|r| r.spec.kind() == k)
            .count()
    };
    let config = MeshConfig::from_validated(&report.resources);
    let workloads: usize = config.services.values().map(|s| s.workloads.len()).sum();
    let kinds: Vec<String> = Kind::ALL
        .iter()
        .map(|k| format!("{} {k}", count(*k)))
        .collect();
    println!(
        "{}: valid: {} ({} services, {workloads} workload endpoints)",
        dir.display(),
        kinds.join(", "),
        config.services.len()
    );
    ExitCode::SUCCESS
}
