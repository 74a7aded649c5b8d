//! The last hop: requests to the local app over pooled plaintext HTTP/1.1 (or h2c).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use mesh_telemetry::metrics::ResponseFlags;
use mesh_tls::PeerIdentity;
use tower::BoxError;

use crate::headers::{XFCC, strip_hop_by_hop};
use crate::options::AppProtocol;

/// The `x-forwarded-client-cert` value of a connection's mTLS caller, built once per
/// connection (see [`xfcc`]).
#[derive(Clone, Debug)]
pub(crate) struct Xfcc(pub(crate) HeaderValue);

/// `By=<us>;URI=<caller>`, as Envoy's `SANITIZE_SET` with the URI SAN.
pub(crate) fn xfcc(ours: &str, peer: &PeerIdentity) -> Option<Xfcc> {
    HeaderValue::from_str(&format!("By={ours};URI={}", peer.0))
        .ok()
        .map(Xfcc)
}

/// What the app (or we, when it is unreachable) answers.
pub(crate) type AppBody = Either<Incoming, Full<Bytes>>;

/// Sends each request to the app at a fixed address, keeping the caller's authority in
/// `host` and its verified identity ([`Xfcc`] in the extensions) in
/// `x-forwarded-client-cert`.
#[derive(Debug)]
pub(crate) struct AppService<B> {
    client: Client<HttpConnector, B>,
    authority: Authority,
    version: http::Version,
}

impl<B> AppService<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(crate) fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new());
        if protocol == AppProtocol::H2c {
            builder.http2_only(true);
        }
        let client = builder.build(http);
        Self {
            client,
            // A socket address is always a valid authority.
            authority: Authority::try_from(app.to_string())
                .unwrap_or_else(|_| Authority::from_static("127.0.0.1")),
            version: match protocol {
                AppProtocol::Http1 => http::Version::HTTP_11,
                AppProtocol::H2c => http::Version::HTTP_2,
            },
        }
    }
}

// By hand: a derive would require `B: Clone`.
impl<B> Clone for AppService<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
            version: self.version,
        }
    }
}

fn unavailable(detail: &str) -> Response<AppBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "upstream connect error or disconnect/reset before headers. reset reason: {detail}"
    )))));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp.extensions_mut().insert(ResponseFlags("UF"));
    resp
}

impl<B> tower::Service<Request<B>> for AppService<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<AppBody>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // HTTP/2 carries the authority in the URI; the app sees it as `host`.
        if let Some(a) = parts.uri.authority()
            && !parts.headers.contains_key(http::header::HOST)
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(http::header::HOST, v);
        }
        // Only we say who the caller is.
        parts.headers.remove(XFCC);
        if let Some(Xfcc(v)) = parts.extensions.get::<Xfcc>() {
            parts.headers.insert(XFCC, v.clone());
        }
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
        }
        parts.uri = match Uri::from_parts(uri) {
            Ok(u) => u,
            Err(e) => return Box::pin(async move { Ok(unavailable(&e.to_string())) }),
        };
        parts.version = self.version;
        let fut = self.client.request(Request::from_parts(parts, body));
        Box::pin(async move {
            Ok(match fut.await {
                Ok(resp) => resp.map(Either::Left),
                Err(e) => {
                    tracing::debug!(error = %e, "local app request failed");
                    unavailable(if e.is_connect() {
                        "connection failure"
                    } else {
                        "connection termination"
                    })
                }
            })
        })
    }
}
