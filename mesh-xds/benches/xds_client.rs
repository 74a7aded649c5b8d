//! xDS client benchmark, end to end over a loopback ADS stream (in-process tonic server),
//! decoding through the real translation:
//!
//! 1. full state: 10,000 EDS clusters (wildcard CDS) and their 10,000 assignments with
//!    10 endpoints each (100,000 endpoints), from the first response sent to the snapshot
//!    holding all of it; resident memory per endpoint from /proc/self/statm;
//! 2. one-endpoint change (delta): one assignment with one endpoint moved, from send to the
//!    snapshot showing it; p50/p99 over many rounds.
//!
//! Run: `cargo bench -p mesh-xds --bench xds_client` (SotW and delta full state; delta
//! change). `XDS_BENCH_CLUSTERS` / `XDS_BENCH_ENDPOINTS_PER_CLUSTER` / `XDS_BENCH_ROUNDS`
//! change the sizes.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, SocketAddress, address,
    config_source::ConfigSourceSpecifier, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::util::pack_any;
use futures::Stream;
use mesh_core::model::EndpointAddress;
use mesh_xds::client::{ConfigSnapshot, Protocol, XdsClient, XdsClientConfig, channel};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// One stream per server; the bench gets its requests and sends its responses.
#[derive(Clone, Default)]
struct Ads {
    sotw: Arc<Mutex<Option<Pipe<DiscoveryRequest, DiscoveryResponse>>>>,
    delta: Arc<Mutex<Option<Pipe<DeltaDiscoveryRequest, DeltaDiscoveryResponse>>>>,
}

struct Pipe<Q, R> {
    requests: mpsc::Sender<Q>,
    responses: mpsc::Receiver<Result<R, Status>>,
}

fn pipe<Q: Send + 'static, R: Send + 'static>(
    slot: &Mutex<Option<Pipe<Q, R>>>,
    mut inbound: Streaming<Q>,
) -> Result<Response<BoxStream<R>>, Status> {
    let Some(p) = slot.lock().unwrap().take() else {
        return Err(Status::unavailable("one stream only"));
    };
    let requests = p.requests;
    tokio::spawn(async move {
        while let Some(Ok(q)) = inbound.next().await {
            if requests.send(q).await.is_err() {
                return;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(p.responses))))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        pipe(&self.sotw, request.into_inner())
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        pipe(&self.delta, request.into_inner())
    }
}

fn cluster_name(i: usize) -> String {
    format!("outbound|8080||svc-{i}.bench.svc.cluster.local")
}

fn cluster(i: usize) -> Any {
    pack_any(Cluster {
        name: cluster_name(i),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            eds_config: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource::default(),
                )),
                ..Default::default()
            }),
            service_name: String::new(),
        }),
        ..Default::default()
    })
}

