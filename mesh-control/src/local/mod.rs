//! The embedded control plane in process: a [`ConfigSource`] for one workload that runs the
//! xDS server's generators for the workload's node and decodes what they produce through
//! mesh-xds's translation, without gRPC, without a port.
//!
//! On every valid config change (a [`ConfigWatcher`]'s, or a fixed [`MeshConfig`]) a
//! [`LocalSource`] generates the node's resources with the same [`Generator`] the
//! [`XdsServer`](crate::xds_server::XdsServer) uses ([`MeshGenerator`]: the proxyless
//! resources for a `GENERATOR: grpc` node), decodes each changed one with
//! [`mesh_xds::decode`], and publishes a [`ConfigSnapshot`]:
//!
//! - **Same validation, same rejections.** A resource the translation rejects is left out,
//!   or keeps its last good version, and is logged at WARN with the message an xDS client
//!   would NACK with (`rejected 1 of 12 CDS resources (version "…"):` then one line per
//!   resource, `CDS "outbound|80||a.b": <the rule broken>`); [`LocalSource::status`] shows
//!   it `NACKED` with that reason.
//! - **On demand, like an xDS subscription.** The snapshot holds the demanded listeners
//!   ([`ConfigSource::demand`]) and what they reference (route configurations, clusters,
//!   endpoints), exactly what an `XdsClient` subscribed to the same listeners holds. The
//!   generator produces everything for the node anyway (as istiod's proxyless generator does
//!   for a wildcard subscriber); [`LocalOptions::wildcard`] serves all of it, like an
//!   `XdsClient` with wildcard listeners and clusters. A demand is answered before
//!   `demand` returns, once the first generation is in.
//! - **Ready** ([`ConfigSource::readiness`]) once the first generation is published; a
//!   listener the node does not have is simply absent (`DOES_NOT_EXIST` in the status).
//! - **Last good config.** The watcher publishes only valid directories, so an invalid
//!   edit changes nothing; a failed generation keeps the previous snapshot.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_control::Error> {
//! use mesh_control::istio::WatchOptions;
//! use mesh_control::local::{LocalOptions, LocalSource};
//! use mesh_core::config::ConfigSource;
//! use mesh_xds::bootstrap::IstioNode;
//!
//! let node = IstioNode {
//!     pod_name: "productpage-v1".into(),
//!     service_account: "productpage".into(),
//!     ..Default::default()
//! };
//! let source = LocalSource::watch_dir(
//!     "examples/config/bookinfo",
//!     WatchOptions::default(),
//!     node.node_proto(),
//!     LocalOptions::default(),
//! )
//! .await?;
//! source.demand("reviews.default.svc.cluster.local:9080");
//! source.readiness().wait_for(|r| *r).await.ok();
//! let snapshot = source.snapshots().borrow().clone();
//! assert!(snapshot.route_config_of("reviews.default.svc.cluster.local:9080").is_some());
//! # Ok(()) }
//! ```

mod catalog;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_xds::client::{ClientStatus, ResourceState, ResourceStatus, listener_name_for_target};
use mesh_xds::resource::ResourceType;
use mesh_xds::translate::Dialect;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::generate::{GeneratorOptions, MeshGenerator, NodeKind};
use crate::istio::{ConfigWatcher, MeshConfig, WatchOptions, WatchStatus};
use crate::xds_server::{Generator, VersionedResources};
use catalog::{Catalog, same_maps};

/// Settings of a [`LocalSource`] running Istio's generators.
#[derive(Clone, Debug, Default)]
pub struct LocalOptions {
    /// The generators' settings (trust domain, default connect timeout): give the ones the
    /// control plane serving the other workloads uses.
    pub generator: GeneratorOptions,
    /// Serve everything generated for the node (every listener and cluster and what they
    /// reference), like an xDS client with wildcard listeners and clusters, instead of the
    /// demanded listeners and what they reference.
    pub wildcard: bool,
}

/// A [`ConfigSource`] for one workload, fed by the embedded control plane in this process
/// (see the [module docs](self)). Cheap to clone; clones share everything. Generation stops
/// when the last clone is dropped.
#[derive(Clone)]
pub struct LocalSource {
    inner: Arc<Inner>,
}

