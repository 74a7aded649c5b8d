//! Bookinfo in one process, on the in-process mesh.
//!
//! [`run`] starts the embedded control plane (mesh-control in process: the watched Istio
//! config in `examples/config/bookinfo/`, its generators and the mesh CA), then the
//! Bookinfo workloads, each with its own SPIFFE identity (issued by the control plane's CA
//! in process), its own config source (`mesh_control::LocalSource`: the resources an xDS
//! server would send its node, generated and decoded in process, no xDS server) and its
//! own [`MeshClient`](mesh_route::client::MeshClient):
//!
//! ```text
//! load driver -> productpage -> details
//!                            -> reviews v1 | v2 | v3   (90/10 v1/v3 split; end-user: jason -> v2)
//!                                            v2, v3 -> ratings
//! ```
//!
//! Every call is mTLS with SPIFFE identities checked on both sides. A load driver calls
//! productpage, prints a live table every second and a summary at the end; an admin
//! endpoint serves `/ready`, `/config_dump` and `/stats`.
//!
//! With `--control-plane istiod` ([`ControlPlaneKind::Istiod`]) the same workloads run
//! under a real istiod instead: certificates from its CA, xDS from its proxyless generator.
//!
//! With `--hbone` ([`DemoOptions::hbone`], ambient mode) every workload also serves HBONE
//! on `<its ip>:15008` and every call travels through an HBONE tunnel.

mod admin;
mod driver;
mod hbone;
mod istiod;
mod options;
mod services;
mod stats;
mod workload;

use std::future::Future;
use std::time::Duration;

pub use admin::{AdminAddrs, set_log_filter};
pub use options::{ControlPlaneKind, DemoOptions, USAGE, parse_args};
pub use stats::Summary;

/// Why the demo could not run.
#[derive(Debug)]
pub struct DemoError(pub String);

impl std::fmt::Display for DemoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DemoError {}

/// Runs the demo until `opts.duration` passes or `interrupt` completes, then shuts every
/// part down and returns what the driver observed.
pub async fn run(
    mut opts: DemoOptions,
    interrupt: impl Future<Output = ()>,
) -> Result<Summary, DemoError> {
    // Ambient mode runs on a generated copy of the config (kept until the end).
    let _ambient = match (opts.hbone, opts.control_plane) {
        (false, _) => None,
        (true, ControlPlaneKind::Istiod) => {
            return Err(DemoError(
                "--hbone needs --control-plane embedded: istiod's proxyless generator sends                  no tunnel marker"
                    .into(),
            ));
        }
        (true, ControlPlaneKind::Embedded) => {
            let dir = hbone::config(&opts.config_dir)?;
            opts.config_dir = dir.path().to_owned();
            Some(dir)
        }
    };
    let cp = istiod::Plane::start(&opts).await?;
    if !opts.quiet {
        println!("{}", cp.describe(&opts));
    }
    let stats = stats::Stats::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (i, spec) in services::BOOKINFO.iter().enumerate() {
        let w = cp
            .workload(spec.name, spec.account, spec.version, stats.telemetry())
            .await
            .map_err(|e| DemoError(format!("{}: {e}", spec.name)))?;
        let hbone = opts.hbone.then(|| hbone::address(i));
        tasks.extend(services::serve(spec, w, hbone, stats.clone(), stop_rx.clone()).await?);
    }
    let driver = cp
        .workload("loadgen", "loadgen", "v1", stats.telemetry())
        .await
        .map_err(|e| DemoError(format!("loadgen: {e}")))?;
    driver
        .mesh
        .resolve(services::PRODUCTPAGE)
        .await
        .map_err(|e| DemoError(format!("loadgen: {e}")))?;
    let admin = admin::serve(&opts, &driver, stats.clone(), stop_rx.clone()).await?;
    if !opts.quiet {
        println!(
            "admin on http://{}/ (stats/prometheus, config_dump, clusters, certs, ready, healthz, \
             logging, stats), live graph on http://{}/graph, CSDS on {}; driving {} rps for {}",
            admin.http,
            admin.http,
            admin.grpc,
            opts.rate,
            opts.duration
                .map(|d| format!("{d:?}"))
                .unwrap_or_else(|| "ever (Ctrl-C stops)".into())
        );
    }
    let summary = driver::drive(&opts, &driver, &stats, interrupt).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    cp.shutdown().await;
    Ok(summary)
}
