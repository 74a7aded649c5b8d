#![doc = include_str!("../README.md")]

mod builder;
mod channel;
mod hbone_metrics;
pub mod inbound;
#[cfg(feature = "otlp")]
pub mod otel;
mod ready;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

pub use builder::{BuildError, MeshBuilder, bootstrap_identity, control_plane_tls, identity_tls};
pub use channel::{Channel, ChannelBody};
pub use inbound::{InboundError, InboundServer};
pub use mesh_admin as admin;
pub use mesh_core as core;
pub use mesh_hbone as hbone;
pub use mesh_resilience as resilience;
pub use mesh_route as route;
pub use mesh_route::client::{
    ClusterResilience, MeshBody, MeshClient, MeshClientConfig, ResilienceStack, Upstream,
};
pub use mesh_telemetry as telemetry;
pub use mesh_tls as tls;
pub use mesh_tls::{IdentityStore, PeerIdentity};
pub use mesh_xds as xds;
pub use ready::NotReady;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use mesh_admin::UpstreamMetrics;
use mesh_core::config::ConfigSource;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_telemetry::trace::TraceLayer;
use mesh_tls::config::ServerSettings;
use mesh_tls::server::{MeshAcceptor, PeerAuthMode, PeerAuthentication};
use mesh_xds::client::XdsClient;
use prometheus_client::registry::Registry;
use tower::{BoxError, Layer, Service};

/// What [`Mesh::client`] returns: [`MeshClient`] (routing, load balancing, mTLS pools, and
/// per cluster the [`ResilienceStack`]) behind Istio's source-side request metrics and a
/// client span (W3C `traceparent` and B3 headers injected; see [`mesh_telemetry::trace`]). A
/// `tower::Service` for `http::Request<B>` (any body); for tonic, use [`Mesh::channel`],
/// which also sets each request's authority.
pub type Client =
    mesh_telemetry::trace::TraceService<mesh_telemetry::metrics::IstioMetricsService<MeshClient>>;

/// A workload's mesh: its identity, its config source (an xDS client or another
/// [`ConfigSource`]), its outbound [`Client`] and the mTLS server side. Cheap to clone.
#[derive(Clone)]
pub struct Mesh {
    identity: IdentityStore,
    /// The xDS client, when the config comes from one.
    xds: Option<XdsClient>,
    /// The xDS channel is TLS with the workload certificate: it connects only once the
    /// identity is there.
    xds_needs_identity: bool,
    /// Where the config comes from (the xDS client, when there is one).
    source: Arc<dyn ConfigSource>,
    client: Client,
    mesh_client: MeshClient,
    metrics: IstioMetrics,
    upstream: UpstreamMetrics,
    workload: WorkloadInfo,
    server: ServerSettings,
    inbound: InboundSettings,
    /// The server span layer of [`Mesh::serve`]'s and [`Mesh::serve_fixed`]'s requests.
    trace_server: TraceLayer,
    #[cfg(feature = "otlp")]
    otlp: Option<mesh_telemetry::otlp::OtlpExporter>,
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

    /// A tonic channel to `target` (`xds:///host:port` or `host:port`) through
    /// [`Mesh::client`]: every request gets the target as its authority, so generated
    /// clients take it as it is:
    ///
    /// ```no_run
    /// # async fn run(mesh: mesh::Mesh) -> Result<(), Box<dyn std::error::Error>> {
    /// use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    /// let mut health = HealthClient::new(mesh.channel("xds:///reviews.default.svc.cluster.local:9080"));
    /// let status = health.check(HealthCheckRequest::default()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// An invalid target fails every call with `INVALID_ARGUMENT`; [`Mesh::try_channel`]
    /// reports it up front. Local failures come back as gRPC statuses (no route, no healthy
    /// upstream and circuit-breaker overflow: `UNAVAILABLE`; timeouts: `DEADLINE_EXCEEDED`).
    pub fn channel(&self, target: &str) -> Channel {
        Channel::new(self.client.clone(), target)
    }

    /// Like [`Mesh::channel`], refusing an invalid target.
    pub fn try_channel(
        &self,
        target: &str,
    ) -> Result<Channel, mesh_route::client::MeshClientError> {
        channel::parse_target(target)
            .map_err(|_| mesh_route::client::MeshClientError::InvalidTarget(target.to_owned()))?;
        Ok(self.channel(target))
    }

    /// Subscribes to `target` (`host:port`) and waits until its routes, clusters and
    /// endpoints arrive (optional: the first request does the same; see
    /// [`MeshClient::resolve`]).
    pub async fn resolve(&self, target: &str) -> Result<(), mesh_route::client::MeshClientError> {
        self.mesh_client.resolve(target).await
    }