struct Inner {
    node: Node,
    wildcard: bool,
    state: Mutex<State>,
    snapshots: watch::Sender<Arc<ConfigSnapshot>>,
    ready: watch::Sender<bool>,
    /// Follows the config; aborted when the source is dropped.
    task: Mutex<Option<JoinHandle<()>>>,
    /// The directory watcher, when the source owns it.
    watcher: Option<ConfigWatcher>,
}

#[derive(Default)]
struct State {
    /// The decoded resources of the last generation (`None` before the first).
    catalog: Option<Arc<Catalog>>,
    /// Listener names demanded.
    demanded: BTreeSet<Arc<str>>,
    /// Generations applied.
    generations: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self.task.get_mut().ok().and_then(Option::take) {
            t.abort();
        }
    }
}

impl std::fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSource")
            .field("node", &self.inner.node.id)
            .field("wildcard", &self.inner.wildcard)
            .field("generations", &self.lock().generations)
            .finish_non_exhaustive()
    }
}

impl LocalSource {
    /// A source for `node` following `config` (e.g. [`ConfigWatcher::config`]), with
    /// Istio's generators. `node` is what the workload would send an xDS server: a
    /// proxyless node (`GENERATOR: grpc`, e.g. `IstioNode::node_proto`).
    ///
    /// # Panics
    /// Outside a Tokio runtime (a task follows `config`).
    pub fn new(
        config: watch::Receiver<Arc<MeshConfig>>,
        node: Node,
        options: LocalOptions,
    ) -> Self {
        let generator = MeshGenerator::new(options.generator);
        Self::start(config, node, generator, options.wildcard, None)
    }

    /// A source for `node` serving one fixed config.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn fixed(config: MeshConfig, node: Node, options: LocalOptions) -> Self {
        // The sender goes away: the config never changes, the last generation stays.
        let (_, config) = watch::channel(Arc::new(config));
        Self::new(config, node, options)
    }

    /// A source for `node` watching the Istio YAML in `dir` (which must be valid now; later
    /// invalid edits are logged and leave the last good config in place).
    pub async fn watch_dir(
        dir: impl Into<PathBuf>,
        watch: WatchOptions,
        node: Node,
        options: LocalOptions,
    ) -> Result<Self, crate::Error> {
        let watcher = ConfigWatcher::start(dir, watch).await?;
        let generator = MeshGenerator::new(options.generator);
        let config = watcher.config();
        Ok(Self::start(
            config,
            node,
            generator,
            options.wildcard,
            Some(watcher),
        ))
    }

    /// A source for `node` following `config` with any generator (several sources sharing
    /// one [`MeshGenerator`] generate the proxyless client side once per config).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn with_generator<C: Send + Sync + 'static>(
        config: watch::Receiver<Arc<C>>,
        node: Node,
        generator: impl Generator<C>,
        wildcard: bool,
    ) -> Self {
        Self::start(config, node, generator, wildcard, None)
    }

    fn start<C: Send + Sync + 'static>(
        config: watch::Receiver<Arc<C>>,
        node: Node,
        generator: impl Generator<C>,
        wildcard: bool,
        watcher: Option<ConfigWatcher>,
    ) -> Self {
        if NodeKind::of(&node) != NodeKind::Proxyless {
            tracing::warn!(
                node = %node.id,
                "a local source decodes client resources: give it a proxyless node (GENERATOR: grpc)"
            );
        }
        let inner = Arc::new(Inner {
            node: node.clone(),
            wildcard,
            state: Mutex::new(State::default()),
            snapshots: watch::Sender::new(Arc::default()),
            ready: watch::Sender::new(false),
            task: Mutex::new(None),
            watcher,
        });
        let task = tokio::spawn(follow(
            Arc::downgrade(&inner),
            config,
            Arc::new(generator),
            node,
        ));
        *inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Self { inner }
    }

    /// The node the resources are generated for.
    pub fn node(&self) -> &Node {
        &self.inner.node
    }

    /// What an xDS client holding the same resources would report (for the admin endpoint
    /// and CSDS): every demanded listener and what it references, `ACKED`, `NACKED` with
    /// the reason, or `DOES_NOT_EXIST`; before the first generation the demanded listeners
    /// are `REQUESTED`. There is no stream: `connected` is true once the first generation
    /// is in (nothing can cut the source off its config), and the versions are content
    /// hashes (per resource and per type, as the xDS server's).
    pub fn status(&self) -> ClientStatus {
        let state = self.lock();
        let ready = *self.inner.ready.borrow();
        match &state.catalog {
            Some(c) => c.status(&state.demanded, self.inner.wildcard, ready),
            None => ClientStatus {
                connected: false,
                ready,
                resources: state
                    .demanded
                    .iter()
                    .map(|n| ResourceStatus {
                        kind: ResourceType::Listener,
                        name: n.to_string(),
                        state: ResourceState::Requested,
                        version: String::new(),
                        last_error: None,
                        last_update: None,
                        has_value: false,
                    })
                    .collect(),
                type_versions: Vec::new(),
            },
        }
    }

    /// Config generations applied so far (0 before the first).
    pub fn generations(&self) -> u64 {
        self.lock().generations
    }

    /// The directory watcher's status (rejected edits and why), for a source made with
    /// [`LocalSource::watch_dir`].
    pub fn watch_status(&self) -> Option<watch::Receiver<WatchStatus>> {
        self.inner.watcher.as_ref().map(ConfigWatcher::status)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the snapshot for the current catalog and demands, if it differs. Called
    /// with the state locked, so publications are in order; the snapshot is built outside
    /// the watch's lock, so readers never wait for it.
    fn publish(&self, state: &State) {
        let Some(catalog) = &state.catalog else {
            return;
        };
        let current = self.snapshots.borrow().clone();
        let next = catalog.snapshot(&state.demanded, self.wildcard, &current);
        if !same_maps(&next, &current) {
            self.snapshots.send_replace(Arc::new(next));
        }
    }

    fn install(&self, catalog: Arc<Catalog>) {
        let mut state = self.lock();
        state.catalog = Some(catalog);
        state.generations += 1;
        self.publish(&state);
        // After the snapshot: whoever sees ready sees the config.
        self.ready.send_if_modified(|r| !std::mem::replace(r, true));
    }
}

