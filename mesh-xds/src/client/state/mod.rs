//! The protocol-independent client state: subscriptions and the dependency walk, the
//! resource cache, ACK/NACK bookkeeping, does-not-exist timers, readiness and snapshot
//! publishing. Pure and synchronous, so every rule is unit-tested without a server; the
//! SotW and delta wire formats are in `sotw.rs` and `delta.rs`, I/O in `ads.rs`.

mod apply;
mod subscriptions;
mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use super::status::{ClientStatus, ResourceState, ResourceStatus};
use crate::resource::{Rejection, ResourceType};

/// A resource decoded and validated, with what it makes the client subscribe to next.
pub(crate) struct Decoded<V> {
    pub(crate) name: String,
    pub(crate) value: V,
    pub(crate) dependencies: Vec<(ResourceType, String)>,
    /// `initial_fetch_timeout` of the config sources of some dependencies.
    pub(crate) fetch_timeouts: Vec<(ResourceType, String, Duration)>,
}

/// Turns `Any`s into values and values into snapshots. The real one decodes through
/// `crate::resource::decode`; unit tests use a fake.
pub(crate) trait Codec: Send + Sync + 'static {
    /// A decoded resource.
    type Value: Clone + Send + Sync + 'static;
    /// What readers see.
    type Snapshot: Clone + Default + Send + Sync + 'static;
    /// Decodes and validates one resource.
    fn decode(&self, ty: ResourceType, raw: &Any) -> Result<Decoded<Self::Value>, Rejection>;
    /// Sets (`Some`) or removes (`None`) one resource in a snapshot being built.
    fn publish(
        &self,
        snapshot: &mut Self::Snapshot,
        ty: ResourceType,
        name: &Arc<str>,
        value: Option<&Self::Value>,
    );
    /// What a subscribed resource that does not exist stands for in the snapshot, if
    /// anything (the real codec: an EDS resource is an empty assignment, so that requests
    /// stop waiting for it, as Envoy warms such a cluster with no hosts).
    fn absent(&self, _ty: ResourceType, _name: &Arc<str>) -> Option<Self::Value> {
        None
    }
}

/// One resource of one type.
struct Entry<V> {
    value: Option<V>,
    dependencies: Box<[(ResourceType, Arc<str>)]>,
    /// Timeouts its config sources set for some dependencies (Envoy's `initial_fetch_timeout`).
    fetch_timeouts: Box<[(ResourceType, Arc<str>, Duration)]>,
    /// Hash of the serialized resource last accepted: an identical resend is not decoded
    /// again and keeps its `Arc` in the snapshot.
    raw_hash: u64,
    version: Arc<str>,
    state: ResourceState,
    error: Option<String>,
    updated: Option<SystemTime>,
    /// In the desired set (a target or reachable from one), as opposed to only received
    /// through a wildcard subscription.
    subscribed: bool,
}

impl<V> Entry<V> {
    fn requested() -> Self {
        Self {
            value: None,
            dependencies: Box::new([]),
            fetch_timeouts: Box::new([]),
            raw_hash: 0,
            version: Arc::from(""),
            state: ResourceState::Requested,
            error: None,
            updated: None,
            subscribed: true,
        }
    }
}

/// Per-type protocol state.
struct TypeState<V> {
    wildcard: bool,
    entries: HashMap<Arc<str>, Entry<V>>,
    /// Raw hash -> name of accepted resources, to skip decoding identical SotW resends
    /// (SotW carries no name outside the serialized resource). May hold stale hashes;
    /// a hit is checked against the entry.
    by_hash: HashMap<u64, Arc<str>>,
    /// SotW: last accepted `version_info`; delta: last `system_version_info`.
    version_info: Arc<str>,
    /// Nonce of the last response received on the current stream.
    nonce: String,
    /// Had a response accepted (readiness).
    acked_once: bool,
    /// Requested at least once on the current stream.
    sent_on_stream: bool,
    /// An ACK or NACK is owed for the last response.
    owe_reply: bool,
    /// The NACK detail for the owed reply.
    nack: Option<Status>,
    /// SotW: the subscribed names changed since the last request.
    names_dirty: bool,
    /// Delta: names to subscribe / unsubscribe in the next request.
    delta_subscribe: BTreeSet<Arc<str>>,
    delta_unsubscribe: BTreeSet<Arc<str>>,
}

