//! Client lanes over hyper's connection-level API and over any tower HTTP service.

use bytes::Bytes;
use futures::future::BoxFuture;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tower::{BoxError, Service, ServiceExt};

use crate::Error;
use crate::loadgen::Lane;
use crate::payload;

/// Aborts a spawned task (an accept loop) when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An HTTP/1.1 connection: one request at a time.
pub struct H1Lane {
    sender: http1::SendRequest<Empty<Bytes>>,
    host: String,
}

impl H1Lane {
    /// Handshakes HTTP/1.1 over `io`; requests carry `Host: host`.
    pub async fn new<IO>(io: IO, host: &str) -> Result<Self, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender,
            host: host.to_owned(),
        })
    }
}

impl Lane for H1Lane {
    fn send(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.sender.ready().await?;
            let req = Request::get(payload::PATH)
                .header(http::header::HOST, &self.host)
                .body(Empty::new())?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            payload::check(status, body.len())
        })
    }
}

/// An HTTP/2 connection used one stream at a time (as the other lanes are).
pub struct H2Lane {
    sender: http2::SendRequest<Empty<Bytes>>,
    uri: http::Uri,
}

impl H2Lane {
    /// Handshakes HTTP/2 over `io`; requests go to `uri` (scheme and authority included).
    pub async fn new<IO>(io: IO, uri: http::Uri) -> Result<Self, Error>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self { sender, uri })
    }
}

impl Lane for H2Lane {
    fn send(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            self.sender.ready().await?;
            let req = Request::get(self.uri.clone()).body(Empty::new())?;
            let resp = self.sender.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            payload::check(status, body.len())
        })
    }
}

/// A caller of a shared client service (the mesh client): its pool decides connections.
/// Each lane holds its own clone of the service and calls it as an application would
/// (`ready`, then `call`), without type erasure, as the hyper lanes call hyper.
pub struct ServiceLane<S> {
    svc: S,
    uri: http::Uri,
}

impl<S> ServiceLane<S> {
    /// A lane calling `svc` for `uri`.
    pub fn new(svc: S, uri: http::Uri) -> Self {
        Self { svc, uri }
    }
}

impl<S, B> Lane for ServiceLane<S>
where
    S: Service<Request<Empty<Bytes>>, Response = http::Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: Into<BoxError>,
{
    fn send(&mut self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let req = Request::get(self.uri.clone()).body(Empty::new())?;
            let svc = self.svc.ready().await.map_err(Into::into)?;
            let resp = svc.call(req).await.map_err(Into::into)?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map_err(Into::into)?;
            payload::check(status, body.to_bytes().len())
        })
    }
}

/// Serves the payload app over HTTP/1.1 on `listener` until the returned guard drops.
pub fn serve_h1(listener: tokio::net::TcpListener) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), hyper::service::service_fn(payload::app))
                    .await;
            });
        }
    }))
}

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, Error> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
