//! Upstream TLS on real handshakes: clusters whose `UpstreamTlsContext` (hand-written, as
//! istiod writes it) names the peer's SANs and the ALPN offered, in front of an mTLS backend
//! with a certificate from the mesh's CA (its SPIFFE ID plus a DNS and an IP SAN). A SAN
//! matcher (exact, prefix, suffix, contains, regex, any SAN type) that accepts none of its
//! SANs fails the handshake (503 naming the matcher); the protocol the backend saw follows
//! the ALPN offered.

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
use mesh::tls::dev_ca::IssueOptions;
use mesh::tls::server::MeshAcceptor;

use crate::harness::*;

const SERVER_ID: &str = "spiffe://cluster.local/ns/default/sa/server";

/// The backend's DNS SAN.
const SERVER_DNS: &str = "server.default.svc.cluster.local";

/// An SVID for `sa` that also carries the DNS SAN [`SERVER_DNS`] and the IP SAN 127.0.0.1.
fn identity(ca: &DevCa, sa: &str) -> IdentityStore {
    let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    let mut opts = IssueOptions::new(&id, Duration::from_secs(3600));
    opts.dns_sans = vec![SERVER_DNS.into()];
    opts.ip_sans = vec![std::net::Ipv4Addr::LOCALHOST.into()];
    IdentityStore::from_credentials(ca.issue_with(opts).unwrap()).unwrap()
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

fn pattern(p: string_matcher::MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ignore_case,
    }
}

fn regex(re: &str) -> string_matcher::MatchPattern {
    string_matcher::MatchPattern::SafeRegex(RegexMatcher {
        regex: re.into(),
        ..Default::default()
    })
}

