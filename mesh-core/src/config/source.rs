//! [`ConfigSource`] and the simplest implementation, [`StaticSource`].

use std::sync::Arc;

use tokio::sync::watch;

use super::ConfigSnapshot;

/// Anything that provides mesh config: the xDS client, the embedded control plane
/// in-process, a static config, a test.
///
/// Consumers read snapshots from [`snapshots`](Self::snapshots) (the current one with
/// `borrow()`, changes with `changed()`) and rebuild what they derive from them (routers,
/// balancers, pools) off the request path. A source that fetches lazily (xDS) starts
/// fetching a target when a consumer calls [`demand`](Self::demand); a source that has
/// everything (static) ignores it.
pub trait ConfigSource: Send + Sync + 'static {
    /// The current snapshot and every later one. Never closed while the source lives; a
    /// source keeps its last good snapshot while its upstream is unreachable or sends
    /// invalid config.
    fn snapshots(&self) -> watch::Receiver<Arc<ConfigSnapshot>>;

    /// Asks for the client listener `listener` (`host:port`) and everything it refers to
    /// (routes, clusters, endpoints). Idempotent, cheap and non-blocking; the result
    /// arrives in a later snapshot.
    fn demand(&self, listener: &str) {
        let _ = listener;
    }

    /// `true` once every demanded resource has had its first answer (it arrived, or is
    /// known not to exist). Static sources are always ready.
    fn readiness(&self) -> watch::Receiver<bool>;
}

impl<T: ConfigSource + ?Sized> ConfigSource for Arc<T> {
    fn snapshots(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        (**self).snapshots()
    }

    fn demand(&self, listener: &str) {
        (**self).demand(listener)
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        (**self).readiness()
    }
}

/// Config built in code (or decoded from a file by the caller), replaced as a whole with
/// [`StaticSource::set`]. Cheap to clone; clones publish to the same watchers.
///
/// ```
/// use mesh_core::config::{ConfigSnapshot, ConfigSource, StaticSource};
///
/// let source = StaticSource::new(ConfigSnapshot::default());
/// let mut rx = source.snapshots();
/// source.update(|s| { s.insert_endpoints(Default::default()); });
/// assert!(rx.has_changed().unwrap());
/// assert_eq!(rx.borrow_and_update().endpoints.len(), 1);
/// ```
#[derive(Clone, Debug)]
pub struct StaticSource {
    snapshots: Arc<watch::Sender<Arc<ConfigSnapshot>>>,
    ready: Arc<watch::Sender<bool>>,
}

impl StaticSource {
    /// A source serving `snapshot`.
    pub fn new(snapshot: ConfigSnapshot) -> Self {
        Self {
            snapshots: Arc::new(watch::Sender::new(Arc::new(snapshot))),
            ready: Arc::new(watch::Sender::new(true)),
        }
    }

    /// Replaces the whole config.
    pub fn set(&self, snapshot: ConfigSnapshot) {
        self.snapshots.send_replace(Arc::new(snapshot));
    }

    /// Edits a copy of the current config and publishes it (unchanged resources keep
    /// their `Arc`s).
    pub fn update(&self, edit: impl FnOnce(&mut ConfigSnapshot)) {
        self.snapshots
            .send_modify(|current| edit(Arc::make_mut(current)));
    }

    /// The current snapshot.
    pub fn current(&self) -> Arc<ConfigSnapshot> {
        self.snapshots.borrow().clone()
    }
}

impl ConfigSource for StaticSource {
    fn snapshots(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.snapshots.subscribe()
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }
}
