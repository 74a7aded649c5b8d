//! Identities from one dev CA, an HBONE server with an HTTP app (whoami) and a TCP echo,
//! and a client: what every test here starts from.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::{Extension, Router, routing::get};
use mesh_core::extensions::{ConnectionAddrs, PeerIdentity};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_hbone::{HboneServer, HboneServerBuilder, TunnelIo};
use mesh_tls::IdentityStore;
use mesh_tls::dev_ca::DevCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const HTTP_PORT: u16 = 9080;
pub const TCP_PORT: u16 = 9000;
pub const HOUR: Duration = Duration::from_secs(3600);

pub fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&td(), "default", sa).unwrap()
}

pub fn store(ca: &DevCa, sa: &str) -> IdentityStore {
    IdentityStore::from_credentials(ca.issue(&id(sa), HOUR).unwrap()).unwrap()
}

/// `GET /` answers `<caller's SPIFFE ID> <the tunnel destination the request arrived for>`.
pub fn whoami() -> Router {
    Router::new().route(
        "/",
        get(
            |Extension(peer): Extension<PeerIdentity>,
             Extension(addrs): Extension<ConnectionAddrs>| async move {
                format!("{peer} {}", addrs.local)
            },
        ),
    )
}

/// Echoes the tunnel's bytes back; a stream that starts with `reset` is dropped at once
/// (the server abandons that one stream).
pub async fn echo(mut io: TunnelIo, _info: mesh_hbone::TunnelInfo) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if buf[..n].starts_with(b"reset") => return,
            Ok(n) => {
                if io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The whoami app on [`HTTP_PORT`] and the echo on [`TCP_PORT`].
pub fn builder(store: IdentityStore) -> HboneServerBuilder {
    HboneServer::builder(store)
        .http(HTTP_PORT, whoami())
        .tcp(TCP_PORT, echo)
}

/// Serves `server` on a free loopback port; returns that port.
pub async fn spawn(server: HboneServer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// Waits up to 10 s for `f` to hold.
pub async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not seen within 10 s: {what}");
}
