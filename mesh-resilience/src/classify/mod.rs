//! The one failure classifier shared by retries, outlier detection and telemetry.
//!
//! A response is classified from its status and, for gRPC, its `grpc-status` (in the
//! headers of a trailers-only response, or in the trailers); an error is classified by
//! walking its `source()` chain for the cause: a connect failure, a reset, a refused
//! stream, a timeout.
//!
//! ```
//! use mesh_resilience::classify::{Classification, Classify, FailureClassifier, ErrorKind};
//!
//! let c = FailureClassifier;
//! let resp = http::Response::builder().status(503).body(()).unwrap();
//! let class = c.classify_response(&resp);
//! assert!(class.is_5xx() && class.is_gateway_failure());
//!
//! let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//! let err: tower::BoxError = Box::new(io);
//! assert_eq!(c.classify_error(&*err), Classification::Error(ErrorKind::ConnectFailure));
//! ```

use std::error::Error as StdError;
use std::io;

use http::{HeaderMap, Response, StatusCode};

/// Why a request failed without a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection to the endpoint could not be made (refused, unreachable, TLS
    /// handshake failure, connect timeout).
    ConnectFailure,
    /// The connection or stream was reset or closed before a complete response.
    Reset,
    /// An HTTP/2 stream was refused (`REFUSED_STREAM`): the server did not process it.
    RefusedStream,
    /// A timeout elapsed (per-try or route).
    Timeout,
    /// Anything else.
    Other,
}

/// The outcome of one request attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Classification {
    /// A response: its HTTP status and, for gRPC, the `grpc-status` when it was known.
    Response {
        /// HTTP status.
        status: StatusCode,
        /// gRPC status code, when present.
        grpc: Option<u32>,
    },
    /// No response: the request failed locally.
    Error(ErrorKind),
}

/// gRPC status codes used by Envoy's `retry_on`.
pub mod grpc_code {
    /// OK.
    pub const OK: u32 = 0;
    /// CANCELLED.
    pub const CANCELLED: u32 = 1;
    /// DEADLINE_EXCEEDED.
    pub const DEADLINE_EXCEEDED: u32 = 4;
    /// RESOURCE_EXHAUSTED.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// INTERNAL.
    pub const INTERNAL: u32 = 13;
    /// UNAVAILABLE.
    pub const UNAVAILABLE: u32 = 14;
}

impl Classification {
    /// HTTP status 500..=599, or a locally originated failure (Envoy counts those as 5xx
    /// unless `split_external_local_origin_errors`).
    pub fn is_5xx(&self) -> bool {
        match self {
            Self::Response { status, .. } => status.is_server_error(),
            Self::Error(_) => true,
        }
    }

    /// 502, 503, 504, or a locally originated failure (Envoy's "gateway failure").
    pub fn is_gateway_failure(&self) -> bool {
        match self {
            Self::Response { status, .. } => matches!(status.as_u16(), 502..=504),
            Self::Error(_) => true,
        }
    }

    /// A failure that originated here rather than in the upstream's answer.
    pub fn is_local_origin(&self) -> bool {
        matches!(self, Self::Error(_))
    }

    /// Success for outlier detection and telemetry: a non-5xx response whose gRPC status
    /// (if any) is not a server-side failure (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL,
    /// UNAVAILABLE, DATA_LOSS count as failures).
    pub fn is_success(&self) -> bool {
        match self {
            Self::Response { status, grpc } => {
                !status.is_server_error() && !matches!(grpc, Some(2 | 4 | 13 | 14 | 15))
            }
            Self::Error(_) => false,
        }
    }

    /// The HTTP status, if there was a response.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Response { status, .. } => Some(*status),
            Self::Error(_) => None,
        }
    }

    /// The gRPC status, if there was one.
    pub fn grpc_status(&self) -> Option<u32> {
        match self {
            Self::Response { grpc, .. } => *grpc,
            Self::Error(_) => None,
        }
    }

    /// The error kind, if the attempt failed without a response.
    pub fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Error(k) => Some(*k),
            Self::Response { .. } => None,
        }
    }
}

/// What counts as a failure. Implemented by [`FailureClassifier`]; plug another one into
/// the layers' `with_classifier` builders.
pub trait Classify: Clone + Send + Sync + 'static {
    /// Classifies a response from its head (status, headers).
    fn classify_response<B>(&self, resp: &Response<B>) -> Classification {
        self.classify_head(resp.status(), resp.headers())
    }

    /// Classifies a response head.
    fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Classification;

    /// Classifies an error returned instead of a response.
    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification;

    /// Refines a response's classification with its trailers (gRPC status at the end of a
    /// stream).
    fn classify_trailers(&self, head: Classification, trailers: &HeaderMap) -> Classification {
        match (head, grpc_status(trailers)) {
            (Classification::Response { status, .. }, Some(code)) => Classification::Response {
                status,
                grpc: Some(code),
            },
            _ => head,
        }
    }
}

