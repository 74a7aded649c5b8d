//! Hooks for per-tunnel telemetry (Istio's `istio_tcp_*`, which the `mesh` facade fills
//! from them), and the `baggage` / `forwarded` headers that describe a tunnel's source as
//! ztunnel sends and reads them (its `baggage.rs`, `build_forwarded`, `parse_forwarded_host`).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::stream::H2Stream;

/// Counts one tunnel's bytes; dropped when the tunnel closes.
pub trait TunnelMeter: Send + Sync {
    /// Bytes read from the tunnel (the peer sent them).
    fn received(&self, bytes: u64);
    /// Bytes written into the tunnel.
    fn sent(&self, bytes: u64);

    /// Called on every request an [`HboneServerBuilder::http`] service gets through this
    /// tunnel, to add what the service should know about it (the `mesh` facade adds the
    /// `baggage`'s source labels for `istio_requests_total`). Default: nothing.
    ///
    /// [`HboneServerBuilder::http`]: crate::HboneServerBuilder::http
    fn extend_request(&self, _extensions: &mut http::Extensions) {}
}

/// Told about every tunnel a server accepts or a client opens.
pub trait TunnelObserver<T>: Send + Sync + 'static {
    /// A tunnel opened; the meter counts its bytes and is dropped when it closes.
    fn opened(&self, tunnel: &T) -> Box<dyn TunnelMeter>;
}

impl<T, F> TunnelObserver<T> for F
where
    F: Fn(&T) -> Box<dyn TunnelMeter> + Send + Sync + 'static,
{
    fn opened(&self, tunnel: &T) -> Box<dyn TunnelMeter> {
        self(tunnel)
    }
}

pub(crate) type Observer<T> = Option<Arc<dyn TunnelObserver<T>>>;

/// A tunnel's byte stream (tokio `AsyncRead + AsyncWrite`) over its HTTP/2 `CONNECT`
/// stream, counted by the observer's meter when one is set.
///
/// Reading reopens the stream's window as the app consumes; a vectored write becomes one
/// DATA frame (as far as the window allows); shutdown ends the sending side (END_STREAM);
/// a stream the peer resets fails alone, with an io error (a reset with `NO_ERROR` ends
/// reading cleanly).
pub struct TunnelIo {
    io: H2Stream,
    meter: Option<Arc<dyn TunnelMeter>>,
}

impl TunnelIo {
    pub(crate) fn new(io: H2Stream, meter: Option<Box<dyn TunnelMeter>>) -> Self {
        Self {
            io,
            meter: meter.map(Arc::from),
        }
    }

    /// The tunnel's meter (shared with the HTTP service's request hook).
    pub(crate) fn meter(&self) -> Option<Arc<dyn TunnelMeter>> {
        self.meter.clone()
    }
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelIo")
            .field("metered", &self.meter.is_some())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for TunnelIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        if let Some(m) = &self.meter {
            m.received((buf.filled().len() - before) as u64);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for TunnelIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        if let Some(m) = &self.meter {
            m.sent(n as u64);
        }
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, bufs))?;
        if let Some(m) = &self.meter {
            m.sent(n as u64);
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// What a `baggage` header tells about the tunnel's source (ztunnel's keys; values it
/// leaves out or sends empty are `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    /// `k8s.cluster.name`.
    pub cluster: Option<String>,
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// `k8s.deployment.name` (or `.cronjob`, `.pod`, `.job`).
    pub workload: Option<String>,
    /// `service.name`: the canonical service.
    pub service: Option<String>,
    /// `service.version`: the canonical revision.
    pub version: Option<String>,
}

/// Values longer than this are dropped: they become metric labels.
const MAX_VALUE: usize = 253;

impl Baggage {
    /// Parses every `baggage` header value as ztunnel does: `key=value` pairs separated by
    /// commas; unknown keys ignored, empty values unset.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a http::HeaderValue>) -> Self {
        let mut b = Self::default();
        for v in values {
            let Ok(v) = v.to_str() else { continue };
            for pair in v.split(',') {
                let Some((key, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                // W3C baggage allows `;properties` after the value.
                let val = val.split(';').next().unwrap_or("").trim();
                let val = (!val.is_empty() && val.len() <= MAX_VALUE).then(|| val.to_owned());
                match key.trim() {
                    "k8s.cluster.name" => b.cluster = val,
                    "k8s.namespace.name" => b.namespace = val,
                    "k8s.deployment.name"
                    | "k8s.cronjob.name"
                    | "k8s.pod.name"
                    | "k8s.job.name" => b.workload = val,
                    "service.name" => b.service = val,
                    "service.version" => b.version = val,
                    _ => {}
                }
            }
        }
        b
    }

    /// The header value ztunnel would send for this source (`k8s.deployment.name` for the
    /// workload); `None` when nothing is set.
    pub fn header_value(&self) -> Option<http::HeaderValue> {
        let pairs = [
            ("k8s.cluster.name", &self.cluster),
            ("k8s.namespace.name", &self.namespace),
            ("k8s.deployment.name", &self.workload),
            ("service.name", &self.service),
            ("service.version", &self.version),
        ];
        let s = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(",");
        if s.is_empty() {
            return None;
        }
        http::HeaderValue::from_str(&s).ok()
    }
}

/// The `host=` of a `forwarded` header (the service the caller meant), as ztunnel reads it.
pub fn forwarded_host(value: &http::HeaderValue) -> Option<String> {
    let v = value.to_str().ok()?;
    v.split(';')
        .filter_map(|p| p.trim().strip_prefix("host="))
        .map(|h| h.trim_matches('"'))
        .find(|h| !h.is_empty() && h.len() <= MAX_VALUE)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn baggage_as_ztunnel_sends_it() {
        let v = HeaderValue::from_static(
            "k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.deployment.name=N1,service.name=N2,service.version=V1",
        );
        let b = Baggage::parse([&v]);
        assert_eq!(b.cluster.as_deref(), Some("K1"));
        assert_eq!(b.namespace.as_deref(), Some("NS1"));
        assert_eq!(b.workload.as_deref(), Some("N1"));
        assert_eq!(b.service.as_deref(), Some("N2"));
        assert_eq!(b.version.as_deref(), Some("V1"));
        assert_eq!(b.header_value().unwrap(), v);
        let empty = HeaderValue::from_static("k8s.namespace.name=,service.name=,junk,=x");
        assert_eq!(Baggage::parse([&empty]), Baggage::default());
        assert_eq!(Baggage::default().header_value(), None);
    }

    #[test]
    fn forwarded_hosts() {
        let h = |s: &'static str| forwarded_host(&HeaderValue::from_static(s));
        assert_eq!(
            h("for=\"10.0.0.1:80\";host=a.b.svc"),
            Some("a.b.svc".into())
        );
        assert_eq!(h("host=\"a.b\""), Some("a.b".into()));
        assert_eq!(h("for=\"10.0.0.1:80\""), None);
        assert_eq!(h("host="), None);
    }
}
