use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, Service, ServiceExt};

use super::MeshAcceptor;
use super::permissive::{ConnectionAddrs, PeerAuthMode, PeerAuthentication, serve_peer_auth};
use crate::PeerIdentity;

/// Serves `service` over mTLS on `listener` until the process ends (see
/// [`serve_with_shutdown`]).
///
/// ```no_run
/// # async fn run(store: mesh_tls::IdentityStore) -> std::io::Result<()> {
/// use axum::{Extension, Router, routing::get};
/// use mesh_tls::{PeerIdentity, config::ServerSettings, server::{MeshAcceptor, serve}};
///
/// let app = Router::new().route(
///     "/",
///     get(|Extension(peer): Extension<PeerIdentity>| async move { format!("hello {peer}\n") }),
/// );
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// serve(listener, MeshAcceptor::new(store, ServerSettings::default()), app).await
/// # }
/// ```
pub async fn serve<S, B>(
    listener: TcpListener,
    acceptor: MeshAcceptor,
    service: S,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with_shutdown(listener, acceptor, service, std::future::pending()).await
}

/// Like [`serve`], until `signal` completes: then it stops accepting (connections already
/// accepted finish on their own). This is [`serve_peer_auth`] in STRICT mode.
///
/// Each connection's handshake runs in its own task, so a slow or bad client never stalls
/// the accept loop. Rejected handshakes are logged with the broken rule and counted in
/// [`MeshAcceptor::stats`]. Requests carry the client's `PeerIdentity` and the
/// connection's [`ConnectionAddrs`] in their extensions.
pub async fn serve_with_shutdown<S, B>(
    listener: TcpListener,
    acceptor: MeshAcceptor,
    service: S,
    signal: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_peer_auth(
        listener,
        acceptor,
        PeerAuthentication::new(PeerAuthMode::Strict),
        service,
        signal,
    )
    .await
}

/// Accepts connections until `signal` completes, handing each to `spawn` with its
/// addresses. Accept errors (typically EMFILE) back off instead of spinning.
pub(super) async fn accept_loop(
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

/// Serves HTTP/1.1 or HTTP/2 on one connection; every request carries `addrs` and, over
/// mTLS, the client's `PeerIdentity`.
pub(super) async fn serve_conn<IO, S, B>(
    io: IO,
    service: S,
    addrs: ConnectionAddrs,
    peer: Option<PeerIdentity>,
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
    let conn = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = conn
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
        .await
    {
        tracing::debug!(remote = %addrs.remote, error = %e, "connection ended with an error");
    }
}
