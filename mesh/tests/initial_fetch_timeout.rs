//! Envoy's `ConfigSource.initial_fetch_timeout`, served by our xDS server on a cluster's
//! `eds_config` and a connection manager's `rds.config_source` whose resources never come:
//! after the timeout the client stops waiting and marks the resource DOES_NOT_EXIST (its
//! client status, as CSDS reports it), not after the client-wide `resource_timeout`;
//! zero, what istiod sends, waits for ever as in Envoy.
//!
//! On the request path, an EDS resource that does not exist is an empty assignment: a
//! request waiting for the cluster's endpoints gets 503 then (`envoy_fields/endpoints.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ConfigSource, Node, config_source,
};
use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action,
    route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router as RouterFilter;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use envoy_types::util::pack_any;
use mesh::xds::ResourceType;
use mesh::xds::bootstrap::{Bootstrap, IstioNode};
use mesh::xds::client::{ResourceState, XdsClient, XdsClientConfig, channel};
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_route::client::{MeshClient, MeshClientConfig};
use mesh_tls::IdentityStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

const TARGET: &str = "svc.test:8080";

/// Which config source sets the timeout (the other resource is served inline or absent).
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The listener's routes come by RDS (`routes`, never served).
    Rds,
    /// The listener's inline route sends to EDS cluster `backend`, whose endpoints are
    /// never served.
    Eds,
}

#[derive(Clone)]
struct Scenario {
    via: Via,
    timeout: Option<Duration>,
}

fn ads(timeout: Option<Duration>) -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        initial_fetch_timeout: timeout.map(|t| PbDuration {
            seconds: t.as_secs() as i64,
            nanos: t.subsec_nanos() as i32,
        }),
        ..Default::default()
    }
}

struct Serve;
impl Generator<Scenario> for Serve {
    fn node_key(&self, _: &Node) -> String {
        String::new()
    }
    fn generate(&self, _: &Node, s: &Scenario) -> Result<Resources, GenerateError> {
        let mut r = Resources::default();
        let eds_timeout = matches!(s.via, Via::Eds).then_some(s.timeout).flatten();
        let route_specifier = match s.via {
            Via::Rds => http_connection_manager::RouteSpecifier::Rds(Rds {
                config_source: Some(ads(s.timeout)),
                route_config_name: "routes".into(),
            }),
            Via::Eds => http_connection_manager::RouteSpecifier::RouteConfig(routes()),
        };
        let hcm = HttpConnectionManager {
            route_specifier: Some(route_specifier),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(pack_any(
                    RouterFilter::default(),
                ))),
                ..Default::default()
            }],
            ..Default::default()
        };
        r.add(
            TARGET,
            Listener {
                name: TARGET.into(),
                api_listener: Some(ApiListener {
                    api_listener: Some(pack_any(hcm)),
                }),
                ..Default::default()
            },
        );
        r.add(
            "backend",
            Cluster {
                name: "backend".into(),
                cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                    cluster::DiscoveryType::Eds as i32,
                )),
                eds_cluster_config: Some(cluster::EdsClusterConfig {
                    eds_config: Some(ads(eds_timeout)),
                    service_name: String::new(),
                }),
                connect_timeout: Some(PbDuration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            },
        );
        Ok(r)
    }
}

fn routes() -> RouteConfiguration {
    RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "svc".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        "backend".into(),
                    )),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Our xDS server serving `scenario`, and a client (with `resource_timeout`) subscribed
/// to [`TARGET`] through a `MeshClient` (returned to keep the subscription).
async fn start(scenario: Scenario, resource_timeout: Duration) -> (XdsClient, MeshClient) {
    let (_config, rx) = watch::channel(Arc::new(scenario));
    let xds = XdsServer::new(Serve, rx, ServerOptions::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _keep = _config;
        xds.serve(listener, std::future::pending()).await
    });
    let node = IstioNode {
        pod_name: "caller".into(),
        service_account: "caller".into(),
        labels: BTreeMap::from([("app".to_owned(), "caller".to_owned())]),
        ..Default::default()
    };
    let client = XdsClient::new(
        XdsClientConfig {
            node: Bootstrap::istio_proxyless(node, &uri).node_proto(),
            resource_timeout,
            ..Default::default()
        },
        channel::insecure(&uri).unwrap(),
    );
    let mesh = MeshClient::new(
        client.clone(),
        IdentityStore::new(),
        MeshClientConfig::default(),
    );
    // Subscribes to the target; not awaited (it waits for what may never come).
    let m = mesh.clone();
    tokio::spawn(async move { m.resolve(TARGET).await });
    (client, mesh)
}

async fn state(client: &XdsClient, ty: ResourceType, name: &str) -> Option<ResourceState> {
    let status = client.status().await.ok()?;
    status.get(ty, name).map(|r| r.state)
}

/// One table: where the timeout is set, its value, the client's own `resource_timeout`,
/// and what the missing resource's state must be a while later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_fetch_timeout_stops_waiting_or_waits_for_ever() {
    let ms = Duration::from_millis;
    let cases = [
        // Shorter than the client's timeout: does-not-exist after it.
        (
            Via::Eds,
            Some(ms(300)),
            ms(30_000),
            ResourceState::DoesNotExist,
        ),
        (
            Via::Rds,
            Some(ms(300)),
            ms(30_000),
            ResourceState::DoesNotExist,
        ),
        // Zero (istiod): never times out, although the client's own timeout is short.
        (Via::Eds, Some(ms(0)), ms(300), ResourceState::Requested),
        (Via::Rds, Some(ms(0)), ms(300), ResourceState::Requested),
        // Unset: the client's timeout.
        (Via::Eds, None, ms(300), ResourceState::DoesNotExist),
    ];
    for (via, timeout, resource_timeout, want) in cases {
        let what = format!(
            "{via:?} initial_fetch_timeout {timeout:?}, resource_timeout {resource_timeout:?}"
        );
        let (client, _mesh) = start(Scenario { via, timeout }, resource_timeout).await;
        let (ty, name) = match via {
            Via::Eds => (ResourceType::ClusterLoadAssignment, "backend"),
            Via::Rds => (ResourceType::RouteConfiguration, "routes"),
        };
        let started = Instant::now();
        tokio::time::sleep(ms(1_500).saturating_sub(started.elapsed())).await;
        assert_eq!(state(&client, ty, name).await, Some(want), "{what}");
    }
}
