//! The xDS server's limits, each against a real gRPC client over a real connection:
//! message size, the per-node resource cache, the NACK log, unknown type URLs, and (when
//! callers are authenticated by mTLS) a node reading only its own config.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use mesh_control::ca::IstioCaServer;
use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
use mesh_core::{SpiffeId, TrustDomain};
use mesh_tls::dev_ca::DevCa;
use mesh_xds::client::channel;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";

/// One cluster per node, named after the node: the node id is the cache key, so every
/// distinct node costs one generated set.
struct PerNode;
impl Generator<()> for PerNode {
    fn node_key(&self, node: &Node) -> String {
        node.id.clone()
    }
    fn generate(&self, node: &Node, _: &()) -> Result<Resources, GenerateError> {
        let mut r = Resources::default();
        r.add(
            node.id.clone(),
            Cluster {
                name: node.id.clone(),
                ..Default::default()
            },
        );
        Ok(r)
    }
}

fn server(options: ServerOptions) -> XdsServer<()> {
    let (tx, rx) = watch::channel(Arc::new(()));
    // The config never changes; a dropped sender would mean "shutting down".
    std::mem::forget(tx);
    XdsServer::new(PerNode, rx, options)
}

async fn serve_plaintext(server: &XdsServer<()>) -> Channel {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.clone().serve(listener, std::future::pending()));
    channel::insecure(&url).unwrap().into_inner()
}

fn node(id: &str, ns: &str, sa: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    Node {
        id: id.into(),
        metadata: Some(Struct {
            fields: [("NAMESPACE", s(ns)), ("SERVICE_ACCOUNT", s(sa))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }),
        ..Default::default()
    }
}

/// An open SotW stream: send requests, read responses or the final status.
struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: tonic::Streaming<DiscoveryResponse>,
}

impl Stream {
    async fn open(channel: Channel) -> Result<Stream, tonic::Status> {
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Stream { tx, rx })
    }

    async fn ask(&mut self, request: DiscoveryRequest) -> Result<DiscoveryResponse, tonic::Status> {
        let _ = self.tx.send(request).await;
        match tokio::time::timeout(Duration::from_secs(5), self.rx.next()).await {
            Ok(Some(r)) => r,
            Ok(None) => Err(tonic::Status::unknown("stream ended")),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer in 5 s")),
        }
    }
}

fn cds(node: Option<Node>, names: Vec<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: CDS.into(),
        resource_names: names,
        ..Default::default()
    }
}

#[tokio::test]
async fn messages_over_4_mib_are_refused_by_default_and_the_limit_is_configurable() {
    let big = |n: usize| cds(Some(node("a", "default", "a")), vec!["x".repeat(n)]);
    let channel = serve_plaintext(&server(ServerOptions::default())).await;
    let mut s = Stream::open(channel.clone()).await.unwrap();
    let err = s.ask(big(5 << 20)).await.unwrap_err();
    assert!(
        err.message().contains("message length too large"),
        "{err:?}"
    );
    // Under the limit: answered.
    let mut s = Stream::open(channel).await.unwrap();
    s.ask(big(3 << 20)).await.unwrap();

    let channel = serve_plaintext(&server(ServerOptions {
        max_message_size: 16 << 20,
        ..Default::default()
    }))
    .await;
    let mut s = Stream::open(channel).await.unwrap();
    s.ask(big(5 << 20)).await.unwrap();
}

#[tokio::test]
async fn the_per_node_cache_is_bounded_and_evicted_nodes_still_get_config() {
    let server = server(ServerOptions {
        max_cached_nodes: 4,
        ..Default::default()
    });
    let channel = serve_plaintext(&server).await;
    for i in 0..20 {
        let id = format!("node-{i}");
        let mut s = Stream::open(channel.clone()).await.unwrap();
        let r = s
            .ask(cds(Some(node(&id, "default", "a")), vec![]))
            .await
            .unwrap();
        assert_eq!(r.resources.len(), 1, "{id}");
        assert!(server.cached_nodes() <= 4, "{}", server.cached_nodes());
    }
    assert_eq!(server.cached_nodes(), 4);
    // node-0 was evicted long ago: regenerated on demand.
    let mut s = Stream::open(channel).await.unwrap();
    let r = s
        .ask(cds(Some(node("node-0", "default", "a")), vec![]))
        .await
        .unwrap();
    assert_eq!(r.resources.len(), 1);
}

