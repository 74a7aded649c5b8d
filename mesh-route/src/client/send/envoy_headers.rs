//! The `x-envoy-*` headers Envoy's router adds, as it adds them: `x-envoy-attempt-count`
//! when the virtual host says `include_request_attempt_count`, and, unless the listener's
//! router filter says `suppress_envoy_headers`, `x-envoy-expected-rq-timeout-ms` and
//! `x-envoy-original-path` upstream, `x-envoy-upstream-service-time` downstream. Without
//! `suppress_envoy_headers` a circuit breaker's overflow reply keeps `x-envoy-overloaded`;
//! with it the header is taken off that reply (an upstream's own is passed on).

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use mesh_core::extensions::{ATTEMPT_COUNT_HEADER, ResponseFlags};

use crate::RoutePolicy;

// Names built once: inserting a `&str` name that is not a standard header copies it into a
// new allocation on every request.
const EXPECTED_TIMEOUT: HeaderName = HeaderName::from_static("x-envoy-expected-rq-timeout-ms");
const ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
const SERVICE_TIME: HeaderName = HeaderName::from_static("x-envoy-upstream-service-time");
const OVERLOADED: HeaderName = HeaderName::from_static("x-envoy-overloaded");

/// The headers of the upstream request. `timeout` is the route timeout that applies;
/// `original_path` the path before the route rewrote it (`None` when it did not).
pub(super) fn on_request(
    policy: &RoutePolicy,
    timeout: Option<Duration>,
    original_path: Option<&str>,
    headers: &mut HeaderMap,
) {
    if policy.include_attempt_count {
        // The first attempt; a retry layer renumbers the ones after it.
        headers.insert(ATTEMPT_COUNT_HEADER, HeaderValue::from_static("1"));
    }
    if policy.suppress_envoy_headers {
        return;
    }
    // Envoy: the per-try timeout when there is one, else the route's.
    let per_try = policy
        .retry_policy
        .as_ref()
        .and_then(|r| r.per_try_timeout)
        .filter(|t| !t.is_zero());
    if let Some(t) = per_try.or(timeout).filter(|t| !t.is_zero()) {
        headers.insert(EXPECTED_TIMEOUT, millis_value(millis(t)));
    }
    if let Some(v) = original_path.and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(ORIGINAL_PATH, v);
    }
}

/// The headers of the response; `upstream` says whether it came from the upstream (not a
/// local reply), `started` when the request was handed to the cluster.
pub(super) fn on_response<B>(
    policy: &RoutePolicy,
    upstream: bool,
    started: Instant,
    resp: &mut Response<B>,
) {
    if policy.suppress_envoy_headers {
        if resp.extensions().get::<ResponseFlags>() == Some(&ResponseFlags("UO")) {
            resp.headers_mut().remove(OVERLOADED);
        }
        return;
    }
    if upstream {
        let ms = millis(started.elapsed());
        resp.headers_mut().insert(SERVICE_TIME, millis_value(ms));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `ms` as a header value; the common ones (service times under a second, timeouts in
/// whole seconds up to five minutes) are formatted once and kept for the process's life, so
/// a request takes neither an allocation nor a reference count (a shared count, bumped and
/// dropped by every worker thread per request, costs more than the formatting it saves).
fn millis_value(ms: u64) -> HeaderValue {
    const SMALL: u64 = 1024;
    const SECONDS: u64 = 300;
    fn leak(n: u64) -> &'static str {
        Box::leak(n.to_string().into_boxed_str())
    }
    static SMALL_VALUES: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| (0..SMALL).map(leak).collect());
    static SECOND_VALUES: LazyLock<Vec<&'static str>> =
        LazyLock::new(|| (1..=SECONDS).map(|s| leak(s * 1000)).collect());
    if ms < SMALL {
        HeaderValue::from_static(SMALL_VALUES[ms as usize])
    } else if ms.is_multiple_of(1000) && (1..=SECONDS).contains(&(ms / 1000)) {
        HeaderValue::from_static(SECOND_VALUES[(ms / 1000 - 1) as usize])
    } else {
        HeaderValue::from(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::millis_value;

    /// The cached values and the formatted ones agree, at the edges of both tables.
    #[test]
    fn millis_values_are_the_decimal_milliseconds() {
        for ms in [
            0,
            999,
            1000,
            1023,
            1024,
            1500,
            15_000,
            300_000,
            301_000,
            u64::MAX,
        ] {
            assert_eq!(millis_value(ms), ms.to_string().as_str(), "{ms}");
        }
    }
}
