use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::Response;
use pin_project::pin_project;
use tower::BoxError;

use super::body::MeteredBody;
use super::peers::PeerMetrics;
use super::{Protocol, ResponseFlags};

/// What one call records, once, when dropped: at the end of the response body, or when the
/// call failed.
#[derive(Debug)]
pub(crate) struct Recording {
    peer: Arc<PeerMetrics>,
    start: Instant,
    protocol: Protocol,
    request_bytes: Arc<AtomicU64>,
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
        request_bytes: Arc<AtomicU64>,
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
        h.request_bytes
            .observe(self.request_bytes.load(Ordering::Relaxed) as f64);
        h.response_bytes.observe(self.response_bytes as f64);
    }
}

pub(crate) fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Envoy's response flag for a failed call: `UT` for timeouts, `UF` (upstream failure)
/// otherwise.
pub(crate) fn error_flags(err: &BoxError) -> &'static str {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if e.is::<tokio::time::error::Elapsed>()
            || e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return "UT";
        }
        cur = e.source();
    }
    "UF"
}

/// The future of [`super::IstioMetricsService`].
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    recording: Option<Recording>,
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, recording: Recording) -> Self {
        Self {
            inner,
            recording: Some(recording),
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    RB: http_body::Body,
{
    type Output = Result<Response<MeteredBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut rec) = this.recording.take() else {
            return Poll::Ready(Err("response future polled after completion".into()));
        };
        match result {
            Ok(resp) => {
                // Source reporter: the server's verified identity names the destination.
                if let Some(id) = resp.extensions().get::<mesh_tls::PeerIdentity>()
                    && let Some(p) = rec.peer.for_server(id.0.as_str())
                {
                    rec.peer = p;
                }
                rec.code = resp.status().as_u16();
                rec.grpc = grpc_status(resp.headers());
                if let Some(f) = resp.extensions().get::<ResponseFlags>() {
                    rec.flags = f.0;
                }
                Poll::Ready(Ok(resp.map(|b| MeteredBody::recording(b, rec))))
            }
            Err(e) => {
                let e = e.into();
                rec.flags = error_flags(&e);
                drop(rec);
                Poll::Ready(Err(e))
            }
        }
    }
}
