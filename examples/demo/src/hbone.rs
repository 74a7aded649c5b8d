//! `--hbone`, ambient mode: the config's WorkloadEntries are replaced by ones labelled
//! `networking.istio.io/tunnel: http` (and `security.istio.io/tlsMode: disabled`, as istiod
//! marks a tunnel only on endpoints without Istio mTLS), each workload on its own loopback
//! address, since HBONE reaches a workload at `<its ip>:15008`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use crate::DemoError;
use crate::services::BOOKINFO;

/// The address of the `i`th workload of [`BOOKINFO`] (Linux routes all of 127/8 to lo).
pub(crate) fn address(i: usize) -> IpAddr {
    Ipv4Addr::new(127, 0, 20, 1 + i as u8).into()
}

/// A copy of `dir`'s YAML files with `workloads.yaml` replaced by the ambient workloads.
pub(crate) fn config(dir: &Path) -> Result<tempfile::TempDir, DemoError> {
    let io = |what: String| move |e: std::io::Error| DemoError(format!("{what}: {e}"));
    let out = tempfile::tempdir().map_err(io("a config directory".into()))?;
    let entries = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(io(format!("reading {}", dir.display())))?
            .path();
        let name = path.file_name().unwrap_or_default();
        let yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if yaml && name != "workloads.yaml" {
            std::fs::copy(&path, out.path().join(name))
                .map_err(io(format!("copying {}", path.display())))?;
        }
    }
    std::fs::write(out.path().join("workloads.yaml"), workloads())
        .map_err(io("writing workloads.yaml".into()))?;
    Ok(out)
}

fn workloads() -> String {
    BOOKINFO
        .iter()
        .enumerate()
        .map(|(i, s)| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}-{version}, namespace: default}}
spec:
  address: {ip}
  ports: {{http: {port}}}
  labels:
    app: {name}
    version: {version}
    networking.istio.io/tunnel: http
    security.istio.io/tlsMode: disabled
  serviceAccount: {account}
",
                name = s.name,
                version = s.version,
                ip = address(i),
                port = s.port,
                account = s.account,
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}
