//! Request mirroring (Envoy's `request_mirror_policies`): a fire-and-forget copy of the
//! request to a shadow cluster, with `-shadow` appended to the host as Envoy does (unless
//! the policy keeps the host, `disable_shadow_host_suffix_append`, as istiod sets it). The
//! router has already drawn each policy's runtime fraction.
//!
//! The copy never delays or fails the main request: its body is a tee of the main body
//! (frames are `Bytes`, cloned by reference count) through a small bounded channel, and a
//! shadow that falls behind is cut off (its body ends with an error) rather than slowing
//! the main request down. Its response is read and dropped in a spawned task.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::uri::Authority;
use http::{Request, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::{BoxError, ServiceExt};

use super::ClusterService;
use crate::pool::RequestBody;

/// Frames a shadow may lag behind the main request before it is cut off.
const SHADOW_BACKLOG: usize = 16;

/// Envoy's shadow host: `host-shadow`, keeping the port (`host-shadow:port`).
pub(crate) fn shadow_host(authority: &str) -> String {
    match authority.parse::<Authority>() {
        Ok(a) => match a.port() {
            Some(p) => format!("{}-shadow:{p}", a.host()),
            None => format!("{}-shadow", a.host()),
        },
        Err(_) => format!("{authority}-shadow"),
    }
}

/// One shadow's end of the tee: its channel, and the flag telling a clean end from a cut.
struct Shadow {
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    ended: Arc<AtomicBool>,
}

/// The main body, copying every frame to the shadows' channels.
struct Tee {
    inner: RequestBody,
    shadows: Vec<Shadow>,
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = Pin::new(&mut self.inner).poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                let data = frame.data_ref().cloned();
                let trailers = frame.trailers_ref().cloned();
                let copy = || match (&data, &trailers) {
                    (Some(d), _) => Some(Frame::data(d.clone())),
                    (None, Some(t)) => Some(Frame::trailers(t.clone())),
                    _ => None,
                };
                // A full channel means the shadow lags: drop it (its body then fails).
                self.shadows
                    .retain(|s| copy().is_none_or(|c| s.tx.try_send(Ok(c)).is_ok()));
                // hyper stops polling a body that says it has ended (e.g. after the last
                // byte of a known length): end the shadows' bodies now.
                if self.inner.is_end_stream() {
                    for s in self.shadows.drain(..) {
                        s.ended.store(true, Ordering::Release);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                for s in self.shadows.drain(..) {
                    let _ = s.tx.try_send(Err("main request body failed".into()));
                }
            }
            Poll::Ready(None) => {
                for s in self.shadows.drain(..) {
                    s.ended.store(true, Ordering::Release);
                }
            }
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A shadow's body: the frames the main body copied, ending with an error if the copy was
/// cut off before the main body ended.
struct ShadowBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ended: Arc<AtomicBool>,
    /// The main body's, so that a known length is sent as `content-length`.
    hint: SizeHint,
}

impl Body for ShadowBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(None) if !self.ended.load(Ordering::Acquire) => {
                Poll::Ready(Some(Err("shadow request cut off: it lagged behind".into())))
            }
            other => other,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

type ShadowCall = Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<super::MeshBody>, BoxError>> + Send>,
>;

/// Sends a copy of the request (`parts` as forwarded) to each of `shadows` (with the host
/// kept when its flag says so, else `<host>-shadow`), and returns the
/// main body to send instead of `body`.
pub(crate) fn mirror(
    parts: &Parts,
    body: RequestBody,
    shadows: Vec<(ClusterService, bool)>,
    timeout: Option<Duration>,
) -> RequestBody {
    if shadows.is_empty() {
        return body;
    }
    let empty = body.is_end_stream();
    let hint = body.size_hint();
    let mut tees = Vec::new();
    for (svc, keep_host) in shadows {
        let shadow_body: RequestBody = if empty {
            http_body_util::Empty::new()
                .map_err(|e| match e {})
                .boxed_unsync()
        } else {
            let (tx, rx) = mpsc::channel(SHADOW_BACKLOG);
            let ended = Arc::new(AtomicBool::new(false));
            tees.push(Shadow {
                tx,
                ended: ended.clone(),
            });
            ShadowBody { rx, ended, hint }.boxed_unsync()
        };
        let mut req = Request::new(shadow_body);
        *req.method_mut() = parts.method.clone();
        *req.version_mut() = parts.version;
        *req.headers_mut() = parts.headers.clone();
        *req.uri_mut() = if keep_host {
            parts.uri.clone()
        } else {
            shadow_uri(&parts.uri)
        };
        if let Some(p) = parts.extensions.get::<Arc<crate::RoutePolicy>>() {
            // Shadows are sent once: no retries.
            let mut p = (**p).clone();
            p.retry_policy = None;
            req.extensions_mut().insert(Arc::new(p));
        }
        let call: ShadowCall = Box::pin(svc.oneshot(req));
        tokio::spawn(async move {
            let send = async move {
                if let Ok(resp) = call.await {
                    let _ = resp.into_body().collect().await;
                }
            };
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, send).await;
                }
                None => send.await,
            }
        });
    }
    if empty {
        return body;
    }
    Tee {
        inner: body,
        shadows: tees,
    }
    .boxed_unsync()
}

fn shadow_uri(uri: &Uri) -> Uri {
    let Some(a) = uri.authority() else {
        return uri.clone();
    };
    let mut parts = uri.clone().into_parts();
    if let Ok(shadow) = shadow_host(a.as_str()).parse::<Authority>() {
        parts.authority = Some(shadow);
    }
    Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shadow_host_appends_before_the_port() {
        assert_eq!(shadow_host("reviews:9080"), "reviews-shadow:9080");
        assert_eq!(shadow_host("reviews"), "reviews-shadow");
        assert_eq!(
            shadow_host("a.b.svc.cluster.local:80"),
            "a.b.svc.cluster.local-shadow:80"
        );
    }

    #[test]
    fn shadow_uri_keeps_scheme_and_path() {
        let u: Uri = "http://reviews:9080/r/1?x=1".parse().unwrap();
        assert_eq!(
            shadow_uri(&u).to_string(),
            "http://reviews-shadow:9080/r/1?x=1"
        );
    }
}
