//! xDS-configured servers (gRPC A36, Istio's proxyless server side): the server subscribes
//! to its inbound listener, `xds.istio.io/grpc/lds/inbound/<ip>:<port>` from istiod or the
//! embedded control plane, and serves as it says:
//!
//! - **not serving until the listener arrives**: connections are accepted and closed
//!   (A36's NOT_SERVING) until a usable listener for this address is known, and again if
//!   it is removed;
//! - **per connection, a filter chain** in Envoy's match order ([`chain`]); when a chain
//!   matches on `transport_protocol` (Istio PERMISSIVE: `tls` and `raw_buffer`) the first
//!   bytes are sniffed for a TLS ClientHello ([`mesh_tls::sniff`]);
//! - **the chain's transport socket**: mTLS with the workload's SPIFFE identity (clients
//!   must present a certificate; the caller's [`PeerIdentity`](mesh_tls::PeerIdentity)
//!   goes into request extensions) or plaintext;
//! - **the chain's RBAC filters** as an [`AuthzLayer`] ([`policy`]): `403` /
//!   `PERMISSION_DENIED` for denied requests. Their `shadow_rules` (Istio's dry-run
//!   policies) are evaluated into [`AuthzMetrics`]' shadow counters and a log line, never
//!   denying. An update that only changes policies is applied to open connections through
//!   a watch, without a restart;
//! - **limits** ([`ConnectionLimits`]): at most `max_connections` at once (more are
//!   accepted and closed, counted in [`InboundServer::connection_limiter`]), a sniff
//!   timeout, the HTTP/1 header-read timeout, HTTP/2 keepalive; accept errors back off;
//! - **draining**: when the chains themselves change (match or TLS), new connections use
//!   the new chains and old ones are shut down gracefully (HTTP/2 GOAWAY, HTTP/1.1 close
//!   after the current response), forcibly after [`InboundServer::drain_timeout`].
//!
//! ```no_run
//! # async fn run(
//! #     xds: mesh::xds::client::XdsClient, // or any mesh::core::config::ConfigSource
//! #     identity: mesh::IdentityStore,
//! #     bootstrap: mesh::xds::bootstrap::Bootstrap,
//! # ) -> Result<(), mesh::inbound::InboundError> {
//! use axum::{Router, routing::get};
//! use mesh::inbound::InboundServer;
//!
//! let app = Router::new().route("/", get(|| async { "hello\n" }));
//! // The pod IP: the listener name is built from it (`.../inbound/10.0.0.7:8080`).
//! let addr = "10.0.0.7:8080".parse().unwrap();
//! InboundServer::from_bootstrap(xds, identity, &bootstrap, addr)?
//!     .serve(app)
//!     .await
//! # }
//! ```
//!
//! With `axum::serve` (and your own graceful shutdown), use [`Mesh::listener`](crate::Mesh::listener) and
//! [`Mesh::app`](crate::Mesh::app) instead (feature `axum`, see [`MeshListener`]); with
//! tonic's `serve_with_incoming`, [`Mesh::incoming`](crate::Mesh::incoming) and its
//! [`layer`](MeshIncoming::layer) (see [`grpc`]).
//!
//! What is not applied from the listener: the inline route table (every request goes to
//! the application, as Istio's `NonForwardingAction` route says), per-route filter
//! overrides, and the connection manager's timeouts.

pub mod chain;
pub mod grpc;
#[cfg(feature = "axum")]
pub mod listener;
pub mod policy;
mod serve;
mod stream;

pub use grpc::{GrpcConnectInfo, MeshGrpcLayer, MeshGrpcService, MeshIncoming};
#[cfg(feature = "axum")]
pub use listener::{MeshApp, MeshAppService, MeshListener};
pub use stream::{InboundConnectInfo, InboundStream};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::config::ConfigSource;
use mesh_core::model::Listener;
use mesh_tls::IdentityStore;
use mesh_tls::config::ServerSettings;
pub use mesh_tls::server::{ConnectionLimiter, ConnectionLimits};
use mesh_xds::bootstrap::Bootstrap;
use tokio::sync::watch;

pub use mesh_authz::{AuthzLayer, AuthzMetrics};

/// Whether the server is serving, and with which listener.
#[derive(Clone, Debug, PartialEq)]
pub enum ServingStatus {
    /// Connections are accepted and closed; the reason says why.
    NotServing(String),
    /// Serving with this listener.
    Serving(Arc<Listener>),
}

impl ServingStatus {
    /// Whether connections are served.
    pub fn is_serving(&self) -> bool {
        matches!(self, Self::Serving(_))
    }
}

