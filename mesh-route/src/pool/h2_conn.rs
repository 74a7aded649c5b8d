//! One HTTP/2 connection on hyper's `client::conn::http2`: dialed by the first stream that
//! needs it (streams picked meanwhile wait for the same attempt and share its outcome),
//! then shared by cloning its `SendRequest` per stream.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper::rt::{Read, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::OnceCell;
use tower::{BoxError, ServiceExt};

use super::{ConnectError, RequestBody};

/// A boxed connection attempt: the pool's connector for this endpoint, then the HTTP/2
/// handshake. Fails with the cause (the caller wraps it in [`ConnectError`]).
/// It is given the endpoint's last known server stream limit (see [`dial`]).
pub(super) type Dial = Box<
    dyn Fn(Arc<AtomicUsize>) -> Pin<Box<dyn Future<Output = Result<Ready, BoxError>> + Send>>
        + Send
        + Sync,
>;

/// An established connection.
pub(super) struct Ready {
    tx: SendRequest<RequestBody>,
    /// What the connector said (over mTLS the server's `PeerIdentity`), copied into every
    /// response as hyper-util's pool does.
    info: Connected,
    /// The server's `SETTINGS_MAX_CONCURRENT_STREAMS` as of the last stream dispatched
    /// (hyper's dispatch task, polled per stream, reads it; h2's initial 100 until the
    /// server's SETTINGS arrive; `usize::MAX` for no limit).
    server_max: Arc<AtomicUsize>,
}

/// A connection of an endpoint: not yet dialed, dialing, up, or failed.
#[derive(Default)]
pub(super) struct Conn {
    ready: OnceCell<Result<Ready, Arc<BoxError>>>,
}

impl Conn {
    /// A connection dialed elsewhere (the one that learned an ALPN endpoint's protocol).
    pub(super) fn up(ready: Ready) -> Self {
        Self {
            ready: OnceCell::new_with(Some(Ok(ready))),
        }
    }
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("dead", &self.is_dead())
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Failed to connect, or closed (broken, or the server sent GOAWAY): it takes no new
    /// stream. A connection still dialing is not dead.
    pub(super) fn is_dead(&self) -> bool {
        match self.ready.get() {
            None => false,
            Some(Err(_)) => true,
            Some(Ok(r)) => r.tx.is_closed(),
        }
    }

    /// The server's stream limit; `known`, the endpoint's last seen, until dialed.
    pub(super) fn server_max_streams(&self, known: &AtomicUsize) -> usize {
        match self.ready.get() {
            Some(Ok(r)) => r.server_max.load(Ordering::Relaxed),
            _ => known.load(Ordering::Relaxed),
        }
    }

    /// Sends `req` on this connection, dialing it with `dial` first if no stream has. A
    /// request the connection closed before taking comes back in the error
    /// (`TrySendError::take_message`), to be sent on another.
    pub(super) async fn send(
        &self,
        dial: &Dial,
        known: &Arc<AtomicUsize>,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let ready = self
            .connect(dial, known)
            .await
            .map_err(SendError::Connect)?;
        let mut resp = ready.tx.clone().try_send_request(req).await?;
        ready.info.get_extras(resp.extensions_mut());
        Ok(resp)
    }

    /// The established connection, dialing it with `dial` first if nothing has.
    pub(super) async fn connect(
        &self,
        dial: &Dial,
        known: &Arc<AtomicUsize>,
    ) -> Result<&Ready, ConnectError> {
        let ready = self
            .ready
            .get_or_init(|| async { dial(known.clone()).await.map_err(Arc::new) })
            .await;
        ready
            .as_ref()
            .map_err(|cause| ConnectError(Box::new(SharedCause(cause.clone()))))
    }
}

/// Why a stream failed.
pub(super) enum SendError {
    Connect(ConnectError),
    /// Boxed: the request it may hand back is large, and failures are rare.
    Send(Box<TrySendError<Request<RequestBody>>>),
}

impl From<TrySendError<Request<RequestBody>>> for SendError {
    fn from(e: TrySendError<Request<RequestBody>>) -> Self {
        Self::Send(Box::new(e))
    }
}

/// One failed attempt's cause, given to every stream (or request) that waited for it.
#[derive(Debug)]
pub(super) struct SharedCause(pub(super) Arc<BoxError>);

impl fmt::Display for SharedCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self.0, f)
    }
}

impl std::error::Error for SharedCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Dials with `connect`, handshakes HTTP/2 and drives the connection on a task that also
/// publishes the server's stream limit, to the connection and to `known` (the endpoint's
/// last seen). Until the server's SETTINGS arrive h2 sends at most `known` streams (100
/// when none is known): a new connection to a server that allows fewer has no stream
/// refused.
pub(super) async fn dial<C, IO>(connect: C, known: Arc<AtomicUsize>) -> Result<Ready, BoxError>
where
    C: tower::Service<Uri, Response = IO>,
    C::Error: Into<BoxError>,
    IO: Read + Write + Connection + Unpin + Send + 'static,
{
    // The connector is fixed to the endpoint: the URI is not used.
    let io = connect.oneshot(Uri::default()).await.map_err(Into::into)?;
    handshake(io, known).await
}

/// Handshakes HTTP/2 on a dialed connection and drives it, as [`dial`].
pub(super) async fn handshake<IO>(io: IO, known: Arc<AtomicUsize>) -> Result<Ready, BoxError>
where
    IO: Read + Write + Connection + Unpin + Send + 'static,
{
    let info = io.connected();
    let initial = Some(known.load(Ordering::Relaxed)).filter(|&n| n != usize::MAX);
    let (tx, conn) = Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_max_send_streams(initial)
        .handshake(io)
        .await?;
    let server_max = Arc::new(AtomicUsize::new(usize::MAX));
    let seen = server_max.clone();
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        let ended = std::future::poll_fn(|cx| {
            let out = conn.as_mut().poll(cx);
            // Polled per stream handed to h2 (the frames are read on h2's own task): the
            // limit the pool picks by is the one seen at the last dispatch.
            let max = conn.current_max_send_streams();
            seen.store(max, Ordering::Relaxed);
            known.store(max, Ordering::Relaxed);
            out
        })
        .await;
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
        }
    });
    Ok(Ready {
        tx,
        info,
        server_max,
    })
}
