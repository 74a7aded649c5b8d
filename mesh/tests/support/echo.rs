//! A gRPC service written by hand (no protoc), `mesh.test.Echo`, with one method per kind
//! of call, and its client: tonic's codegen-free `server::Grpc` and `client::Grpc` with
//! prost messages, as generated code would call them.

#![allow(dead_code)] // each test file uses its own part

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http_body::Body;
use mesh::PeerIdentity;
use tonic::codec::Streaming;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower::BoxError;

/// `message Msg { bytes data = 1; uint32 n = 2; string info = 3; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub n: u32,
    #[prost(string, tag = "3")]
    pub info: String,
}

impl Msg {
    pub fn new(data: impl Into<Vec<u8>>, n: u32) -> Self {
        Self {
            data: data.into(),
            n,
            info: String::new(),
        }
    }
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The server: `Unary` echoes and says who called over which HTTP version, `Repeat`
/// streams `n` copies, `Count` counts a client stream, `Chat` echoes each message of a
/// bidirectional stream as it arrives, `Hang` never answers, `Flaky` fails its first
/// `fail_first` calls with UNAVAILABLE, `FlakyStream` sends one message then UNAVAILABLE,
/// `Slow` streams `n` messages `data[0]` ms apart, `Which` answers `tag`, `Sleep` answers after `n` ms.
#[derive(Clone, Default)]
pub struct Echo {
    /// Calls of `Flaky` and `FlakyStream` so far.
    pub calls: Arc<AtomicUsize>,
    pub fail_first: usize,
    /// What `Which` answers (in `n`): tells servers apart.
    pub tag: u32,
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "mesh.test.Echo";
}

/// The caller's identity, as a tonic handler reads it, and the request's HTTP version.
fn who<T>(r: &Request<T>) -> String {
    let peer: Option<&PeerIdentity> = mesh::tls::server::peer_identity(r);
    let peer = peer.map_or("plaintext".to_owned(), |p| p.to_string());
    let version = r
        .extensions()
        .get::<http::Version>()
        .copied()
        .unwrap_or_default();
    format!("{peer} {version:?}")
}

macro_rules! svc {
    ($f:expr) => {
        tower::service_fn($f)
    };
}

impl<B> tower::Service<http::Request<B>> for Echo
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError> + Send,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let version = req.version();
            req.extensions_mut().insert(version);
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let path = req.uri().path().to_owned();
            let method = path.strip_prefix("/mesh.test.Echo/").unwrap_or("");
            Ok(match method {
                "Unary" => {
                    grpc.unary(
                        svc!(|r: Request<Msg>| async move {
                            let info = who(&r);
                            let mut m = r.into_inner();
                            m.info = info;
                            Ok::<_, Status>(Response::new(m))
                        }),
                        req,
                    )
                    .await
                }
                "Repeat" => {
                    grpc.server_streaming(
                        svc!(|r: Request<Msg>| async move {
                            let m = r.into_inner();
                            let n = m.n;
                            let s: MsgStream = Box::pin(futures::stream::iter(
                                (0..n).map(move |i| Ok(Msg::new(m.data.clone(), i))),
                            ));
                            Ok::<_, Status>(Response::new(s))
                        }),
                        req,
                    )
                    .await
                }
                "Count" => {
                    grpc.client_streaming(
                        svc!(|r: Request<Streaming<Msg>>| async move {
                            let mut s = r.into_inner();
                            let (mut n, mut bytes) = (0u32, 0usize);
                            while let Some(m) = s.next().await {
                                n += 1;
                                bytes += m?.data.len();
                            }
                            let mut m = Msg::new(Vec::new(), n);
                            m.info = bytes.to_string();
                            Ok::<_, Status>(Response::new(m))
                        }),
                        req,
                    )
                    .await
                }
                "Chat" => {
                    grpc.streaming(
                        svc!(|r: Request<Streaming<Msg>>| async move {
                            let s: MsgStream = Box::pin(r.into_inner());
                            Ok::<_, Status>(Response::new(s))
                        }),
                        req,
                    )
                    .await
                }
                "Which" => {
                    let tag = this.tag;
                    grpc.unary(
                        svc!(move |_: Request<Msg>| async move {
                            Ok::<_, Status>(Response::new(Msg::new(Vec::new(), tag)))
                        }),
                        req,
                    )
                    .await
                }
                "Sleep" => {
                    grpc.unary(
                        svc!(|r: Request<Msg>| async move {
                            let m = r.into_inner();
                            tokio::time::sleep(Duration::from_millis(u64::from(m.n))).await;
                            Ok::<_, Status>(Response::new(m))
                        }),
                        req,
                    )
                    .await
                }
                "Hang" => {
                    grpc.unary(
                        svc!(|_: Request<Msg>| async move {
                            std::future::pending::<()>().await;
                            Ok::<_, Status>(Response::new(Msg::default()))
                        }),
                        req,
                    )
                    .await
                }
                "Flaky" => {
                    let calls = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    let fail = calls <= this.fail_first;
                    grpc.unary(
                        svc!(move |r: Request<Msg>| async move {
                            if fail {
                                return Err(Status::unavailable(format!("call {calls} fails")));
                            }
                            let mut m = r.into_inner();
                            m.n = calls as u32;
                            Ok(Response::new(m))
                        }),
                        req,
                    )
                    .await
                }
                "FlakyStream" => {
                    let calls = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                    grpc.server_streaming(
                        svc!(move |_: Request<Msg>| async move {
                            let s: MsgStream = Box::pin(futures::stream::iter([
                                Ok(Msg::new(Vec::new(), calls as u32)),
                                Err(Status::unavailable("the stream breaks")),
                            ]));
                            Ok::<_, Status>(Response::new(s))
                        }),
                        req,
                    )
                    .await
                }
                "Slow" => {
                    grpc.server_streaming(
                        svc!(|r: Request<Msg>| async move {
                            let m = r.into_inner();
                            let gap =
                                Duration::from_millis(u64::from(*m.data.first().unwrap_or(&0)));
                            let s: MsgStream =
                                Box::pin(futures::stream::iter(0..m.n).then(move |i| async move {
                                    tokio::time::sleep(gap).await;
                                    Ok(Msg::new(Vec::new(), i))
                                }));
                            Ok::<_, Status>(Response::new(s))
                        }),
                        req,
                    )
                    .await
                }
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            })
        })
    }
}

