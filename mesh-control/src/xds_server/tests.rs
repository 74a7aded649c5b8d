//! The server against our own ADS client (SotW and delta) and against a raw stream.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3 as cds;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as eds;
use envoy_types::pb::envoy::config::listener::v3 as lds;
use envoy_types::pb::envoy::config::route::v3 as rds;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::util::pack_any;
use tokio::sync::watch;

use super::*;
use mesh_xds::client::{Protocol, XdsClient, XdsClientConfig, channel};

/// Test config: services `svc<i>:80` for i in 0..services, with this connect timeout
/// (0 s makes every cluster invalid for the client).
#[derive(Clone, Debug)]
pub(crate) struct Cfg {
    pub(crate) services: usize,
    pub(crate) connect_timeout_s: i64,
    pub(crate) endpoint_port: u32,
}

pub(crate) struct Gen;

fn ads() -> Option<core::ConfigSource> {
    Some(core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            Default::default(),
        )),
        ..Default::default()
    })
}

impl Generator<Cfg> for Gen {
    fn node_key(&self, _node: &Node) -> String {
        "all".into()
    }

    fn generate(&self, _node: &Node, cfg: &Cfg) -> Result<Resources, GenerateError> {
        let mut r = Resources::default();
        for i in 0..cfg.services {
            let name = format!("svc{i}:80");
            let cluster = format!("outbound|80||svc{i}");
            r.add(
                name.clone(),
                lds::Listener {
                    name: name.clone(),
                    api_listener: Some(lds::ApiListener {
                        api_listener: Some(pack_any(hcm::HttpConnectionManager {
                            http_filters: vec![hcm::HttpFilter {
                                name: "envoy.filters.http.router".into(),
                                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(
                                    pack_any(Router::default()),
                                )),
                                ..Default::default()
                            }],
                            route_specifier: Some(
                                hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
                                    config_source: ads(),
                                    route_config_name: name.clone(),
                                }),
                            ),
                            ..Default::default()
                        })),
                    }),
                    ..Default::default()
                },
            );
            r.add(
                name.clone(),
                rds::RouteConfiguration {
                    name: name.clone(),
                    virtual_hosts: vec![rds::VirtualHost {
                        name: name.clone(),
                        domains: vec![name.clone()],
                        routes: vec![rds::Route {
                            r#match: Some(rds::RouteMatch {
                                path_specifier: Some(rds::route_match::PathSpecifier::Prefix(
                                    "/".into(),
                                )),
                                ..Default::default()
                            }),
                            action: Some(rds::route::Action::Route(rds::RouteAction {
                                cluster_specifier: Some(
                                    rds::route_action::ClusterSpecifier::Cluster(cluster.clone()),
                                ),
                                ..Default::default()
                            })),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
            r.add(
                cluster.clone(),
                cds::Cluster {
                    name: cluster.clone(),
                    connect_timeout: Some(PbDuration {
                        seconds: cfg.connect_timeout_s,
                        nanos: 0,
                    }),
                    cluster_discovery_type: Some(cds::cluster::ClusterDiscoveryType::Type(
                        cds::cluster::DiscoveryType::Eds as i32,
                    )),
                    eds_cluster_config: Some(cds::cluster::EdsClusterConfig {
                        eds_config: ads(),
                        service_name: cluster.clone(),
                    }),
                    ..Default::default()
                },
            );
            r.add(
                cluster.clone(),
                eds::ClusterLoadAssignment {
                    cluster_name: cluster.clone(),
                    endpoints: vec![eds::LocalityLbEndpoints {
                        lb_endpoints: vec![eds::LbEndpoint {
                            host_identifier: Some(eds::lb_endpoint::HostIdentifier::Endpoint(
                                eds::Endpoint {
                                    address: Some(core::Address {
                                        address: Some(core::address::Address::SocketAddress(
                                            core::SocketAddress {
                                                address: "127.0.0.1".into(),
                                                port_specifier: Some(
                                                    core::socket_address::PortSpecifier::PortValue(
                                                        cfg.endpoint_port,
                                                    ),
                                                ),
                                                ..Default::default()
                                            },
                                        )),
                                    }),
                                    ..Default::default()
                                },
                            )),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            );
        }
        Ok(r)
    }
}

async fn start(cfg: Cfg) -> (XdsServer<Cfg>, watch::Sender<Arc<Cfg>>, String) {
    let (tx, rx) = watch::channel(Arc::new(cfg));
    let server = XdsServer::new(Gen, rx, ServerOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.clone().serve(listener, std::future::pending()));
    (server, tx, url)
}

fn client(url: &str, protocol: Protocol, id: &str) -> XdsClient {
    let config = XdsClientConfig {
        protocol,
        node: Node {
            id: id.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    XdsClient::new(config, channel::insecure(url).unwrap())
}

fn endpoint_port(c: &XdsClient, cluster: &str) -> Option<u16> {
    let snap = c.snapshot();
    let cla = snap.endpoints.get(cluster)?;
    match &cla.localities[0].endpoints[0].address {
        mesh_core::model::EndpointAddress::Socket(a) => Some(a.port()),
        mesh_core::model::EndpointAddress::Dns { port, .. } => Some(*port),
    }
}

async fn wait_for(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not met within 10 s");
}

async fn push_and_ack(protocol: Protocol) {
    let cfg = Cfg {
        services: 3,
        connect_timeout_s: 1,
        endpoint_port: 1000,
    };
    let (server, tx, url) = start(cfg.clone()).await;
    let c = client(&url, protocol, "node-a");
    c.subscribe_target("xds:///svc1:80").await.unwrap();
    c.ready().await.unwrap();
    assert_eq!(endpoint_port(&c, "outbound|80||svc1"), Some(1000));
    assert_eq!(c.snapshot().clusters.len(), 1, "only what the target needs");
    server.synced(1).await;
    let status = server.status();
    let client = &status.clients[0];
    assert_eq!(client.node_id, "node-a");
    assert_eq!(client.types.len(), 4);
    for (ty, t) in &client.types {
        assert!(t.synced(), "{ty} not acked: {t:?}");
        assert_eq!(t.sent_resources, 1, "{ty}");
        assert_eq!(t.acked_version, t.sent_version, "{ty}");
    }

    // A config change reaches the client, and only changed types are sent.
    let before = status.clients[0].types.clone();
    tx.send(Arc::new(Cfg {
        endpoint_port: 2000,
        ..cfg.clone()
    }))
    .unwrap();
    wait_for(|| endpoint_port(&c, "outbound|80||svc1") == Some(2000)).await;
    server.synced(1).await;
    let after = server.status().clients[0].types.clone();
    assert_ne!(before["EDS"].sent_nonce, after["EDS"].sent_nonce);
    assert_eq!(before["LDS"].sent_nonce, after["LDS"].sent_nonce);
    assert_eq!(before["RDS"].sent_nonce, after["RDS"].sent_nonce);

    // Invalid clusters are NACKed with the client's reason; the old config stays.
    tx.send(Arc::new(Cfg {
        connect_timeout_s: 0,
        ..cfg.clone()
    }))
    .unwrap();
    wait_for(|| !server.status().nacks.is_empty()).await;
    let status = server.status();
    let nack = &status.nacks[0];
    assert_eq!(nack.node_id, "node-a");
    assert!(nack.type_url.ends_with("Cluster"));
    assert!(
        nack.reason
            .contains("connect_timeout must be greater than 0"),
        "{}",
        nack.reason
    );
    assert!(!status.all_synced());
    let cds = &status.clients[0].types["CDS"];
    assert_eq!(cds.nacks, 1);
    assert!(cds.last_nack.is_some());
    assert_eq!(
        endpoint_port(&c, "outbound|80||svc1"),
        Some(1000),
        "EDS follows the config"
    );
    assert_eq!(
        c.snapshot().clusters.len(),
        1,
        "the last good cluster is kept"
    );

    // Fixing the config clears the NACK.
    tx.send(Arc::new(cfg)).await_ok();
    server.synced(1).await;
    assert!(server.status().clients[0].types["CDS"].last_nack.is_none());
}

trait AwaitOk {
    fn await_ok(self);
}
impl<E: std::fmt::Debug> AwaitOk for Result<(), E> {
    fn await_ok(self) {
        self.unwrap()
    }
}

#[tokio::test]
async fn sotw_push_ack_and_nack() {
    push_and_ack(Protocol::StateOfTheWorld).await;
}

#[tokio::test]
async fn delta_push_ack_and_nack() {
    push_and_ack(Protocol::Delta).await;
}

#[tokio::test]
async fn delta_removal_and_wildcard() {
    let cfg = Cfg {
        services: 3,
        connect_timeout_s: 1,
        endpoint_port: 1000,
    };
    let (server, tx, url) = start(cfg.clone()).await;
    let config = XdsClientConfig {
        protocol: Protocol::Delta,
        wildcard_clusters: true,
        node: Node {
            id: "wild".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let c = XdsClient::new(config, channel::insecure(&url).unwrap());
    c.ready().await.unwrap();
    wait_for(|| c.snapshot().clusters.len() == 3 && c.snapshot().endpoints.len() == 3).await;
    tx.send(Arc::new(Cfg { services: 1, ..cfg })).unwrap();
    wait_for(|| c.snapshot().clusters.len() == 1).await;
    server.synced(1).await;
    assert!(c.snapshot().clusters.contains_key("outbound|80||svc0"));
}

#[tokio::test]
async fn many_clients_share_one_generation_and_leave_cleanly() {
    let (server, _tx, url) = start(Cfg {
        services: 20,
        connect_timeout_s: 1,
        endpoint_port: 1000,
    })
    .await;
    let clients: Vec<XdsClient> = (0..50)
        .map(|i| {
            let p = if i % 2 == 0 {
                Protocol::StateOfTheWorld
            } else {
                Protocol::Delta
            };
            client(&url, p, &format!("n{i}"))
        })
        .collect();
    for (i, c) in clients.iter().enumerate() {
        c.subscribe_target(&format!("svc{}:80", i % 20))
            .await
            .unwrap();
    }
    for c in &clients {
        c.ready().await.unwrap();
    }
    server.synced(50).await;
    assert_eq!(server.client_count(), 50);
    assert_eq!(server.inner.cache.lock().unwrap().cells.len(), 1);
    drop(clients);
    wait_for(|| server.client_count() == 0).await;
}

#[tokio::test]
async fn raw_streams_follow_the_spec() {
    let (server, _tx, url) = start(Cfg {
        services: 2,
        connect_timeout_s: 1,
        endpoint_port: 1000,
    })
    .await;
    let mut ads = AggregatedDiscoveryServiceClient::connect(url.clone())
        .await
        .unwrap();
    let cluster_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

    // SotW: no node on the first request is refused.
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(4);
    let mut responses = ads
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
        .unwrap()
        .into_inner();
    req_tx
        .send(DiscoveryRequest {
            type_url: cluster_url.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = responses.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("must carry the node"));

    // SotW legacy wildcard: an empty first request gets every cluster.
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(4);
    let mut responses = ads
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(req_rx))
        .await
        .unwrap()
        .into_inner();
    let node = Some(Node {
        id: "raw".into(),
        ..Default::default()
    });
    req_tx
        .send(DiscoveryRequest {
            node: node.clone(),
            type_url: cluster_url.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = responses.message().await.unwrap().unwrap();
    assert_eq!(r.resources.len(), 2);
    // A stale nonce is ignored; the ACK with the right nonce is recorded.
    req_tx
        .send(DiscoveryRequest {
            type_url: cluster_url.into(),
            response_nonce: "stale".into(),
            resource_names: vec!["outbound|80||svc0".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    req_tx
        .send(DiscoveryRequest {
            type_url: cluster_url.into(),
            response_nonce: r.nonce.clone(),
            version_info: r.version_info.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    wait_for(|| server.status().all_synced() && server.client_count() == 1).await;
    // Narrowing to one name gets a response with just that one.
    req_tx
        .send(DiscoveryRequest {
            type_url: cluster_url.into(),
            response_nonce: r.nonce.clone(),
            version_info: r.version_info.clone(),
            resource_names: vec!["outbound|80||svc1".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let r2 = responses.message().await.unwrap().unwrap();
    assert_eq!(r2.resources.len(), 1);
    assert_ne!(r2.nonce, r.nonce);

    // Delta: initial_resource_versions the client already has are not resent.
    let (dtx, drx) = tokio::sync::mpsc::channel(4);
    let mut dresp = ads
        .delta_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(drx))
        .await
        .unwrap()
        .into_inner();
    let held = r2.resources[0].clone();
    let (_, snap) = server.resources_for(node.as_ref().unwrap()).await.unwrap();
    let v = snap.get(cluster_url).unwrap().resources["outbound|80||svc1"]
        .version
        .clone();
    let _ = held;
    dtx.send(DeltaDiscoveryRequest {
        node,
        type_url: cluster_url.into(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: [
            ("outbound|80||svc1".to_string(), v),
            ("outbound|80||gone".to_string(), "x".to_string()),
        ]
        .into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let d = dresp.message().await.unwrap().unwrap();
    let names: Vec<&str> = d.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["outbound|80||svc0"]);
    assert_eq!(d.removed_resources, ["outbound|80||gone"]);
}

/// The ADS port's connections have Nagle's algorithm off.
#[tokio::test]
async fn accepted_connections_send_without_nagle_delay() {
    use futures::StreamExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let accepted = incoming(listener).next().await.unwrap().unwrap();
    assert!(accepted.nodelay().unwrap());
}
