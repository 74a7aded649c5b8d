//! The xDS server: Aggregated Discovery Service over tonic, state-of-the-world and delta.
//!
//! A pluggable [`Generator`] turns the current config (any type `C`, published on a
//! `tokio::sync::watch` channel) into [`Resources`] for a node. Nodes with the same
//! [`Generator::node_key`] share one [`VersionedResources`] per config generation (generated
//! once), so a thousand proxyless clients cost one generation. Every stream:
//! - tracks subscriptions per type (wildcard and named, per the xDS spec, including the
//!   legacy empty-list wildcard), versions and nonces;
//! - records ACKs and NACKs (NACK reasons are logged and kept, see [`ServerStatus`]);
//! - pushes on config change, only what changed for that client (SotW: the types whose
//!   content changed; delta: the resources whose version changed, and removals), clusters
//!   and endpoints before listeners and routes;
//! - ends with its gRPC stream (the task owns everything; nothing is left behind) and sends
//!   through a bounded channel, so a slow client slows only its own stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use envoy_types::pb::envoy::config::core::v3::Node;
//! use envoy_types::pb::envoy::config::cluster::v3::Cluster;
//! use mesh_control::xds_server::{GenerateError, Generator, Resources, ServerOptions, XdsServer};
//!
//! /// Every node gets one cluster per name in the config.
//! struct Clusters;
//! impl Generator<Vec<String>> for Clusters {
//!     fn node_key(&self, _node: &Node) -> String { String::new() }
//!     fn generate(&self, _node: &Node, names: &Vec<String>) -> Result<Resources, GenerateError> {
//!         let mut r = Resources::default();
//!         for n in names {
//!             r.add(n.clone(), Cluster { name: n.clone(), ..Default::default() });
//!         }
//!         Ok(r)
//!     }
//! }
//!
//! let (tx, rx) = tokio::sync::watch::channel(Arc::new(vec!["a".to_string()]));
//! let server = XdsServer::new(Clusters, rx, ServerOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15010").await?;
//! tokio::spawn(server.clone().serve(listener, std::future::pending()));
//! tx.send(Arc::new(vec!["a".into(), "b".into()]))?; // pushed to every client
//! # Ok(()) }
//! ```

mod auth;
mod delta;
mod sotw;
mod status;
mod stream;
mod versioned;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::net::TcpListener;
use tokio::sync::{OnceCell, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use status::{ClientSync, NackRecord, ServerStatus, StreamKind, TypeSync};
pub use versioned::{
    Resources, SharedResources, VersionedResource, VersionedResources, VersionedType,
};

use status::Registry;

/// A generator failed for a node; the node keeps its previous resources.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GenerateError(pub String);

/// Turns config into resources for a node (istiod's `XdsResourceGenerator`).
pub trait Generator<C>: Send + Sync + 'static {
    /// Nodes with equal keys get identical resources, generated once per config
    /// generation (e.g. `"grpc"` for every proxyless client).
    fn node_key(&self, node: &Node) -> String;

    /// Every resource of every type for `node`.
    fn generate(&self, node: &Node, config: &C) -> Result<Resources, GenerateError>;
}

/// Server settings. The limits bound what a client (or many) can make the server hold.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Responses queued per stream before the stream's task waits for the client.
    pub stream_queue: usize,
    /// Largest gRPC message accepted or sent (default 4 MiB, gRPC's default; raise it for
    /// a very large SotW state).
    pub max_message_size: usize,
    /// HTTP/2 keepalive ping interval.
    pub keepalive: Duration,
    /// Generated resource sets kept per config generation, one per distinct
    /// [`Generator::node_key`] (default 1024); beyond it the least recently used is
    /// dropped (and regenerated if asked for again), so distinct node metadata cannot
    /// grow memory without bound.
    pub max_cached_nodes: usize,
    /// NACKs remembered in [`ServerStatus::nacks`] (default 256).
    pub nack_log: usize,
    /// Of those, at most this many per node and type (default 8; older ones go first).
    pub nacks_per_node_type: usize,
    /// NACK reasons longer than this many bytes are truncated (default 1024).
    pub max_nack_reason: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            stream_queue: 16,
            max_message_size: 4 << 20,
            keepalive: Duration::from_secs(30),
            max_cached_nodes: 1024,
            nack_log: 256,
            nacks_per_node_type: 8,
            max_nack_reason: 1024,
        }
    }
}