/// The client, as generated code would write it.
#[derive(Clone)]
pub struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

fn path(method: &str) -> http::uri::PathAndQuery {
    format!("/mesh.test.Echo/{method}").parse().unwrap()
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<BoxError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("not ready: {}", e.into())))
    }

    pub async fn unary(
        &mut self,
        method: &str,
        req: impl tonic::IntoRequest<Msg>,
    ) -> Result<Msg, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Msg, Msg>::default();
        let r = self.inner.unary(req.into_request(), path(method), codec);
        Ok(r.await?.into_inner())
    }

    /// A unary call to any path (another service's method).
    pub async fn unary_path(
        &mut self,
        path: &str,
        req: impl tonic::IntoRequest<Msg>,
    ) -> Result<Msg, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Msg, Msg>::default();
        let path = path.parse().map_err(|_| Status::internal("bad path"))?;
        let r = self.inner.unary(req.into_request(), path, codec);
        Ok(r.await?.into_inner())
    }

    pub async fn server_streaming(
        &mut self,
        method: &str,
        req: impl tonic::IntoRequest<Msg>,
    ) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Msg, Msg>::default();
        let r = self
            .inner
            .server_streaming(req.into_request(), path(method), codec);
        Ok(r.await?.into_inner())
    }

    pub async fn count(
        &mut self,
        msgs: impl Stream<Item = Msg> + Send + 'static,
    ) -> Result<Msg, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Msg, Msg>::default();
        let r = self
            .inner
            .client_streaming(Request::new(msgs), path("Count"), codec);
        Ok(r.await?.into_inner())
    }

    pub async fn chat(
        &mut self,
        msgs: impl Stream<Item = Msg> + Send + 'static,
    ) -> Result<Streaming<Msg>, Status> {
        self.ready().await?;
        let codec = ProstCodec::<Msg, Msg>::default();
        let r = self
            .inner
            .streaming(Request::new(msgs), path("Chat"), codec);
        Ok(r.await?.into_inner())
    }
}
