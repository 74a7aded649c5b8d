//! Case 3: the in-process mesh. A `MeshClient` (routes, clusters and endpoints from the
//! embedded control plane over ADS, least-request LB, mTLS pool with the cluster's expected
//! SPIFFE ID) with Istio source metrics, calling a mesh server (mesh-tls acceptor, SPIFFE
//! verification, `PeerIdentity`, Istio destination metrics) in the same process. The
//! VirtualService sets a route timeout and a retry policy. Case 3 talks HTTP/1.1 to the
//! server, as Istio does without `h2UpgradePolicy`; case 9 is the same with
//! `h2UpgradePolicy: UPGRADE`, so it talks HTTP/2.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use futures::future::BoxFuture;
use mesh::MeshClientConfig;
use mesh_control::server::{ControlPlane, ControlPlaneOptions};
use mesh_route::pool::PoolConfig;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_tls::IdentityStore;
use mesh_tls::config::ServerSettings;
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{MeshAcceptor, serve_with_shutdown};
use mesh_xds::bootstrap::{Bootstrap, IstioNode};
use mesh_xds::client::{XdsClient, XdsClientConfig, channel};
use tokio::net::TcpListener;
use tower::Layer;

use super::lanes::{AbortOnDrop, ServiceLane};
use super::{Case, CaseId};
use crate::loadgen::Lane;
use crate::{Error, certs, payload};

/// The service the client calls.
pub const HOST: &str = "echo.bench.svc.cluster.local";
/// The service port.
pub const PORT: u16 = 8080;

/// Case 3 (HTTP/1.1 cluster) or 9 (HTTP/2 cluster).
pub struct InProcessMesh {
    client: mesh::Client,
    upstream: mesh::admin::UpstreamMetrics,
    h2: bool,
    uri: http::Uri,
    port: u16,
    client_store: IdentityStore,
    _cp: ControlPlane,
    config: tempfile::TempDir,
    _server: AbortOnDrop,
}

/// The Istio config of the bench service with one workload listening on `port`; with `h2`
/// its DestinationRule sets `h2UpgradePolicy: UPGRADE`, so clients talk HTTP/2 to it.
pub fn config(port: u16, h2: bool) -> String {
    let upgrade = if h2 {
        "\n    connectionPool: {http: {h2UpgradePolicy: UPGRADE}}"
    } else {
        ""
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: bench}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]
  workloadSelector: {{labels: {{app: echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo-1, namespace: bench}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: echo, version: v1}}
  serviceAccount: echo
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: bench}}
spec:
  host: {HOST}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
    loadBalancer: {{simple: LEAST_REQUEST}}{upgrade}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: bench}}
spec:
  hosts: [{HOST}]
  http:
  - name: default
    route: [{{destination: {{host: {HOST}}}}}]
    timeout: 10s
    retries: {{attempts: 2, perTryTimeout: 5s, retryOn: "5xx,reset,connect-failure"}}
"#
    )
}

fn workload(name: &str) -> WorkloadInfo {
    WorkloadInfo {
        workload: name.into(),
        namespace: "bench".into(),
        app: name.into(),
        ..Default::default()
    }
}

impl InProcessMesh {
    /// Starts the embedded control plane (signing with the CA saved in `ca_dir`, the same
    /// CA as `ca`), the mesh server and the mesh client, and waits until the client has
    /// resolved the target. `h2`: an HTTP/2 cluster (case 9), else HTTP/1.1 (case 3).
    /// `h2_connections`: HTTP/2 connections per endpoint of the client's pool (`None`: the
    /// pool's default).
    pub async fn start(
        ca: &DevCa,
        ca_dir: &Path,
        h2: bool,
        h2_connections: Option<usize>,
    ) -> Result<Self, Error> {
        Self::start_watching(ca, ca_dir, h2, h2_connections, Duration::from_secs(5)).await
    }

    /// [`InProcessMesh::start`] with the control plane reading its config directory every
    /// `watch_interval` (the churn harness edits it every 100 ms).
    pub(crate) async fn start_watching(
        ca: &DevCa,
        ca_dir: &Path,
        h2: bool,
        h2_connections: Option<usize>,
        watch_interval: Duration,
    ) -> Result<Self, Error> {
        let port = super::lanes::free_port()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("bench.yaml"), config(port, h2))?;
        let cp = ControlPlane::start(ControlPlaneOptions {
            config_dir: dir.path().into(),
            xds_addr: ([127, 0, 0, 1], 0).into(),
            ca_addr: None,
            debug_addr: None,
            ca_dir: Some(ca_dir.into()),
            watch_interval,
            ..Default::default()
        })
        .await?;
        let metrics = IstioMetrics::new();

