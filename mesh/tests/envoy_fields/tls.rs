//! Upstream TLS on real handshakes: clusters whose `UpstreamTlsContext` (hand-written, as
//! istiod writes it) names the peer's SANs and the ALPN offered, in front of an mTLS backend
//! with a certificate from the mesh's CA. A SAN that does not match fails the handshake
//! (503); the protocol the backend saw follows the ALPN offered.

use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, TransportSocket, transport_socket,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    SubjectAltNameMatcher, UpstreamTlsContext, common_tls_context, subject_alt_name_matcher,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions, http_protocol_options,
};
use mesh::tls::IdentityStore;
use mesh::tls::config::ServerSettings;
use mesh::tls::server::MeshAcceptor;

use crate::harness::*;

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";

fn identity(ca: &DevCa, sa: &str) -> IdentityStore {
    let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap()
}

/// An mTLS backend (identity `server`, ALPN h2 and http/1.1); each request's answer body is
/// the ALPN protocol and HTTP version it came over.
async fn tls_backend(ca: &DevCa) -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let acceptor = MeshAcceptor::new(identity(ca, "server"), ServerSettings::default());
    tokio::spawn(async move {
        while let Ok((io, _)) = tcp.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok((tls, _peer)) = acceptor.accept(io).await else {
                    return;
                };
                let alpn = tls
                    .get_ref()
                    .1
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .unwrap_or_default();
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = format!("{alpn} {:?}", req.version());
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

fn instance(cert: &str) -> CertificateProviderPluginInstance {
    CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: cert.into(),
    }
}

fn exact(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Exact(s.into())),
        ignore_case: false,
    }
}

/// An UpstreamTlsContext as istiod writes it, with `validation` and `alpn`.
fn upstream(validation: CertificateValidationContext, alpn: &[&str]) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_provider_instance: Some(instance("default")),
            alpn_protocols: alpn.iter().map(|s| (*s).to_owned()).collect(),
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        ca_certificate_provider_instance: Some(instance("ROOTCA")),
                        ..validation
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(ctx))),
    }
}

fn typed(t: subject_alt_name_matcher::SanType, m: StringMatcher) -> CertificateValidationContext {
    CertificateValidationContext {
        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
            san_type: t as i32,
            matcher: Some(m),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A mesh (identity `caller`, from `ca`) whose client listener `name` routes to cluster
/// `tls`, served by our xDS server with `clusters`.
async fn mesh_with(ca: &DevCa, clusters: Vec<Cluster>) -> (Mesh, watch::Sender<Arc<Scenario>>) {
    let scenario = Scenario {
        listeners: vec![listener(
            "tls.test:80",
            hcm(routes(VirtualHost {
                routes: vec![forward(prefix("/"), to("tls"))],
                ..Default::default()
            })),
        )],
        clusters,
        ..Default::default()
    };
    let (config, rx) = watch::channel(Arc::new(scenario));
    let xds = XdsServer::new(Serve, rx, ServerOptions::default());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(xds.serve(tcp, std::future::pending()));
    let node = IstioNode {
        pod_name: "caller".into(),
        service_account: "caller".into(),
        ..Default::default()
    };
    let client = XdsClient::new(
        XdsClientConfig {
            node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    let mesh = Mesh::builder()
        .dev_ca(
            ca,
            &"spiffe://cluster.local/ns/default/sa/caller"
                .parse()
                .unwrap(),
        )
        .unwrap()
        .xds_client(client)
        .build()
        .unwrap();
    mesh.resolve("tls.test:80").await.unwrap();
    (mesh, config)
}

/// One request through a cluster with `ts` (and, with `auto`, ALPN-chosen HTTP versions):
/// the status and body.
async fn call(ts: TransportSocket, auto: bool) -> (u16, String) {
    let ca = DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap();
    let port = tls_backend(&ca).await;
    let mut c = cluster("tls", &[port], None);
    c.transport_socket = Some(ts);
    if auto {
        use http_protocol_options::{AutoHttpConfig, UpstreamProtocolOptions};
        let opts = HttpProtocolOptions {
            upstream_protocol_options: Some(UpstreamProtocolOptions::AutoConfig(AutoHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions::default()),
                ..Default::default()
            })),
            ..Default::default()
        };
        c.typed_extension_protocol_options.insert(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
            pack_any(opts),
        );
    }
    let (mesh, _config) = mesh_with(&ca, vec![c]).await;
    let req = Request::get("http://tls.test/")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), mesh.client().oneshot(req))
        .await
        .expect("an answer in time")
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The peer's SAN checks: typed matchers (san_type, matcher) and the deprecated
/// match_subject_alt_names, each once matching the backend's SPIFFE ID (200) and once not
/// (the handshake fails: 503). Only exact URI matchers can be checked: other types and
/// patterns fail each request with a 503 that names the matcher.
#[tokio::test]
async fn upstream_san_matchers_accept_or_refuse_the_peer() {
    use subject_alt_name_matcher::SanType;
    let prefix_of = |p: &str| StringMatcher {
        match_pattern: Some(string_matcher::MatchPattern::Prefix(p.into())),
        ignore_case: false,
    };
    // The backend answered; the handshake refused its certificate; the matcher itself is
    // refused (only exact URI SANs, SPIFFE IDs, are checked) and every request fails.
    const OK: (u16, &str) = (200, "HTTP/1.1");
    const REJECTED: (u16, &str) = (503, "is not an expected identity");
    const UNSUPPORTED: (u16, &str) = (503, "is not supported");
    let rows: Vec<(&str, CertificateValidationContext, (u16, &str))> = vec![
        ("URI exact", typed(SanType::Uri, exact(SERVER_ID)), OK),
        (
            "URI exact, another identity",
            typed(
                SanType::Uri,
                exact("spiffe://cluster.local/ns/default/sa/other"),
            ),
            REJECTED,
        ),
        (
            "DNS, the same string",
            typed(SanType::Dns, exact(SERVER_ID)),
            UNSUPPORTED,
        ),
        (
            "URI prefix",
            typed(
                SanType::Uri,
                prefix_of("spiffe://cluster.local/ns/default/"),
            ),
            UNSUPPORTED,
        ),
        (
            "URI prefix, another namespace",
            typed(SanType::Uri, prefix_of("spiffe://cluster.local/ns/prod/")),
            UNSUPPORTED,
        ),
        (
            "match_subject_alt_names",
            CertificateValidationContext {
                match_subject_alt_names: vec![exact(SERVER_ID)],
                ..Default::default()
            },
            OK,
        ),
        (
            "match_subject_alt_names, another identity",
            CertificateValidationContext {
                match_subject_alt_names: vec![exact("spiffe://cluster.local/ns/default/sa/x")],
                ..Default::default()
            },
            REJECTED,
        ),
    ];
    for (row, v, want) in rows {
        let (status, body) = call(upstream(v, &[]), false).await;
        let (want_status, want_body) = want;
        assert_eq!(status, want_status, "{row}: {body}");
        assert!(body.contains(want_body), "{row}: {body}");
    }
}

/// CommonTlsContext.alpn_protocols with HttpProtocolOptions.auto_config: the protocol
/// offered is the one the backend negotiates, and the HTTP version follows it.
#[tokio::test]
async fn upstream_alpn_protocols_choose_the_http_version() {
    let (status, body) = call(upstream(Default::default(), &["http/1.1"]), true).await;
    assert_eq!((status, body.as_str()), (200, "http/1.1 HTTP/1.1"));
    let (status, body) = call(upstream(Default::default(), &["h2"]), true).await;
    assert_eq!((status, body.as_str()), (200, "h2 HTTP/2.0"));
}
