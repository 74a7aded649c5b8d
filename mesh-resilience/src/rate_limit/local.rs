//! Envoy's `envoy.filters.http.local_ratelimit` driven by the route: each
//! [`LocalRateLimitConfig`] the request's [`RoutePolicy`](crate::policy::RoutePolicy)
//! carries (a listener-level filter with a bucket, or a virtual host / route override) is
//! checked in turn against its own bucket.
//!
//! A bucket belongs to one config `Arc`: routes that share the `Arc` (every route under a
//! listener-level filter) share the bucket, and it lives as long as the `Arc` does, so a
//! config update that keeps the route table keeps the buckets' tokens.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use http::{HeaderValue, Request, Response, StatusCode};
use mesh_core::extensions::ResponseFlags;
use mesh_core::model::{AppendAction, Fraction, LocalRateLimitConfig};
use tower::{BoxError, Service};
use tower_layer::Layer;

use super::{ResponseFuture, TokenBucket, TokenBucketConfig};
use crate::LocalBody;
use crate::body::{http_to_grpc_status, is_grpc, local_grpc_response, local_response};
use crate::policy::route_policy;

/// The buckets of live configs, keyed by the config `Arc`'s address (checked against a
/// `Weak` so that a reused address never inherits a dropped config's bucket).
#[derive(Debug, Default)]
pub struct LocalRateLimits {
    buckets: Mutex<HashMap<usize, Entry>>,
}

/// A config (weakly held, to tell a live one from a reused address) and its bucket.
type Entry = (Weak<LocalRateLimitConfig>, Arc<TokenBucket>);

impl LocalRateLimits {
    /// An empty set; share one (`Arc`) between every layer of a client so that a route's
    /// bucket is the same whatever cluster the request goes to.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The bucket of `cfg` (`None` when it has no `token_bucket`), created full on first use.
    pub fn bucket(&self, cfg: &Arc<LocalRateLimitConfig>) -> Option<Arc<TokenBucket>> {
        let spec = cfg.token_bucket?;
        let key = Arc::as_ptr(cfg) as usize;
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((weak, bucket)) = map.get(&key)
            && weak.upgrade().is_some_and(|c| Arc::ptr_eq(&c, cfg))
        {
            return Some(bucket.clone());
        }
        // A new config: drop the buckets of configs no route holds any more.
        map.retain(|_, (weak, _)| weak.strong_count() > 0);
        let bucket = TokenBucket::new(TokenBucketConfig {
            max_tokens: spec.max_tokens,
            tokens_per_fill: spec.tokens_per_fill,
            fill_interval: spec.fill_interval,
        });
        map.insert(key, (Arc::downgrade(cfg), bucket.clone()));
        Some(bucket)
    }

    /// Requests over the limit so far, enforced or not, across live buckets (Envoy's
    /// `rate_limited` stat summed over filters).
    pub fn limited_total(&self) -> u64 {
        let map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|(_, b)| b.limited_total()).sum()
    }
}

/// Applies the route's local rate limits: each `LocalRateLimitConfig` of the request's
/// `RoutePolicy` that has a bucket is checked, in turn, against its bucket in
/// [`LocalRateLimits`] (one per config `Arc`, so routes sharing a config share a bucket).
#[derive(Clone, Debug)]
pub struct LocalRateLimitLayer {
    limits: Arc<LocalRateLimits>,
}

impl LocalRateLimitLayer {
    /// A layer whose buckets live in `limits`.
    pub fn new(limits: Arc<LocalRateLimits>) -> Self {
        Self { limits }
    }
}

impl<S> Layer<S> for LocalRateLimitLayer {
    type Service = LocalRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LocalRateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service made by [`LocalRateLimitLayer`].
#[derive(Clone, Debug)]
pub struct LocalRateLimit<S> {
    inner: S,
    limits: Arc<LocalRateLimits>,
}

impl<S, B, RB> Service<Request<B>> for LocalRateLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<LocalBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, RB>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Some(policy) = route_policy(req.extensions()) {
            for cfg in policy.local_rate_limits() {
                if let Some(resp) = self.check(cfg, is_grpc(&req)) {
                    return ResponseFuture::Limited(Some(resp));
                }
            }
        }
        ResponseFuture::Inner(self.inner.call(req))
    }
}