#[tokio::test]
async fn the_nack_log_keeps_the_last_few_per_node_and_type_with_short_reasons() {
    let server = server(ServerOptions::default());
    let channel = serve_plaintext(&server).await;
    let mut s = Stream::open(channel).await.unwrap();
    let first = s
        .ask(cds(Some(node("nacker", "default", "a")), vec![]))
        .await
        .unwrap();
    for i in 0..50 {
        let nack = DiscoveryRequest {
            type_url: CDS.into(),
            response_nonce: first.nonce.clone(),
            version_info: String::new(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: format!("{i}:{}", "r".repeat(100_000)),
                details: vec![],
            }),
            ..Default::default()
        };
        s.tx.send(nack).await.unwrap();
    }
    // Wait until the last NACK is recorded.
    tokio::time::timeout(Duration::from_secs(5), async {
        while !server
            .status()
            .nacks
            .iter()
            .any(|n| n.reason.starts_with("49:"))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let nacks = server.status().nacks;
    assert_eq!(nacks.len(), 8, "the last 8 of this node and type");
    assert!(
        nacks[0].reason.starts_with("42:"),
        "{}",
        &nacks[0].reason[..10]
    );
    for n in &nacks {
        assert!(n.reason.len() < 1100, "{}", n.reason.len());
        assert!(
            n.reason.ends_with("(100003 bytes, truncated)"),
            "{}",
            &n.reason[1000..]
        );
    }
    let client = &server.status().clients[0];
    let last = client.types["CDS"].last_nack.as_deref().unwrap();
    assert!(last.len() < 1100);
}

#[tokio::test]
async fn unknown_type_urls_end_the_stream_naming_the_type() {
    let channel = serve_plaintext(&server(ServerOptions::default())).await;
    let mut s = Stream::open(channel).await.unwrap();
    let err = s
        .ask(DiscoveryRequest {
            node: Some(node("a", "default", "a")),
            type_url: "type.googleapis.com/envoy.Bogus".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("unknown xDS type URL \"type.googleapis.com/envoy.Bogus\""),
        "{err:?}"
    );
}

/// xDS served next to the CA on one mTLS port (as istiod's 15012): the caller's
/// certificate names who it is, and a node may only read its own config.
#[tokio::test]
async fn with_mtls_a_node_reads_only_its_own_config() {
    let ca = Arc::new(DevCa::new(TrustDomain::new("cluster.local").unwrap()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let parts = IstioCaServer::new(ca.clone()).into_parts(listener).unwrap();
    let url = format!("https://{}", parts.local_addr);
    let xds = server(ServerOptions::default());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(parts.service)
            .add_service(xds.service())
            .serve_with_incoming(parts.incoming),
    );
    let provider = mesh_tls::config::default_provider();
    let connect = |client_id: Option<&str>| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(parts.root.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client_id {
            Some(id) => {
                let creds = ca
                    .issue(&SpiffeId::new(id).unwrap(), Duration::from_secs(3600))
                    .unwrap();
                builder
                    .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())
                    .unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        channel::tls(&url, Arc::new(config), Some("localhost"))
            .unwrap()
            .into_inner()
    };
    let reviews = "spiffe://cluster.local/ns/default/sa/reviews";
    let ask = |channel: Channel, node: Node| async move {
        let mut s = Stream::open(channel).await?;
        s.ask(cds(Some(node), vec![])).await
    };

    // Its own node: served.
    let own = node(
        "sidecar~10.0.0.1~reviews-1.default~default.svc.cluster.local",
        "default",
        "reviews",
    );
    let r = ask(connect(Some(reviews)), own.clone()).await.unwrap();
    assert_eq!(r.resources.len(), 1);

    // Another service account's node.
    let err = ask(connect(Some(reviews)), node("x", "default", "ratings"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("claims service account \"ratings\"")
            && err.message().contains(reviews),
        "{err:?}"
    );
    // Another namespace's node (namespace from the node id when the metadata has none).
    let err = ask(
        connect(Some(reviews)),
        Node {
            id: "sidecar~10.0.0.2~db-1.prod~prod.svc.cluster.local".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("claims namespace \"prod\""),
        "{err:?}"
    );
    // No client certificate at all.
    let err = ask(connect(None), own).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("client certificate"), "{err:?}");
}
