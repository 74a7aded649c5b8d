//! What several test files share: a workload configured by the embedded control plane in
//! process (`LocalSource` watching a directory of Istio YAML), with a dev-CA identity.

pub mod echo;
pub mod grpc;
pub mod xds;

use std::time::Duration;

use mesh::Mesh;
use mesh::tls::dev_ca::DevCa;
use mesh::xds::bootstrap::IstioNode;
use mesh_control::istio::WatchOptions;
use mesh_control::local::{LocalOptions, LocalSource};

/// The mesh of `node`, its identity issued by `ca`, configured from the YAML in `dir`
/// (re-read every 50 ms, so edits apply quickly).
pub async fn local_mesh(ca: &DevCa, dir: &std::path::Path, node: IstioNode) -> Mesh {
    let id = node.spiffe_id().unwrap();
    let source = LocalSource::watch_dir(
        dir,
        WatchOptions {
            interval: Duration::from_millis(50),
        },
        node.node_proto(),
        LocalOptions::default(),
    )
    .await
    .unwrap();
    Mesh::builder()
        .dev_ca(ca, &id)
        .unwrap()
        .config_source(source)
        .build()
        .unwrap()
}

/// A dev CA for `cluster.local`.
pub fn dev_ca() -> DevCa {
    DevCa::new(mesh::core::TrustDomain::new("cluster.local").unwrap()).unwrap()
}