        // Server: mesh-tls acceptor (SPIFFE verification of the caller) + destination metrics.
        let server_store = IdentityStore::from_credentials(certs::issue(ca, "echo")?)?;
        let acceptor = MeshAcceptor::new(server_store, ServerSettings::default());
        let app = IstioMetricsLayer::destination(
            &metrics,
            workload("echo"),
            ServiceInfo::from_host(HOST),
        )
        .layer(tower::service_fn(payload::app));
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let server = tokio::spawn(async move {
            let _ = serve_with_shutdown(listener, acceptor, app, std::future::pending()).await;
        });

        // Client: xDS from the control plane, mTLS identity from the same CA.
        let node = IstioNode {
            pod_name: "bench-client-0".into(),
            namespace: "bench".into(),
            service_account: "bench-client".into(),
            labels: BTreeMap::from([("app".to_owned(), "bench-client".to_owned())]),
            ..Default::default()
        };
        let uri = format!("http://{}", cp.xds_addr());
        let bootstrap = Bootstrap::istio_proxyless(node, &uri);
        let xds = XdsClient::new(
            XdsClientConfig {
                node: bootstrap.node_proto(),
                ..Default::default()
            },
            channel::insecure(&uri)?,
        );
        let client_store = IdentityStore::from_credentials(certs::issue(ca, "bench-client")?)?;
        // The facade's composed client: MeshClient with the per-cluster resilience stack
        // (timeouts, retries, circuit breaker, outlier detection) behind source metrics.
        let mesh = mesh::Mesh::builder()
            .identity_store(client_store.clone())
            .xds_client(xds)
            .metrics(metrics.clone())
            .workload(workload("bench-client"))
            .client_config(MeshClientConfig {
                pool: PoolConfig {
                    http2_connections: h2_connections,
                    ..Default::default()
                },
                ..Default::default()
            })
            .build()?;
        mesh.resolve(&format!("{HOST}:{PORT}")).await?;
        let client = mesh.client();
        Ok(Self {
            client,
            upstream: mesh.upstream_metrics().clone(),
            h2,
            uri: format!("http://{HOST}:{PORT}{}", payload::PATH).parse()?,
            port,
            client_store,
            _cp: cp,
            config: dir,
            _server: AbortOnDrop(server),
        })
    }
}

impl InProcessMesh {
    /// The Istio YAML file the control plane watches.
    pub(crate) fn config_file(&self) -> std::path::PathBuf {
        self.config.path().join("bench.yaml")
    }

    /// The port of the first (and until edited only) workload.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Whether the cluster is HTTP/2.
    pub(crate) fn h2(&self) -> bool {
        self.h2
    }

    /// Upstream connections the client has opened so far, over all its clusters (Envoy's
    /// `upstream_cx_total`).
    pub(crate) fn connections_opened(&self) -> u64 {
        let json = self.upstream.clusters_json();
        json["cluster_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["pool"]["connections_total"].as_u64())
            .sum()
    }

    /// The client's identity, to rotate.
    pub(crate) fn client_identity(&self) -> &IdentityStore {
        &self.client_store
    }
}

impl Case for InProcessMesh {
    fn id(&self) -> CaseId {
        if self.h2 {
            CaseId::MeshH2
        } else {
            CaseId::Mesh
        }
    }

    fn connect(&self) -> BoxFuture<'_, Result<Box<dyn Lane>, Error>> {
        Box::pin(async move {
            Ok(Box::new(ServiceLane::new(self.client.clone(), self.uri.clone())) as Box<dyn Lane>)
        })
    }

    fn describe(&self) -> String {
        let protocol = if self.h2 {
            "HTTP/2 (`h2UpgradePolicy: UPGRADE`): `hyper::client::conn::http2` connections \
             shared by all lanes, one per worker thread unless `--mesh-h2-connections`"
        } else {
            "HTTP/1.1 as Istio without `h2UpgradePolicy`: keep-alive \
             `hyper::client::conn::http1` connections shared by all lanes, one per request in \
             flight"
        };
        format!(
            "the facade's composed client `mesh::Mesh::client()`: `MeshClient` (routing from xDS \
         served by the embedded control plane, least-request LB, mesh-route's pool over \
         mesh-tls mTLS, {protocol}) with the per-cluster \
         `ResilienceStack` (route timeout 10 s, retry policy of 2 attempts on \
         5xx/reset/connect-failure, circuit breaker, outlier detection) behind \
         `IstioMetricsLayer::source` -> mesh-tls `serve_with_shutdown` (SPIFFE mTLS, \
         `PeerIdentity`) -> `IstioMetricsLayer::destination` -> app; each lane holds a clone \
         of the client and calls it (`ready`, `call`)"
        )
    }
}