impl<S> LocalRateLimit<S> {
    /// Envoy's order: not enabled -> pass untouched; a token -> pass; none -> counted, and
    /// refused only if enforced.
    fn check<RB>(
        &self,
        cfg: &Arc<LocalRateLimitConfig>,
        grpc: bool,
    ) -> Option<Response<LocalBody<RB>>> {
        if !sample(cfg.filter_enabled) {
            return None;
        }
        let bucket = self.limits.bucket(cfg)?;
        if bucket.try_take() || !sample(cfg.filter_enforced) {
            return None;
        }
        // No `x-envoy-ratelimited`: Envoy's docs say this filter sets it, but Envoy 1.40
        // does not (only the global rate limit filter does); `envoy_answers_the_same_sequence`
        // (mesh/tests/local_rate_limit.rs) compares.
        let mut resp = if grpc {
            let code = if cfg.rate_limited_as_resource_exhausted {
                8 // RESOURCE_EXHAUSTED
            } else {
                http_to_grpc_status(cfg.status)
            };
            local_grpc_response(code, "local_rate_limited", &[])
        } else {
            let status = StatusCode::from_u16(cfg.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            local_response(status, "local_rate_limited", &[])
        };
        add_headers(resp.headers_mut(), cfg);
        // Envoy's `RL` flag: istio_requests_total and access logs tell it from a 429 upstream.
        resp.extensions_mut().insert(ResponseFlags("RL"));
        Some(resp)
    }
}

fn sample(f: Fraction) -> bool {
    let ppm = f.per_million();
    ppm >= 1_000_000 || (ppm > 0 && rand::random::<u32>() % 1_000_000 < ppm)
}

/// `response_headers_to_add`, with Envoy's append actions.
fn add_headers(headers: &mut http::HeaderMap, cfg: &LocalRateLimitConfig) {
    for h in &cfg.response_headers_to_add {
        if h.value.is_empty() && !h.keep_empty_value {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            http::HeaderName::try_from(h.name.as_str()),
            HeaderValue::try_from(h.value.as_str()),
        ) else {
            continue; // validated by the translation; never fail a reply over a header
        };
        match h.action {
            AppendAction::Append => {
                headers.append(name, value);
            }
            AppendAction::AddIfAbsent => {
                headers.entry(name).or_insert(value);
            }
            AppendAction::OverwriteIfExistsOrAdd => {
                headers.insert(name, value);
            }
            AppendAction::OverwriteIfExists => {
                if headers.contains_key(&name) {
                    headers.insert(name, value);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mesh_core::model::{FilterOverride, HeaderValueOption, TokenBucketSpec};
    use tower::ServiceExt;

    use super::*;
    use crate::policy::RoutePolicy;

    fn cfg(status: u16, exhausted: bool) -> Arc<LocalRateLimitConfig> {
        Arc::new(LocalRateLimitConfig {
            stat_prefix: String::new(),
            token_bucket: Some(TokenBucketSpec {
                max_tokens: 1,
                tokens_per_fill: 1,
                fill_interval: Duration::from_secs(60),
            }),
            filter_enabled: Fraction::ALWAYS,
            filter_enforced: Fraction::ALWAYS,
            status,
            response_headers_to_add: vec![HeaderValueOption {
                name: "x-limited".into(),
                value: "1".into(),
                action: AppendAction::OverwriteIfExistsOrAdd,
                keep_empty_value: false,
            }],
            rate_limited_as_resource_exhausted: exhausted,
        })
    }

    fn req(c: &Arc<LocalRateLimitConfig>, grpc: bool) -> Request<()> {
        let policy = RoutePolicy {
            filter_overrides: [("rl".to_owned(), FilterOverride::LocalRateLimit(c.clone()))].into(),
            ..Default::default()
        };
        let mut r = Request::builder();
        if grpc {
            r = r.header("content-type", "application/grpc");
        }
        let mut r = r.body(()).unwrap();
        r.extensions_mut().insert(Arc::new(policy));
        r
    }

    fn ok() -> impl Service<Request<()>, Response = Response<String>, Error = BoxError> + Clone {
        tower::service_fn(|_r: Request<()>| async {
            Ok::<_, BoxError>(Response::new(String::new()))
        })
    }

    #[tokio::test]
    async fn status_headers_and_grpc_codes() {
        let limits = LocalRateLimits::new();
        let svc = LocalRateLimitLayer::new(limits.clone()).layer(ok());
        let c = cfg(503, false);
        assert_eq!(
            svc.clone().oneshot(req(&c, false)).await.unwrap().status(),
            200
        );
        let r = svc.clone().oneshot(req(&c, false)).await.unwrap();
        assert_eq!(r.status(), 503, "the configured status");
        assert_eq!(
            r.headers().get("x-envoy-ratelimited"),
            None,
            "as Envoy 1.40"
        );
        assert_eq!(r.headers()["x-limited"], "1");
        assert_eq!(
            r.extensions().get::<ResponseFlags>(),
            Some(&ResponseFlags("RL"))
        );
        // gRPC: the status mapped as Envoy maps local replies (503 -> UNAVAILABLE), or
        // RESOURCE_EXHAUSTED when asked.
        let r = svc.clone().oneshot(req(&c, true)).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        let e = cfg(429, true);
        assert_eq!(
            svc.clone()
                .oneshot(req(&e, true))
                .await
                .unwrap()
                .headers()
                .get("grpc-status"),
            None
        );
        let r = svc.clone().oneshot(req(&e, true)).await.unwrap();
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(limits.limited_total(), 3);
    }

    #[tokio::test]
    async fn a_bucket_per_config_arc_not_per_value() {
        let limits = LocalRateLimits::new();
        let a = cfg(429, false);
        let b = cfg(429, false); // equal value, another config: another bucket
        let bucket = limits.bucket(&a).unwrap();
        assert!(Arc::ptr_eq(&bucket, &limits.bucket(&a.clone()).unwrap()));
        assert!(!Arc::ptr_eq(&bucket, &limits.bucket(&b).unwrap()));
        // A dropped config's bucket goes when a new config is seen.
        drop(a);
        let _c = limits.bucket(&cfg(429, false));
        assert_eq!(limits.buckets.lock().unwrap().len(), 2);
    }
}
