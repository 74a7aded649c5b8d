//! The accept loop and the one function that serves HTTP on an accepted connection; every
//! server of the mesh (fixed-mode servers here, xDS-configured servers in the `mesh`
//! facade, the proxy's inbound side) uses them.

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, Service, ServiceExt};

/// Accepts connections until `signal` completes, handing each to `spawn` with its
/// addresses (`TCP_NODELAY` set). Accept errors (typically EMFILE) back off instead of
/// spinning.
pub async fn accept_loop(
    listener: TcpListener,
    signal: impl Future<Output = ()>,
    mut spawn: impl FnMut(TcpStream, ConnectionAddrs),
) -> std::io::Result<()> {
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut signal => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(local) = tcp.local_addr() else {
            continue;
        };
        spawn(tcp, ConnectionAddrs { remote, local });
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

/// Serves HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection. Every request
/// carries `addrs` and, over mTLS, the client's `PeerIdentity` in its extensions. When
/// `drain.signal` completes the connection shuts down gracefully (HTTP/2 GOAWAY, HTTP/1.1
/// close after the current response), and is closed after `drain.timeout`.
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
    let service = service.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(addrs);
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(service));
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(remote = %addrs.remote, error = %e, "connection ended with an error");
            }
        }
        () = drain.signal => {
            conn.as_mut().graceful_shutdown();
            if tokio::time::timeout(drain.timeout, conn).await.is_err() {
                tracing::info!(remote = %addrs.remote, "drain timeout: closing the connection");
            }
        }
    }
}
