//! The HTTP local rate limit filter (`envoy.extensions.filters.http.local_ratelimit.v3.
//! LocalRateLimit`): one token bucket per filter or per-route config. Descriptors, stages,
//! per-connection buckets and the other knobs are refused by name.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3 as pb;
use envoy_types::pb::envoy::r#type::v3::StatusCode;
use mesh_core::model::{Fraction, LocalRateLimitConfig, TokenBucketSpec};

use super::matcher::runtime_fraction;
use super::route::headers::header_adds;
use super::{At, Res, bail, duration, refuse_set};

/// The type URL's name.
pub const TYPE: &str = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";

/// Translates a `LocalRateLimit`; `per_route` configs must have a `token_bucket` (as in
/// Envoy, where only the listener-level filter may leave it to the routes).
pub fn local_rate_limit(l: &pb::LocalRateLimit, per_route: bool) -> Res<Arc<LocalRateLimitConfig>> {
    refuse_set(&[
        (
            "request_headers_to_add_when_not_enforced",
            !l.request_headers_to_add_when_not_enforced.is_empty(),
        ),
        ("descriptors", !l.descriptors.is_empty()),
        ("stage", l.stage != 0),
        (
            "local_rate_limit_per_downstream_connection",
            l.local_rate_limit_per_downstream_connection,
        ),
        (
            "local_cluster_rate_limit",
            l.local_cluster_rate_limit.is_some(),
        ),
        (
            "enable_x_ratelimit_headers",
            l.enable_x_ratelimit_headers != 0,
        ),
        ("vh_rate_limits", l.vh_rate_limits != 0),
        ("rate_limits", !l.rate_limits.is_empty()),
        (
            "max_dynamic_descriptors",
            l.max_dynamic_descriptors.is_some(),
        ),
        ("enable_retry_after_header", l.enable_retry_after_header),
    ])?;
    // `always_consume_default_token_bucket` only matters when a descriptor matches; with
    // descriptors refused, the default bucket is always the one consumed, whatever it says.
    let token_bucket = match &l.token_bucket {
        Some(b) => Some(token_bucket(b).at(".token_bucket")?),
        None if per_route => return bail("token_bucket is required in a per-route config"),
        None => None,
    };
    // Both fractions default to 0% "for safety": such a filter checks nothing.
    let fraction = |f: Option<&_>, field: &str| match f {
        Some(f) => runtime_fraction(f).at(format!(".{field}")),
        None => Ok(Fraction::new(0, 100)),
    };
    let status = match l.status.as_ref().map(|s| s.code) {
        None => 429,
        // Envoy's validation: a code of the `StatusCode` enum (named statuses only).
        Some(c) if StatusCode::try_from(c).is_err() || c == 0 => {
            return bail(format!("status {c} is not an HTTP status"));
        }
        // Envoy replaces codes below 400 by 429.
        Some(c) if c < 400 => 429,
        Some(c) => c as u16,
    };
    Ok(Arc::new(LocalRateLimitConfig {
        stat_prefix: l.stat_prefix.clone(),
        token_bucket,
        filter_enabled: fraction(l.filter_enabled.as_ref(), "filter_enabled")?,
        filter_enforced: fraction(l.filter_enforced.as_ref(), "filter_enforced")?,
        status,
        response_headers_to_add: header_adds(
            &l.response_headers_to_add,
            "response_headers_to_add",
        )?,
        rate_limited_as_resource_exhausted: l.rate_limited_as_resource_exhausted,
    }))
}

