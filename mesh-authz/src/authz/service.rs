use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use mesh_core::extensions::{MeshConnectInfo, PeerIdentity};
use tokio::sync::watch;
use tower_service::Service;

use super::{AuthzBody, ResponseFuture};
use crate::policy::Decision;
use crate::{AuthzMetrics, AuthzPolicies, deny};

/// Authorizes each request before the inner service sees it.
#[derive(Clone, Debug)]
pub struct Authz<S> {
    inner: S,
    policies: watch::Receiver<Arc<AuthzPolicies>>,
    metrics: AuthzMetrics,
}

impl<S> Authz<S> {
    pub(crate) fn new(
        inner: S,
        policies: watch::Receiver<Arc<AuthzPolicies>>,
        metrics: AuthzMetrics,
    ) -> Self {
        Self {
            inner,
            policies,
            metrics,
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Authz<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    type Response = Response<AuthzBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // A snapshot: never hold the watch borrow beyond this call.
        let policies = Arc::clone(&self.policies.borrow());
        if policies.is_empty() {
            self.metrics.allowed.inc();
            return ResponseFuture::inner(self.inner.call(req));
        }
        let eval = policies.check(&req);
        if let Some(shadow) = eval.shadow {
            record_shadow(&self.metrics, shadow, &req);
        }
        if let Some(audit) = eval.audit {
            tracing::info!(policy = audit, path = path(&req), "RBAC: audit");
        }
        let allowed = eval.decision.is_allowed();
        if let Decision::Deny { policy } = eval.decision {
            // The caller's SPIFFE ID and the path without its query (which may hold
            // tokens); never header values.
            tracing::info!(
                policy = policy.unwrap_or("<no ALLOW policy matched>"),
                peer = peer(&req).unwrap_or("<plaintext>"),
                method = %req.method(),
                path = path(&req),
                "RBAC: access denied"
            );
        }
        if allowed {
            self.metrics.allowed.inc();
            ResponseFuture::inner(self.inner.call(req))
        } else {
            self.metrics.denied.inc();
            ResponseFuture::denied(deny::response(&req))
        }
    }
}

fn record_shadow<B>(metrics: &AuthzMetrics, shadow: Decision<'_>, req: &Request<B>) {
    match shadow {
        Decision::Allow { .. } => {
            metrics.shadow_allowed.inc();
        }
        Decision::Deny { policy } => {
            metrics.shadow_denied.inc();
            tracing::info!(
                policy = policy.unwrap_or("<no dry-run ALLOW policy matched>"),
                path = path(req),
                "RBAC: shadow denied (dry run, request not denied)"
            );
        }
    };
}

fn path<B>(req: &Request<B>) -> &str {
    req.uri().path()
}

fn peer<B>(req: &Request<B>) -> Option<&str> {
    let ext = req.extensions();
    ext.get::<PeerIdentity>()
        .or_else(|| ext.get::<MeshConnectInfo>().map(|c| &c.peer))
        .map(|p| p.id().as_str())
}
