//! gRPC hello: a tonic server (gRPC health, a prebuilt service) behind `Mesh::serve` and a
//! tonic client on `mesh.channel`, over mTLS, both configured by the embedded control
//! plane from the Istio YAML in `config/`. In a cluster, build each mesh with
//! `Mesh::builder().bootstrap_from_env()` instead (see docs/grpc.md).

use std::path::Path;

use mesh::Mesh;
use mesh::tls::dev_ca::DevCa;
use mesh::xds::bootstrap::IstioNode;
use mesh_control::local::LocalSource;
use tokio_stream::StreamExt;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Any error of the example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A workload named `name` (its service account too) with label `app=<name>`.
async fn workload(ca: &DevCa, config: &Path, name: &str) -> Result<Mesh, BoxError> {
    let node = IstioNode {
        ip: "127.0.0.1".parse()?,
        pod_name: name.into(),
        namespace: "default".into(),
        service_account: name.into(),
        labels: [("app".to_owned(), name.to_owned())].into(),
        ..Default::default()
    };
    let source = LocalSource::watch_dir(
        config,
        Default::default(),
        node.node_proto(),
        Default::default(),
    )
    .await?;
    Ok(Mesh::builder()
        .dev_ca(ca, &node.spiffe_id()?)?
        .config_source(source)
        .build()?)
}

/// Serves the greeter, then makes `calls` health checks and one watch through the mesh;
/// returns what the client saw, one line per call.
pub async fn run(config: &Path, calls: u32) -> Result<Vec<String>, BoxError> {
    let ca = DevCa::new("cluster.local".parse()?)?;
    let server = workload(&ca, config, "greeter").await?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let routes = tonic::service::Routes::new(health);
    // `server.serve(addr, routes)` does the same; the server's status says when its
    // inbound listener (mTLS mode, policies) has arrived and it accepts calls.
    let inbound = server.inbound_server(([127, 0, 0, 1], 50051).into())?;
    let mut status = inbound.status();
    tokio::spawn(inbound.serve(routes));
    status.wait_for(|s| s.is_serving()).await?;

    let client = workload(&ca, config, "hello-client").await?;
    client
        .resolve("greeter.default.svc.cluster.local:9080")
        .await?;
    let mut greeter =
        HealthClient::new(client.channel("xds:///greeter.default.svc.cluster.local:9080"));
    let mut seen = Vec::new();
    for i in 1..=calls {
        let reply = greeter.check(HealthCheckRequest::default()).await?;
        seen.push(format!("check {i}: {:?}", reply.into_inner().status()));
    }
    let mut watch = greeter
        .watch(HealthCheckRequest::default())
        .await?
        .into_inner();
    if let Some(update) = watch.next().await {
        seen.push(format!("watch: {:?}", update?.status()));
    }
    Ok(seen)
}
