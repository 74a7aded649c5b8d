//! [`MeshClient`]: the outbound half of the in-process data plane, a
//! `tower::Service<http::Request<B>>` that replaces a hyper-util client.
//!
//! For each request: the request's authority (`host:port`, port 80 when absent) names the
//! xDS client listener; its route configuration's [`Router`] (built once per snapshot)
//! picks a route; the route's cluster's [`Balancer`](crate::Balancer) picks an endpoint;
//! the cluster's [`UpstreamPool`] sends the request over mTLS (the server must present one
//! of the SPIFFE IDs of the cluster's SAN matchers) or plaintext when the cluster has no
//! TLS context. Redirects, direct responses, rewrites, header edits and request mirroring
//! are applied here. Failures become responses as Envoy sends them: no route 404, no
//! cluster or no healthy endpoint 503 (`no healthy upstream`), connection failures 503,
//! route timeout 504.
//!
//! Each cluster's requests go through a service its [`ClusterStack`] builds once around the
//! cluster's [`EndpointService`] (LB pick + pool): [`MeshClient::with_stack`] takes the
//! stack (the `mesh` facade's `ResilienceStack` adds fault injection, timeouts, retries,
//! circuit breaking and outlier detection from the cluster and route config);
//! [`MeshClient::new`] uses [`PlainStack`] (one attempt, route timeout applied here). The
//! route's [`RoutePolicy`] (timeout, retry policy, hash policies, fault overrides) rides in
//! the request's extensions as `Arc<RoutePolicy>` for those layers; see [`extensions`].
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

mod endpoint;
pub mod extensions;
mod mirror;
mod respond;
mod stack;

use std::borrow::Cow;
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
use mesh_core::model::{ListenerKind, RouteConfig, RouteSource};
use mesh_tls::IdentityStore;
use mesh_xds::client::{XdsClient, XdsSnapshot};
use tokio::sync::watch;
use tower::BoxError;

use crate::cluster::{ClusterSet, ClusterState};
#[allow(unused_imports)] // named in the module docs
use crate::pool::UpstreamPool;
use crate::pool::{PoolConfig, RequestBody};
use crate::{Action, HostRewriteDecision, RequestView, RoutePolicy, Router, request_hash};

pub use endpoint::{EndpointFuture, EndpointService, NoHealthyUpstream};
pub use extensions::{AutoHostRewrite, RequestHash, UpstreamEndpoint};
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
}

