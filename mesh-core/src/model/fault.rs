//! The HTTP fault-injection filter's config (Envoy `extensions.filters.http.fault.v3.HTTPFault`,
//! gRPC A33).

use std::time::Duration;

use super::matcher::{Fraction, HeaderMatcher};

/// Fault injection: a delay and/or an abort, each applied to a fraction of requests.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FaultConfig {
    /// Delay injection.
    pub delay: Option<FaultDelay>,
    /// Abort injection.
    pub abort: Option<FaultAbort>,
    /// Only requests whose headers all match are faulted.
    pub headers: Vec<HeaderMatcher>,
    /// At most this many requests are faulted at the same time (`None`: unlimited).
    pub max_active_faults: Option<u32>,
}

/// How long a delay lasts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DelayKind {
    /// A fixed delay.
    Fixed(Duration),
    /// The delay in milliseconds is read from the `x-envoy-fault-delay-request` header.
    FromHeader,
}

/// Delay injection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultDelay {
    /// The delay.
    pub kind: DelayKind,
    /// Fraction of requests delayed (the percentage may also be overridden by the
    /// `x-envoy-fault-delay-request-percentage` header when `kind` is `FromHeader`).
    pub percentage: Fraction,
}

/// What an abort returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortKind {
    /// An HTTP status code (200..600); for gRPC requests it is mapped to a gRPC status.
    Http(u16),
    /// A gRPC status code.
    Grpc(u32),
    /// Read from the `x-envoy-fault-abort-request` / `x-envoy-fault-abort-grpc-request`
    /// headers.
    FromHeader,
}

/// Abort injection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultAbort {
    /// What is returned.
    pub kind: AbortKind,
    /// Fraction of requests aborted.
    pub percentage: Fraction,
}
