//! What SotW and delta streams share: the node, the resources in force, nonces, and the
//! status registry entry (removed when the stream's task ends, however it ends).

use envoy_types::pb::envoy::config::core::v3::Node;
use tokio::sync::{mpsc, watch};

use super::auth::Caller;
use super::status::{NackRecord, TypeSync, now, truncate, type_name};
use super::{SharedResources, Versioned, XdsServer};

/// Push order on a config change: clusters and endpoints before the listeners and routes
/// that refer to them (make before break), then anything else.
pub(crate) const PUSH_ORDER: [&str; 4] = [
    "type.googleapis.com/envoy.config.cluster.v3.Cluster",
    "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
    "type.googleapis.com/envoy.config.listener.v3.Listener",
    "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
];

/// Type URLs sorted by [`PUSH_ORDER`].
pub(crate) fn push_order<'a>(types: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = types.cloned().collect();
    v.sort_by_key(|t| {
        (
            PUSH_ORDER
                .iter()
                .position(|p| p == t)
                .unwrap_or(PUSH_ORDER.len()),
            t.clone(),
        )
    });
    v
}

/// The wildcard resource name.
pub(crate) const WILDCARD: &str = "*";

pub(crate) struct StreamCtx<C> {
    pub(crate) server: XdsServer<C>,
    pub(crate) id: u64,
    pub(crate) node: Option<Node>,
    pub(crate) config: watch::Receiver<Versioned<C>>,
    pub(crate) resources: Option<SharedResources>,
    caller: Caller,
    next_nonce: u64,
}

impl<C> Drop for StreamCtx<C> {
    fn drop(&mut self) {
        self.server.inner.registry.remove(self.id);
        if let Some(node) = &self.node {
            tracing::debug!(stream = self.id, node = %node.id, "xDS stream ended");
        }
    }
}

