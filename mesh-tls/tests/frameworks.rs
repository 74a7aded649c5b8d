//! The acceptor and connector with real frameworks: an axum Router over `serve` (HTTP/2
//! and HTTP/1.1 by ALPN) and a tonic server over `incoming` with a tonic client over
//! `connect_with_connector`; each handler sees the caller's `PeerIdentity`.

mod mtls_support;

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use mesh_tls::config::{ALPN_HTTP11, ClientSettings};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::peer_identity;
use mesh_tls::verify::PeerPolicy;
use mesh_tls::{IdentityStore, client::MeshConnector};
use mtls_support::*;
use tokio::net::TcpListener;

#[tokio::test]
async fn axum_sees_the_client_identity_over_h2_and_h1() {
    let ca = DevCa::new(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("reviews"), HOUR).unwrap()).unwrap();
    let client =
        IdentityStore::from_credentials(ca.issue(&id("productpage"), HOUR).unwrap()).unwrap();
    let addr = spawn_server(acceptor(&server, PeerPolicy::default())).await;

    let h2 = http_client(connector(&client, PeerPolicy::identities([id("reviews")])));
    let (version, body) = get_whoami(&h2, addr).await.unwrap();
    assert_eq!(version, http::Version::HTTP_2);
    assert_eq!(body, "spiffe://cluster.local/ns/default/sa/productpage");

    let h1 = http_client(MeshConnector::new(
        client.clone(),
        ClientSettings {
            peers: PeerPolicy::identities([id("reviews")]),
            alpn: vec![ALPN_HTTP11.to_vec()],
            ..Default::default()
        },
    ));
    let (version, body) = get_whoami(&h1, addr).await.unwrap();
    assert_eq!(version, http::Version::HTTP_11);
    assert_eq!(body, "spiffe://cluster.local/ns/default/sa/productpage");
}

#[tokio::test]
async fn client_refuses_an_unexpected_server_before_any_request() {
    let ca = DevCa::new(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("ratings"), HOUR).unwrap()).unwrap();
    let client =
        IdentityStore::from_credentials(ca.issue(&id("productpage"), HOUR).unwrap()).unwrap();
    let addr = spawn_server(acceptor(&server, PeerPolicy::default())).await;
    let connector = connector(&client, PeerPolicy::identities([id("reviews")]));
    let err = get_whoami(&http_client(connector.clone()), addr)
        .await
        .unwrap_err();
    assert!(err.contains("is not an expected identity"), "{err}");
    assert_eq!(
        connector
            .stats()
            .rejected(mesh_tls::svid::Rule::UnexpectedIdentity),
        1
    );
}

/// `Reply { string peer = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    peer: String,
}

/// A one-method gRPC service, `mesh.test.Whoami/Get(Empty) -> Reply`, written by hand.
#[derive(Clone)]
struct Whoami;

struct Get;

impl tonic::server::UnaryService<()> for Get {
    type Response = Reply;
    type Future = Ready<Result<tonic::Response<Reply>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<()>) -> Self::Future {
        ready(match peer_identity(&req) {
            Some(peer) => Ok(tonic::Response::new(Reply {
                peer: peer.to_string(),
            })),
            None => Err(tonic::Status::unauthenticated("no peer identity")),
        })
    }
}

impl tonic::server::NamedService for Whoami {
    const NAME: &'static str = "mesh.test.Whoami";
}

impl tower::Service<http::Request<tonic::body::Body>> for Whoami {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != "/mesh.test.Whoami/Get" {
                return Ok(tonic::Status::unimplemented("").into_http());
            }
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Reply, ()>::new());
            Ok(grpc.unary(Get, req).await)
        })
    }
}

#[tokio::test]
async fn tonic_sees_the_client_identity() {
    let ca = DevCa::new(td()).unwrap();
    let server = IdentityStore::from_credentials(ca.issue(&id("reviews"), HOUR).unwrap()).unwrap();
    let client =
        IdentityStore::from_credentials(ca.issue(&id("productpage"), HOUR).unwrap()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = acceptor(&server, PeerPolicy::default()).incoming(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Whoami)
            .serve_with_incoming(incoming),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector(&client, PeerPolicy::identities([id("reviews")])))
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for _ in 0..3 {
        grpc.ready().await.unwrap();
        let reply: tonic::Response<Reply> = grpc
            .unary(
                tonic::Request::new(()),
                "/mesh.test.Whoami/Get".parse().unwrap(),
                tonic_prost::ProstCodec::<(), Reply>::new(),
            )
            .await
            .unwrap();
        assert_eq!(
            reply.into_inner().peer,
            "spiffe://cluster.local/ns/default/sa/productpage"
        );
    }
}
