use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{BoxError, Service, ServiceExt};

use super::MeshAcceptor;

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
/// accepted finish on their own).
///
/// Each connection's handshake runs in its own task, so a slow or bad client never stalls
/// the accept loop. Rejected handshakes are logged with the broken rule and counted in
/// [`MeshAcceptor::stats`]. Requests carry the client's `PeerIdentity` in their extensions.
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
    let mut signal = std::pin::pin!(signal);
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut signal => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let (tls, peer) = match acceptor.accept(tcp).await {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "mTLS handshake rejected");
                    return;
                }
            };
            let service = service.map_request(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(peer.clone());
                req
            });
            let conn = auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .await
            {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
        });
    }
}
