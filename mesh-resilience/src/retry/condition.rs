//! Whether an attempt's outcome is retriable under a policy's `retry_on`, as Envoy's
//! `RetryStateImpl` decides.

use http::HeaderMap;
use mesh_core::model::{RetryOn, RetryPolicy};

use crate::classify::{Classification, ErrorKind, grpc_code};

/// Whether `class` (with the response's headers, if any) is retriable under `policy`.
pub fn is_retriable(
    policy: &RetryPolicy,
    class: &Classification,
    headers: Option<&HeaderMap>,
) -> bool {
    let on = |c: RetryOn| policy.retry_on.contains(&c);
    match class {
        Classification::Error(kind) => {
            let any_reset = on(RetryOn::Http5xx) || on(RetryOn::GatewayError) || on(RetryOn::Reset);
            match kind {
                ErrorKind::ConnectFailure => {
                    any_reset || on(RetryOn::ConnectFailure) || on(RetryOn::ResetBeforeRequest)
                }
                ErrorKind::RefusedStream => any_reset || on(RetryOn::RefusedStream),
                ErrorKind::Reset | ErrorKind::Other => any_reset,
                // A per-try timeout is answered as a 504 upstream.
                ErrorKind::Timeout => on(RetryOn::Http5xx) || on(RetryOn::GatewayError),
            }
        }
        Classification::Response { status, grpc } => {
            // Envoy never retries a response flagged as overloaded (a circuit breaker's
            // overflow, ours or an upstream proxy's): retrying would feed the overload.
            if headers.is_some_and(|h| h.contains_key("x-envoy-overloaded")) {
                return false;
            }
            let s = status.as_u16();
            if on(RetryOn::Http5xx) && status.is_server_error() {
                return true;
            }
            if on(RetryOn::GatewayError) && matches!(s, 502..=504) {
                return true;
            }
            if on(RetryOn::Retriable4xx) && s == 409 {
                return true;
            }
            if on(RetryOn::RetriableStatusCodes) && policy.retriable_status_codes.contains(&s) {
                return true;
            }
            if let Some(h) = headers {
                if on(RetryOn::EnvoyRateLimited) && h.contains_key("x-envoy-ratelimited") {
                    return true;
                }
                if on(RetryOn::RetriableHeaders)
                    && policy.retriable_headers.iter().any(|m| {
                        let v = h.get(m.name.as_str()).and_then(|v| v.to_str().ok());
                        m.matches(v)
                    })
                {
                    return true;
                }
            }
            match grpc {
                Some(grpc_code::CANCELLED) => on(RetryOn::GrpcCancelled),
                Some(grpc_code::DEADLINE_EXCEEDED) => on(RetryOn::GrpcDeadlineExceeded),
                Some(grpc_code::RESOURCE_EXHAUSTED) => on(RetryOn::GrpcResourceExhausted),
                Some(grpc_code::INTERNAL) => on(RetryOn::GrpcInternal),
                Some(grpc_code::UNAVAILABLE) => on(RetryOn::GrpcUnavailable),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_responses_are_not_retried() {
        let policy = RetryPolicy {
            retry_on: vec![RetryOn::Http5xx],
            num_retries: 2,
            ..Default::default()
        };
        let class = Classification::Response {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            grpc: None,
        };
        let mut h = HeaderMap::new();
        assert!(is_retriable(&policy, &class, Some(&h)));
        h.insert("x-envoy-overloaded", "true".parse().unwrap());
        assert!(!is_retriable(&policy, &class, Some(&h)));
    }
}
