//! HTTP and TCP through HBONE tunnels between our client and our server, over real
//! sockets: the caller's identity reaches the app, pooling stays within 100 streams per
//! connection, a reset stream fails alone (either side), and a tunnel has ztunnel's window.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_hbone::{HboneClient, HboneTarget};
use mesh_tls::dev_ca::DevCa;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn target(hbone: SocketAddr, port: u16) -> HboneTarget {
    HboneTarget::new(SocketAddr::new(hbone.ip(), port), id("reviews")).via(hbone)
}

#[tokio::test]
async fn http_and_tcp_travel_inside_the_tunnel() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));

    // HTTP: hyper-util's client over the connector, as the docs show.
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(client.connector(id("reviews")).hbone_port(hbone.port()));
    let resp = http
        .get(format!("http://127.0.0.1:{HTTP_PORT}/").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        body,
        format!("spiffe://cluster.local/ns/default/sa/productpage 127.0.0.1:{HTTP_PORT}")
    );

    // TCP: a raw byte stream.
    let mut stream = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
    assert_eq!(stream.peer(), &id("reviews"));
    stream.write_all(b"hello through hbone").await.unwrap();
    let mut buf = [0u8; 19];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello through hbone");

    assert_eq!(metrics.tunnels(), 2);
    assert_eq!(
        client.connections_dialled(),
        1,
        "both tunnels share one connection"
    );
}

#[tokio::test]
async fn the_server_must_be_the_destination_identity() {
    let ca = DevCa::new(td()).unwrap();
    let hbone = spawn(builder(store(&ca, "ratings")).build()).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let err = client.connect(&target(hbone, TCP_PORT)).await.unwrap_err();
    assert!(
        matches!(err, mesh_hbone::HboneError::Tls { .. }),
        "expected a TLS refusal of the wrong server, got {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_tunnels_use_at_most_ten_connections() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews")).build();
    let metrics = server.metrics().clone();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let http: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .build(client.connector(id("reviews")).hbone_port(hbone.port()));

    // Each HTTP/1.1 request of a burst gets its own tunnel (one CONNECT stream each).
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let http = http.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                let resp = http
                    .get(format!("http://127.0.0.1:{HTTP_PORT}/").parse().unwrap())
                    .await?;
                let status = resp.status();
                resp.into_body().collect().await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(status)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 1000);
    let dialled = client.connections_dialled();
    println!(
        "1000 requests: {} tunnels on {dialled} connections",
        metrics.tunnels()
    );
    assert!(dialled <= 10, "{dialled} connections");
    assert!(metrics.tunnels() >= 100, "the burst really was concurrent");
    assert!(metrics.connections() <= 10);
}