/// The default classifier, as Envoy's router and outlier detector see outcomes.
#[derive(Clone, Copy, Debug, Default)]
pub struct FailureClassifier;

impl Classify for FailureClassifier {
    fn classify_head(&self, status: StatusCode, headers: &HeaderMap) -> Classification {
        Classification::Response {
            status,
            grpc: grpc_status(headers),
        }
    }

    fn classify_error(&self, err: &(dyn StdError + 'static)) -> Classification {
        Classification::Error(error_kind(err))
    }
}

/// The `grpc-status` header's value, if present and numeric.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Marks an error as a connect failure, for connectors whose errors are not
/// `std::io::Error`s (wrap them: `Box::new(ConnectFailed(e.into()))`). The same type as
/// [`mesh_core::ConnectError`], which mesh-route's connection pool returns; this name is
/// kept for existing users.
pub use mesh_core::ConnectError as ConnectFailed;

/// Walks `err` and its `source()` chain for the first cause that tells what happened.
///
/// Recognised: `std::io::Error` kinds, `hyper::Error`, [`mesh_core::ConnectError`] (alias
/// [`ConnectFailed`]), [`TimedOut`](crate::timeout::TimedOut), tokio's `Elapsed`, and with
/// this crate's features `h2` and `hyper-util` (both on in the mesh) `h2::Error` and
/// hyper-util's legacy client error. A connect error (or hyper-util's with `is_connect()`)
/// marks what is below it as a connect failure: a reset or timeout under it is
/// [`ErrorKind::ConnectFailure`].
pub fn error_kind(err: &(dyn StdError + 'static)) -> ErrorKind {
    let mut cur = Some(err);
    let mut connect_stage = false;
    while let Some(e) = cur {
        if e.is::<mesh_core::ConnectError>() {
            connect_stage = true;
        } else if e.is::<tokio::time::error::Elapsed>() || e.is::<crate::timeout::TimedOut>() {
            return if connect_stage {
                ErrorKind::ConnectFailure
            } else {
                ErrorKind::Timeout
            };
        } else if is_hyper_util_connect(e) {
            connect_stage = true;
        } else if let Some(kind) = h2_kind(e) {
            if kind == ErrorKind::RefusedStream {
                return kind;
            }
            return if connect_stage {
                ErrorKind::ConnectFailure
            } else {
                kind
            };
        } else if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_timeout() {
                return ErrorKind::Timeout;
            }
            if (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
                && e.source().is_none()
            {
                return if connect_stage {
                    ErrorKind::ConnectFailure
                } else {
                    ErrorKind::Reset
                };
            }
        } else if let Some(io) = e.downcast_ref::<io::Error>() {
            let kind = match io.kind() {
                io::ErrorKind::ConnectionRefused
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::NotFound => ErrorKind::ConnectFailure,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => ErrorKind::Reset,
                io::ErrorKind::TimedOut => ErrorKind::Timeout,
                _ => ErrorKind::Other,
            };
            if kind != ErrorKind::Other || io.get_ref().is_none() {
                return if connect_stage {
                    ErrorKind::ConnectFailure
                } else {
                    kind
                };
            }
        }
        cur = e.source();
    }
    if connect_stage {
        ErrorKind::ConnectFailure
    } else {
        ErrorKind::Other
    }
}

/// Whether `e` is hyper-util's legacy client error for a failed connect.
#[cfg(feature = "hyper-util")]
fn is_hyper_util_connect(e: &(dyn StdError + 'static)) -> bool {
    e.downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(|h| h.is_connect())
}

#[cfg(not(feature = "hyper-util"))]
fn is_hyper_util_connect(_: &(dyn StdError + 'static)) -> bool {
    false
}

/// What an `h2::Error` tells: a refused stream, or a reset (stream reset, GOAWAY, I/O).
#[cfg(feature = "h2")]
fn h2_kind(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    let h2e = e.downcast_ref::<h2::Error>()?;
    if h2e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        Some(ErrorKind::RefusedStream)
    } else if h2e.is_reset() || h2e.is_go_away() || h2e.is_io() {
        Some(ErrorKind::Reset)
    } else {
        None
    }
}

#[cfg(not(feature = "h2"))]
fn h2_kind(_: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    None
}

#[cfg(test)]
mod tests;