impl Default for MeshClientConfig {
    fn default() -> Self {
        Self {
            resolve_timeout: Duration::from_secs(5),
            default_timeout: Duration::from_secs(15),
            pool: PoolConfig::default(),
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
    stack: Arc<dyn ClusterStack>,
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
    /// `identity`; one attempt per request ([`PlainStack`]).
    pub fn new(xds: XdsClient, identity: IdentityStore, config: MeshClientConfig) -> Self {
        Self::with_stack(xds, identity, config, PlainStack)
    }

    /// Like [`MeshClient::new`], with `stack` building each cluster's layers around its
    /// [`EndpointService`].
    pub fn with_stack(
        xds: XdsClient,
        identity: IdentityStore,
        config: MeshClientConfig,
        stack: impl ClusterStack,
    ) -> Self {
        Self::with_shared_stack(xds, identity, config, Arc::new(stack))
    }

    /// Like [`MeshClient::with_stack`], with a stack already behind an `Arc`.
    pub fn with_shared_stack(
        xds: XdsClient,
        identity: IdentityStore,
        config: MeshClientConfig,
        stack: Arc<dyn ClusterStack>,
    ) -> Self {
        let snapshots = xds.watch();
        Self {
            inner: Arc::new(Inner {
                xds,
                snapshots,
                identity,
                config,
                built: ArcSwap::from_pointee(Built::default()),
                stack,
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
        let next = Arc::new(build(
            snapshot,
            &built,
            &self.inner.identity,
            self.inner.config.pool,
            &*self.inner.stack,
        ));
        self.inner.built.store(next.clone());
        next
    }

    /// Routes and sends one request; every failure is a response.
    async fn send(self, req: Request<RequestBody>) -> Response<MeshBody> {
        let (mut parts, body) = req.into_parts();
        let Some(listener) = listener_name(&parts.uri, &parts.headers) else {
            return respond::local(400, "request has no authority");
        };
        let mut built = self.current();
        if !built.routers.contains_key(&*listener) {
            let timeout = self.inner.config.resolve_timeout;
            if tokio::time::timeout(timeout, self.wait_listener(&listener))
                .await
                .is_err()
            {
                return respond::local(503, &format!("no route configuration for {listener}"));
            }
            built = self.current();
        }
        let Some(router) = built.routers.get(&*listener).cloned() else {
            return respond::local(503, &format!("no route configuration for {listener}"));
        };
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
        let policy = &forward.policy;
        let hash = request_hash(&policy.hash_policies, &view, None).hash;
        let uri = match upstream_uri(&parts.uri, view.authority, forward) {
            Ok(u) => u,
            Err(e) => return respond::local(400, &e),
        };
        let state = match self.cluster(&built, &listener, &forward.cluster).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        let mut svc = match state.service() {
            Ok(s) => s.clone(),
            Err(e) => return respond::local(503, e),
        };
        parts.uri = uri;
        // The URI's authority is the upstream's `Host` / `:authority`.
        parts.headers.remove(http::header::HOST);
        decision.headers.apply_request(&mut parts.headers);
        parts.extensions.insert(policy.clone());
        if let Some(h) = hash {
            parts.extensions.insert(RequestHash(h));
        }
        if let Some(HostRewriteDecision::FromEndpoint) = forward.host {
            parts.extensions.insert(AutoHostRewrite);
        }
        let timeout = route_timeout(policy, self.inner.config.default_timeout);
        let body = if forward.mirrors.is_empty() {
            body
        } else {
            let shadows = forward
                .mirrors
                .iter()
                .filter_map(|c| built.clusters.get(c)?.service().ok().cloned())
                .collect();
            mirror::mirror(&parts, body, shadows, timeout)
        };
        let req = Request::from_parts(parts, body);
        let fut = tower::Service::call(&mut svc, req);
        let result = match timeout.filter(|_| !self.inner.stack.applies_timeouts()) {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => return respond::local(504, "upstream request timeout"),
            },
            None => fut.await,
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => error_response(&*e),
        };
        decision.headers.apply_response(resp.headers_mut());
        let endpoint = resp
            .extensions()
            .get::<UpstreamEndpoint>()
            .map(|e| e.0.clone())
            .unwrap_or_else(|| Arc::from(""));
        resp.extensions_mut().insert(Upstream {
            virtual_host: decision.virtual_host.clone(),
            route: decision.route_name.clone(),
            cluster: forward.cluster.clone(),
            endpoint,
        });
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

/// A failed attempt as Envoy answers it: 503 with the reset reason, or `no healthy
/// upstream`.
fn error_response(e: &(dyn std::error::Error + 'static)) -> Response<MeshBody> {
    let mut reason = "connection termination";
    let mut detail = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<NoHealthyUpstream>() {
            return respond::local(503, "no healthy upstream");
        }
        let connect = err.is::<crate::pool::ConnectError>()
            || err
                .downcast_ref::<hyper_util::client::legacy::Error>()
                .is_some_and(|h| h.is_connect());
        if connect {
            reason = "connection failure";
        }
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(&err.to_string());
        cur = err.source();
    }
    tracing::debug!(error = %detail, "upstream request failed");
    respond::local(
        503,
        &format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {reason}, transport failure reason: {detail}"
        ),
    )
}

/// The route timeout: the route's, Envoy's default when unset, none when zero.
fn route_timeout(policy: &RoutePolicy, default: Duration) -> Option<Duration> {
    match policy.timeout {
        Some(t) if t.is_zero() => None,
        Some(t) => Some(t),
        None => Some(default),
    }
}

/// The upstream URI: `http://authority/path`, with the route's host and path rewrites.
/// Its authority is what the server sees; the endpoint is picked later.
fn upstream_uri(uri: &Uri, authority: &str, forward: &crate::Forward) -> Result<Uri, String> {
    let authority = match (&forward.host, uri.authority()) {
        (Some(HostRewriteDecision::Set(h)), _) => h
            .parse::<Authority>()
            .map_err(|e| format!("rewritten host {h:?}: {e}"))?,
        (_, Some(a)) => a.clone(),
        (_, None) => authority
            .parse::<Authority>()
            .map_err(|e| format!("authority {authority:?}: {e}"))?,
    };
    let path = match &forward.path {
        Some(p) => p
            .parse::<PathAndQuery>()
            .map_err(|e| format!("rewritten path {p:?}: {e}"))?,
        None => uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| e.to_string())
}

/// `host:port` of the request (URI authority, else `Host`), port 80 when absent.
fn listener_name<'a>(uri: &'a Uri, headers: &'a http::HeaderMap) -> Option<Cow<'a, str>> {
    if let Some(a) = uri.authority() {
        return Some(match a.port_u16() {
            Some(_) => Cow::Borrowed(a.as_str()),
            None => Cow::Owned(format!("{}:80", a.host())),
        });
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let authority: Authority = host.parse().ok()?;
    Some(match authority.port_u16() {
        Some(_) => Cow::Borrowed(host),
        None => Cow::Owned(format!("{}:80", authority.host())),
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

fn build(
    snapshot: Arc<XdsSnapshot>,
    previous: &Built,
    identity: &IdentityStore,
    pool: PoolConfig,
    stack: &dyn ClusterStack,
) -> Built {
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
    let clusters = ClusterSet::build(&snapshot, &previous.clusters, identity, pool, stack);
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