#[tokio::test]
async fn a_stream_the_peer_resets_fails_alone() {
    let ca = DevCa::new(td()).unwrap();
    let hbone = spawn(builder(store(&ca, "reviews")).build()).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let mut a = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
    let mut doomed = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
    let mut b = client.connect(&target(hbone, TCP_PORT)).await.unwrap();

    doomed.write_all(b"reset").await.unwrap();
    let mut buf = [0u8; 8];
    let read = doomed.read(&mut buf).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the abandoned stream ends: {read:?}"
    );

    for s in [&mut a, &mut b] {
        s.write_all(b"still up").await.unwrap();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"still up");
    }
    // And new tunnels still open on the same connection.
    let mut c = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
    c.write_all(b"new one!").await.unwrap();
    c.read_exact(&mut buf).await.unwrap();
    assert_eq!(client.connections_dialled(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_the_client_drops_stops_the_server_writing() {
    // The server streams into the tunnel without end; the client reads a little and drops
    // it. The server's next writes must fail (the client cancelled the stream), not wait for
    // ever for window the client will never give, and the connection keeps serving.
    const FIREHOSE_PORT: u16 = 9002;
    let ca = DevCa::new(td()).unwrap();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<std::io::Error>();
    let stopped_tx = std::sync::Mutex::new(Some(stopped_tx));
    let server = builder(store(&ca, "reviews"))
        .tcp(FIREHOSE_PORT, move |mut io, _| {
            let stopped = stopped_tx.lock().unwrap().take();
            async move {
                let chunk = vec![1u8; 64 * 1024];
                let err = loop {
                    if let Err(e) = io.write_all(&chunk).await {
                        break e;
                    }
                };
                if let Some(tx) = stopped {
                    let _ = tx.send(err);
                }
            }
        })
        .build();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let mut firehose = client.connect(&target(hbone, FIREHOSE_PORT)).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    firehose.read_exact(&mut buf).await.unwrap();
    drop(firehose);

    let err = tokio::time::timeout(std::time::Duration::from_secs(5), stopped_rx)
        .await
        .expect("the server's writes fail once the client dropped the tunnel")
        .unwrap();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::Other
        ),
        "{err}"
    );
    let mut echo = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
    echo.write_all(b"after it").await.unwrap();
    let mut out = [0u8; 8];
    echo.read_exact(&mut out).await.unwrap();
    assert_eq!(&out, b"after it");
    assert_eq!(client.connections_dialled(), 1);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_open_tunnels() {
    let ca = DevCa::new(td()).unwrap();
    let server = builder(store(&ca, "reviews"))
        .drain_timeout(std::time::Duration::from_secs(5))
        .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hbone = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let client = HboneClient::new(store(&ca, "productpage"));
    let mut open = client.connect(&target(hbone, TCP_PORT)).await.unwrap();

    stop.send(()).unwrap();
    serving.await.unwrap().unwrap();
    // The listener is closed: a new client cannot connect.
    let fresh = HboneClient::new(store(&ca, "productpage"));
    assert!(fresh.connect(&target(hbone, TCP_PORT)).await.is_err());
    // The tunnel opened before keeps working while the connection drains.
    open.write_all(b"draining").await.unwrap();
    let mut buf = [0u8; 8];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_takes_ztunnels_window_before_the_app_reads() {
    // ztunnel's 4 MiB stream window: a client writes 3 MiB into a tunnel whose app has not
    // read yet (with hyper's 1 MiB default it would wait for the app).
    const SLOW_PORT: u16 = 9001;
    const LEN: usize = 3 << 20;
    let ca = DevCa::new(td()).unwrap();
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let server = builder(store(&ca, "reviews"))
        .tcp(SLOW_PORT, move |mut io, _| {
            let mut go = go_rx.clone();
            async move {
                let _ = go.wait_for(|g| *g).await;
                let mut got = vec![0u8; LEN];
                if io.read_exact(&mut got).await.is_ok() && got.iter().all(|b| *b == 7) {
                    let _ = io.write_all(b"ok").await;
                }
            }
        })
        .build();
    let hbone = spawn(server).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let mut stream = client.connect(&target(hbone, SLOW_PORT)).await.unwrap();
    // In 16 KiB writes, as a copy loop writes: hyper queues each write for the stream's
    // sender, which waits for window, so the writes stop once the window is used up.
    let write = async {
        for chunk in vec![7u8; LEN].chunks(16 * 1024) {
            stream.write_all(chunk).await?;
        }
        stream.flush().await
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), write)
        .await
        .expect("3 MiB fit in the tunnel's window before the app reads")
        .unwrap();
    go_tx.send(true).unwrap();
    let mut ok = [0u8; 2];
    stream.read_exact(&mut ok).await.unwrap();
    assert_eq!(&ok, b"ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_both_ways_at_once_outgrows_every_window() {
    // Two tunnels on one connection each carry 20 MiB each way at once (80 MiB in all,
    // five times the 16 MiB connection window): the windows must reopen as each side's
    // reader consumes, on both sides, or the transfer stalls.
    const LEN: usize = 20 << 20;
    let ca = DevCa::new(td()).unwrap();
    let hbone = spawn(builder(store(&ca, "reviews")).build()).await;
    let client = HboneClient::new(store(&ca, "productpage"));
    let pattern = |seed: usize| (0..LEN).map(move |i| ((i * 7 + seed) % 251) as u8);
    let transfer = |seed: usize| {
        let client = client.clone();
        async move {
            let stream = client.connect(&target(hbone, TCP_PORT)).await.unwrap();
            let (mut r, mut w) = tokio::io::split(stream);
            let data: Vec<u8> = pattern(seed).collect();
            let write = async {
                // Uneven writes, vectored (one frame) and plain, as codecs write.
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let (a, b) = rest.split_at(rest.len().min(40_000));
                    let (b, _) = b.split_at(b.len().min(25_000));
                    let n = w
                        .write_vectored(&[std::io::IoSlice::new(a), std::io::IoSlice::new(b)])
                        .await?;
                    rest = &rest[n..];
                }
                w.shutdown().await
            };
            let read = async {
                let mut got = Vec::with_capacity(LEN);
                r.read_to_end(&mut got).await.map(|_| got)
            };
            let (wrote, got) = tokio::join!(write, read);
            wrote.unwrap();
            let got = got.unwrap();
            assert_eq!(got.len(), LEN, "the echo came back whole");
            assert!(got == data, "the echo came back in order, unchanged");
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(transfer(1), transfer(2))
    })
    .await
    .expect("both transfers finish: no window stays shut");
    assert_eq!(
        client.connections_dialled(),
        1,
        "both shared one connection"
    );
}
