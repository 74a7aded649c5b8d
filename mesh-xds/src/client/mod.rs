//! The xDS client: one ADS stream (state-of-the-world or delta) to a management server,
//! validated into mesh-core's model and published as immutable snapshots.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mesh_xds::client::XdsClientError> {
//! use mesh_xds::client::{channel, Protocol, XdsClient, XdsClientConfig};
//!
//! let config = XdsClientConfig { protocol: Protocol::Delta, ..Default::default() };
//! let client = XdsClient::new(config, channel::insecure("http://127.0.0.1:15010")?);
//! client.subscribe_target("xds:///reviews.default.svc.cluster.local:9080").await?;
//! client.ready().await?;
//! let snapshot = client.snapshot(); // lock-free; cheap to clone
//! println!("{} clusters", snapshot.clusters.len());
//! # Ok(()) }
//! ```
//!
//! Layout: `state` holds the protocol-independent rules (subscriptions and dependencies,
//! ACK/NACK, removal, timers, readiness), `sotw` and `delta` the two wire formats, `ads`
//! the task that does the I/O and reconnects with `backoff`, `channel` the transports.

mod ads;
mod backoff;
pub mod channel;
mod delta;
mod from_bootstrap;
mod sotw;
mod state;
mod status;
mod subscription;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use backoff::BackoffConfig;
pub use channel::XdsChannel;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
pub use from_bootstrap::{
    DELTA_FEATURE, IdentityTls, channel_from_bootstrap, channel_from_bootstrap_with,
};
pub use status::{ClientStatus, ResourceState, ResourceStatus};
pub use subscription::listener_name_for_target;
use tokio::sync::{mpsc, oneshot, watch};

use crate::resource::{self, Rejection, Resource, ResourceType};
use crate::translate::Dialect;
use ads::{Command, Driver};
use state::{Codec, Decoded, State};

/// Which ADS variant to speak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `StreamAggregatedResources`: every response carries the full list of the type.
    #[default]
    StateOfTheWorld,
    /// `DeltaAggregatedResources`: responses carry only what changed.
    Delta,
}

/// Client settings. The server address and credentials are in the [`XdsChannel`] given to
/// [`XdsClient::new`] (see [`channel`]).
#[derive(Clone, Debug)]
pub struct XdsClientConfig {
    /// The node sent on the first request of every stream.
    pub node: Node,
    /// SotW or delta.
    pub protocol: Protocol,
    /// Subscribe to every listener (wildcard LDS) instead of only the targets'.
    pub wildcard_listeners: bool,
    /// Subscribe to every cluster (wildcard CDS); their endpoints follow.
    pub wildcard_clusters: bool,
    /// A requested resource not received within this time (while connected) is
    /// DOES_NOT_EXIST. Default 15 s, as in Envoy and gRPC.
    pub resource_timeout: Duration,
    /// gRPC A53 (`ignore_resource_deletion` server feature): a listener or cluster that a
    /// SotW response omits keeps being served (logged) instead of being deleted.
    pub ignore_resource_deletion: bool,
    /// Reconnect pacing.
    pub backoff: BackoffConfig,
    /// A file holding a bearer token, re-read for every stream and sent as
    /// `authorization: Bearer <token>` (e.g. a Kubernetes projected service-account token).
    /// Only on a secure channel: see [`TOKEN_RULE`].
    pub token_file: Option<PathBuf>,
    /// Largest gRPC message accepted or sent (default 64 MiB: a full SotW state is large).
    pub max_message_size: usize,
}

impl Default for XdsClientConfig {
    fn default() -> Self {
        Self {
            node: Node::default(),
            protocol: Protocol::default(),
            wildcard_listeners: false,
            wildcard_clusters: false,
            resource_timeout: Duration::from_secs(15),
            ignore_resource_deletion: false,
            backoff: BackoffConfig::default(),
            token_file: None,
            max_message_size: 64 << 20,
        }
    }
}