impl<V> TypeState<V> {
    fn new(wildcard: bool) -> Self {
        Self {
            wildcard,
            entries: HashMap::new(),
            by_hash: HashMap::new(),
            version_info: Arc::from(""),
            nonce: String::new(),
            acked_once: false,
            sent_on_stream: false,
            owe_reply: false,
            nack: None,
            names_dirty: false,
            delta_subscribe: BTreeSet::new(),
            delta_unsubscribe: BTreeSet::new(),
        }
    }

    /// Whether the client wants anything of this type.
    fn has_interest(&self) -> bool {
        self.wildcard || self.entries.values().any(|e| e.subscribed)
    }

    pub(crate) fn subscribed_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.subscribed)
            .map(|(n, _)| n.to_string())
            .collect();
        names.sort_unstable();
        names
    }

    /// Ready when a response was accepted or every subscribed resource has an answer.
    fn ready(&self) -> bool {
        self.acked_once
            || (!self.wildcard
                && self
                    .entries
                    .values()
                    .filter(|e| e.subscribed)
                    .all(|e| e.state != ResourceState::Requested))
    }
}

/// What the client owes the server after handling a response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Every resource was accepted.
    Ack,
    /// Some were rejected; the detail names each and why.
    Nack(Status),
}

/// One resource of a response, as both wire formats carry it.
pub(crate) struct Incoming<'a> {
    /// Delta: the wrapper's name (checked against the decoded one).
    pub(crate) name: Option<&'a str>,
    /// Delta: the resource's own version; SotW: the response's `version_info`.
    pub(crate) version: Option<&'a str>,
    pub(crate) raw: &'a Any,
}

/// One response, as both wire formats carry it.
pub(crate) struct Response<'a> {
    pub(crate) ty: ResourceType,
    /// SotW `version_info`, delta `system_version_info`.
    pub(crate) version_info: &'a str,
    pub(crate) nonce: &'a str,
    pub(crate) resources: &'a [Incoming<'a>],
    /// Delta's `removed_resources`.
    pub(crate) removed: &'a [String],
    /// SotW LDS/CDS: a resource omitted is deleted.
    pub(crate) full_state: bool,
}

/// The client's whole state.
pub(crate) struct State<C: Codec> {
    codec: C,
    types: [TypeState<C::Value>; 4],
    /// Listener names asked for by `subscribe_target`.
    targets: BTreeSet<Arc<str>>,
    resource_timeout: Duration,
    /// Per-resource does-not-exist timeouts from the config sources that reference them
    /// (rebuilt by each dependency walk); zero never expires.
    fetch_timeouts: HashMap<(ResourceType, Arc<str>), Duration>,
    /// gRPC A53: SotW LDS/CDS omission does not delete a resource that has a value.
    ignore_resource_deletion: bool,
    timers: BTreeMap<(Instant, u64), (ResourceType, Arc<str>)>,
    timer_seq: u64,
    connected: bool,
    snapshot: Arc<C::Snapshot>,
    /// Changes not yet published.
    changes: Vec<(ResourceType, Arc<str>)>,
    structure_changed: bool,
}

impl<C: Codec> State<C> {
    pub(crate) fn new(
        codec: C,
        wildcard_listeners: bool,
        wildcard_clusters: bool,
        resource_timeout: Duration,
    ) -> Self {
        Self {
            codec,
            types: [
                TypeState::new(wildcard_listeners),
                TypeState::new(false),
                TypeState::new(wildcard_clusters),
                TypeState::new(false),
            ],
            targets: BTreeSet::new(),
            resource_timeout,
            fetch_timeouts: HashMap::new(),
            ignore_resource_deletion: false,
            timers: BTreeMap::new(),
            timer_seq: 0,
            connected: false,
            snapshot: Arc::new(C::Snapshot::default()),
            changes: Vec::new(),
            structure_changed: false,
        }
    }

    /// gRPC A53 `ignore_resource_deletion`: keep serving LDS/CDS resources that a SotW
    /// response omits (only resources never received become DOES_NOT_EXIST).
    pub(crate) fn set_ignore_resource_deletion(&mut self, ignore: bool) {
        self.ignore_resource_deletion = ignore;
    }

    fn ty(&self, ty: ResourceType) -> &TypeState<C::Value> {
        &self.types[index(ty)]
    }

    fn ty_mut(&mut self, ty: ResourceType) -> &mut TypeState<C::Value> {
        &mut self.types[index(ty)]
    }

    pub(crate) fn snapshot(&self) -> &Arc<C::Snapshot> {
        &self.snapshot
    }

    // ---- stream lifecycle -------------------------------------------------------------

