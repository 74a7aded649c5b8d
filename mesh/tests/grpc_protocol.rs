//! gRPC always goes over HTTP/2: a cluster whose protocol says HTTP/1.1 (an `HTTP` port,
//! plaintext, as istiod's proxyless generator leaves gRPC clusters without HTTP/2 options)
//! still carries gRPC calls over HTTP/2, multiplexed.

mod support;

use support::echo::{Echo, Msg};
use support::grpc::{config, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_goes_over_http2_on_an_http1_cluster() {
    let f = start(Echo::default(), |p| {
        config(p, "HTTP", "DISABLE", "PERMISSIVE", "")
    })
    .await;
    let mut c = f.channel();
    let calls = (0..20).map(|i| {
        let mut c = c.clone();
        async move { c.unary("Unary", Msg::new("x", i)).await }
    });
    for (i, reply) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        let reply = reply.unwrap();
        assert_eq!(reply.n, i as u32);
        assert_eq!(reply.info, "plaintext HTTP/2.0", "the server sees HTTP/2");
    }
    let reply = c.unary("Unary", Msg::new("x", 1)).await.unwrap();
    assert_eq!(reply.info, "plaintext HTTP/2.0");
}