/// The peer's SAN checks as Envoy applies them: typed matchers look at the SANs of their
/// type (URI: the SPIFFE ID; DNS; IP_ADDRESS in text form), the deprecated
/// match_subject_alt_names at every type, with exact, prefix, suffix, contains, safe_regex
/// and ignore_case patterns; with several matchers any one may match. Each row once accepts
/// the backend (200) and once not: the handshake fails and the 503 names the matcher.
#[tokio::test]
async fn upstream_san_matchers_accept_or_refuse_the_peer() {
    use string_matcher::MatchPattern::{Contains, Prefix, Suffix};
    use subject_alt_name_matcher::SanType;
    const OK: (u16, &str) = (200, "HTTP/1.1");
    let rejected = |matcher: &'static str| (503, matcher);
    let untyped = |ms: Vec<StringMatcher>| CertificateValidationContext {
        match_subject_alt_names: ms,
        ..Default::default()
    };
    let rows: Vec<(&str, CertificateValidationContext, (u16, &str))> = vec![
        ("URI exact", typed(SanType::Uri, exact(SERVER_ID)), OK),
        (
            "URI exact, another identity",
            typed(
                SanType::Uri,
                exact("spiffe://cluster.local/ns/default/sa/other"),
            ),
            rejected("is not an expected identity"),
        ),
        (
            "URI prefix",
            typed(
                SanType::Uri,
                pattern(Prefix("spiffe://cluster.local/ns/default/".into()), false),
            ),
            OK,
        ),
        (
            "URI prefix, another namespace",
            typed(
                SanType::Uri,
                pattern(Prefix("spiffe://cluster.local/ns/prod/".into()), false),
            ),
            rejected(r#"URI SAN prefix "spiffe://cluster.local/ns/prod/""#),
        ),
        (
            "URI suffix",
            typed(SanType::Uri, pattern(Suffix("/sa/server".into()), false)),
            OK,
        ),
        (
            "URI suffix, another account",
            typed(SanType::Uri, pattern(Suffix("/sa/admin".into()), false)),
            rejected(r#"URI SAN suffix "/sa/admin""#),
        ),
        (
            "URI safe_regex",
            typed(
                SanType::Uri,
                pattern(regex(r"spiffe://cluster\.local/ns/[a-z]+/sa/serv.*"), false),
            ),
            OK,
        ),
        (
            "URI safe_regex, matching only part of the ID",
            typed(SanType::Uri, pattern(regex("ns/default"), false)),
            rejected(r#"URI SAN safe_regex "ns/default""#),
        ),
        (
            "URI contains, ignore_case",
            typed(SanType::Uri, pattern(Contains("/NS/DEFAULT/".into()), true)),
            OK,
        ),
        (
            "URI contains, case differs",
            typed(
                SanType::Uri,
                pattern(Contains("/NS/DEFAULT/".into()), false),
            ),
            rejected(r#"URI SAN contains "/NS/DEFAULT/""#),
        ),
        ("DNS exact", typed(SanType::Dns, exact(SERVER_DNS)), OK),
        (
            "DNS, the SPIFFE ID (a URI SAN, not a DNS one)",
            typed(SanType::Dns, exact(SERVER_ID)),
            rejected("DNS SAN exact"),
        ),
        (
            "DNS suffix",
            typed(
                SanType::Dns,
                pattern(Suffix(".svc.cluster.local".into()), false),
            ),
            OK,
        ),
        (
            "IP_ADDRESS exact, in text form",
            typed(SanType::IpAddress, exact("127.0.0.1")),
            OK,
        ),
        (
            "IP_ADDRESS, another address",
            typed(SanType::IpAddress, exact("127.0.0.2")),
            rejected(r#"IP_ADDRESS SAN exact "127.0.0.2""#),
        ),
        (
            "several matchers, the second accepts",
            CertificateValidationContext {
                match_typed_subject_alt_names: vec![
                    typed(
                        SanType::Uri,
                        exact("spiffe://cluster.local/ns/default/sa/x"),
                    )
                    .match_typed_subject_alt_names
                    .remove(0),
                    typed(SanType::Dns, exact(SERVER_DNS))
                        .match_typed_subject_alt_names
                        .remove(0),
                ],
                ..Default::default()
            },
            OK,
        ),
        (
            "match_subject_alt_names",
            untyped(vec![exact(SERVER_ID)]),
            OK,
        ),
        (
            "match_subject_alt_names, another identity",
            untyped(vec![exact("spiffe://cluster.local/ns/default/sa/x")]),
            rejected("is not an expected identity"),
        ),
        (
            "match_subject_alt_names, any SAN type: the DNS name",
            untyped(vec![pattern(Prefix("server.default.".into()), false)]),
            OK,
        ),
        (
            "match_subject_alt_names, any SAN type: the IP",
            untyped(vec![exact("127.0.0.1")]),
            OK,
        ),
        (
            "match_subject_alt_names, no SAN",
            untyped(vec![pattern(Prefix("reviews.".into()), false)]),
            rejected(r#"SAN prefix "reviews.""#),
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

/// A TLS transport socket whose CommonTlsContext is `common`.
fn with_common(common: CommonTlsContext) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack_any(
            UpstreamTlsContext {
                common_tls_context: Some(common),
                ..Default::default()
            },
        ))),
    }
}

/// The certificate provider instances of an UpstreamTlsContext, in each form istiod or a
/// hand-written config uses: the identity instance makes the client present the workload
/// certificate (the backend requires one: without it the handshake fails, as in gRPC A29,
/// where no identity instance means TLS without a client certificate); a CA instance, in
/// any of its three places, is what lets the server be verified (none: the cluster is
/// NACKed and no request is sent: 503 no healthy upstream).
#[tokio::test]
async fn certificate_provider_instances_choose_the_certificates() {
    use common_tls_context::ValidationContextType as V;
    let ca_in_validation_context = || {
        Some(V::ValidationContext(CertificateValidationContext {
            ca_certificate_provider_instance: Some(instance("ROOTCA")),
            ..Default::default()
        }))
    };
    const OK: (u16, &str) = (200, "HTTP/1.1");
    let rows: Vec<(&str, CommonTlsContext, (u16, &str))> = vec![
        (
            "tls_certificate_provider_instance and ca_certificate_provider_instance",
            CommonTlsContext {
                tls_certificate_provider_instance: Some(instance("default")),
                validation_context_type: ca_in_validation_context(),
                ..Default::default()
            },
            OK,
        ),
        (
            "no tls_certificate_provider_instance: no client certificate",
            CommonTlsContext {
                validation_context_type: ca_in_validation_context(),
                ..Default::default()
            },
            (503, "CertificateRequired"),
        ),
        (
            "CommonTlsContext.validation_context_certificate_provider_instance",
            CommonTlsContext {
                tls_certificate_provider_instance: Some(instance("default")),
                validation_context_type: Some(V::ValidationContextCertificateProviderInstance(
                    common_tls_context::CertificateProviderInstance {
                        instance_name: "default".into(),
                        certificate_name: "ROOTCA".into(),
                    },
                )),
                ..Default::default()
            },
            OK,
        ),
        (
            "CombinedCertificateValidationContext.validation_context_certificate_provider_instance",
            CommonTlsContext {
                tls_certificate_provider_instance: Some(instance("default")),
                validation_context_type: Some(V::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(typed(
                            subject_alt_name_matcher::SanType::Uri,
                            exact(SERVER_ID),
                        )),
                        validation_context_certificate_provider_instance: Some(
                            common_tls_context::CertificateProviderInstance {
                                instance_name: "default".into(),
                                certificate_name: "ROOTCA".into(),
                            },
                        ),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            OK,
        ),
        (
            "no CA instance anywhere",
            CommonTlsContext {
                tls_certificate_provider_instance: Some(instance("default")),
                ..Default::default()
            },
            (503, "no healthy upstream"),
        ),
    ];
    for (row, common, (want_status, want_body)) in rows {
        let (status, body) = call(with_common(common), false).await;
        assert_eq!(status, want_status, "{row}: {body}");
        assert!(body.contains(want_body), "{row}: {body}");
    }
}
