//! One request through the client: route, pick the cluster, rewrite, send, and turn every
//! failure into the response Envoy would send.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri};

use super::built::Built;
use super::{
    AutoHostRewrite, MeshBody, MeshClient, NoHealthyUpstream, RequestHash, Upstream,
    UpstreamEndpoint, mirror, respond,
};
use crate::cluster::ClusterState;
use crate::pool::RequestBody;
use crate::{Action, HostRewriteDecision, RequestView, RoutePolicy, request_hash};
use mesh_core::extensions::DownstreamAddr;
use mesh_core::model::{Discovery, FilterOverride};

mod envoy_headers;

/// The client listener's path normalization, as Envoy's outbound HCM applies it before
/// route matching: the router and the upstream see the normalized path. A response when the
/// path is refused (400) or redirected (307).
fn normalize_path(
    built: &Built,
    listener: &str,
    parts: &mut http::request::Parts,
) -> Option<Response<MeshBody>> {
    use mesh_core::model::ListenerKind;
    use mesh_core::path::PathOutcome;
    let config = match built.snapshot.listeners.get(listener).map(|l| &l.kind) {
        Some(ListenerKind::Client(hcm)) => hcm.path_normalization,
        _ => mesh_core::path::PathNormalization::BASE,
    };
    if config.is_noop() || parts.method == http::Method::CONNECT {
        return None;
    }
    let target = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    if target == "*" && parts.method == http::Method::OPTIONS {
        return None;
    }
    match config.apply(target) {
        PathOutcome::Unchanged => None,
        PathOutcome::Forward(p) => {
            let mut uri = std::mem::take(&mut parts.uri).into_parts();
            uri.path_and_query = PathAndQuery::try_from(p).ok();
            match Uri::from_parts(uri) {
                Ok(u) if u.path_and_query().is_some() => {
                    parts.uri = u;
                    None
                }
                _ => Some(respond::local(400, "")),
            }
        }
        PathOutcome::Redirect(location) => {
            let mut resp = respond::local(307, "");
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(http::header::LOCATION, v);
            }
            Some(resp)
        }
        PathOutcome::Reject(_) => Some(respond::local(400, "")),
    }
}

