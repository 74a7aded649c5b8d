use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use mesh_core::extensions::PeerIdentity;
use pin_project::pin_project;
use tower::BoxError;

use super::ResponseFlags;
use super::body::MeteredBody;
use super::recording::{Recording, grpc_status};

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
                if let Some(id) = resp.extensions().get::<PeerIdentity>()
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
