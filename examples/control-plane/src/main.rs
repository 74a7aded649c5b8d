//! `control-plane`: the embedded control plane as a command.
//!
//! ```text
//! control-plane validate DIR          check an Istio config directory; exit 1 on errors
//! control-plane serve --config-dir DIR [options]   serve xDS, the CA and debug endpoints
//! ```

mod serve;

use std::path::Path;
use std::process::ExitCode;

use mesh_control::istio::{Kind, LoadReport, MeshConfig};

pub(crate) const USAGE: &str = "usage (`control-plane COMMAND --help` prints this):
  control-plane validate DIR            check an Istio config directory (exit 1 on errors)
  control-plane serve --config-dir DIR [options]
      serve xDS (SotW + delta ADS), the Istio CA and debug endpoints from a watched
      config directory; Ctrl-C stops. Options:
        --xds-addr ADDR            ADS, plaintext gRPC (default 127.0.0.1:15010)
        --ca-addr ADDR|off         Istio CA, TLS gRPC (default 127.0.0.1:15012)
        --debug-addr ADDR|off      /debug/syncz, /debug/configz, ... (default 127.0.0.1:15014)
        --ca-dir DIR               sign with the CA in DIR (ROOT_CA_DIR layout); created if empty;
                                   without it the CA is in memory: a new root every start
        --out-dir DIR              write root-cert.pem there for data planes
        --ca-token-file FILE       bootstrap bearer token accepted by the CA ...
        --ca-token-identity ID     ... as proof of this SPIFFE ID (default ns/default/sa/default)
        --ca-no-client-certs       do not accept client certificates as CA authentication
        --ca-open                  sign unauthenticated CSRs (refused off loopback)
        --trust-domain TD          default cluster.local";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, .., "--help" | "-h"] | ["help" | "--help" | "-h", ..] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["validate", dir] => validate(Path::new(dir)),
        ["serve", rest @ ..] => serve::run(rest),
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
