//! What one call records: created by the service, carried by the response future and then
//! by the response body, written to the metric families when dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::Protocol;
use super::peers::PeerMetrics;

/// What one call records, once, when dropped: at the end of the response body, or when the
/// call failed.
#[derive(Debug)]
pub(crate) struct Recording {
    pub(crate) peer: Arc<PeerMetrics>,
    start: Instant,
    protocol: Protocol,
    /// `None` when the request body had ended before the call (0 bytes).
    request_bytes: Option<Arc<AtomicU64>>,
    pub(crate) code: u16,
    pub(crate) grpc: Option<u16>,
    pub(crate) flags: &'static str,
    pub(crate) response_bytes: u64,
    /// The response body reached its end (a drop before that is a downstream disconnect).
    pub(crate) ended: bool,
}

impl Recording {
    pub(crate) fn new(
        peer: Arc<PeerMetrics>,
        start: Instant,
        protocol: Protocol,
        request_bytes: Option<Arc<AtomicU64>>,
    ) -> Self {
        Self {
            peer,
            start,
            protocol,
            request_bytes,
            code: 0,
            grpc: None,
            flags: "-",
            response_bytes: 0,
            ended: true,
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if !self.ended && self.flags == "-" {
            self.flags = "DC";
        }
        let grpc = match self.protocol {
            // gRPC without a status (e.g. an error before headers) reports 2 (UNKNOWN) as Envoy.
            Protocol::Grpc => Some(self.grpc.unwrap_or(2)),
            _ => None,
        };
        let h = self
            .peer
            .handles(self.protocol, self.code, grpc, self.flags);
        h.requests.inc();
        h.duration
            .observe(self.start.elapsed().as_secs_f64() * 1000.0);
        h.request_bytes.observe(
            self.request_bytes
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed)) as f64,
        );
        h.response_bytes.observe(self.response_bytes as f64);
    }
}

pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