fn token_bucket(b: &envoy_types::pb::envoy::r#type::v3::TokenBucket) -> Res<TokenBucketSpec> {
    if b.max_tokens == 0 {
        return bail("max_tokens must be greater than 0");
    }
    let tokens_per_fill = b.tokens_per_fill.as_ref().map_or(1, |v| v.value);
    if tokens_per_fill == 0 {
        return bail("tokens_per_fill must be greater than 0");
    }
    let fill_interval = match &b.fill_interval {
        Some(d) => duration(d).at(".fill_interval")?,
        None => return bail("fill_interval is required"),
    };
    // Envoy refuses refills faster than every 50 ms.
    if fill_interval < Duration::from_millis(50) {
        return bail("fill_interval must be at least 50ms");
    }
    Ok(TokenBucketSpec {
        max_tokens: b.max_tokens,
        tokens_per_fill,
        fill_interval,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        HeaderValue, HeaderValueOption, RuntimeFractionalPercent,
    };
    use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, HttpStatus, TokenBucket};
    use envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration, UInt32Value};
    use mesh_core::model::AppendAction;

    use super::*;

    fn bucket(ms: i32) -> Option<TokenBucket> {
        Some(TokenBucket {
            max_tokens: 5,
            tokens_per_fill: Some(UInt32Value { value: 2 }),
            fill_interval: Some(PbDuration {
                seconds: 0,
                nanos: ms * 1_000_000,
            }),
        })
    }

    fn pct(n: u32) -> Option<RuntimeFractionalPercent> {
        Some(RuntimeFractionalPercent {
            default_value: Some(FractionalPercent {
                numerator: n,
                denominator: 0,
            }),
            runtime_key: String::new(),
        })
    }

    #[test]
    fn local_rate_limit_fields_reach_the_model() {
        let l = pb::LocalRateLimit {
            stat_prefix: "rl".into(),
            token_bucket: bucket(100),
            filter_enabled: pct(50),
            filter_enforced: pct(25),
            status: Some(HttpStatus { code: 503 }),
            response_headers_to_add: vec![HeaderValueOption {
                header: Some(HeaderValue {
                    key: "x-limited".into(),
                    value: "yes".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            rate_limited_as_resource_exhausted: true,
            always_consume_default_token_bucket: Some(BoolValue { value: false }),
            ..Default::default()
        };
        let got = local_rate_limit(&l, true).unwrap();
        assert_eq!(
            got.token_bucket,
            Some(TokenBucketSpec {
                max_tokens: 5,
                tokens_per_fill: 2,
                fill_interval: Duration::from_millis(100),
            })
        );
        assert_eq!(got.filter_enabled, Fraction::new(50, 100));
        assert_eq!(got.filter_enforced, Fraction::new(25, 100));
        assert_eq!(got.status, 503);
        assert_eq!(got.response_headers_to_add[0].name, "x-limited");
        assert_eq!(got.response_headers_to_add[0].action, AppendAction::Append);
        assert!(got.rate_limited_as_resource_exhausted);
        assert_eq!(got.stat_prefix, "rl");
    }

    #[test]
    fn local_rate_limit_defaults_as_envoy() {
        // A listener-level filter may leave the bucket to the routes; both fractions
        // default to 0% and the status to 429 (also for codes below 400).
        let l = pb::LocalRateLimit {
            status: Some(HttpStatus { code: 302 }),
            ..Default::default()
        };
        let got = local_rate_limit(&l, false).unwrap();
        assert_eq!(got.token_bucket, None);
        assert_eq!(got.filter_enabled, Fraction::new(0, 100));
        assert_eq!(got.filter_enforced, Fraction::new(0, 100));
        assert_eq!(got.status, 429);
        assert_eq!(
            local_rate_limit(&l, true).unwrap_err().to_string(),
            "token_bucket is required in a per-route config"
        );
    }

    #[test]
    fn local_rate_limit_refusals() {
        let base = || pb::LocalRateLimit {
            token_bucket: bucket(100),
            ..Default::default()
        };
        let err = |l: pb::LocalRateLimit| local_rate_limit(&l, false).unwrap_err().to_string();
        let cases: Vec<(&str, pb::LocalRateLimit)> = vec![
            (
                "request_headers_to_add_when_not_enforced",
                pb::LocalRateLimit {
                    request_headers_to_add_when_not_enforced: vec![Default::default()],
                    ..base()
                },
            ),
            (
                "descriptors",
                pb::LocalRateLimit {
                    descriptors: vec![Default::default()],
                    ..base()
                },
            ),
            ("stage", pb::LocalRateLimit { stage: 1, ..base() }),
            (
                "local_rate_limit_per_downstream_connection",
                pb::LocalRateLimit {
                    local_rate_limit_per_downstream_connection: true,
                    ..base()
                },
            ),
            (
                "local_cluster_rate_limit",
                pb::LocalRateLimit {
                    local_cluster_rate_limit: Some(Default::default()),
                    ..base()
                },
            ),
            (
                "enable_x_ratelimit_headers",
                pb::LocalRateLimit {
                    enable_x_ratelimit_headers: 1,
                    ..base()
                },
            ),
            (
                "vh_rate_limits",
                pb::LocalRateLimit {
                    vh_rate_limits: 1,
                    ..base()
                },
            ),
            (
                "rate_limits",
                pb::LocalRateLimit {
                    rate_limits: vec![Default::default()],
                    ..base()
                },
            ),
            (
                "max_dynamic_descriptors",
                pb::LocalRateLimit {
                    max_dynamic_descriptors: Some(UInt32Value { value: 5 }),
                    ..base()
                },
            ),
            (
                "enable_retry_after_header",
                pb::LocalRateLimit {
                    enable_retry_after_header: true,
                    ..base()
                },
            ),
        ];
        for (field, l) in cases {
            assert_eq!(err(l), format!("{field} is not supported"));
        }
        assert_eq!(
            err(pb::LocalRateLimit {
                token_bucket: bucket(10),
                ..Default::default()
            }),
            ".token_bucket: fill_interval must be at least 50ms"
        );
        assert_eq!(
            err(pb::LocalRateLimit {
                token_bucket: Some(TokenBucket {
                    max_tokens: 0,
                    ..bucket(100).unwrap()
                }),
                ..Default::default()
            }),
            ".token_bucket: max_tokens must be greater than 0"
        );
        for code in [700, 450, 0] {
            assert_eq!(
                err(pb::LocalRateLimit {
                    status: Some(HttpStatus { code }),
                    ..base()
                }),
                format!("status {code} is not an HTTP status")
            );
        }
    }
}
