//! The accept loop and the one function that serves HTTP on an accepted connection; every
//! server of the mesh (fixed-mode servers here, xDS-configured servers in the `mesh`
//! facade, the proxy's inbound side) uses them.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, Service, ServiceExt};

use super::limits::{ConnectionLimiter, ConnectionLimits, ConnectionPermit, LimitedListener};

/// Accepts connections under `limits.max_connections` until `signal` completes, handing
/// each to `spawn` with its addresses (`TCP_NODELAY` set) and its slot, which the
/// connection holds until it ends. Connections over the cap are closed at once and
/// counted in `limiter`; accept errors (typically EMFILE) back off instead of spinning.
pub async fn accept_loop(
    listener: TcpListener,
    limiter: ConnectionLimiter,
    signal: impl Future<Output = ()>,
    mut spawn: impl FnMut(TcpStream, ConnectionAddrs, ConnectionPermit),
) -> std::io::Result<()> {
    let mut signal = std::pin::pin!(signal);
    let mut listener = LimitedListener::new(listener, limiter);
    loop {
        let (tcp, remote, permit) = tokio::select! {
            () = &mut signal => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        spawn(tcp, ConnectionAddrs { remote, local }, permit);
    }
}

/// How a connection ends when its server drains.
#[derive(Clone, Copy, Debug)]
pub struct Drain<F> {
    /// Completes when the connection should drain (listener changed, server stopping).
    pub signal: F,
    /// How long in-flight requests may take after that before the connection is closed.
    pub timeout: Duration,
}

impl Drain<std::future::Pending<()>> {
    /// Never drains: the connection ends when the client closes it.
    pub fn never() -> Self {
        Self {
            signal: std::future::pending(),
            timeout: Duration::ZERO,
        }
    }
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection with the
/// default [`ConnectionLimits`]; see [`serve_connection_with_limits`].
pub async fn serve_connection<IO, S, B>(
    io: IO,
    service: S,
    addrs: ConnectionAddrs,
    peer: Option<PeerIdentity>,
    drain: Drain<impl Future<Output = ()>>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_connection_with_limits(
        io,
        service,
        addrs,
        peer,
        drain,
        &ConnectionLimits::default(),
    )
    .await
}

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection. Every request
/// carries `addrs` and, over mTLS, the client's `PeerIdentity` in its extensions. When
/// `drain.signal` completes the connection shuts down gracefully (HTTP/2 GOAWAY, HTTP/1.1
/// close after the current response), and is closed after `drain.timeout`.
///
/// Slow clients are cut off by `limits`: HTTP/1 headers (and idle keep-alive time) must
/// arrive within `header_read_timeout`, a connection that has not started a request within
/// that time is closed (an HTTP/2 client trickling its preface, say), and HTTP/2 peers are
/// pinged every `http2_keepalive_interval`.
pub async fn serve_connection_with_limits<IO, S, B>(
    io: IO,
    service: S,
    addrs: ConnectionAddrs,
    peer: Option<PeerIdentity>,
    drain: Drain<impl Future<Output = ()>>,
    limits: &ConnectionLimits,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let started = Arc::new(AtomicBool::new(false));
    let first = started.clone();
    let service = service.map_request(move |mut req: Request<Incoming>| {
        first.store(true, Ordering::Relaxed);
        req.extensions_mut().insert(addrs);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        req
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.http2_keepalive_interval)
        .keep_alive_timeout(limits.http2_keepalive_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    // Until the first request: hyper's HTTP/1 timer does not cover the protocol detection
    // nor HTTP/2's preface and first stream.
    let first_request = tokio::time::sleep(limits.header_read_timeout);
    let mut first_request = std::pin::pin!(first_request);
    let mut waiting = true;
    let mut drain_signal = std::pin::pin!(drain.signal);
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(remote = %addrs.remote, error = %e, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request, if waiting => {
                if !started.load(Ordering::Relaxed) {
                    tracing::debug!(remote = %addrs.remote, "no request within the header read timeout: closing");
                    return;
                }
                waiting = false;
            }
            () = &mut drain_signal => {
                conn.as_mut().graceful_shutdown();
                if tokio::time::timeout(drain.timeout, conn).await.is_err() {
                    tracing::info!(remote = %addrs.remote, "drain timeout: closing the connection");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn addrs() -> ConnectionAddrs {
        let a = "127.0.0.1:1".parse().unwrap();
        ConnectionAddrs {
            remote: a,
            local: a,
        }
    }

    /// Serves a connection whose client sends `prefix` and then nothing; returns when the
    /// server gives up on it.
    async fn serve_stalled(prefix: &'static [u8]) {
        let (mut client, server) = tokio::io::duplex(1024);
        let svc = tower::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(
                http_body_util::Empty::<bytes::Bytes>::new(),
            ))
        });
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(2),
            ..ConnectionLimits::default()
        };
        client.write_all(prefix).await.unwrap();
        let served =
            serve_connection_with_limits(server, svc, addrs(), None, Drain::never(), &limits);
        tokio::time::timeout(Duration::from_secs(3), served)
            .await
            .expect("the stalled connection was closed by the header read timeout");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_clients_are_closed_after_the_header_read_timeout() {
        // Nothing at all, half an HTTP/1 request line, half the HTTP/2 preface.
        serve_stalled(b"").await;
        serve_stalled(b"GET / HTT").await;
        serve_stalled(b"PRI * HTTP/2.0\r\n").await;
    }
}