    /// The OTLP exporter the environment configured (see [`otel`]), to add its layer to
    /// your own `tracing` subscriber or to flush it at exit; `None` without
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[cfg(feature = "otlp")]
    pub fn otlp_exporter(&self) -> Option<&mesh_telemetry::otlp::OtlpExporter> {
        self.otlp.as_ref()
    }

    /// The same client without the tracing and metrics layers.
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
    /// # async fn run(mesh: mesh::Mesh, app: axum::Router) -> Result<(), mesh::InboundError> {
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

    /// An HBONE server (Istio ambient mode's :15008, see docs/hbone.md) presenting this
    /// workload's identity: add its ports' handlers, then `build()` and `serve(..)`. Each
    /// tunnel counts in `istio_tcp_*` (`reporter="destination"`,
    /// `connection_security_policy="mutual_tls"`, source labels from the caller's
    /// certificate and `baggage`). Wrap an HTTP handler in [`Mesh::inbound_metrics`] for
    /// `istio_requests_total` of the requests inside.
    pub fn hbone_server(&self) -> mesh_hbone::HboneServerBuilder {
        mesh_hbone::HboneServer::builder(self.identity.clone()).observe(
            hbone_metrics::server_meter(self.metrics.clone(), self.workload.clone()),
        )
    }

    /// An HBONE client presenting this workload's identity (pooled connections, at most
    /// 100 tunnels each, closed after 5 idle minutes), sending this workload's `baggage`
    /// as ztunnel does; each tunnel counts in `istio_tcp_*` (`reporter="source"`).
    /// [`Mesh::client`] opens its tunnels to HBONE endpoints with one like it.
    pub fn hbone_client(&self) -> mesh_hbone::HboneClient {
        hbone_metrics::client(&self.identity, &self.metrics, &self.workload)
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

    /// The authorization counters of the servers [`Mesh::serve`] starts (register them
    /// with [`AuthzMetrics::register`](inbound::AuthzMetrics::register) and pass them to
    /// [`MeshBuilder::authz_metrics`] to export them).
    pub fn authz_metrics(&self) -> &inbound::AuthzMetrics {
        &self.inbound.authz
    }

    /// The server [`Mesh::serve`] runs on `addr`, to tune it (drain timeout) or watch its
    /// [`status`](inbound::InboundServer::status) before serving. Its inbound listener is
    /// named from the bootstrap's template and the workload's IP (`addr`'s IP, or the pod
    /// IP when `addr` is unspecified).
    pub fn inbound_server(&self, addr: SocketAddr) -> Result<InboundServer, InboundError> {
        let ip = match addr.ip() {
            ip if !ip.is_unspecified() => ip,
            _ => self
                .inbound
                .pod_ip
                .ok_or(InboundError::UnknownPodIp { addr })?,
        };
        let name = inbound::listener_name(&self.inbound.template, SocketAddr::new(ip, addr.port()));
        Ok(InboundServer::new(
            self.mesh_client.source().clone(),
            self.identity.clone(),
            addr,
            name,
        )
        .server_settings(self.server.clone())
        .authz_metrics(self.inbound.authz.clone()))
    }

    /// Serves `service` (an axum `Router`, a hyper service, any tower HTTP service with
    /// your layers around it) on `addr` as the control plane says: the PeerAuthentication
    /// mode (STRICT, PERMISSIVE or DISABLE, per port) and the AuthorizationPolicies of the
    /// workload's inbound listener, updated without a restart. Until the listener arrives
    /// (and whenever it is removed) connections are closed: it fails closed. mTLS requests
    /// carry the caller's [`PeerIdentity`] in their extensions. See [`mesh::inbound`](inbound).
    ///
    /// To serve mTLS with a fixed mode whatever the control plane says, use
    /// [`Mesh::serve_fixed`].
    pub async fn serve<S, B>(&self, addr: SocketAddr, service: S) -> Result<(), InboundError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(addr, service, std::future::pending())
            .await
    }

    /// Like [`Mesh::serve`], until `signal` completes: then it stops accepting and drains
    /// open connections (HTTP/2 GOAWAY, HTTP/1.1 close after the current response).
    pub async fn serve_with_shutdown<S, B>(
        &self,
        addr: SocketAddr,
        service: S,
        signal: impl Future<Output = ()>,
    ) -> Result<(), InboundError>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The server span (the caller's trace continued from `traceparent` or B3).
        self.inbound_server(addr)?
            .serve_with_shutdown(self.trace_server.layer(service), signal)
            .await
    }

