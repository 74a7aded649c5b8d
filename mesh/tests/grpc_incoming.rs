//! A tonic server on `Server::serve_with_incoming_shutdown` over `Mesh::incoming`, written
//! as docs/grpc.md tells users to, configured by the embedded control plane: the
//! AuthorizationPolicy allows one method and denies another (PERMISSION_DENIED as the
//! tonic client sees it), the caller's `PeerIdentity` reaches the handler, STRICT refuses
//! plaintext and PERMISSIVE (a later edit) accepts it, a graceful shutdown loses no call in
//! flight, and the pair fails closed when either half is missing.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::echo::{Echo, EchoClient, Msg};
use support::grpc::{Serve, config, mtls, start_with};
use tonic::Code;
use tonic::transport::{Endpoint, Server};

/// The documented way: the incoming stream, its layer on the server, graceful shutdown.
fn serve_incoming() -> Serve {
    Box::new(|mesh, addr, echo, stopped| {
        tokio::spawn(async move {
            let incoming = mesh.incoming(addr).await?;
            Server::builder()
                .layer(incoming.layer())
                .add_service(echo)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await?;
            Ok(())
        })
    })
}

fn allow_unary_only(port: u16) -> String {
    mtls(
        port,
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-unary, namespace: default}
spec:
  selector: {matchLabels: {app: echo}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/client]}}]
    to: [{operation: {paths: [/mesh.test.Echo/Unary]}}]
"#,
    )
}

/// Whether the call failed at the transport (the server closed the connection), not with a
/// status the server sent: tonic's client gives UNAVAILABLE or UNKNOWN with the transport
/// error as the source, depending on when the connection broke.
fn refused(e: &tonic::Status) -> bool {
    std::error::Error::source(e).is_some() && e.code() != Code::PermissionDenied
}

/// A plain (no mTLS) tonic client of `port`.
async fn plaintext_call(port: u16) -> Result<Msg, tonic::Status> {
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    EchoClient::new(channel)
        .unary("Unary", Msg::new("plain", 0))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policy_allows_one_method_and_denies_another() {
    let f = start_with(Echo::default(), allow_unary_only, serve_incoming()).await;
    let mut c = f.channel();
    let reply = c.unary("Unary", Msg::new("a", 1)).await.unwrap();
    assert!(
        reply
            .info
            .starts_with("spiffe://cluster.local/ns/default/sa/client "),
        "PeerIdentity in the handler's request extensions: {}",
        reply.info
    );
    let e = c.unary("Sleep", Msg::new("a", 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert_eq!(e.message(), "RBAC: access denied");
    let e = c
        .server_streaming("Repeat", Msg::new("a", 2))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_refuses_plaintext_and_permissive_accepts_it() {
    let f = start_with(Echo::default(), |p| mtls(p, ""), serve_incoming()).await;
    let e = plaintext_call(f.port).await.unwrap_err();
    assert!(refused(&e), "STRICT: {e}");
    // The control plane's edit reaches new connections without a restart.
    f.reconfigure(config(f.port, "GRPC", "ISTIO_MUTUAL", "PERMISSIVE", ""))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let reply = loop {
        match plaintext_call(f.port).await {
            Ok(reply) => break reply,
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("PERMISSIVE never accepted plaintext: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert!(reply.info.starts_with("plaintext "), "{}", reply.info);
    // mTLS callers still get through, with their identity.
    let reply = f.channel().unary("Unary", Msg::default()).await.unwrap();
    assert!(reply.info.starts_with("spiffe://"), "{}", reply.info);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_loses_no_call_in_flight() {
    let mut f = start_with(Echo::default(), |p| mtls(p, ""), serve_incoming()).await;
    // Five calls that each take 600 ms, on the mesh's mTLS channel.
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let mut c = f.channel();
            tokio::spawn(async move { c.unary("Sleep", Msg::new("slow", 600)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    f.stop.take().unwrap().send(()).unwrap();
    for call in calls {
        let reply = call.await.unwrap().expect("a call in flight at shutdown");
        assert_eq!(reply.n, 600);
    }
    tokio::time::timeout(Duration::from_secs(5), &mut f.served)
        .await
        .expect("serve_with_incoming_shutdown returns once drained")
        .unwrap()
        .unwrap();
    // The socket is closed: a new connection is refused.
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", f.port)).await;
    assert!(refused.is_err(), "new connections after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_half_without_the_other_fails_closed() {
    let port = support::grpc::free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("echo.yaml"),
        config(port, "GRPC", "ISTIO_MUTUAL", "PERMISSIVE", ""),
    )
    .unwrap();
    // One CA: the mTLS handshakes succeed, so only the gate can refuse.
    let ca = support::dev_ca();
    let node = support::grpc::node;
    let server = support::local_mesh(&ca, dir.path(), node("echo", "echo")).await;
    let client = support::local_mesh(&ca, dir.path(), node("client", "client")).await;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let echo = Echo::default();

    // The incoming stream without its layer: connections are closed unread.
    let incoming = server.incoming(addr).await.unwrap();
    let mut status = incoming.status();
    status.wait_for(|s| s.is_serving()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(
        Server::builder()
            .add_service(echo.clone())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    let mut c = EchoClient::new(client.channel(support::grpc::TARGET));
    for _ in 0..3 {
        let e = c.unary("Unary", Msg::default()).await.unwrap_err();
        // The mesh client's local reply: the connection closed after the handshake.
        assert_eq!(e.code(), Code::Unavailable, "without the layer: {e}");
        assert!(!e.message().contains("certificate"), "{e}");
    }
    let e = plaintext_call(port).await.unwrap_err();
    assert!(refused(&e), "without the layer: {e}");
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();

    // The layer over tonic's own TCP incoming: no connection policies, every call denied.
    let layer = server
        .incoming(([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
        .layer();
    // A port of its own: the stopped server's listener may still be closing.
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_port = tcp.local_addr().unwrap().port();
    let incoming = tonic::transport::server::TcpIncoming::from(tcp);
    tokio::spawn(
        Server::builder()
            .layer(layer)
            .add_service(echo)
            .serve_with_incoming(incoming),
    );
    let e = plaintext_call(tcp_port).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "the layer alone: {e}");
}
