//! A cluster's circuit breakers and outlier detection.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as pb;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf::UInt32Value;
use mesh_core::model::{
    CircuitBreakers, FailurePercentageEjection, OutlierDetection, RetryBudget, SuccessRateEjection,
    Thresholds,
};

use super::balancing::percent;
use crate::translate::{At, Dialect, Res, bail, duration};

pub(super) fn circuit_breakers(
    c: Option<&pb::CircuitBreakers>,
    dialect: Dialect,
) -> Res<CircuitBreakers> {
    let unset = Thresholds {
        max_retries: dialect.unset_max_retries(),
        ..Thresholds::default()
    };
    let mut out = CircuitBreakers {
        default: unset,
        high: unset,
    };
    let Some(c) = c else {
        return Ok(out);
    };
    if !c.per_host_thresholds.is_empty() {
        return bail("per_host_thresholds are not supported");
    }
    let mut seen = [false; 2];
    for (i, t) in c.thresholds.iter().enumerate() {
        let at = || format!(".thresholds[{i}]");
        let slot = match core::RoutingPriority::try_from(t.priority) {
            Ok(core::RoutingPriority::Default) => 0,
            Ok(core::RoutingPriority::High) => 1,
            Err(_) => return bail(format!("priority {} is unknown", t.priority)).at_with(at),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return bail("a second thresholds entry for the same priority").at_with(at);
        }
        if t.max_connection_pools.is_some() {
            return bail("max_connection_pools is not supported").at_with(at);
        }
        let v = |w: &Option<UInt32Value>, d: u32| w.as_ref().map_or(d, |w| w.value);
        let retry_budget = match &t.retry_budget {
            None => None,
            Some(b) if b.budget_interval.is_some() => {
                return bail("budget_interval is not supported")
                    .at_with(|| format!(".thresholds[{i}].retry_budget"));
            }
            Some(b) => Some(RetryBudget {
                budget_percent: percent(b.budget_percent.as_ref(), 20.0)
                    .at_with(|| format!(".thresholds[{i}].retry_budget.budget_percent"))?,
                min_retry_concurrency: v(&b.min_retry_concurrency, 3),
            }),
        };
        let th = Thresholds {
            max_connections: v(&t.max_connections, 1024),
            max_pending_requests: v(&t.max_pending_requests, 1024),
            max_requests: v(&t.max_requests, 1024),
            max_retries: v(&t.max_retries, unset.max_retries),
            retry_budget,
        };
        if slot == 0 {
            out.default = th;
        } else {
            out.high = th;
        }
    }
    Ok(out)
}

pub(super) fn outlier_detection(o: &pb::OutlierDetection) -> Res<OutlierDetection> {
    if !o.monitors.is_empty() {
        return bail("monitors are not supported");
    }
    if o.always_eject_one_host.as_ref().is_some_and(|b| b.value) {
        return bail("always_eject_one_host is not supported");
    }
    if o.detect_degraded_hosts.as_ref().is_some_and(|b| b.value) {
        return bail("detect_degraded_hosts is not supported");
    }
    let d = OutlierDetection::default();
    let u = |w: &Option<UInt32Value>, d: u32| w.as_ref().map_or(d, |w| w.value);
    let pct = |w: &Option<UInt32Value>, d: u32, field: &str| -> Res<u32> {
        let v = u(w, d);
        if v > 100 {
            return bail(format!("{field} {v} is greater than 100"));
        }
        Ok(v)
    };
    let dur =
        |w: Option<&envoy_types::pb::google::protobuf::Duration>, d: Duration, field: &str| {
            w.map(duration)
                .transpose()
                .at(format!(".{field}"))
                .map(|v| v.unwrap_or(d))
        };
    let interval = dur(o.interval.as_ref(), d.interval, "interval")?;
    if interval.is_zero() {
        return bail("interval must be greater than 0");
    }
    let base_ejection_time = dur(
        o.base_ejection_time.as_ref(),
        d.base_ejection_time,
        "base_ejection_time",
    )?;
    // Envoy: max_ejection_time defaults to 300 s or base_ejection_time, whichever is larger.
    let max_default = d.max_ejection_time.max(base_ejection_time);
    let max_ejection_time = dur(
        o.max_ejection_time.as_ref(),
        max_default,
        "max_ejection_time",
    )?;
    if max_ejection_time < base_ejection_time {
        return bail("max_ejection_time must not be less than base_ejection_time");
    }
    Ok(OutlierDetection {
        consecutive_5xx: u(&o.consecutive_5xx, d.consecutive_5xx),
        enforcing_consecutive_5xx: pct(
            &o.enforcing_consecutive_5xx,
            d.enforcing_consecutive_5xx,
            "enforcing_consecutive_5xx",
        )?,
        consecutive_gateway_failure: u(
            &o.consecutive_gateway_failure,
            d.consecutive_gateway_failure,
        ),
        enforcing_consecutive_gateway_failure: pct(
            &o.enforcing_consecutive_gateway_failure,
            d.enforcing_consecutive_gateway_failure,
            "enforcing_consecutive_gateway_failure",
        )?,
        split_external_local_origin_errors: o.split_external_local_origin_errors,
        consecutive_local_origin_failure: u(
            &o.consecutive_local_origin_failure,
            d.consecutive_local_origin_failure,
        ),
        enforcing_consecutive_local_origin_failure: pct(
            &o.enforcing_consecutive_local_origin_failure,
            d.enforcing_consecutive_local_origin_failure,
            "enforcing_consecutive_local_origin_failure",
        )?,
        enforcing_local_origin_success_rate: pct(
            &o.enforcing_local_origin_success_rate,
            d.enforcing_local_origin_success_rate,
            "enforcing_local_origin_success_rate",
        )?,
        enforcing_failure_percentage_local_origin: pct(
            &o.enforcing_failure_percentage_local_origin,
            d.enforcing_failure_percentage_local_origin,
            "enforcing_failure_percentage_local_origin",
        )?,
        interval,
        base_ejection_time,
        max_ejection_time,
        max_ejection_time_jitter: dur(
            o.max_ejection_time_jitter.as_ref(),
            d.max_ejection_time_jitter,
            "max_ejection_time_jitter",
        )?,
        max_ejection_percent: pct(
            &o.max_ejection_percent,
            d.max_ejection_percent,
            "max_ejection_percent",
        )?,
        success_rate: SuccessRateEjection {
            enforcing_percentage: pct(
                &o.enforcing_success_rate,
                d.success_rate.enforcing_percentage,
                "enforcing_success_rate",
            )?,
            minimum_hosts: u(&o.success_rate_minimum_hosts, d.success_rate.minimum_hosts),
            request_volume: u(
                &o.success_rate_request_volume,
                d.success_rate.request_volume,
            ),
            stdev_factor: u(&o.success_rate_stdev_factor, d.success_rate.stdev_factor),
        },
        failure_percentage: FailurePercentageEjection {
            threshold: pct(
                &o.failure_percentage_threshold,
                d.failure_percentage.threshold,
                "failure_percentage_threshold",
            )?,
            enforcing_percentage: pct(
                &o.enforcing_failure_percentage,
                d.failure_percentage.enforcing_percentage,
                "enforcing_failure_percentage",
            )?,
            minimum_hosts: u(
                &o.failure_percentage_minimum_hosts,
                d.failure_percentage.minimum_hosts,
            ),
            request_volume: u(
                &o.failure_percentage_request_volume,
                d.failure_percentage.request_volume,
            ),
        },
    })
}