impl<C: Send + Sync + 'static> StreamCtx<C> {
    pub(crate) fn new(server: XdsServer<C>, id: u64, caller: Caller) -> Self {
        let config = server.inner.config.clone();
        StreamCtx {
            server,
            id,
            node: None,
            config,
            resources: None,
            caller,
            next_nonce: 0,
        }
    }

    /// A type this server serves: one of the xDS types of the mesh (LDS, RDS, CDS, EDS) or
    /// one the generator produced for this node. Anything else ends the stream with
    /// `INVALID_ARGUMENT` naming the type URL (a client cannot make us track arbitrary
    /// types, and a typo is not silently answered with nothing).
    pub(crate) fn check_type(&self, type_url: &str) -> Result<(), tonic::Status> {
        if mesh_xds::resource::ResourceType::from_type_url(type_url).is_some()
            || self
                .resources
                .as_ref()
                .is_some_and(|r| r.get(type_url).is_some())
        {
            return Ok(());
        }
        Err(tonic::Status::invalid_argument(format!(
            "unknown xDS type URL {:?}: this server serves LDS, RDS, CDS and EDS",
            truncate(type_url, 256)
        )))
    }

    /// The next request to handle, or `None` when the stream must end: it ended, it failed
    /// (a message over the size limit, ...), or its node may not use it; the client is told
    /// why. Takes the node from the first request, and makes the node's resources.
    pub(crate) async fn admit<R, T>(
        &mut self,
        request: Option<Result<R, tonic::Status>>,
        node: impl FnOnce(&R) -> Option<&Node>,
        tx: &mpsc::Sender<Result<T, tonic::Status>>,
    ) -> Option<R> {
        let refused = match request? {
            Ok(r) => match self.accept_node(node(&r)) {
                Ok(()) => {
                    if self.resources.is_none() {
                        self.refresh().await;
                    }
                    return Some(r);
                }
                Err(status) => status,
            },
            Err(status) => {
                tracing::debug!(stream = self.id, %status, "xDS stream error");
                status
            }
        };
        let _ = tx.send(Err(refused)).await;
        None
    }

    /// A request's type URL must be set (`missing`: the error otherwise) and served here
    /// ([`StreamCtx::check_type`]); otherwise the client is told why and `Err` ends the
    /// stream.
    pub(crate) async fn admit_type<T>(
        &self,
        type_url: &str,
        missing: &str,
        tx: &mpsc::Sender<Result<T, tonic::Status>>,
    ) -> Result<(), ()> {
        let checked = match type_url.is_empty() {
            true => Err(tonic::Status::invalid_argument(missing)),
            false => self.check_type(type_url),
        };
        if let Err(status) = checked {
            let _ = tx.send(Err(status)).await;
            return Err(());
        }
        Ok(())
    }

    /// Takes the node from the stream's first request; later requests may omit it.
    pub(crate) fn accept_node(&mut self, node: Option<&Node>) -> Result<(), tonic::Status> {
        if self.node.is_some() {
            return Ok(());
        }
        let Some(node) = node else {
            return Err(tonic::Status::invalid_argument(
                "the first request of an ADS stream must carry the node",
            ));
        };
        if let Err(status) = self.caller.check(node) {
            tracing::warn!(stream = self.id, node = %node.id, reason = status.message(), "xDS caller refused");
            return Err(status);
        }
        let key = self.server.inner.generator.node_key(node);
        self.server.inner.registry.update(self.id, |c| {
            c.node_id = node.id.clone();
            c.node_cluster = node.cluster.clone();
            c.key = key;
        });
        tracing::debug!(stream = self.id, node = %node.id, "xDS stream started");
        self.node = Some(node.clone());
        Ok(())
    }

    /// Regenerates (or fetches from the cache) the resources for the current config.
    /// Returns whether they changed. A failed generation keeps the old one.
    pub(crate) async fn refresh(&mut self) -> bool {
        let Some(node) = &self.node else {
            return false;
        };
        let current = self.config.borrow_and_update().clone();
        let Some(resources) = self.server.inner.resources(node, &current).await else {
            return false;
        };
        self.server
            .inner
            .registry
            .update(self.id, |c| c.generation = current.generation);
        let changed = self
            .resources
            .as_ref()
            .is_none_or(|old| !old.same_versions(&resources));
        self.resources = Some(resources);
        changed
    }

    pub(crate) fn nonce(&mut self) -> String {
        self.next_nonce += 1;
        self.next_nonce.to_string()
    }

    pub(crate) fn record_sent(
        &self,
        type_url: &str,
        version: &str,
        nonce: &str,
        resources: usize,
        wildcard: bool,
        subscribed: Vec<String>,
    ) {
        self.server.inner.registry.update(self.id, |c| {
            let t = c.types.entry(type_name(type_url)).or_default();
            t.sent_version = version.to_owned();
            t.sent_nonce = nonce.to_owned();
            t.sent_resources = resources;
            t.wildcard = wildcard;
            t.subscribed = subscribed;
        });
    }

    pub(crate) fn record_subscription(&self, type_url: &str, wildcard: bool, names: Vec<String>) {
        self.server.inner.registry.update(self.id, |c| {
            let t: &mut TypeSync = c.types.entry(type_name(type_url)).or_default();
            t.wildcard = wildcard;
            t.subscribed = names;
        });
    }

    pub(crate) fn record_ack(&self, type_url: &str, version: &str, nonce: &str) {
        self.server.inner.registry.update(self.id, |c| {
            let t = c.types.entry(type_name(type_url)).or_default();
            t.acked_version = version.to_owned();
            t.acked_nonce = nonce.to_owned();
            t.last_nack = None;
        });
    }

    pub(crate) fn record_nack(&self, type_url: &str, version: &str, nonce: &str, reason: &str) {
        let reason = truncate(reason, self.server.inner.options.max_nack_reason).into_owned();
        let reason = reason.as_str();
        // Node ids are the client's to choose: kept short in the log.
        let node_id = self
            .node
            .as_ref()
            .map(|n| truncate(&n.id, 256).into_owned())
            .unwrap_or_default();
        tracing::warn!(
            stream = self.id,
            node = %node_id,
            type_url,
            nonce,
            reason,
            "xDS NACK"
        );
        self.server.inner.registry.update(self.id, |c| {
            let t = c.types.entry(type_name(type_url)).or_default();
            t.nacks += 1;
            t.last_nack = Some(reason.to_owned());
        });
        self.server.inner.registry.nack(NackRecord {
            at: now(),
            client: self.id,
            node_id,
            type_url: type_url.to_owned(),
            version: version.to_owned(),
            nonce: nonce.to_owned(),
            reason: reason.to_owned(),
        });
    }
}
