#![doc = include_str!("../README.md")]

mod builder;
pub mod inbound;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use builder::{BuildError, MeshBuilder};
pub use mesh_core as core;
pub use mesh_resilience as resilience;
pub use mesh_resilience::stack::{ClusterResilience, ResilienceStack};
pub use mesh_route as route;
pub use mesh_route::client::{MeshBody, MeshClient, MeshClientConfig, Upstream};
pub use mesh_telemetry as telemetry;
pub use mesh_tls as tls;
pub use mesh_tls::{IdentityStore, PeerIdentity};
pub use mesh_xds as xds;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use mesh_core::config::ConfigSource;
use mesh_telemetry::metrics::upstream::UpstreamMetrics;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_tls::config::ServerSettings;
use mesh_tls::server::MeshAcceptor;
use mesh_xds::client::XdsClient;
use prometheus_client::registry::Registry;
use tower::{BoxError, Service};

/// What [`Mesh::client`] returns: [`MeshClient`] (routing, load balancing, mTLS pools, and
/// per cluster the [`ResilienceStack`]) behind Istio's source-side request metrics. A
/// `tower::Service` for `http::Request<B>` (any body) and a tonic channel.
pub type Client = mesh_telemetry::metrics::IstioMetricsService<MeshClient>;

/// A workload's mesh: its identity, its config source (an xDS client or another
/// [`ConfigSource`]), its outbound [`Client`] and the mTLS server side. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    identity: IdentityStore,
    /// The xDS client, when the config comes from one.
    xds: Option<XdsClient>,
    /// Where the config comes from (the xDS client, when there is one).
    source: Arc<dyn ConfigSource>,
    client: Client,
    mesh_client: MeshClient,
    metrics: IstioMetrics,
    upstream: UpstreamMetrics,
    workload: WorkloadInfo,
    server: ServerSettings,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("client", &self.client)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Starts building (see [`MeshBuilder`]).
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// The outbound client: routes, balances and sends over mTLS per the xDS config, with
    /// the cluster and route resilience settings applied (fault injection, timeouts,
    /// retries, circuit breakers, outlier detection; see [`ResilienceStack`]) and Istio's
    /// source-side request metrics recorded into [`Mesh::metrics`].
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Subscribes to `target` (`host:port`) and waits until its routes, clusters and
    /// endpoints arrive (optional: the first request does the same; see
    /// [`MeshClient::resolve`]).
    pub async fn resolve(&self, target: &str) -> Result<(), mesh_route::client::MeshClientError> {
        self.mesh_client.resolve(target).await
    }

    /// The same client without the metrics layer.
    pub fn mesh_client(&self) -> MeshClient {
        self.mesh_client.clone()
    }

    /// Istio's standard metric families the client records into; register them once in
    /// your Prometheus registry (`metrics().register(&mut registry)`).
    pub fn metrics(&self) -> &IstioMetrics {
        &self.metrics
    }

    /// The client's per-cluster upstream state (`mesh_cluster_*` families and Envoy's
    /// `/clusters` JSON with [`UpstreamMetrics::clusters_json`]): membership, EDS health,
    /// outlier ejections, requests in flight, retries, circuit-breaker overflows and
    /// connection-pool counters (`upstream_cx_total`, `upstream_cx_active`,
    /// `upstream_cx_connect_fail`) of every cluster the default [`ResilienceStack`] has
    /// built.
    pub fn upstream_metrics(&self) -> &UpstreamMetrics {
        &self.upstream
    }

    /// Registers this mesh's metrics in `registry`: Istio's standard metrics
    /// ([`Mesh::metrics`], `istio_*`) and the upstream state
    /// ([`Mesh::upstream_metrics`], `mesh_cluster_*`). Once per registry; meshes sharing
    /// one [`IstioMetrics`] register it once and each [`UpstreamMetrics`] on its own.
    pub fn register_metrics(&self, registry: &mut Registry) {
        self.metrics.register(registry);
        self.upstream.register(registry);
    }

    /// Istio's destination-side request metrics (`reporter="destination"`) for a server of
    /// `service`, recorded into [`Mesh::metrics`]. Put it inside the mTLS server so that
    /// the caller's [`PeerIdentity`] labels the series:
    ///
    /// ```no_run
    /// # async fn run(mesh: mesh::Mesh, app: axum::Router) -> std::io::Result<()> {
    /// use mesh::telemetry::metrics::ServiceInfo;
    /// let service = ServiceInfo {
    ///     host: "reviews.default.svc.cluster.local".into(),
    ///     name: "reviews".into(),
    ///     namespace: "default".into(),
    /// };
    /// let app = tower::ServiceBuilder::new()
    ///     .layer(mesh.inbound_metrics(service))
    ///     .service(app);
    /// mesh.serve(([0, 0, 0, 0], 9080).into(), app).await
    /// # }
    /// ```
    pub fn inbound_metrics(&self, service: ServiceInfo) -> IstioMetricsLayer {
        IstioMetricsLayer::destination(&self.metrics, self.workload.clone(), service)
    }

    /// The workload's credentials.
    pub fn identity(&self) -> &IdentityStore {
        &self.identity
    }

    /// The xDS client, when the config comes from one (built from a bootstrap or given with
    /// [`MeshBuilder::xds_client`]); `None` for a [`MeshBuilder::config_source`].
    pub fn xds(&self) -> Option<&XdsClient> {
        self.xds.as_ref()
    }

    /// Where the config comes from: the xDS client, or the source given to
    /// [`MeshBuilder::config_source`] (snapshots, demand, readiness).
    pub fn source(&self) -> &Arc<dyn ConfigSource> {
        &self.source
    }

    /// The mTLS acceptor for this workload (to serve tonic or custom accept loops; see
    /// [`mesh_tls::server`]).
    pub fn acceptor(&self) -> MeshAcceptor {
        MeshAcceptor::new(self.identity.clone(), self.server.clone())
    }

    /// Serves `service` (an axum `Router`, a hyper service, any tower HTTP service with
    /// your layers around it) over mTLS on `addr`. Each request carries the caller's
    /// [`PeerIdentity`] in its extensions.
    pub async fn serve<S, B>(&self, addr: SocketAddr, service: S) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(addr, service, std::future::pending())
            .await
    }

    /// Like [`Mesh::serve`], until `signal` completes.
    pub async fn serve_with_shutdown<S, B>(
        &self,
        addr: SocketAddr,
        service: S,
        signal: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        mesh_tls::server::serve_with_shutdown(listener, self.acceptor(), service, signal).await
    }
}

/// The repository README's snippet, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
