//! [`MeshClient`]: the outbound half of the in-process data plane, a
//! `tower::Service<http::Request<B>>` that replaces a hyper-util client.
//!
//! For each request: the request's authority (`host:port`, port 80 when absent) names the
//! xDS client listener; its route configuration's [`Router`] (built once per snapshot)
//! picks a route; the route's cluster's [`Balancer`](crate::Balancer) picks an endpoint;
//! the cluster's [`UpstreamPool`] sends the request over mTLS (the server must present one
//! of the SPIFFE IDs of the cluster's SAN matchers) or plaintext when the cluster has no
//! TLS context. Redirects, direct responses, rewrites and header edits are applied here.
//! Failures become responses as Envoy sends them: no route 404, no cluster or no healthy
//! endpoint 503 (`no healthy upstream`), connection failures 503, route timeout 504.
//!
//! The route's [`RoutePolicy`] (timeout, retry policy, hash policies, fault overrides) rides
//! in the upstream request's extensions for resilience layers; until those exist the route
//! timeout (Envoy's default 15 s when unset) is applied here to the response headers.
//!
//! ```no_run
//! # async fn demo(xds: mesh_xds::client::XdsClient, identity: mesh_tls::IdentityStore)
//! # -> Result<(), tower::BoxError> {
//! use http_body_util::{BodyExt, Empty};
//! use mesh_route::client::{MeshClient, MeshClientConfig};
//! use tower::ServiceExt;
//!
//! let client = MeshClient::new(xds, identity, MeshClientConfig::default());
//! let req = http::Request::get("http://reviews.default.svc.cluster.local:9080/reviews/1")
//!     .body(Empty::<bytes::Bytes>::new())?;
//! let resp = client.clone().oneshot(req).await?;
//! println!("{} {:?}", resp.status(), resp.into_body().collect().await?.to_bytes());
//! // tonic: any generated client takes it as its channel, e.g.
//! // `GreeterClient::new(client.clone())`.
//! # Ok(()) }
//! ```

mod respond;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use mesh_core::model::{EndpointAddress, ListenerKind, RouteConfig, RouteSource};
use mesh_tls::IdentityStore;
use mesh_xds::client::{XdsClient, XdsSnapshot};
use tokio::sync::watch;
use tower::BoxError;

use crate::cluster::{ClusterSet, ClusterState};
use crate::pool::{RequestBody, UpstreamPool};
use crate::{Action, PickContext, RequestView, RoutePolicy, Router, request_hash};

pub use respond::{MeshBody, Upstream};

/// MeshClient settings.
#[derive(Clone, Debug)]
pub struct MeshClientConfig {
    /// How long a request to a target not yet known waits for its listener, routes,
    /// clusters and endpoints to arrive from the control plane (default 5 s).
    pub resolve_timeout: Duration,
    /// The route timeout when the route sets none (Envoy's default, 15 s).
    pub default_timeout: Duration,
}

impl Default for MeshClientConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: Duration::from_secs(5),
            default_timeout: Duration::from_secs(15),
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
    /// The xDS client has stopped.
    #[error("the xDS client has stopped")]
    Stopped,
}

/// Routers and clusters of one snapshot.
#[derive(Default)]
struct Built {
    snapshot: Arc<XdsSnapshot>,
    /// Router per listener name (client listeners whose routes are present).
    routers: HashMap<Arc<str>, Arc<Router>>,
    /// Routers by listener with the route config they were built from, to share the ones
    /// whose config did not change.
    by_config: HashMap<Arc<str>, (Arc<RouteConfig>, Arc<Router>)>,
    clusters: ClusterSet,
}

