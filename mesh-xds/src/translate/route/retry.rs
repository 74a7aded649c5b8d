//! Retry policies (gRPC A44, Envoy `RetryPolicy`).

use envoy_types::pb::envoy::config::route::v3 as pb;
use mesh_core::model::{RetryBackOff, RetryOn, RetryPolicy};

use crate::translate::matcher::header_matchers;
use crate::translate::{At, Res, any_type_name, bail, opt_duration};

/// Translates a retry policy (gRPC A44, Envoy `RetryPolicy`).
pub fn retry_policy(r: &pb::RetryPolicy) -> Res<RetryPolicy> {
    if r.refresh_cluster_on_retry {
        return bail("refresh_cluster_on_retry is not supported");
    }
    let mut retry_on = Vec::new();
    for token in r
        .retry_on
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        match RetryOn::parse(token) {
            Some(c) if !retry_on.contains(&c) => retry_on.push(c),
            Some(_) => {}
            None => return bail(format!("retry_on {token:?} is not a known retry condition")),
        }
    }
    if r.retry_priority.is_some() {
        return bail("retry_priority is not supported");
    }
    let mut retry_previous_hosts = false;
    for (i, p) in r.retry_host_predicate.iter().enumerate() {
        let typed = match &p.config_type {
            Some(pb::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any)) => {
                any_type_name(any)
            }
            None => "",
        };
        if p.name == "envoy.retry_host_predicates.previous_hosts"
            || typed == "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        {
            retry_previous_hosts = true;
        } else {
            return bail(format!(
                "retry host predicate {:?} is not supported (only previous_hosts)",
                p.name
            ))
            .at(format!(".retry_host_predicate[{i}]"));
        }
    }
    if !r.retry_options_predicates.is_empty() {
        return bail("retry_options_predicates are not supported");
    }
    if r.rate_limited_retry_back_off.is_some() {
        return bail("rate_limited_retry_back_off is not supported");
    }
    if !r.retriable_request_headers.is_empty() {
        return bail("retriable_request_headers are not supported");
    }
    let back_off = match &r.retry_back_off {
        None => RetryBackOff::default(),
        Some(b) => {
            let base =
                match opt_duration(b.base_interval.as_ref()).at(".retry_back_off.base_interval")? {
                    Some(d) if !d.is_zero() => d,
                    _ => return bail("retry_back_off.base_interval must be greater than 0"),
                };
            let max = opt_duration(b.max_interval.as_ref())
                .at(".retry_back_off.max_interval")?
                .unwrap_or(base * 10);
            if max < base {
                return bail("retry_back_off.max_interval must not be less than base_interval");
            }
            RetryBackOff {
                base_interval: base,
                max_interval: max,
            }
        }
    };
    let mut retriable_status_codes = Vec::with_capacity(r.retriable_status_codes.len());
    for c in &r.retriable_status_codes {
        match u16::try_from(*c) {
            Ok(c) if (100..600).contains(&c) => retriable_status_codes.push(c),
            _ => return bail(format!("retriable_status_codes: {c} is not an HTTP status")),
        }
    }
    Ok(RetryPolicy {
        retry_on,
        num_retries: r.num_retries.as_ref().map_or(1, |v| v.value),
        per_try_timeout: opt_duration(r.per_try_timeout.as_ref()).at(".per_try_timeout")?,
        per_try_idle_timeout: opt_duration(r.per_try_idle_timeout.as_ref())
            .at(".per_try_idle_timeout")?,
        back_off,
        retriable_status_codes,
        retriable_headers: header_matchers(&r.retriable_headers, "retriable_headers")?,
        retry_previous_hosts,
        host_selection_retry_max_attempts: u32::try_from(
            r.host_selection_retry_max_attempts.max(1),
        )
        .unwrap_or(u32::MAX),
    })
}
