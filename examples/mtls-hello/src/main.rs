//! mTLS hello: an axum server and a hyper client on the dev CA, each printing the peer's
//! SPIFFE ID. Exits 0 after `--requests N` (default 3) successful requests.

use std::error::Error;
use std::time::Duration;

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ClientSettings, ServerSettings};
use mesh_tls::dev_ca::DevCa;
use mesh_tls::server::{MeshAcceptor, serve_with_shutdown};
use mesh_tls::verify::PeerPolicy;
use mesh_tls::{IdentityStore, PeerIdentity};

type BoxError = Box<dyn Error + Send + Sync>;

fn requests_arg() -> Result<u32, BoxError> {
    let mut args = std::env::args().skip(1);
    let mut n = 3;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--requests" | "-n" => {
                let v = args.next().ok_or("--requests needs a number")?;
                n = v
                    .parse()
                    .map_err(|_| format!("--requests: {v:?} is not a number"))?;
            }
            "--help" | "-h" => {
                println!("usage: mtls-hello [--requests N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    Ok(n)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let requests = requests_arg()?;
    let td = TrustDomain::new("cluster.local")?;
    let ca = DevCa::new(td.clone())?;
    let server_id = SpiffeId::istio(&td, "default", "hello-server")?;
    let client_id = SpiffeId::istio(&td, "default", "hello-client")?;
    let ttl = Duration::from_secs(3600);

    // Server: only hello-client may call.
    let server_store = IdentityStore::from_credentials(ca.issue(&server_id, ttl)?)?;
    let acceptor = MeshAcceptor::new(
        server_store,
        ServerSettings {
            peers: PeerPolicy::identities([client_id.clone()]),
            ..Default::default()
        },
    );
    let app = Router::new().route(
        "/hello",
        get(|Extension(peer): Extension<PeerIdentity>| async move {
            println!("server: request from {peer}");
            format!("hello, {peer}")
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_shutdown(listener, acceptor, app, async {
        let _ = stopped.await;
    }));
    println!("server: listening on https://{addr} as {server_id}");

    // Client: expects exactly hello-server.
    let client_store = IdentityStore::from_credentials(ca.issue(&client_id, ttl)?)?;
    let connector = MeshConnector::new(
        client_store,
        ClientSettings {
            peers: PeerPolicy::identities([server_id.clone()]),
            ..Default::default()
        },
    );
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    for i in 1..=requests {
        let resp = client.get(format!("http://{addr}/hello").parse()?).await?;
        let peer = resp
            .extensions()
            .get::<PeerIdentity>()
            .map(ToString::to_string)
            .unwrap_or_else(|| "<unknown>".into());
        let status = resp.status();
        let version = resp.version();
        let body = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(format!("request {i}: status {status}").into());
        }
        println!(
            "client: request {i}/{requests} over {version:?}: server is {peer}, says {:?}",
            String::from_utf8_lossy(&body)
        );
    }
    let _ = stop.send(());
    server.await??;
    println!("done: {requests} mTLS requests");
    Ok(())
}