    /// A new stream is open: everything is requested again, timers restart for
    /// resources still unanswered.
    pub(crate) fn on_stream_start(&mut self, now: Instant) {
        self.connected = true;
        self.timers.clear();
        let mut arm = Vec::new();
        for ty in ResourceType::ALL {
            let ts = self.ty_mut(ty);
            ts.nonce.clear();
            ts.sent_on_stream = false;
            ts.owe_reply = false;
            ts.nack = None;
            ts.names_dirty = false;
            ts.delta_subscribe.clear();
            ts.delta_unsubscribe.clear();
            for (name, e) in &ts.entries {
                if e.subscribed && e.value.is_none() && e.state == ResourceState::Requested {
                    arm.push((ty, name.clone()));
                }
            }
        }
        for (ty, name) in arm {
            self.arm_timer(ty, name, now);
        }
    }

    /// The stream ended: timers stop (a resource cannot be late while we cannot hear).
    pub(crate) fn on_stream_end(&mut self) {
        self.connected = false;
        self.timers.clear();
    }

    /// Whether any type has something to subscribe to.
    pub(crate) fn wants_anything(&self) -> bool {
        self.types.iter().any(|t| t.has_interest())
    }

    // ---- timers -----------------------------------------------------------------------

    fn arm_timer(&mut self, ty: ResourceType, name: Arc<str>, now: Instant) {
        let timeout = self
            .fetch_timeouts
            .get(&(ty, name.clone()))
            .copied()
            .unwrap_or(self.resource_timeout);
        // Zero (Envoy: no timeout) and a timeout too large to represent never expire.
        if timeout.is_zero() {
            return;
        }
        let Some(at) = now.checked_add(timeout) else {
            return;
        };
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), (ty, name));
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Expires does-not-exist timers due at `now`.
    pub(crate) fn on_timer(&mut self, now: Instant) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (ty, name) = entry.remove();
            if let Some(e) = self.types[index(ty)].entries.get_mut(&name)
                && e.subscribed
                && e.value.is_none()
                && e.state == ResourceState::Requested
            {
                tracing::debug!(%ty, %name, "resource does not exist (timeout)");
                e.state = ResourceState::DoesNotExist;
                e.updated = Some(SystemTime::now());
                self.changes.push((ty, name));
            }
        }
    }

    // ---- publishing -------------------------------------------------------------------

    /// Publishes pending changes into a new snapshot (sharing everything untouched);
    /// returns it when something changed.
    pub(crate) fn take_snapshot(&mut self) -> Option<Arc<C::Snapshot>> {
        if self.changes.is_empty() {
            return None;
        }
        let mut next = (*self.snapshot).clone();
        let mut done: HashSet<(ResourceType, Arc<str>)> = HashSet::new();
        for (ty, name) in std::mem::take(&mut self.changes) {
            if !done.insert((ty, name.clone())) {
                continue;
            }
            let entry = self.types[index(ty)].entries.get(&name);
            let absent = entry
                .filter(|e| {
                    e.value.is_none() && e.subscribed && e.state == ResourceState::DoesNotExist
                })
                .and_then(|_| self.codec.absent(ty, &name));
            let value = entry.and_then(|e| e.value.as_ref()).or(absent.as_ref());
            self.codec.publish(&mut next, ty, &name, value);
        }
        self.snapshot = Arc::new(next);
        Some(self.snapshot.clone())
    }

    /// Ready when every type the client wants has had its first answer.
    pub(crate) fn ready(&self) -> bool {
        let mut any = false;
        for ts in &self.types {
            if ts.has_interest() {
                any = true;
                if !ts.ready() {
                    return false;
                }
            }
        }
        any
    }

    // ---- status -----------------------------------------------------------------------

    pub(crate) fn status(&self) -> ClientStatus {
        let mut resources = Vec::new();
        let mut type_versions = Vec::new();
        for ty in ResourceType::ALL {
            let ts = self.ty(ty);
            type_versions.push((ty, ts.version_info.to_string()));
            for (name, e) in &ts.entries {
                resources.push(ResourceStatus {
                    kind: ty,
                    name: name.to_string(),
                    state: e.state,
                    version: e.version.to_string(),
                    last_error: e.error.clone(),
                    last_update: e.updated,
                    has_value: e.value.is_some(),
                });
            }
        }
        resources.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        ClientStatus {
            connected: self.connected,
            ready: self.ready(),
            resources,
            type_versions,
        }
    }
}

fn index(ty: ResourceType) -> usize {
    match ty {
        ResourceType::Listener => 0,
        ResourceType::RouteConfiguration => 1,
        ResourceType::Cluster => 2,
        ResourceType::ClusterLoadAssignment => 3,
    }
}
