//! The client over TLS (tokio-rustls, given roots) with call credentials from a token file
//! that is re-read for every stream, against an in-process ADS server.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, config_source::ConfigSourceSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::util::pack_any;
use futures::Stream;
use mesh_xds::client::{BackoffConfig, XdsClient, XdsClientConfig, channel};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status, Streaming};

const LISTENER: &str = "svc.example:80";

/// Serves one listener; records the `authorization` header of every stream; closes each
/// stream after `close_after` responses (0 = never).
#[derive(Clone, Default)]
struct Ads {
    tokens: Arc<Mutex<Vec<Option<String>>>>,
    close_after: usize,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn listener() -> Listener {
    let hcm = HttpConnectionManager {
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource::default(),
                )),
                ..Default::default()
            }),
            route_config_name: "routes".into(),
        })),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                Router::default(),
            ))),
            ..Default::default()
        }],
        ..Default::default()
    };
    Listener {
        name: LISTENER.into(),
        api_listener: Some(ApiListener {
            api_listener: Some(pack_any(hcm)),
        }),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.tokens.lock().unwrap().push(token);
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let close_after = self.close_after;
        tokio::spawn(async move {
            let mut sent = 0;
            while let Some(Ok(req)) = inbound.next().await {
                // Answer only LDS subscriptions (not ACKs).
                if req.type_url.ends_with("Listener") && req.response_nonce.is_empty() {
                    sent += 1;
                    let resp = DiscoveryResponse {
                        version_info: "1".into(),
                        resources: vec![pack_any(listener())],
                        type_url: req.type_url.clone(),
                        nonce: format!("n{sent}"),
                        ..Default::default()
                    };
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                    if close_after != 0 && sent >= close_after {
                        // Dropping tx ends the response stream: the client reconnects.
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("delta"))
    }
}

/// A server-side TLS stream tonic can serve.
struct Tls(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for Tls {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Tls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

struct Pki {
    server: Arc<rustls::ServerConfig>,
    roots: rustls::RootCertStore,
}

fn pki() -> Pki {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["xds.example".to_string()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let provider = ring_provider();
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    Pki {
        server: Arc::new(server),
        roots,
    }
}

fn client_tls(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = ring_provider();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn serve_tls(ads: Ads, server: Arc<rustls::ServerConfig>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (tx, rx) = mpsc::channel::<std::io::Result<Tls>>(4);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                // Handshake failures (e.g. the wrong-root client) just drop the connection.
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(Tls(tls))).await;
                }
            });
        }
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(ReceiverStream::new(rx)),
    );
    port
}

fn config(token_file: Option<std::path::PathBuf>) -> XdsClientConfig {
    XdsClientConfig {
        token_file,
        backoff: BackoffConfig {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
            multiplier: 2.0,
            jitter: 0.0,
        },
        ..Default::default()
    }
}

async fn wait_listener(client: &XdsClient) -> bool {
    let mut rx = client.watch();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !rx.borrow_and_update().listeners.contains_key(LISTENER) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn tls_channel_with_token_reread_per_stream() {
    let pki = pki();
    let ads = Ads {
        close_after: 1,
        ..Default::default()
    };
    let port = serve_tls(ads.clone(), pki.server.clone()).await;
    let dir = std::env::temp_dir().join(format!("mesh-xds-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "first-token\n").unwrap();

    let channel = channel::tls(
        &format!("https://127.0.0.1:{port}"),
        client_tls(pki.roots),
        Some("xds.example"),
    )
    .unwrap();
    let client = XdsClient::new(config(Some(token.clone())), channel);
    client.subscribe_target(LISTENER).await.unwrap();
    assert!(
        wait_listener(&client).await,
        "listener over TLS: {:?}",
        client.status().await
    );
    assert_eq!(
        ads.tokens
            .lock()
            .unwrap()
            .first()
            .cloned()
            .flatten()
            .as_deref(),
        Some("Bearer first-token")
    );

    // The server ends each stream after one response: the next stream reads the new token.
    std::fs::write(&token, "second-token").unwrap();
    let saw_second = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if ads
                .tokens
                .lock()
                .unwrap()
                .iter()
                .any(|t| t.as_deref() == Some("Bearer second-token"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        saw_second.is_ok(),
        "tokens seen: {:?}",
        ads.tokens.lock().unwrap().len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tls_with_the_wrong_root_gets_nothing() {
    let pki = pki();
    let other = self::pki();
    let ads = Ads::default();
    let port = serve_tls(ads.clone(), pki.server.clone()).await;
    let channel = channel::tls(
        &format!("https://127.0.0.1:{port}"),
        client_tls(other.roots),
        Some("xds.example"),
    )
    .unwrap();
    let client = XdsClient::new(config(None), channel);
    client.subscribe_target(LISTENER).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.snapshot().listeners.is_empty());
    assert!(
        ads.tokens.lock().unwrap().is_empty(),
        "no stream reached the server"
    );
    let status = client.status().await.unwrap();
    assert!(!status.connected && !status.ready);
}

async fn serve_plaintext(ads: Ads) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(ads))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    port
}

/// gRPC A97: call credentials only on secure channels. `try_new` names the rule; `new`
/// never opens a stream (so the token never leaves the process), while a plaintext
/// loopback channel without a token works.
#[tokio::test]
async fn a_token_is_never_sent_on_a_plaintext_channel() {
    let ads = Ads::default();
    let port = serve_plaintext(ads.clone()).await;
    let url = format!("http://127.0.0.1:{port}");
    let dir = tempfile_dir("plaintext-token");
    let token = dir.join("token");
    std::fs::write(&token, "secret-token").unwrap();

    let err = XdsClient::try_new(
        config(Some(token.clone())),
        channel::insecure(&url).unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("gRFC A97") && err.contains("plaintext"),
        "{err}"
    );

    let client = XdsClient::new(config(Some(token)), channel::insecure(&url).unwrap());
    client.subscribe_target(LISTENER).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ads.tokens.lock().unwrap().is_empty(),
        "a stream reached the server: {:?}",
        ads.tokens.lock().unwrap()
    );
    assert!(client.snapshot().listeners.is_empty());

    // Loopback plaintext without a token is fine.
    let client = XdsClient::try_new(config(None), channel::insecure(&url).unwrap()).unwrap();
    client.subscribe_target(LISTENER).await.unwrap();
    assert!(wait_listener(&client).await, "{:?}", client.status().await);
    assert_eq!(ads.tokens.lock().unwrap().as_slice(), &[None]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Plaintext to anything but loopback needs the explicit opt-in.
#[tokio::test]
async fn plaintext_to_another_host_needs_the_explicit_opt_in() {
    for uri in [
        "http://10.0.0.1:15010",
        "http://istiod.istio-system.svc:15010",
    ] {
        let err = channel::insecure(uri).unwrap_err().to_string();
        assert!(
            err.contains("plaintext xDS is allowed only to a loopback address"),
            "{err}"
        );
        let explicit = channel::insecure_any_host(uri).unwrap();
        assert!(!explicit.is_secure());
    }
    for uri in [
        "http://127.0.0.1:1",
        "http://127.0.0.2:1",
        "http://[::1]:1",
        "http://localhost:1",
    ] {
        assert!(!channel::insecure(uri).unwrap().is_secure(), "{uri}");
    }
    let tls = channel::tls("https://10.0.0.1:15012", client_tls(pki().roots), None).unwrap();
    assert!(tls.is_secure());
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-xds-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// ring's provider (deprecated in rustls 0.23.48 for its lack of post-quantum key exchange,
/// which these tests do not need).
#[allow(deprecated)]
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