fn assignment(i: usize, per_cluster: usize, port_base: u32) -> Any {
    let endpoints = (0..per_cluster)
        .map(|j| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: format!("10.{}.{}.{}", (i >> 8) & 0xff, i & 0xff, j % 250 + 1),
                        port_specifier: Some(socket_address::PortSpecifier::PortValue(
                            port_base + j as u32,
                        )),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    pack_any(ClusterLoadAssignment {
        cluster_name: cluster_name(i),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Resident set size in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn endpoint_count(s: &ConfigSnapshot) -> usize {
    s.endpoints.values().map(|c| c.endpoint_count()).sum()
}

async fn wait_until(client: &XdsClient, cond: impl Fn(&ConfigSnapshot) -> bool) {
    let mut rx = client.watch();
    loop {
        if cond(&rx.borrow_and_update()) {
            return;
        }
        rx.changed().await.expect("client running");
    }
}

async fn start_server(ads: Ads) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(
                AggregatedDiscoveryServiceServer::new(ads)
                    .max_decoding_message_size(256 << 20)
                    .max_encoding_message_size(256 << 20),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

fn client(addr: SocketAddr, protocol: Protocol) -> XdsClient {
    let config = XdsClientConfig {
        protocol,
        wildcard_clusters: true,
        max_message_size: 256 << 20,
        ..Default::default()
    };
    XdsClient::new(
        config,
        channel::insecure(&format!("http://{addr}")).expect("uri"),
    )
}

struct Sizes {
    clusters: usize,
    per_cluster: usize,
    rounds: usize,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn full_state_sotw(sizes: &Sizes) {
    let clusters: Vec<Any> = (0..sizes.clusters).map(cluster).collect();
    let assignments: Vec<Any> = (0..sizes.clusters)
        .map(|i| assignment(i, sizes.per_cluster, 8000))
        .collect();
    let ads = Ads::default();
    let (req_tx, mut requests) = mpsc::channel(64);
    let (resp_tx, responses) = mpsc::channel(4);
    *ads.sotw.lock().unwrap() = Some(Pipe {
        requests: req_tx,
        responses,
    });
    let addr = start_server(ads).await;
    let before = rss();
    let client = client(addr, Protocol::StateOfTheWorld);
    // CDS (wildcard) request.
    let first = requests.recv().await.expect("CDS request");
    assert_eq!(first.type_url, CDS);
    let start = Instant::now();
    resp_tx
        .send(Ok(DiscoveryResponse {
            version_info: "1".into(),
            resources: clusters,
            type_url: CDS.into(),
            nonce: "c1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    // Wait for the EDS subscription, then send every assignment.
    loop {
        let q = requests.recv().await.expect("request");
        if q.type_url == EDS && q.resource_names.len() == sizes.clusters {
            break;
        }
    }
    resp_tx
        .send(Ok(DiscoveryResponse {
            version_info: "1".into(),
            resources: assignments,
            type_url: EDS.into(),
            nonce: "e1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let total = sizes.clusters * sizes.per_cluster;
    wait_until(&client, |s| endpoint_count(s) == total).await;
    let elapsed = start.elapsed();
    let grown = rss().saturating_sub(before);
    println!(
        "full state (SotW): {} clusters, {} endpoints applied in {:.1} ms; RSS +{:.1} MiB = {:.0} B/endpoint",
        sizes.clusters,
        total,
        elapsed.as_secs_f64() * 1e3,
        grown as f64 / (1 << 20) as f64,
        grown as f64 / total as f64
    );
    drop(client);
}

async fn delta_full_state_and_changes(sizes: &Sizes) {
    let clusters: Vec<Resource> = (0..sizes.clusters)
        .map(|i| Resource {
            name: cluster_name(i),
            version: "1".into(),
            resource: Some(cluster(i)),
            ..Default::default()
        })
        .collect();
    let assignments: Vec<Resource> = (0..sizes.clusters)
        .map(|i| Resource {
            name: cluster_name(i),
            version: "1".into(),
            resource: Some(assignment(i, sizes.per_cluster, 8000)),
            ..Default::default()
        })
        .collect();
    let ads = Ads::default();
    let (req_tx, mut requests) = mpsc::channel(64);
    let (resp_tx, responses) = mpsc::channel(4);
    *ads.delta.lock().unwrap() = Some(Pipe {
        requests: req_tx,
        responses,
    });
    let addr = start_server(ads).await;
    let before = rss();
    let client = client(addr, Protocol::Delta);
    let first = requests.recv().await.expect("CDS request");
    assert_eq!(first.resource_names_subscribe, ["*"]);
    let start = Instant::now();
    resp_tx
        .send(Ok(DeltaDiscoveryResponse {
            system_version_info: "1".into(),
            resources: clusters,
            type_url: CDS.into(),
            nonce: "c1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    loop {
        let q = requests.recv().await.expect("request");
        if q.type_url == EDS && q.resource_names_subscribe.len() == sizes.clusters {
            break;
        }
    }
    resp_tx
        .send(Ok(DeltaDiscoveryResponse {
            system_version_info: "1".into(),
            resources: assignments,
            type_url: EDS.into(),
            nonce: "e1".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let total = sizes.clusters * sizes.per_cluster;
    wait_until(&client, |s| endpoint_count(s) == total).await;
    let elapsed = start.elapsed();
    let grown = rss().saturating_sub(before);
    println!(
        "full state (delta): {} clusters, {} endpoints applied in {:.1} ms; RSS +{:.1} MiB = {:.0} B/endpoint",
        sizes.clusters,
        total,
        elapsed.as_secs_f64() * 1e3,
        grown as f64 / (1 << 20) as f64,
        grown as f64 / total as f64
    );

    // Drain ACKs in the background so the request queue never fills.
    tokio::spawn(async move { while requests.recv().await.is_some() {} });

    let mut samples = Vec::with_capacity(sizes.rounds);
    for round in 0..sizes.rounds {
        let i = (round * 7919) % sizes.clusters;
        let name = cluster_name(i);
        let port = 20000 + round as u32;
        let resource = Resource {
            name: name.clone(),
            version: format!("r{round}"),
            resource: Some(assignment(i, sizes.per_cluster, port)),
            ..Default::default()
        };
        let t = Instant::now();
        resp_tx
            .send(Ok(DeltaDiscoveryResponse {
                system_version_info: format!("r{round}"),
                resources: vec![resource],
                type_url: EDS.into(),
                nonce: format!("r{round}"),
                ..Default::default()
            }))
            .await
            .unwrap();
        let port = port as u16;
        wait_until(&client, |s| {
            s.endpoints.get(name.as_str()).is_some_and(|c| {
                c.localities
                    .first()
                    .and_then(|l| l.endpoints.first())
                    .is_some_and(
                        |e| matches!(e.address, EndpointAddress::Socket(a) if a.port() == port),
                    )
            })
        })
        .await;
        samples.push(t.elapsed());
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "one-endpoint change (delta, {} rounds over {} clusters): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        sizes.rounds,
        sizes.clusters,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        samples
            .last()
            .copied()
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
            * 1e3,
    );
}

fn main() {
    // `cargo test --benches` runs benches with no `--bench`: keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let sizes = Sizes {
        clusters: env("XDS_BENCH_CLUSTERS", if quick { 100 } else { 10_000 }),
        per_cluster: env("XDS_BENCH_ENDPOINTS_PER_CLUSTER", 10),
        rounds: env("XDS_BENCH_ROUNDS", if quick { 10 } else { 1_000 }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // Each run's RSS figure is clean only when it is the first in the process:
    // `XDS_BENCH_ONLY=sotw|delta` runs one.
    let only = std::env::var("XDS_BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        if only != "sotw" {
            delta_full_state_and_changes(&sizes).await;
        }
        if only != "delta" {
            full_state_sotw(&sizes).await;
        }
    });
}
