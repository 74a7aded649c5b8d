//! The HTTP local rate limit filter's config (Envoy
//! `extensions.filters.http.local_ratelimit.v3.LocalRateLimit`).

use std::time::Duration;

use super::matcher::Fraction;
use super::route::HeaderValueOption;

/// A local (in-process) token-bucket rate limit.
///
/// The config is carried as `Arc<LocalRateLimitConfig>` in
/// [`HttpFilterConfig`](super::HttpFilterConfig) and [`FilterOverride`](super::FilterOverride):
/// each `Arc` is one bucket, shared by every request whose route carries a clone of it (a
/// listener-level filter's bucket by all its routes, a route's by its weighted clusters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRateLimitConfig {
    /// The stats prefix (`local_rate_limit.<stat_prefix>` in Envoy).
    pub stat_prefix: String,
    /// The bucket; `None` (allowed at listener level only) makes the filter a no-op that
    /// per-route configs enable.
    pub token_bucket: Option<TokenBucketSpec>,
    /// Fraction of requests checked against the bucket (Envoy's default: none).
    pub filter_enabled: Fraction,
    /// Fraction of checked requests that are refused when over the limit (default: none);
    /// the others pass and only count.
    pub filter_enforced: Fraction,
    /// Status of a refused request (>= 400; Envoy uses 429 for anything lower).
    pub status: u16,
    /// Headers added to a refused request's response.
    pub response_headers_to_add: Vec<HeaderValueOption>,
    /// A refused gRPC call gets `RESOURCE_EXHAUSTED` instead of `UNAVAILABLE`.
    pub rate_limited_as_resource_exhausted: bool,
}

/// Token bucket settings (Envoy `type.v3.TokenBucket`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucketSpec {
    /// Bucket size, and the tokens at start.
    pub max_tokens: u32,
    /// Tokens added per fill (at least 1).
    pub tokens_per_fill: u32,
    /// Time between fills (> 0).
    pub fill_interval: Duration,
}