impl ConfigSource for LocalSource {
    fn snapshots(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.inner.snapshots.subscribe()
    }

    /// Adds `listener` (`host:port`, `xds:///host:port`, or a server listener's name) to the
    /// snapshot with what it references; answered before this returns once the first
    /// generation is in. It publishes synchronously: do not call it while holding a
    /// `borrow()` of this source's snapshots.
    fn demand(&self, listener: &str) {
        let Ok(name) = listener_name_for_target(listener) else {
            tracing::debug!(listener, "not a listener name; not demanding");
            return;
        };
        let mut state = self.lock();
        if state.demanded.contains(name) {
            return;
        }
        state.demanded.insert(Arc::from(name));
        if !self.inner.wildcard {
            self.inner.publish(&state);
        }
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }
}

/// Generates and decodes on every config change until the source is dropped.
async fn follow<C: Send + Sync + 'static>(
    inner: Weak<Inner>,
    mut config: watch::Receiver<Arc<C>>,
    generator: Arc<dyn Generator<C>>,
    node: Node,
) {
    let mut previous: Option<Arc<Catalog>> = None;
    loop {
        let current = config.borrow_and_update().clone();
        let (generator2, node2, previous2) = (generator.clone(), node.clone(), previous.clone());
        // Generating and decoding a large mesh takes a while: off the async threads.
        let built = tokio::task::spawn_blocking(move || {
            let resources = generator2.generate(&node2, &current)?;
            Ok::<_, crate::xds_server::GenerateError>(Catalog::next(
                previous2.as_deref(),
                &VersionedResources::new(resources),
                Dialect::of_node(&node2),
            ))
        })
        .await;
        match built {
            Ok(Ok((catalog, rejected))) => {
                for r in &rejected {
                    tracing::warn!(
                        node = %node.id,
                        "generated resources rejected by the xDS translation (the last good version of each keeps serving): {r}"
                    );
                }
                let catalog = Arc::new(catalog);
                previous = Some(catalog.clone());
                let Some(inner) = inner.upgrade() else { return };
                inner.install(catalog);
            }
            Ok(Err(e)) => {
                tracing::warn!(node = %node.id, error = %e, "generation failed; keeping the previous config");
            }
            Err(e) => tracing::error!(node = %node.id, error = %e, "the generator panicked"),
        }
        if config.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
