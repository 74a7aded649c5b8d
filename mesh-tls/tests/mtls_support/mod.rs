//! Helpers shared by the mTLS integration tests: identities, raw rustls peers holding
//! deliberately bad certificates, and an axum server over `serve`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router, routing::get};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::client::MeshConnector;
use mesh_tls::config::{ClientSettings, ServerSettings, default_provider};
use mesh_tls::server::{MeshAcceptor, serve};
use mesh_tls::verify::{PeerPolicy, SpiffeServerVerifier, VerifyStats};
use mesh_tls::{Credentials, IdentityStore, PeerIdentity};
use tokio::net::{TcpListener, TcpStream};

pub fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::istio(&td(), "default", sa).unwrap()
}

pub const HOUR: Duration = Duration::from_secs(3600);

/// An axum app answering `GET /` with the caller's SPIFFE ID.
pub fn whoami_app() -> Router {
    Router::new().route(
        "/",
        get(|Extension(peer): Extension<PeerIdentity>| async move { peer.to_string() }),
    )
}

/// Serves `whoami_app` over mTLS on a free port; the task ends with the test runtime.
pub async fn spawn_server(acceptor: MeshAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, acceptor, whoami_app()));
    addr
}

pub fn acceptor(store: &IdentityStore, peers: PeerPolicy) -> MeshAcceptor {
    MeshAcceptor::new(
        store.clone(),
        ServerSettings {
            peers,
            ..Default::default()
        },
    )
}

pub fn connector(store: &IdentityStore, peers: PeerPolicy) -> MeshConnector {
    MeshConnector::new(
        store.clone(),
        ClientSettings {
            peers,
            ..Default::default()
        },
    )
}

pub type HttpClient = Client<MeshConnector, Empty<Bytes>>;

pub fn http_client(connector: MeshConnector) -> HttpClient {
    Client::builder(TokioExecutor::new()).build(connector)
}

/// GET `/` and return (HTTP version, body).
pub async fn get_whoami(
    client: &HttpClient,
    addr: SocketAddr,
) -> Result<(http::Version, String), String> {
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let resp = client.get(uri).await.map_err(|e| error_chain(&e))?;
    let version = resp.version();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}"));
    }
    Ok((version, String::from_utf8_lossy(&body).into_owned()))
}

/// A plain rustls server presenting `creds` as-is (valid or not), asking no client cert.
/// Completes one handshake per connection and then echoes nothing.
pub async fn raw_server(creds: &Credentials) -> SocketAddr {
    let config = rustls::ServerConfig::builder_with_provider(default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
                }
            });
        }
    });
    addr
}

/// A plain rustls client presenting `creds` as-is (valid or not) to `addr`; it trusts
/// `roots` for the server side.
pub async fn raw_client_handshake(
    creds: &Credentials,
    roots: &[rustls_pki_types::CertificateDer<'static>],
    addr: SocketAddr,
) {
    let verifier = SpiffeServerVerifier::new(
        roots,
        &td(),
        &PeerPolicy::default(),
        &default_provider(),
        VerifyStats::new(),
    )
    .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(default_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    // With TLS 1.3 the client finishes before the server judges its certificate; the
    // server's verdict is what the tests look at.
    if let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
    {
        let _ = tokio::io::AsyncReadExt::read(&mut tls, &mut [0u8; 1]).await;
    }
}

/// An error and its sources, Display-joined with ": ".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