impl MeshClient {
    /// `resp`, the answer of a redirect or direct-response route, through the stack's
    /// [`local`](super::ClusterStack::local) layers when the route has a local rate limit
    /// (Envoy's filters run before its router answers). Built from owned values so the
    /// future holds no borrow of the request.
    fn answer_locally(
        &self,
        policy: Option<Arc<RoutePolicy>>,
        mut parts: http::request::Parts,
        resp: Response<MeshBody>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<MeshBody>> + Send>> {
        let acts = |p: &Arc<RoutePolicy>| {
            p.local_rate_limits().next().is_some()
                || p.filter_overrides
                    .values()
                    .any(|o| matches!(o, FilterOverride::Fault(_)))
        };
        let Some(policy) = policy.filter(acts) else {
            return Box::pin(std::future::ready(resp));
        };
        parts.extensions.insert(policy);
        let answer = Arc::new(std::sync::Mutex::new(Some(resp)));
        let svc = tower::service_fn(move |_req: Request<RequestBody>| {
            let resp = answer.lock().unwrap_or_else(|p| p.into_inner()).take();
            std::future::ready(resp.ok_or_else(|| tower::BoxError::from("answered twice")))
        });
        let mut svc = self
            .inner
            .stack
            .local(tower::util::BoxCloneSyncService::new(svc));
        let req = Request::from_parts(parts, RequestBody::default());
        // Called as the forward path calls a cluster's service (always ready).
        let fut = tower::Service::call(&mut svc, req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => resp,
                Err(e) => error_response(&*e),
            }
        })
    }

    /// Routes and sends one request; every failure is a response (for gRPC requests a
    /// trailers-only gRPC status).
    pub(super) async fn send(self, req: Request<RequestBody>) -> Response<MeshBody> {
        if mesh_resilience::body::is_grpc(&req) {
            respond::for_grpc(self.route_and_send(req).await)
        } else {
            self.route_and_send(req).await
        }
    }

    async fn route_and_send(self, req: Request<RequestBody>) -> Response<MeshBody> {
        let (mut parts, body) = req.into_parts();
        let Some(listener) = listener_name(&parts.uri, &parts.headers) else {
            return respond::local_grpc(400, respond::UNAVAILABLE, NO_AUTHORITY);
        };
        let mut built = self.current();
        // Owned, as the router map's key (an `Arc` clone, no allocation on the hot path):
        // path normalization below may replace the URI it borrows from.
        let listener: std::sync::Arc<str> = match built.routers.get_key_value(&*listener) {
            Some((key, _)) => key.clone(),
            None => listener.into(),
        };
        if !built.routers.contains_key(&*listener) {
            let timeout = self.inner.config.resolve_timeout;
            if tokio::time::timeout(timeout, self.wait_listener(&listener))
                .await
                .is_err()
            {
                return respond::local(
                    503,
                    &format!(
                        "no route configuration for {listener}: the control plane sent none within {timeout:?}"
                    ),
                );
            }
            built = self.current();
        }
        let Some(router) = built.routers.get(&*listener).cloned() else {
            return respond::local(503, &format!("no route configuration for {listener}"));
        };
        if let Some(resp) = normalize_path(&built, &listener, &mut parts) {
            return resp;
        }
        let mut view = RequestView::from_parts(&parts);
        if let Some(DownstreamAddr(addr)) = parts.extensions.get::<DownstreamAddr>() {
            view = view.with_source(*addr);
        }
        let Some(decision) = router.route(&view) else {
            return no_route(&listener, view.path);
        };
        let forward = match &decision.action {
            Action::Forward(f) => f,
            Action::Redirect { status, location } => {
                let mut resp = respond::local(*status, "");
                if let Ok(v) = HeaderValue::from_str(location) {
                    resp.headers_mut().insert(http::header::LOCATION, v);
                }
                decision.headers.apply_response(resp.headers_mut());
                return self
                    .answer_locally(decision.local_policy.clone(), parts, resp)
                    .await;
            }
            Action::DirectResponse { status, body } => {
                let mut resp = respond::bytes(*status, body.clone().unwrap_or_default());
                decision.headers.apply_response(resp.headers_mut());
                return self
                    .answer_locally(decision.local_policy.clone(), parts, resp)
                    .await;
            }
            Action::NonForwarding => return no_route(&listener, view.path),
        };
        let policy = &forward.policy;
        let hashed = request_hash(&policy.hash_policies, &view, Some(self.inner.channel_id));
        let hash = hashed.hash;
        let uri = match upstream_uri(&parts.uri, view.authority, forward) {
            Ok(u) => u,
            Err(e) => return respond::local(400, &e),
        };
        let state = match self.cluster(&built, &listener, &forward.cluster).await {
            Ok(s) => match &s.cluster().discovery {
                Discovery::Aggregate(children) => {
                    match self.aggregate_child(&built, &listener, children).await {
                        Ok(child) => child,
                        Err(resp) => return resp,
                    }
                }
                _ => s,
            },
            Err(resp) => return resp,
        };
        let mut svc = match state.service() {
            Ok(s) => s.clone(),
            Err(e) => return respond::local(503, e),
        };
        let original_path = forward
            .path
            .is_some()
            .then(|| parts.uri.path_and_query().map(|p| p.as_str().to_owned()))
            .flatten();
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
        let grpc = mesh_resilience::body::is_grpc_headers(&parts.headers);
        let timeout = route_timeout(policy, self.inner.config.default_timeout)
            .filter(|_| !(grpc && policy.timeout_is_default));
        envoy_headers::on_request(
            policy,
            timeout,
            original_path.as_deref(),
            &mut parts.headers,
        );
        let body = if forward.mirrors.is_empty() {
            body
        } else {
            let shadows = forward
                .mirrors
                .iter()
                .filter_map(|m| {
                    let svc = built.clusters.get(&m.cluster)?.service().ok()?;
                    Some((svc.clone(), m.keep_host))
                })
                .collect();
            mirror::mirror(&parts, body, shadows, timeout)
        };
        let req = Request::from_parts(parts, body);
        let started = std::time::Instant::now();
        let fut = tower::Service::call(&mut svc, req);
        let result = match timeout.filter(|_| !self.inner.stack.applies_timeouts()) {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => {
                    return respond::local_grpc(
                        504,
                        respond::DEADLINE_EXCEEDED,
                        "upstream request timeout",
                    );
                }
            },
            None => fut.await,
        };
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => error_response(&*e),
        };
        let upstream = resp.extensions().get::<UpstreamEndpoint>().is_some();
        envoy_headers::on_response(policy, upstream, started, &mut resp);
        decision.headers.apply_response(resp.headers_mut());
        // The cookie a hash policy generated goes to the client (Envoy's router adds it).
        if let Some(c) = &hashed.set_cookie
            && let Ok(v) = HeaderValue::from_str(&c.header_value())
        {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
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

    /// An aggregate cluster's first child with an endpoint that may serve (Envoy's
    /// aggregate cluster: the children are priority levels, the first healthy one takes
    /// the traffic), else its first known child.
    async fn aggregate_child(
        &self,
        built: &Arc<Built>,
        listener: &str,
        children: &[String],
    ) -> Result<Arc<ClusterState>, Response<MeshBody>> {
        let mut first = None;
        for child in children {
            let Ok(state) = self.cluster(built, listener, child).await else {
                continue;
            };
            if state.balancer().has_healthy() {
                return Ok(state);
            }
            first.get_or_insert(state);
        }
        first.ok_or_else(|| respond::local(503, "no healthy upstream"))
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
            let mut applied = self.inner.applied.subscribe();
            let deadline = self.inner.config.resolve_timeout;
            let _ = tokio::time::timeout(
                deadline,
                applied.wait_for(|_| ready(&self.current()).is_some()),
            )
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

/// What a request without an authority is told: tonic's generated clients send path-only
/// URIs unless given an origin, which `mesh.channel(target)` sets.
const NO_AUTHORITY: &str = "request has no authority: the mesh client routes by host:port; \
    give tonic clients mesh.channel(\"host:port\") (or set an origin)";

/// No route matched: Envoy's empty 404; for gRPC, UNAVAILABLE naming what did not match
/// (as proxyless gRPC reports it).
fn no_route(listener: &str, path: &str) -> Response<MeshBody> {
    let mut resp = respond::local_grpc(
        404,
        respond::UNAVAILABLE,
        &format!("no route in the configuration of {listener} matches {path}"),
    );
    // HTTP callers get Envoy's empty 404.
    *resp.body_mut() = MeshBody::default();
    resp.headers_mut().remove(http::header::CONTENT_TYPE);
    resp
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
        if err.is::<crate::pool::ConnectError>() {
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

#[cfg(test)]
mod tests;