struct Inner {
    xds: XdsClient,
    snapshots: watch::Receiver<Arc<XdsSnapshot>>,
    identity: IdentityStore,
    config: MeshClientConfig,
    built: ArcSwap<Built>,
    rebuild: Mutex<()>,
    /// Listener subscriptions we made and when.
    subscribed: Mutex<HashMap<String, Instant>>,
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
    /// A client reading routes and clusters from `xds`, with our credentials from
    /// `identity`.
    pub fn new(xds: XdsClient, identity: IdentityStore, config: MeshClientConfig) -> Self {
        let snapshots = xds.watch();
        Self {
            inner: Arc::new(Inner {
                xds,
                snapshots,
                identity,
                config,
                built: ArcSwap::from_pointee(Built::default()),
                rebuild: Mutex::new(()),
                subscribed: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The xDS client.
    pub fn xds(&self) -> &XdsClient {
        &self.inner.xds
    }

    /// Subscribes to `target` (`host:port` or `xds:///host:port`) and waits until its
    /// listener and routes arrive, and the xDS client has its first answers for the
    /// clusters and endpoints they reference. Optional: the first request to a target does
    /// the same.
    pub async fn resolve(&self, target: &str) -> Result<(), MeshClientError> {
        let listener = target.strip_prefix("xds:///").unwrap_or(target);
        if listener.is_empty() || listener.contains('/') {
            return Err(MeshClientError::InvalidTarget(target.to_owned()));
        }
        let timeout = self.inner.config.resolve_timeout;
        let wait = async {
            self.wait_listener(listener).await?;
            self.inner
                .xds
                .ready()
                .await
                .map_err(|_| MeshClientError::Stopped)
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| MeshClientError::NotResolved {
                listener: listener.to_owned(),
                timeout,
            })?
    }

    /// Subscribes if needed and waits (unbounded) for the listener and its routes.
    async fn wait_listener(&self, listener: &str) -> Result<(), MeshClientError> {
        self.subscribe(listener).await?;
        let mut rx = self.inner.snapshots.clone();
        rx.wait_for(|s| route_config_of(s, listener).is_some())
            .await
            .map(|_| ())
            .map_err(|_| MeshClientError::Stopped)
    }

    async fn subscribe(&self, listener: &str) -> Result<(), MeshClientError> {
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
            self.inner
                .xds
                .subscribe_target(listener)
                .await
                .map_err(|_| MeshClientError::Stopped)?;
        }
        Ok(())
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

    /// The routers and clusters of the current snapshot, rebuilt when it changed.
    fn current(&self) -> Arc<Built> {
        let snapshot = self.inner.snapshots.borrow().clone();
        let built = self.inner.built.load_full();
        if Arc::ptr_eq(&built.snapshot, &snapshot) {
            return built;
        }
        let _guard = self.inner.rebuild.lock().unwrap_or_else(|p| p.into_inner());
        let built = self.inner.built.load_full();
        if Arc::ptr_eq(&built.snapshot, &snapshot) {
            return built;
        }
        let next = Arc::new(build(snapshot, &built, &self.inner.identity));
        self.inner.built.store(next.clone());
        next
    }

    /// Routes and sends one request; every failure is a response.
    async fn send(self, req: Request<RequestBody>) -> Response<MeshBody> {
        let Some(listener) = listener_name(&req) else {
            return respond::local(400, "request has no authority");
        };
        let mut built = self.current();
        if !built.routers.contains_key(listener.as_str()) {
            let timeout = self.inner.config.resolve_timeout;
            if tokio::time::timeout(timeout, self.wait_listener(&listener))
                .await
                .is_err()
            {
                return respond::local(503, &format!("no route configuration for {listener}"));
            }
            built = self.current();
        }
        let Some(router) = built.routers.get(listener.as_str()).cloned() else {
            return respond::local(503, &format!("no route configuration for {listener}"));
        };
        let (parts, body) = req.into_parts();
        let view = RequestView::from_parts(&parts);
        let Some(decision) = router.route(&view) else {
            return respond::local(404, "");
        };
        let forward = match &decision.action {
            Action::Forward(f) => f,
            Action::Redirect { status, location } => {
                let mut resp = respond::local(*status, "");
                if let Ok(v) = HeaderValue::from_str(location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
                decision.headers.apply_response(resp.headers_mut());
                return resp;
            }
            Action::DirectResponse { status, body } => {
                let mut resp = respond::bytes(*status, body.clone().unwrap_or_default());
                decision.headers.apply_response(resp.headers_mut());
                return resp;
            }
            Action::NonForwarding => return respond::local(404, ""),
        };
        let policy = forward.policy.clone();
        let hash = request_hash(&policy.hash_policies, &view, None).hash;
        let cluster_name = forward.cluster.clone();
        let state = match self.cluster(&built, &listener, &cluster_name).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let pool = match state.pool() {
            Ok(p) => p.clone(),
            Err(e) => return respond::local(503, e),
        };
        let Some(endpoint) = state.balancer().pick(&PickContext::new().hash(hash)) else {
            return respond::local(503, "no healthy upstream");
        };
        let active = endpoint.start_request();
        let authority = match &forward.host {
            Some(crate::HostRewriteDecision::Set(h)) => h.clone(),
            Some(crate::HostRewriteDecision::FromEndpoint) => endpoint
                .endpoint()
                .hostname
                .as_deref()
                .map(str::to_owned)
                .unwrap_or_else(|| view.authority.to_owned()),
            None => view.authority.to_owned(),
        };
        let path = forward.path.clone().unwrap_or_else(|| view.path.to_owned());
        let endpoint_authority = match endpoint.address() {
            EndpointAddress::Socket(a) => a.to_string(),
            EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
        };
        let upstream = Upstream {
            virtual_host: decision.virtual_host.clone(),
            route: decision.route_name.clone(),
            cluster: cluster_name.clone(),
            endpoint: endpoint_authority.clone().into(),
        };
        let mut parts = parts;
        parts.uri = match upstream_uri(&endpoint_authority, &path) {
            Ok(u) => u,
            Err(e) => return respond::local(400, &e),
        };
        decision.headers.apply_request(&mut parts.headers);
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(http::header::HOST, v);
        }
        parts.extensions.insert(policy.clone());
        parts.extensions.insert(upstream.clone());
        let req = Request::from_parts(parts, body);
        let timeout = route_timeout(&policy, self.inner.config.default_timeout);
        let resp = send_with_timeout(&pool, req, timeout).await;
        drop(active);
        let mut resp = match resp {
            Ok(r) => r.map(|b| b.map_err(BoxError::from).boxed_unsync()),
            Err(resp) => resp,
        };
        decision.headers.apply_response(resp.headers_mut());
        resp.extensions_mut().insert(upstream);
        resp
    }

    /// The state of `name`, waiting for it (and its endpoints) while the listener is new.
    async fn cluster(
        &self,
        built: &Arc<Built>,
        listener: &str,
        name: &str,
    ) -> Result<Arc<ClusterState>, Response<MeshBody>> {
        let ready = |b: &Built| {
            b.clusters.get(name).cloned().filter(|s| {
                s.cluster().discovery.eds_name(name).is_none()
                    || b.snapshot
                        .endpoints
                        .contains_key(s.cluster().discovery.eds_name(name).unwrap_or(name))
            })
        };
        if let Some(s) = ready(built) {
            return Ok(s);
        }
        if self.warming(listener) {
            let mut rx = self.inner.snapshots.clone();
            let deadline = self.inner.config.resolve_timeout;
            let _ = tokio::time::timeout(deadline, async {
                loop {
                    if ready(&self.current()).is_some() || rx.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
        }
        let built = self.current();
        if let Some(s) = built.clusters.get(name) {
            return Ok(s.clone());
        }
        match built.clusters.error(name) {
            Some(e) => Err(respond::local(503, e)),
            None => Err(respond::local(503, "no healthy upstream")),
        }
    }
}

/// Sends on the pool within the route timeout; failures become Envoy's local replies.
async fn send_with_timeout(
    pool: &UpstreamPool,
    req: Request<RequestBody>,
    timeout: Option<Duration>,
) -> Result<Response<hyper::body::Incoming>, Response<MeshBody>> {
    let fut = pool.send(req);
    let result = match timeout {
        Some(t) => match tokio::time::timeout(t, fut).await {
            Ok(r) => r,
            Err(_) => return Err(respond::local(504, "upstream request timeout")),
        },
        None => fut.await,
    };
    result.map_err(|e| {
        let reason = if e.is_connect() {
            "connection failure"
        } else {
            "connection termination"
        };
        let detail = std::error::Error::source(&e).map(ToString::to_string);
        tracing::debug!(error = %e, ?detail, "upstream request failed");
        respond::local(
            503,
            &format!(
                "upstream connect error or disconnect/reset before headers. reset reason: {reason}{}",
                detail.map(|d| format!(", transport failure reason: {d}")).unwrap_or_default()
            ),
        )
    })
}

/// The route timeout: the route's, Envoy's default when unset, none when zero.
fn route_timeout(policy: &RoutePolicy, default: Duration) -> Option<Duration> {
    match policy.timeout {
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
        None => Some(default),
    }
}

fn upstream_uri(endpoint: &str, path: &str) -> Result<Uri, String> {
    let authority: Authority = endpoint
        .parse()
        .map_err(|e| format!("endpoint address {endpoint:?}: {e}"))?;
    let pq: PathAndQuery = path
        .parse()
        .map_err(|e| format!("rewritten path {path:?}: {e}"))?;
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(pq)
        .build()
        .map_err(|e| e.to_string())
}

/// `host:port` of the request (URI authority, else `Host`), port 80 when absent.
fn listener_name<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().to_owned(),
        None => req
            .headers()
            .get(http::header::HOST)?
            .to_str()
            .ok()?
            .to_owned(),
    };
    let authority: Authority = authority.parse().ok()?;
    Some(match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    })
}

/// The route configuration of a client listener, if it and its routes are present.
fn route_config_of(s: &XdsSnapshot, listener: &str) -> Option<Arc<RouteConfig>> {
    let l = s.listeners.get(listener)?;
    match &l.kind {
        ListenerKind::Client(hcm) => match &hcm.route_source {
            RouteSource::Rds(name) => s.route_configs.get(name.as_str()).cloned(),
            RouteSource::Inline(rc) => Some(rc.clone()),
        },
        ListenerKind::Server(_) => None,
    }
}

fn build(snapshot: Arc<XdsSnapshot>, previous: &Built, identity: &IdentityStore) -> Built {
    let mut routers = HashMap::new();
    let mut by_config = HashMap::new();
    for name in snapshot.listeners.keys() {
        let Some(rc) = route_config_of(&snapshot, name) else {
            continue;
        };
        let reused = previous
            .by_config
            .get(name)
            .filter(|(old, _)| Arc::ptr_eq(old, &rc) || **old == *rc);
        let router = match reused {
            Some((_, r)) => Arc::clone(r),
            None => match Router::new(&rc) {
                Ok(r) => Arc::new(r),
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "route configuration unusable");
                    continue;
                }
            },
        };
        by_config.insert(name.clone(), (rc.clone(), router.clone()));
        routers.insert(name.clone(), router);
    }
    let clusters = ClusterSet::build(&snapshot, &previous.clusters, identity);
    Built {
        snapshot,
        routers,
        by_config,
        clusters,
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

#[cfg(test)]
mod tests;