/// Errors of the client's API (protocol problems are reported through [`ClientStatus`]
/// and NACKs, never as panics).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XdsClientError {
    /// The target is not an `xds:///<listener>` URI nor a listener name.
    #[error("invalid xDS target {target:?}: {reason}")]
    InvalidTarget {
        /// The target given.
        target: String,
        /// The rule broken.
        reason: &'static str,
    },
    /// The management server URI cannot be used.
    #[error("invalid xDS server URI {uri:?}: {reason}")]
    InvalidServerUri {
        /// The URI given.
        uri: String,
        /// Why.
        reason: String,
    },
    /// The bootstrap cannot be turned into a client or channel.
    #[error("xDS bootstrap: {reason}")]
    InvalidBootstrap {
        /// The rule broken.
        reason: String,
    },
    /// A bearer token was configured for a plaintext channel; see [`TOKEN_RULE`].
    #[error("{TOKEN_RULE}")]
    TokenOnPlaintext,
    /// The client's task has stopped (the runtime is shutting down).
    #[error("the xDS client task has stopped")]
    Stopped,
}

pub use mesh_core::config::{ConfigSnapshot, ResourceMap};

/// Why a token is never sent on a plaintext channel, named in errors.
pub const TOKEN_RULE: &str = "refusing to send the xDS bearer token (token_file / jwt_token_file call_creds) on a plaintext channel: gRFC A97 allows call credentials only on secure channels; use TLS to the control plane, or drop the token";

/// Decodes through [`resource::decode_as`] (the real translation) into [`ConfigSnapshot`]s,
/// in the dialect of the control plane the node talks to.
struct ModelCodec {
    dialect: Dialect,
}

impl Codec for ModelCodec {
    type Value = Resource;
    type Snapshot = ConfigSnapshot;

    fn decode(&self, ty: ResourceType, raw: &Any) -> Result<Decoded<Resource>, Rejection> {
        let value = resource::decode_as(ty, raw, self.dialect)?;
        Ok(Decoded {
            name: value.name().to_owned(),
            dependencies: value.dependencies(),
            fetch_timeouts: crate::translate::fetch_timeout::initial_fetch_timeouts(ty, raw),
            value,
        })
    }

    fn publish(
        &self,
        snapshot: &mut ConfigSnapshot,
        ty: ResourceType,
        name: &Arc<str>,
        value: Option<&Resource>,
    ) {
        fn set<T>(map: &mut Arc<ResourceMap<T>>, name: &Arc<str>, value: Option<Arc<T>>) {
            let map = Arc::make_mut(map);
            match value {
                Some(v) => map.insert(name.clone(), v),
                None => map.remove(name),
            };
        }
        match (ty, value) {
            (_, Some(Resource::Listener(v))) => set(&mut snapshot.listeners, name, Some(v.clone())),
            (_, Some(Resource::RouteConfiguration(v))) => {
                set(&mut snapshot.route_configs, name, Some(v.clone()))
            }
            (_, Some(Resource::Cluster(v))) => set(&mut snapshot.clusters, name, Some(v.clone())),
            (_, Some(Resource::ClusterLoadAssignment(v))) => {
                set(&mut snapshot.endpoints, name, Some(v.clone()))
            }
            (ResourceType::Listener, None) => set(&mut snapshot.listeners, name, None),
            (ResourceType::RouteConfiguration, None) => {
                set(&mut snapshot.route_configs, name, None)
            }
            (ResourceType::Cluster, None) => set(&mut snapshot.clusters, name, None),
            (ResourceType::ClusterLoadAssignment, None) => set(&mut snapshot.endpoints, name, None),
        }
    }

    fn absent(&self, ty: ResourceType, name: &Arc<str>) -> Option<Resource> {
        (ty == ResourceType::ClusterLoadAssignment).then(|| {
            Resource::ClusterLoadAssignment(Arc::new(mesh_core::model::ClusterLoadAssignment {
                cluster_name: name.to_string(),
                localities: Vec::new(),
                ..Default::default()
            }))
        })
    }
}

/// A handle to the xDS client. Cheap to clone; the ADS task stops when the last handle
/// is dropped.
#[derive(Clone, Debug)]
pub struct XdsClient {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<ConfigSnapshot>>,
    ready: watch::Receiver<bool>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::AddTarget(t) => write!(f, "AddTarget({t})"),
            Command::RemoveTarget(t) => write!(f, "RemoveTarget({t})"),
            Command::Status(_) => f.write_str("Status"),
            Command::Close(_) => f.write_str("Close"),
        }
    }
}

