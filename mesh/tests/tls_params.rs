//! Envoy's `CommonTlsContext.tls_params` (what istiod sets on its TLS contexts), translated
//! from the Envoy proto and applied on real handshakes, both ways: a cluster's
//! `UpstreamTlsContext` narrows what `MeshClient` offers, a filter chain's
//! `DownstreamTlsContext` narrows what `InboundServer` accepts. The peer offers or accepts
//! everything, so what was negotiated shows the narrowing; a peer outside the range fails.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateProviderPluginInstance, CertificateValidationContext, CommonTlsContext,
    DownstreamTlsContext, TlsParameters, UpstreamTlsContext, common_tls_context,
    tls_parameters::TlsProtocol,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue};
use envoy_types::util::pack_any;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use mesh::InboundServer;
use mesh::core::config::{ConfigSnapshot, StaticSource};
use mesh::core::model::*;
use mesh::route::client::{MeshClient, MeshClientConfig};
use mesh::tls::IdentityStore;
use mesh::tls::client::MeshConnector;
use mesh::tls::config::{ClientSettings, ServerSettings};
use mesh::tls::dev_ca::DevCa;
use mesh::tls::server::MeshAcceptor;
use mesh::xds::translate::tls::{downstream, upstream};
use tokio::sync::mpsc;
use tower::ServiceExt;

const TARGET: &str = "svc.test:80";

/// Version, cipher suite and key-exchange group of one handshake, as rustls names them.
#[derive(Debug, PartialEq)]
struct Seen {
    version: String,
    suite: String,
    group: String,
}

fn seen(c: &rustls::CommonState) -> Seen {
    Seen {
        version: format!("{:?}", c.protocol_version().unwrap()),
        suite: format!("{:?}", c.negotiated_cipher_suite().unwrap().suite()),
        group: format!("{:?}", c.negotiated_key_exchange_group().unwrap().name()),
    }
}

fn params(min: TlsProtocol, max: TlsProtocol, suites: &[&str], curves: &[&str]) -> TlsParameters {
    TlsParameters {
        tls_minimum_protocol_version: min as i32,
        tls_maximum_protocol_version: max as i32,
        cipher_suites: suites.iter().map(|s| (*s).to_owned()).collect(),
        ecdh_curves: curves.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

/// A common context as istiod writes it (certificates from instance `default`, CA from
/// `ROOTCA`), with `tls_params`.
fn common(p: Option<TlsParameters>) -> CommonTlsContext {
    let instance = |name: &str| CertificateProviderPluginInstance {
        instance_name: "default".into(),
        certificate_name: name.into(),
    };
    CommonTlsContext {
        tls_params: p,
        tls_certificate_provider_instance: Some(instance("default")),
        validation_context_type: Some(
            common_tls_context::ValidationContextType::ValidationContext(
                CertificateValidationContext {
                    ca_certificate_provider_instance: Some(instance("ROOTCA")),
                    ..Default::default()
                },
            ),
        ),
        ..Default::default()
    }
}

fn socket(any: Any) -> TransportSocket {
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any)),
    }
}

fn identity(ca: &DevCa, sa: &str) -> IdentityStore {
    let id = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    IdentityStore::from_credentials(ca.issue(&id, Duration::from_secs(3600)).unwrap()).unwrap()
}

fn hcm(routes: Vec<Route>) -> HttpConnectionManager {
    HttpConnectionManager {
        route_source: RouteSource::Inline(Arc::new(RouteConfig {
            name: "r".into(),
            virtual_hosts: vec![VirtualHost {
                name: "all".into(),
                domains: vec!["*".into()],
                routes,
                ..Default::default()
            }],
            ..Default::default()
        })),
        http_filters: vec![],
        max_stream_duration: None,
        idle_timeout: None,
        xff_num_trusted_hops: 0,
        path_normalization: Default::default(),
    }
}