/// A config and the generation number it was published as.
struct Versioned<C> {
    generation: u64,
    config: Arc<C>,
}

impl<C> Clone for Versioned<C> {
    fn clone(&self) -> Self {
        Versioned {
            generation: self.generation,
            config: self.config.clone(),
        }
    }
}

type CacheCell = Arc<OnceCell<Option<SharedResources>>>;

/// Generated resources by node key for one generation, bounded (least recently used out).
struct Cache {
    generation: u64,
    cells: HashMap<String, (CacheCell, u64)>,
    clock: u64,
}

impl Cache {
    fn cell(&mut self, key: &str, cap: usize) -> CacheCell {
        self.clock += 1;
        let clock = self.clock;
        if let Some((cell, used)) = self.cells.get_mut(key) {
            *used = clock;
            return cell.clone();
        }
        if self.cells.len() >= cap.max(1)
            && let Some(oldest) = self
                .cells
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            self.cells.remove(&oldest);
        }
        let cell = CacheCell::default();
        self.cells.insert(key.to_owned(), (cell.clone(), clock));
        cell
    }
}

struct Inner<C> {
    generator: Arc<dyn Generator<C>>,
    config: watch::Receiver<Versioned<C>>,
    cache: Mutex<Cache>,
    registry: Registry,
    options: ServerOptions,
    next_stream: AtomicU64,
    forwarder: tokio::task::JoinHandle<()>,
}

impl<C> Drop for Inner<C> {
    fn drop(&mut self) {
        self.forwarder.abort();
    }
}

/// The ADS server. Cheap to clone (all clones share streams, cache and status).
pub struct XdsServer<C> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for XdsServer<C> {
    fn clone(&self) -> Self {
        XdsServer {
            inner: self.inner.clone(),
        }
    }
}

impl<C> std::fmt::Debug for XdsServer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer")
            .field("generation", &self.inner.config.borrow().generation)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl<C: Send + Sync + 'static> XdsServer<C> {
    /// A server for the configs published on `config`, generated by `generator`.
    ///
    /// # Panics
    /// Outside a Tokio runtime (a task follows `config`).
    pub fn new(
        generator: impl Generator<C>,
        mut config: watch::Receiver<Arc<C>>,
        options: ServerOptions,
    ) -> Self {
        let first = config.borrow_and_update().clone();
        let (tx, rx) = watch::channel(Versioned {
            generation: 1,
            config: first,
        });
        let forwarder = tokio::spawn(async move {
            let mut generation = 1;
            while config.changed().await.is_ok() {
                generation += 1;
                let next = config.borrow_and_update().clone();
                if tx
                    .send(Versioned {
                        generation,
                        config: next,
                    })
                    .is_err()
                {
                    break;
                }
            }
        });
        XdsServer {
            inner: Arc::new(Inner {
                generator: Arc::new(generator),
                config: rx,
                cache: Mutex::new(Cache {
                    generation: 0,
                    cells: HashMap::new(),
                    clock: 0,
                }),
                registry: Registry::new(&options),
                options,
                next_stream: AtomicU64::new(1),
                forwarder,
            }),
        }
    }

    /// The tonic service, to add to a `tonic::transport::Server` (alongside others).
    pub fn service(&self) -> AggregatedDiscoveryServiceServer<AdsService<C>> {
        AggregatedDiscoveryServiceServer::new(AdsService {
            server: self.clone(),
        })
        .max_decoding_message_size(self.inner.options.max_message_size)
        .max_encoding_message_size(self.inner.options.max_message_size)
    }

    /// Serves ADS (plaintext) on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(self.inner.options.keepalive))
            .add_service(self.service())
            .serve_with_incoming_shutdown(incoming(listener), shutdown)
            .await
    }

    /// Stops following the config and ends every stream (clients see their streams
    /// close); new streams are refused with `UNAVAILABLE`. For shutdown.
    pub fn close(&self) {
        self.inner.forwarder.abort();
    }

    /// The generation of the config being served (1 for the first).
    pub fn generation(&self) -> u64 {
        self.inner.config.borrow().generation
    }

    /// Per-client sync status and recent NACKs.
    pub fn status(&self) -> ServerStatus {
        self.inner.registry.status(self.generation())
    }

    /// Number of connected streams.
    pub fn client_count(&self) -> usize {
        self.inner.registry.all_synced(self.generation()).0
    }

    /// Waits until at least `min_clients` streams are connected and every one of them has
    /// received the current config generation and ACKed every response.
    pub async fn synced(&self, min_clients: usize) {
        loop {
            let notified = self.inner.registry.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (n, all) = self.inner.registry.all_synced(self.generation());
            if n >= min_clients && all {
                return;
            }
            // A config change is not an ACK: poll as well, cheaply.
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Number of generated resource sets held for the current generation (at most
    /// [`ServerOptions::max_cached_nodes`]).
    pub fn cached_nodes(&self) -> usize {
        let cache = self.inner.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.cells.len()
    }

    /// The versioned resources for `node` under the current config (generated on first use).
    pub async fn resources_for(&self, node: &Node) -> Option<(u64, SharedResources)> {
        let current = self.inner.config.borrow().clone();
        self.inner
            .resources(node, &current)
            .await
            .map(|s| (current.generation, s))
    }

    fn next_stream_id(&self) -> u64 {
        self.inner.next_stream.fetch_add(1, Ordering::Relaxed)
    }
}

impl<C: Send + Sync + 'static> Inner<C> {
    /// The versioned resources of `node`'s key for `current`, generated at most once per generation.
    async fn resources(&self, node: &Node, current: &Versioned<C>) -> Option<SharedResources> {
        let key = self.generator.node_key(node);
        let cell = {
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if cache.generation != current.generation {
                cache.generation = current.generation;
                cache.cells.clear();
            }
            cache.cell(&key, self.options.max_cached_nodes)
        };
        cell.get_or_init(|| async {
            let generator = self.generator.clone();
            let config = current.config.clone();
            let node = node.clone();
            let generated = tokio::task::spawn_blocking(move || {
                generator.generate(&node, &config).map(VersionedResources::new)
            })
            .await;
            match generated {
                Ok(Ok(s)) => Some(Arc::new(s)),
                Ok(Err(e)) => {
                    tracing::warn!(%key, error = %e, "xDS generation failed; keeping the previous resources");
                    None
                }
                Err(e) => {
                    tracing::error!(%key, error = %e, "xDS generator panicked");
                    None
                }
            }
        })
        .await
        .clone()
    }
}

/// The tonic service behind [`XdsServer::service`].
pub struct AdsService<C> {
    server: XdsServer<C>,
}

impl<C> std::fmt::Debug for AdsService<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsService").finish_non_exhaustive()
    }
}