    /// Binds `addr` and returns it as a listener for `axum::serve`, following the
    /// workload's inbound listener as [`Mesh::serve`] does (mTLS mode per port, closed
    /// until the listener arrives). Serve [`Mesh::app`] on it: connections served by
    /// anything else are closed. See [`MeshListener`](inbound::MeshListener).
    #[cfg(feature = "axum")]
    pub async fn listener(&self, addr: SocketAddr) -> Result<inbound::MeshListener, InboundError> {
        self.inbound_server(addr)?.listen().await
    }

    /// Wraps `app` for `axum::serve` over [`Mesh::listener`]: each request gets the server
    /// span, then its connection's path normalization and authorization policies, with
    /// the caller's [`PeerIdentity`] and `ConnectInfo<`[`InboundConnectInfo`](inbound::InboundConnectInfo)`>`
    /// in its extensions.
    #[cfg(feature = "axum")]
    pub fn app<S>(&self, app: S) -> inbound::MeshApp<mesh_telemetry::trace::TraceService<S>> {
        inbound::MeshApp::new(self.trace_server.layer(app))
    }

    /// Binds `addr` and returns it as tonic's incoming stream, following the workload's
    /// inbound listener as [`Mesh::serve`] does (mTLS mode per port, closed until the
    /// listener arrives). Add its [`layer`](inbound::MeshIncoming::layer) to the tonic
    /// `Server` that serves it: each call then gets the server span, its connection's
    /// authorization policies (`PERMISSION_DENIED` when denied), and the caller's
    /// [`PeerIdentity`] in its extensions. See [`mesh::inbound::grpc`](inbound::grpc).
    pub async fn incoming(&self, addr: SocketAddr) -> Result<inbound::MeshIncoming, InboundError> {
        let streams = self.inbound_server(addr)?.incoming().await?;
        Ok(streams.with_trace(self.trace_server.clone()))
    }

    /// Serves `service` on `addr` in a fixed PeerAuthentication `mode`, ignoring the control
    /// plane's (no authorization policies are applied), until `signal` completes. For
    /// workloads without an inbound listener in their control plane, and tests. Request
    /// paths are normalized as Istio's default `BASE` does (see
    /// [`MeshBuilder::fixed_path_normalization`]) before `service` sees them.
    pub async fn serve_fixed<S, B>(
        &self,
        addr: SocketAddr,
        mode: PeerAuthMode,
        service: S,
        signal: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let peer_auth = PeerAuthentication::new(mode);
        let service = self.trace_server.layer(mesh_core::path::PathNormalize::new(
            service,
            self.inbound.fixed_path_normalization,
        ));
        mesh_tls::server::serve_peer_auth(listener, self.acceptor(), peer_auth, service, signal)
            .await
    }
}

/// How [`Mesh::serve`] names and counts its servers.
#[derive(Clone, Debug)]
pub(crate) struct InboundSettings {
    /// The server listener name template.
    pub(crate) template: String,
    /// The workload's IP, for servers on unspecified addresses.
    pub(crate) pod_ip: Option<std::net::IpAddr>,
    /// Authorization counters of every server.
    pub(crate) authz: inbound::AuthzMetrics,
    /// What [`Mesh::serve_fixed`] normalizes paths with.
    pub(crate) fixed_path_normalization: mesh_core::path::PathNormalization,
}

/// The repository README's snippet, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The guides' Rust blocks, compiled as doctests (the facade's dev-dependencies cover what
/// they use); scripts/check-doc-snippets fails on a block that is neither compiled here
/// nor tied to an example.
#[cfg(doctest)]
mod guides {
    #[doc = include_str!("../../docs/architecture.md")]
    pub struct Architecture;
    #[doc = include_str!("../../docs/authorization.md")]
    pub struct Authorization;
    #[doc = include_str!("../../docs/control-plane.md")]
    pub struct ControlPlane;
    #[doc = include_str!("../../docs/grpc.md")]
    pub struct Grpc;
    #[doc = include_str!("../../docs/hbone.md")]
    pub struct Hbone;
    #[doc = include_str!("../../docs/identity.md")]
    pub struct Identity;
    #[doc = include_str!("../../docs/istio-config.md")]
    pub struct IstioConfig;
    #[doc = include_str!("../../docs/istio.md")]
    pub struct Istio;
    #[doc = include_str!("../../docs/routing.md")]
    pub struct Routing;
    #[doc = include_str!("../../docs/telemetry.md")]
    pub struct Telemetry;
    #[doc = include_str!("../../docs/xds.md")]
    pub struct Xds;
}