/// `MeshClient` with a cluster whose TLS is `ours` (an Envoy `UpstreamTlsContext`
/// translated by mesh-xds) sends one request to a server that accepts `peer`: what the
/// server negotiated, or the client's error.
async fn upstream_handshake(ours: Option<TlsParameters>, peer: TlsParams) -> Result<Seen, String> {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let acceptor = MeshAcceptor::new(
        identity(&ca, "server"),
        ServerSettings {
            params: peer,
            ..Default::default()
        },
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((io, _)) = tcp.accept().await {
            let Ok((tls, _peer)) = acceptor.accept(io).await else {
                continue;
            };
            let _ = tx.send(seen(tls.get_ref().1));
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc),
            );
        }
    });
    let tls = upstream(&socket(pack_any(UpstreamTlsContext {
        common_tls_context: Some(common(ours)),
        ..Default::default()
    })))
    .unwrap();
    let cluster = Cluster {
        name: "server".into(),
        discovery: Discovery::Eds { service_name: None },
        lb_policy: LbPolicy::RoundRobin,
        common_lb: CommonLbConfig::default(),
        connect_timeout: Duration::from_secs(2),
        circuit_breakers: Default::default(),
        outlier_detection: None,
        tls,
        http_protocol: HttpProtocolOptions {
            protocol: UpstreamProtocol::Http1,
            ..Default::default()
        },
    };
    let mut s = ConfigSnapshot::default();
    s.insert_listener(Listener {
        name: TARGET.into(),
        kind: ListenerKind::Client(hcm(vec![Route {
            name: "all".into(),
            route_match: RouteMatch {
                path: PathMatch::Prefix("/".into()),
                ..Default::default()
            },
            action: RouteAction::Forward(Box::new(ForwardAction {
                cluster: ClusterSpecifier::Cluster("server".into()),
                ..Default::default()
            })),
            headers: HeaderOps::default(),
            filter_overrides: Default::default(),
        }])),
    });
    s.insert_endpoints(ClusterLoadAssignment {
        cluster_name: "server".into(),
        localities: vec![LocalityEndpoints {
            locality: Arc::new(Locality::default()),
            priority: 0,
            load_balancing_weight: None,
            endpoints: vec![Endpoint {
                address: EndpointAddress::Socket(addr),
                health: HealthStatus::Healthy,
                weight: 1,
                hostname: None,
                tls_mode: TlsMode::default(),
            }],
        }],
        ..Default::default()
    });
    s.insert_cluster(cluster);
    let client = MeshClient::new(
        StaticSource::new(s),
        identity(&ca, "client"),
        MeshClientConfig::default(),
    );
    let req = http::Request::get(format!("http://{TARGET}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = client.oneshot(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    rx.recv().await.ok_or_else(|| "no handshake".to_owned())
}

/// `InboundServer` with a filter chain whose TLS is `ours` (an Envoy
/// `DownstreamTlsContext` translated by mesh-xds); a client offering `peer` connects: what
/// it negotiated, or the handshake error.
async fn downstream_handshake(
    ours: Option<TlsParameters>,
    peer: TlsParams,
) -> Result<Seen, String> {
    let ca = DevCa::new("cluster.local".parse().unwrap()).unwrap();
    let tls = downstream(&socket(pack_any(DownstreamTlsContext {
        common_tls_context: Some(common(ours)),
        require_client_certificate: Some(BoolValue { value: true }),
        ..Default::default()
    })))
    .unwrap();
    let port = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut s = ConfigSnapshot::default();
    s.insert_listener(Listener {
        name: "inbound".into(),
        kind: ListenerKind::Server(Box::new(ServerListener {
            address: addr,
            filter_chains: vec![FilterChain {
                name: "mtls".into(),
                filter_chain_match: FilterChainMatch::default(),
                tls,
                http_connection_manager: hcm(vec![]),
            }],
            default_filter_chain: None,
        })),
    });
    let server = InboundServer::new(
        StaticSource::new(s),
        identity(&ca, "server"),
        addr,
        "inbound",
    );
    let app = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
    });
    tokio::spawn(server.serve(app));
    let connector = MeshConnector::new(
        identity(&ca, "client"),
        ClientSettings {
            params: peer,
            ..Default::default()
        },
    );
    let uri: http::Uri = format!("https://{addr}").parse().unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        match connector.connect(&uri).await {
            Ok(stream) => return Ok(seen(stream.into_inner().get_ref().1)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}

fn tls12_only() -> TlsParams {
    TlsParams {
        max_version: Some(TlsVersion::Tls12),
        ..Default::default()
    }
}

/// One table for both directions: our `tls_params` against a peer that allows everything
/// (or only TLS 1.2), and what the handshake must give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_params_narrow_real_handshakes_both_ways() {
    use TlsProtocol::{TlSv12, TlSv13, TlsAuto};
    let ok = |version: &str, suite: Option<&str>, group: &str| {
        (
            version.to_owned(),
            suite.map(str::to_owned),
            group.to_owned(),
        )
    };
    let cases: Vec<(&str, Option<TlsParameters>, TlsParams, Option<_>)> = vec![
        (
            "no tls_params: TLS 1.3 with X25519 (rustls defaults)",
            None,
            TlsParams::default(),
            Some(ok("TLSv1_3", None, "X25519")),
        ),
        (
            "max TLSv1_2, one suite and one curve that are not the peer's first choice",
            Some(params(
                TlsAuto,
                TlSv12,
                &["ECDHE-ECDSA-AES128-GCM-SHA256"],
                &["P-384"],
            )),
            TlsParams::default(),
            Some(ok(
                "TLSv1_2",
                Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
                "secp384r1",
            )),
        ),
        (
            "istiod's inbound list (BoringSSL-only names are not offered) with TLS 1.2",
            Some(params(
                TlSv12,
                TlSv12,
                &[
                    "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-RSA-AES256-GCM-SHA384",
                    "ECDHE-ECDSA-AES128-GCM-SHA256",
                    "ECDHE-RSA-AES128-GCM-SHA256",
                    "AES256-GCM-SHA384",
                    "AES128-GCM-SHA256",
                ],
                &[],
            )),
            TlsParams::default(),
            Some(ok(
                "TLSv1_2",
                Some("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
                "X25519",
            )),
        ),
        (
            "TLS 1.3 with P-256 only",
            Some(params(TlSv13, TlSv13, &[], &["P-256"])),
            TlsParams::default(),
            Some(ok("TLSv1_3", None, "secp256r1")),
        ),
        (
            "a TLS 1.2-only peer is reached by default",
            Some(params(TlsAuto, TlsAuto, &[], &[])),
            tls12_only(),
            Some(ok("TLSv1_2", None, "X25519")),
        ),
        (
            "a TLS 1.2-only peer is refused with min TLSv1_3",
            Some(params(TlSv13, TlsAuto, &[], &[])),
            tls12_only(),
            None,
        ),
    ];
    for (what, ours, peer, want) in cases {
        for (side, got) in [
            (
                "upstream",
                upstream_handshake(ours.clone(), peer.clone()).await,
            ),
            (
                "downstream",
                downstream_handshake(ours.clone(), peer.clone()).await,
            ),
        ] {
            match (&want, got) {
                (None, Err(_)) => {}
                (None, Ok(s)) => panic!("{side}, {what}: handshake succeeded: {s:?}"),
                (Some(_), Err(e)) => panic!("{side}, {what}: handshake failed: {e}"),
                (Some((version, suite, group)), Ok(s)) => {
                    assert_eq!(&s.version, version, "{side}, {what}: {s:?}");
                    assert_eq!(&s.group, group, "{side}, {what}: {s:?}");
                    if let Some(suite) = suite {
                        assert_eq!(&s.suite, suite, "{side}, {what}: {s:?}");
                    }
                }
            }
        }
    }
}