type BoxStream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<C: Send + Sync + 'static> AggregatedDiscoveryService for AdsService<C> {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        self.check_open()?;
        let peer = request.remote_addr();
        let caller = auth::Caller::of(&request);
        let (tx, rx) = tokio::sync::mpsc::channel(self.server.inner.options.stream_queue);
        let stream = self.start(peer, StreamKind::Sotw, caller);
        tokio::spawn(sotw::run(stream, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        self.check_open()?;
        let peer = request.remote_addr();
        let caller = auth::Caller::of(&request);
        let (tx, rx) = tokio::sync::mpsc::channel(self.server.inner.options.stream_queue);
        let stream = self.start(peer, StreamKind::Delta, caller);
        tokio::spawn(delta::run(stream, request.into_inner(), tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl<C: Send + Sync + 'static> AdsService<C> {
    fn check_open(&self) -> Result<(), Status> {
        if self.server.inner.forwarder.is_finished() {
            return Err(Status::unavailable("the xDS server is shutting down"));
        }
        Ok(())
    }

    fn start(
        &self,
        peer: Option<SocketAddr>,
        kind: StreamKind,
        caller: auth::Caller,
    ) -> stream::StreamCtx<C> {
        let id = self.server.next_stream_id();
        self.server.inner.registry.insert(ClientSync {
            id,
            node_id: String::new(),
            node_cluster: String::new(),
            key: String::new(),
            kind,
            peer: peer.map(|p| p.to_string()),
            connected_at: status::now(),
            generation: 0,
            types: Default::default(),
        });
        stream::StreamCtx::new(self.server.clone(), id, caller)
    }
}

/// The ADS port's connections, Nagle's algorithm off: a response written while the
/// previous one is unacknowledged would otherwise wait for the client's delayed ACK (40 ms
/// on Linux).
fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
pub(crate) mod tests;
