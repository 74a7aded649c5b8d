//! [`MeshClient`]: the outbound half of the in-process data plane, a
//! `tower::Service<http::Request<B>>` that replaces a hyper-util client.
//!
//! Its config comes from any [`ConfigSource`]: the xDS client, the embedded control plane
//! in-process, or a [`StaticSource`](mesh_core::config::StaticSource) built in code. A task
//! rebuilds routers, balancers and pools when the source publishes a new snapshot; requests
//! load the latest build without locks.
//!
//! For each request: the request's authority (`host:port`, port 80 when absent) names the
//! client listener; its route configuration's [`Router`] (built once per snapshot)
//! picks a route; the route's cluster's [`Balancer`](crate::Balancer) picks an endpoint;
//! the cluster's [`UpstreamPool`] sends the request over mTLS (the server must present one
//! of the SPIFFE IDs of the cluster's SAN matchers) or plaintext when the cluster has no
//! TLS context. Redirects, direct responses, rewrites, header edits and request mirroring
//! are applied here. Failures become responses as Envoy sends them: no route 404, no
//! cluster or no healthy endpoint 503 (`no healthy upstream`), connection failures 503,
//! route timeout 504; to gRPC requests as trailers-only gRPC statuses (no route and the
//! 503s UNAVAILABLE, timeouts DEADLINE_EXCEEDED).
//!
//! Each cluster's requests go through a service its [`ClusterStack`] builds once around the
//! cluster's [`EndpointService`] (LB pick + pool): [`MeshClient::with_stack`] takes the
//! stack ([`ResilienceStack`], the `mesh` facade's default, adds mesh-resilience's fault
//! injection, timeouts, retries, circuit breaking and outlier detection from the cluster
//! and route config);
//! [`MeshClient::new`] uses [`PlainStack`] (one attempt, route timeout applied here). The
//! route's [`RoutePolicy`] (timeout, retry policy, hash policies, fault overrides) rides in
//! the request's extensions as `Arc<RoutePolicy>` for those layers; see [`extensions`].
//!
//! ```no_run
//! # async fn demo(source: mesh_core::config::StaticSource, identity: mesh_tls::IdentityStore)
//! # -> Result<(), tower::BoxError> {
//! use http_body_util::{BodyExt, Empty};
//! use mesh_route::client::{MeshClient, MeshClientConfig};
//! use tower::ServiceExt;
//!
//! // `source`: an xDS client, the embedded control plane, or a StaticSource
//! let client = MeshClient::new(source, identity, MeshClientConfig::default());
//! let req = http::Request::get("http://reviews.default.svc.cluster.local:9080/reviews/1")
//!     .body(Empty::<bytes::Bytes>::new())?;
//! let resp = client.clone().oneshot(req).await?;
//! println!("{} {:?}", resp.status(), resp.into_body().collect().await?.to_bytes());
//! // tonic: generated clients send path-only URIs; give them the origin
//! // (`Grpc::with_origin`) or, with the `mesh` facade, `mesh.channel(target)`.
//! # Ok(()) }
//! ```

mod built;
mod endpoint;
pub mod extensions;
pub(crate) mod hbone_hosts;
mod mirror;
pub mod resilience;
mod respond;
mod send;
mod stack;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_tls::IdentityStore;
use tokio::sync::{oneshot, watch};
use tower::BoxError;

use crate::HostPortMode;
use crate::pool::PoolConfig;
#[allow(unused_imports)] // named in the module docs
use crate::pool::UpstreamPool;
#[allow(unused_imports)] // named in the module docs
use crate::{RoutePolicy, Router};
use built::Built;

pub use endpoint::{EndpointFuture, EndpointService, NoHealthyUpstream};
pub use extensions::{AutoHostRewrite, RequestHash, UpstreamEndpoint};
pub use resilience::{ClusterResilience, ResilienceStack};
pub use respond::{MeshBody, Upstream};
pub use stack::{ClusterContext, ClusterService, ClusterStack, PlainStack};