/// Istio's server listener name template (what Istio's agent writes into the proxyless
/// bootstrap): `%s` is the server's `ip:port`.
pub const ISTIO_LISTENER_TEMPLATE: &str = "xds.istio.io/grpc/lds/inbound/%s";

/// The listener name of a server on `addr` from a bootstrap template.
pub fn listener_name(template: &str, addr: SocketAddr) -> String {
    template.replace("%s", &addr.to_string())
}

/// Errors of [`InboundServer`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboundError {
    /// The bootstrap has no `server_listener_resource_name_template`.
    #[error("the xDS bootstrap has no server_listener_resource_name_template")]
    NoListenerTemplate,
    /// The server listens on every address, and the workload's own IP (which names its
    /// inbound listener) is unknown: set it in the bootstrap's node metadata
    /// (`INSTANCE_IPS`) or with `MeshBuilder::pod_ip`, or listen on a specific address.
    #[error(
        "cannot name the inbound listener of {addr}: the workload's IP is unknown (set INSTANCE_IPS in the bootstrap node metadata or MeshBuilder::pod_ip)"
    )]
    UnknownPodIp {
        /// The address listened on.
        addr: SocketAddr,
    },
    /// The listener name is not a valid xDS resource name.
    #[error(transparent)]
    Xds(#[from] mesh_xds::client::XdsClientError),
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A server configured by its inbound xDS listener. See the [module docs](self).
pub struct InboundServer {
    source: Arc<dyn ConfigSource>,
    identity: IdentityStore,
    addr: SocketAddr,
    listener_name: String,
    settings: ServerSettings,
    limits: ConnectionLimits,
    limiter: ConnectionLimiter,
    drain_timeout: Duration,
    metrics: AuthzMetrics,
    status: watch::Sender<ServingStatus>,
}

impl std::fmt::Debug for InboundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundServer")
            .field("addr", &self.addr)
            .field("listener_name", &self.listener_name)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl InboundServer {
    /// A server on `addr` that asks `source` (the xDS client, the embedded control plane
    /// in-process, a static config) for the listener `listener_name`.
    pub fn new(
        source: impl ConfigSource,
        identity: IdentityStore,
        addr: SocketAddr,
        listener_name: impl Into<String>,
    ) -> Self {
        let (status, _) =
            watch::channel(ServingStatus::NotServing("waiting for the listener".into()));
        Self {
            source: Arc::new(source),
            identity,
            addr,
            listener_name: listener_name.into(),
            settings: ServerSettings::default(),
            limiter: ConnectionLimiter::new(ConnectionLimits::default().max_connections),
            limits: ConnectionLimits::default(),
            drain_timeout: Duration::from_secs(10),
            metrics: AuthzMetrics::default(),
            status,
        }
    }

    /// A server on `addr` whose listener name comes from the bootstrap's
    /// `server_listener_resource_name_template` (`%s` replaced by `addr`).
    pub fn from_bootstrap(
        source: impl ConfigSource,
        identity: IdentityStore,
        bootstrap: &Bootstrap,
        addr: SocketAddr,
    ) -> Result<Self, InboundError> {
        let name = bootstrap
            .server_listener_name(&addr)
            .ok_or(InboundError::NoListenerTemplate)?;
        Ok(Self::new(source, identity, addr, name))
    }

    /// TLS settings (handshake timeout, ALPN) for mTLS chains.
    pub fn server_settings(mut self, settings: ServerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Limits against slow and many connections (see [`ConnectionLimits`]; defaults:
    /// 10,000 connections, 10 s sniff, 30 s header read). Replaces the counts of
    /// [`connection_limiter`](Self::connection_limiter).
    pub fn connection_limits(mut self, limits: ConnectionLimits) -> Self {
        self.limiter = ConnectionLimiter::new(limits.max_connections);
        self.limits = limits;
        self
    }

    /// The connection counts (open, refused over the cap), for metrics and health.
    pub fn connection_limiter(&self) -> ConnectionLimiter {
        self.limiter.clone()
    }

    /// How long old connections may finish their requests after the listener changes or
    /// the server shuts down (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Counts authorization decisions into `metrics` (see [`AuthzMetrics::register`]).
    pub fn authz_metrics(mut self, metrics: AuthzMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The listener name this server subscribes to.
    pub fn listener_name(&self) -> &str {
        &self.listener_name
    }

    /// Watches the serving status (for health checks, and to wait until serving).
    pub fn status(&self) -> watch::Receiver<ServingStatus> {
        self.status.subscribe()
    }
}
