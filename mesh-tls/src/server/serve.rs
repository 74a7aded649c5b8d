//! Fixed-mode mTLS servers: STRICT on every connection, whatever the control plane says.

use std::future::Future;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use tokio::net::TcpListener;
use tower::{BoxError, Service};

use super::MeshAcceptor;
use super::permissive::{PeerAuthMode, PeerAuthentication, serve_peer_auth};

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
/// connection's [`ConnectionAddrs`](super::ConnectionAddrs) in their extensions.
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
