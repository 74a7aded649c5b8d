//! tonic through the mesh on real traffic: a generated-style client on `mesh.channel(..)`
//! calls a tonic server behind `Mesh::serve` over mTLS, both configured by the embedded
//! control plane; unary, server-, client- and bidirectional streaming, with messages
//! larger than any default limit, and the errors a path-only request gets.

mod support;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::BodyExt;
use support::echo::{Echo, EchoClient, Msg};
use support::grpc::{TARGET, mtls, start};
use tonic::Code;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_over_mtls() {
    let f = start(Echo::default(), |p| mtls(p, "")).await;
    // Without the scheme too.
    let mut c = EchoClient::new(f.client.channel("echo.default.svc.cluster.local:9080"));

    let reply = c.unary("Unary", Msg::new("hi", 7)).await.unwrap();
    assert_eq!((reply.data.as_slice(), reply.n), (&b"hi"[..], 7));
    assert_eq!(
        reply.info, "spiffe://cluster.local/ns/default/sa/client HTTP/2.0",
        "the server sees the caller's identity over HTTP/2"
    );

    // 8 MiB each way: beyond tonic's 4 MiB default and the retry buffer; only the
    // configured limits apply.
    let big = vec![7u8; 8 << 20];
    let reply = c.unary("Unary", Msg::new(big.clone(), 1)).await.unwrap();
    assert_eq!(reply.data, big);

    let mut stream = c
        .server_streaming("Repeat", Msg::new(vec![1u8; 64 << 10], 500))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(m) = stream.next().await {
        let m = m.unwrap();
        assert_eq!((m.n, m.data.len()), (n, 64 << 10));
        n += 1;
    }
    assert_eq!(n, 500, "32 MiB in 500 messages");

    let sent = futures::stream::iter((0..300).map(|i| Msg::new(vec![0u8; 100 << 10], i)));
    let reply = c.count(sent).await.unwrap();
    assert_eq!((reply.n, reply.info.as_str()), (300, "30720000"));

    // Bidirectional: each reply arrives before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel::<Msg>(1);
    let mut replies = c.chat(tokio_stream_from(rx)).await.unwrap();
    for i in 0..50u32 {
        tx.send(Msg::new(i.to_be_bytes().to_vec(), i))
            .await
            .unwrap();
        let m = replies.next().await.unwrap().unwrap();
        assert_eq!(m.n, i);
    }
    drop(tx);
    assert!(
        replies.next().await.is_none(),
        "the stream ends when the client's does"
    );
}

/// An mpsc receiver as a stream (what `tokio_stream::wrappers::ReceiverStream` does).
fn tokio_stream_from(rx: tokio::sync::mpsc::Receiver<Msg>) -> impl futures::Stream<Item = Msg> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_target_fails_each_call_with_invalid_argument() {
    let f = start(Echo::default(), |p| mtls(p, "")).await;
    assert!(f.client.try_channel("xds:///a/b").is_err());
    let mut c = EchoClient::new(f.client.channel("xds:///a/b"));
    let e = c.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("xds:///a/b"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_only_requests_on_the_plain_client_get_a_grpc_status() {
    let f = start(Echo::default(), |p| mtls(p, "")).await;
    // What `GreeterClient::new(mesh.client())` sends: no authority.
    let mut c = EchoClient::new(f.client.client());
    let e = c.unary("Unary", Msg::default()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("mesh.channel"), "{e}");
    // An HTTP caller sees the same as a 400.
    let req = http::Request::post("/x")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let resp = f.client.client().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("no authority"));
    // The same client with the origin set (what a channel does) works.
    let origin = format!("http://{}", TARGET.trim_start_matches("xds:///"));
    let mut grpc = tonic::client::Grpc::with_origin(f.client.client(), origin.parse().unwrap());
    grpc.ready().await.unwrap();
    let reply: tonic::Response<Msg> = grpc
        .unary(
            tonic::Request::new(Msg::new("o", 1)),
            "/mesh.test.Echo/Unary".parse().unwrap(),
            tonic_prost::ProstCodec::<Msg, Msg>::default(),
        )
        .await
        .unwrap();
    assert_eq!(reply.into_inner().n, 1);
}