/// MeshClient settings.
#[derive(Clone, Debug)]
pub struct MeshClientConfig {
    /// How long a request to a target not yet known waits for its listener, routes,
    /// clusters and endpoints to arrive from the control plane (default 5 s).
    pub resolve_timeout: Duration,
    /// The route timeout when the route sets none (Envoy's default, 15 s).
    pub default_timeout: Duration,
    /// Connection pool settings: HTTP/2 connections per endpoint (default: one per
    /// runtime worker thread, see [`crate::pool`]).
    pub pool: PoolConfig,
    /// How a request's authority port takes part in virtual host selection (default
    /// [`HostPortMode::AsIs`], Envoy's: `reviews:9080` matches only a domain listing that
    /// port, or `*`; [`HostPortMode::FallbackWithoutPort`] also tries `reviews`).
    pub host_port_mode: HostPortMode,
    /// Services whose endpoints speak HBONE (exact hosts, as
    /// `reviews.default.svc.cluster.local`): requests to them go through an HBONE tunnel
    /// to the endpoint's :15008 as if the control plane had marked each endpoint
    /// `tunnel: http`. For istiod's proxyless generator, which never sends that marker.
    /// Needs the cluster's mTLS with a SAN (a DestinationRule `ISTIO_MUTUAL`), as every
    /// HBONE endpoint does; matched against Istio cluster names
    /// (`outbound|<port>|<subset>|<host>`). Empty by default.
    pub hbone_hosts: Vec<String>,
}

impl Default for MeshClientConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: Duration::from_secs(5),
            default_timeout: Duration::from_secs(15),
            pool: PoolConfig::default(),
            host_port_mode: HostPortMode::AsIs,
            hbone_hosts: Vec::new(),
        }
    }
}

/// Why a target cannot be resolved (see [`MeshClient::resolve`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeshClientError {
    /// The target is not a valid `host:port` or `xds:///host:port`.
    #[error("invalid target {0:?}: expected host:port or xds:///host:port")]
    InvalidTarget(String),
    /// The control plane did not deliver the listener and its routes in time.
    #[error("listener {listener:?} and its routes did not arrive within {timeout:?}")]
    NotResolved {
        /// The listener name.
        listener: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The config source has stopped.
    #[error("the config source has stopped")]
    Stopped,
}

struct Inner {
    source: Arc<dyn ConfigSource>,
    identity: IdentityStore,
    config: MeshClientConfig,
    /// The latest build; requests load it without locks.
    built: ArcSwap<Built>,
    /// The snapshot of each build, announced after it is stored (for requests waiting on a
    /// target that is still arriving).
    applied: watch::Sender<Arc<ConfigSnapshot>>,
    stack: Arc<dyn ClusterStack>,
    /// Listeners we demanded and when.
    subscribed: Mutex<HashMap<String, Instant>>,
    /// This client's random id: gRPC's `io.grpc.channel_id` for hashing, and the source of
    /// requests without a [`DownstreamAddr`](mesh_core::extensions::DownstreamAddr).
    channel_id: u64,
    /// Dropping it (with the last clone of the client) stops the rebuild task.
    _stop: oneshot::Sender<()>,
}

/// The in-process mesh client. Cheap to clone; clones share routers, balancers and pools.
#[derive(Clone)]
pub struct MeshClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MeshClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl MeshClient {
    /// A client reading routes and clusters from `source`, with our credentials from
    /// `identity`; one attempt per request ([`PlainStack`]).
    ///
    /// # Panics
    /// Outside a Tokio runtime (a task rebuilds the routing state on config changes).
    pub fn new(
        source: impl ConfigSource,
        identity: IdentityStore,
        config: MeshClientConfig,
    ) -> Self {
        Self::with_stack(source, identity, config, PlainStack)
    }

    /// Like [`MeshClient::new`], with `stack` building each cluster's layers around its
    /// [`EndpointService`].
    pub fn with_stack(
        source: impl ConfigSource,
        identity: IdentityStore,
        config: MeshClientConfig,
        stack: impl ClusterStack,
    ) -> Self {
        Self::with_shared_stack(Arc::new(source), identity, config, Arc::new(stack))
    }