impl XdsClient {
    /// Starts the client's task on the current Tokio runtime. No stream opens until there
    /// is something to subscribe to (a target, or a wildcard option).
    ///
    /// A token with a plaintext channel is a configuration error: no stream is ever opened
    /// (each attempt logs [`TOKEN_RULE`]); [`XdsClient::try_new`] reports it at once.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn new(config: XdsClientConfig, channel: impl Into<XdsChannel>) -> Self {
        let channel = channel.into();
        let mut state = State::new(
            ModelCodec {
                dialect: Dialect::of_node(&config.node),
            },
            config.wildcard_listeners,
            config.wildcard_clusters,
            config.resource_timeout,
        );
        state.set_ignore_resource_deletion(config.ignore_resource_deletion);
        let (commands_tx, commands) = mpsc::channel(ads::COMMAND_QUEUE);
        let (snapshot_tx, snapshot) = watch::channel(state.snapshot().clone());
        let (ready_tx, ready) = watch::channel(false);
        let driver = Driver {
            state,
            config,
            channel,
            commands,
            snapshot_tx,
            ready_tx,
            closing: None,
        };
        tokio::spawn(driver.run());
        Self {
            commands: commands_tx,
            snapshot,
            ready,
        }
    }

    /// [`XdsClient::new`], refusing a token on a plaintext channel with
    /// [`XdsClientError::TokenOnPlaintext`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn try_new(
        config: XdsClientConfig,
        channel: impl Into<XdsChannel>,
    ) -> Result<Self, XdsClientError> {
        let channel = channel.into();
        if config.token_file.is_some() && !channel.is_secure() {
            return Err(XdsClientError::TokenOnPlaintext);
        }
        Ok(Self::new(config, channel))
    }

    /// Watches the listener of `target` (`xds:///host:port` or a listener name), and
    /// through it its route config, clusters and endpoints.
    pub async fn subscribe_target(&self, target: &str) -> Result<(), XdsClientError> {
        let name = listener_name_for_target(target)?;
        self.send(Command::AddTarget(name.to_owned())).await
    }

    /// Stops watching `target`; resources only it referenced are unsubscribed and leave
    /// the snapshot.
    pub async fn unsubscribe_target(&self, target: &str) -> Result<(), XdsClientError> {
        let name = listener_name_for_target(target)?;
        self.send(Command::RemoveTarget(name.to_owned())).await
    }

    /// The current snapshot (last good config: kept while disconnected and while updates
    /// are NACKed).
    pub fn snapshot(&self) -> Arc<ConfigSnapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver of every new snapshot.
    pub fn watch(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.snapshot.clone()
    }

    /// Waits until every subscribed type has had its first accepted response (or all its
    /// resources are known not to exist).
    pub async fn ready(&self) -> Result<(), XdsClientError> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| XdsClientError::Stopped)
    }

    /// Whether the client is ready now (see [`XdsClient::ready`]).
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The status of every resource, for the admin endpoint and CSDS.
    pub async fn status(&self) -> Result<ClientStatus, XdsClientError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx)).await?;
        rx.await.map_err(|_| XdsClientError::Stopped)
    }

    /// Stops the client now, for every handle: ends its ADS stream (the server sees the
    /// client cancel it) and drops its channel, and returns once both are gone. Consumers
    /// keep the last snapshot. Close the clients before stopping their control plane, so
    /// that a normal shutdown does not read as a failed stream. Closing a stopped client
    /// does nothing.
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.send(Command::Close(done)).await.is_ok() {
            // Resolves (with an error) when the driver drops the sender.
            let _ = closed.await;
        }
    }

    async fn send(&self, cmd: Command) -> Result<(), XdsClientError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| XdsClientError::Stopped)
    }
}

/// The xDS client is a config source: consumers (the mesh client, inbound servers,
/// telemetry) read its snapshots and demand targets without knowing it speaks xDS.
impl mesh_core::config::ConfigSource for XdsClient {
    fn snapshots(&self) -> watch::Receiver<Arc<ConfigSnapshot>> {
        self.snapshot.clone()
    }

    fn demand(&self, listener: &str) {
        let Ok(name) = listener_name_for_target(listener) else {
            tracing::debug!(listener, "not an xDS target; not subscribing");
            return;
        };
        // Non-blocking: when the command queue is full, a task waits for room.
        if let Err(mpsc::error::TrySendError::Full(cmd)) =
            self.commands.try_send(Command::AddTarget(name.to_owned()))
        {
            let commands = self.commands.clone();
            tokio::spawn(async move { commands.send(cmd).await });
        }
    }

    fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }
}

#[cfg(test)]
mod tests;