    /// Like [`MeshClient::with_stack`], with the source and the stack already shared.
    pub fn with_shared_stack(
        source: Arc<dyn ConfigSource>,
        identity: IdentityStore,
        config: MeshClientConfig,
        stack: Arc<dyn ClusterStack>,
    ) -> Self {
        let snapshots = source.snapshots();
        let first = snapshots.borrow().clone();
        let built = built::build(
            first.clone(),
            &Built::default(),
            &identity,
            &config,
            &*stack,
        );
        let (stop_tx, stop) = oneshot::channel();
        let inner = Arc::new(Inner {
            source,
            identity,
            config,
            built: ArcSwap::from_pointee(built),
            applied: watch::Sender::new(first),
            stack,
            subscribed: Mutex::new(HashMap::new()),
            channel_id: rand::random(),
            _stop: stop_tx,
        });
        tokio::spawn(built::rebuild_on_change(
            Arc::downgrade(&inner),
            snapshots,
            stop,
        ));
        Self { inner }
    }

    /// The config source.
    pub fn source(&self) -> &Arc<dyn ConfigSource> {
        &self.inner.source
    }

    /// The snapshot the client routes with now (the source's latest once the rebuild task
    /// has applied it).
    pub fn applied(&self) -> Arc<ConfigSnapshot> {
        self.inner.applied.borrow().clone()
    }

    /// Waits until the client routes with the source's current snapshot.
    pub async fn caught_up(&self) {
        let source = self.inner.source.snapshots();
        let mut applied = self.inner.applied.subscribe();
        // The rebuild task announces every build, so this wakes for each new snapshot.
        let _ = applied.wait_for(|s| Arc::ptr_eq(s, &source.borrow())).await;
    }

    /// Demands `target` (`host:port` or `xds:///host:port`) from the source and waits until
    /// its listener and routes arrive, the source has its first answers for the clusters
    /// and endpoints they reference, and the client routes with them. Optional: the first
    /// request to a target does the same.
    pub async fn resolve(&self, target: &str) -> Result<(), MeshClientError> {
        let listener = target.strip_prefix("xds:///").unwrap_or(target);
        if listener.is_empty() || listener.contains('/') {
            return Err(MeshClientError::InvalidTarget(target.to_owned()));
        }
        let timeout = self.inner.config.resolve_timeout;
        let wait = async {
            self.wait_listener(listener).await?;
            self.inner
                .source
                .readiness()
                .wait_for(|r| *r)
                .await
                .map_err(|_| MeshClientError::Stopped)?;
            self.caught_up().await;
            Ok(())
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| MeshClientError::NotResolved {
                listener: listener.to_owned(),
                timeout,
            })?
    }

    /// Demands the listener if needed and waits (unbounded) until the client has a router
    /// for it.
    async fn wait_listener(&self, listener: &str) -> Result<(), MeshClientError> {
        self.subscribe(listener);
        let mut applied = self.inner.applied.subscribe();
        applied
            .wait_for(|_| self.current().routers.contains_key(listener))
            .await
            .map(|_| ())
            .map_err(|_| MeshClientError::Stopped)
    }

    fn subscribe(&self, listener: &str) {
        let first = {
            let mut subs = self
                .inner
                .subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if subs.contains_key(listener) {
                false
            } else {
                subs.insert(listener.to_owned(), Instant::now());
                true
            }
        };
        if first {
            self.inner.source.demand(listener);
        }
    }

    /// Whether `listener` was subscribed recently enough that missing clusters or endpoints
    /// may still be on their way.
    fn warming(&self, listener: &str) -> bool {
        let subs = self
            .inner
            .subscribed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        subs.get(listener)
            .is_some_and(|t| t.elapsed() < self.inner.config.resolve_timeout)
    }

    /// The latest build.
    fn current(&self) -> Arc<Built> {
        self.inner.built.load_full()
    }
}

impl<B> tower::Service<Request<B>> for MeshClient
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let this = self.clone();
        let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
        Box::pin(async move { Ok(this.send(req).await) })
    }
}
