//! The protocol-independent client state: subscriptions and the dependency walk, the
//! resource cache, ACK/NACK bookkeeping, does-not-exist timers, readiness and snapshot
//! publishing. Pure and synchronous, so every rule is unit-tested without a server; the
//! SotW and delta wire formats are in `sotw.rs` and `delta.rs`, I/O in `ads.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use super::status::{ClientStatus, ResourceState, ResourceStatus};
use crate::resource::{Rejection, ResourceType};

/// gRPC's `INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

/// A resource decoded and validated, with what it makes the client subscribe to next.
pub(crate) struct Decoded<V> {
    pub(crate) name: String,
    pub(crate) value: V,
    pub(crate) dependencies: Vec<(ResourceType, String)>,
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
}

/// One resource of one type.
struct Entry<V> {
    value: Option<V>,
    dependencies: Box<[(ResourceType, Arc<str>)]>,
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

    // ---- subscriptions ----------------------------------------------------------------

    /// Adds a listener to watch, and (through the dependency walk) what it references.
    pub(crate) fn add_target(&mut self, listener: &str, now: Instant) {
        if self.targets.insert(Arc::from(listener)) {
            self.resolve_subscriptions(now);
        }
    }

    /// Stops watching a listener; what only it referenced is unsubscribed.
    pub(crate) fn remove_target(&mut self, listener: &str, now: Instant) {
        if self.targets.remove(listener) {
            self.resolve_subscriptions(now);
        }
    }

    /// Recomputes the desired set of every type from the targets (and wildcard-received
    /// resources) through the decoded dependencies, then subscribes what is new and
    /// unsubscribes what is no longer referenced.
    fn resolve_subscriptions(&mut self, now: Instant) {
        let mut desired: [HashSet<Arc<str>>; 4] = Default::default();
        let mut stack: Vec<(ResourceType, Arc<str>)> = self
            .targets
            .iter()
            .map(|t| (ResourceType::Listener, t.clone()))
            .collect();
        for ty in ResourceType::ALL {
            let ts = self.ty(ty);
            if ts.wildcard {
                stack.extend(
                    ts.entries
                        .iter()
                        .filter(|(_, e)| e.value.is_some())
                        .map(|(n, _)| (ty, n.clone())),
                );
            }
        }
        while let Some((ty, name)) = stack.pop() {
            if !desired[index(ty)].insert(name.clone()) {
                continue;
            }
            if let Some(entry) = self.ty(ty).entries.get(&name)
                && entry.value.is_some()
            {
                stack.extend(entry.dependencies.iter().cloned());
            }
        }
        for ty in ResourceType::ALL {
            let desired = &desired[index(ty)];
            let connected = self.connected;
            let mut new_timers = Vec::new();
            let mut removed = Vec::new();
            let ts = &mut self.types[index(ty)];
            for name in desired {
                let entry = ts.entries.entry(name.clone()).or_insert_with(|| {
                    let mut e = Entry::requested();
                    e.subscribed = false;
                    e
                });
                if !entry.subscribed {
                    entry.subscribed = true;
                    if entry.value.is_none() && entry.state == ResourceState::Requested {
                        new_timers.push(name.clone());
                    }
                    if !ts.wildcard {
                        ts.names_dirty = true;
                        ts.delta_unsubscribe.remove(name);
                        ts.delta_subscribe.insert(name.clone());
                    }
                }
            }
            let wildcard = ts.wildcard;
            ts.entries.retain(|name, entry| {
                if !entry.subscribed || desired.contains(name) {
                    return true;
                }
                entry.subscribed = false;
                if wildcard {
                    // Still delivered by the wildcard subscription; keep it.
                    return entry.value.is_some();
                }
                ts.names_dirty = true;
                ts.delta_subscribe.remove(name);
                ts.delta_unsubscribe.insert(name.clone());
                if entry.value.is_some() {
                    removed.push(name.clone());
                }
                false
            });
            for name in removed {
                self.changes.push((ty, name));
            }
            if connected {
                for name in new_timers {
                    self.arm_timer(ty, name, now);
                }
            }
        }
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
        // A timeout too large to represent never expires.
        let Some(at) = now.checked_add(self.resource_timeout) else {
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
            }
        }
    }

    // ---- responses --------------------------------------------------------------------

    /// Applies one response of type `ty`. `full_state` is SotW LDS/CDS: a resource it omits
    /// is deleted. `removed` is delta's `removed_resources`. Valid resources apply even when
    /// others are rejected; the verdict says what to answer.
    pub(crate) fn apply(&mut self, response: Response<'_>, now: Instant) -> Verdict {
        let Response {
            ty,
            version_info,
            nonce,
            resources,
            removed,
            full_state,
        } = response;
        let codec = &self.codec;
        let ts = &mut self.types[index(ty)];
        ts.nonce = nonce.to_owned();
        ts.owe_reply = true;
        let version: Arc<str> = Arc::from(version_info);
        let wall = SystemTime::now();

        let mut rejected: Vec<String> = Vec::new();
        let mut seen: HashSet<Arc<str>> = HashSet::with_capacity(resources.len());
        let mut nameless_rejection = false;
        for (i, incoming) in resources.iter().enumerate() {
            let hash = raw_hash(incoming.raw);
            let res_version: Arc<str> = match incoming.version {
                Some(v) if v != version_info => Arc::from(v),
                _ => version.clone(),
            };
            // An identical resend of an accepted resource: nothing to decode.
            let known_name = match incoming.name {
                Some(n) => Some(n),
                None => ts.by_hash.get(&hash).map(|n| &**n),
            };
            if let Some(name) = known_name
                && let Some((key, e)) = ts.entries.get_key_value(name)
                && e.value.is_some()
                && e.raw_hash == hash
                && e.state == ResourceState::Acked
            {
                let key = key.clone();
                if !seen.insert(key.clone()) {
                    rejected.push(format!("{ty} {name:?}: duplicate in one response"));
                    continue;
                }
                if let Some(e) = ts.entries.get_mut(&key) {
                    e.version = res_version;
                }
                continue;
            }
            let decoded = codec
                .decode(ty, incoming.raw)
                .and_then(|d| match incoming.name {
                    Some(wire) if wire != d.name => Err(Rejection {
                        name: Some(wire.to_owned()),
                        reason: format!(
                            "resource name {wire:?} does not match its content {:?}",
                            d.name
                        ),
                    }),
                    _ => Ok(d),
                });
            match decoded {
                Ok(d) => {
                    let name: Arc<str> = match ts.entries.get_key_value(d.name.as_str()) {
                        Some((k, _)) => k.clone(),
                        None => Arc::from(d.name.as_str()),
                    };
                    if !seen.insert(name.clone()) {
                        rejected.push(format!("{ty} {name:?}: duplicate in one response"));
                        continue;
                    }
                    let known = ts.entries.contains_key(&name);
                    if !known && !ts.wildcard {
                        // Not asked for (e.g. just unsubscribed): ignore, as the spec allows.
                        continue;
                    }
                    let entry = ts.entries.entry(name.clone()).or_insert_with(|| {
                        let mut e = Entry::requested();
                        e.subscribed = false;
                        e
                    });
                    let deps: Box<[(ResourceType, Arc<str>)]> = d
                        .dependencies
                        .into_iter()
                        .map(|(t, n)| (t, Arc::from(n)))
                        .collect();
                    if ty != ResourceType::ClusterLoadAssignment
                        && (entry.value.is_none() || *entry.dependencies != *deps)
                    {
                        self.structure_changed = true;
                    }
                    entry.value = Some(d.value);
                    entry.dependencies = deps;
                    entry.raw_hash = hash;
                    ts.by_hash.insert(hash, name.clone());
                    entry.version = res_version;
                    entry.state = ResourceState::Acked;
                    entry.error = None;
                    entry.updated = Some(wall);
                    self.changes.push((ty, name));
                }
                Err(rejection) => {
                    let line = match &rejection.name {
                        Some(n) => format!("{ty} {n:?}: {}", rejection.reason),
                        None => {
                            nameless_rejection = true;
                            format!("{ty} resource #{i}: {}", rejection.reason)
                        }
                    };
                    rejected.push(line);
                    if let Some(n) = rejection.name {
                        let name: Arc<str> = Arc::from(n.as_str());
                        seen.insert(name.clone());
                        if let Some(e) = ts.entries.get_mut(&name) {
                            e.state = ResourceState::Nacked;
                            e.error = Some(rejection.reason);
                            e.updated = Some(wall);
                        }
                    }
                }
            }
        }

        // Deletions: delta's explicit list, or SotW LDS/CDS omission. A rejection that did
        // not even yield a name might be any resource, so it blocks omission deletes.
        let mut gone: Vec<Arc<str>> = Vec::new();
        for name in removed {
            if let Some((k, _)) = ts.entries.get_key_value(name.as_str()) {
                gone.push(k.clone());
            }
        }
        if ts.by_hash.len() > 2 * ts.entries.len() + 64 {
            let live: HashSet<u64> = ts.entries.values().map(|e| e.raw_hash).collect();
            ts.by_hash.retain(|h, _| live.contains(h));
        }
        if full_state && !nameless_rejection {
            let ignore = self.ignore_resource_deletion;
            for (name, e) in &ts.entries {
                if seen.contains(name) {
                    continue;
                }
                if e.value.is_some() && ignore {
                    tracing::warn!(%ty, %name, "omitted by the server; kept (ignore_resource_deletion)");
                } else if e.value.is_some() || e.state != ResourceState::DoesNotExist {
                    gone.push(name.clone());
                }
            }
        }
        for name in gone {
            let wildcard = ts.wildcard;
            let Some(e) = ts.entries.get_mut(&name) else {
                continue;
            };
            let had_value = e.value.take().is_some();
            if e.subscribed {
                e.state = ResourceState::DoesNotExist;
                e.error = None;
                e.version = Arc::from("");
                e.raw_hash = 0;
                e.dependencies = Box::new([]);
                e.updated = Some(wall);
            } else if wildcard {
                ts.entries.remove(&name);
            }
            if had_value {
                if ty != ResourceType::ClusterLoadAssignment {
                    self.structure_changed = true;
                }
                self.changes.push((ty, name));
            }
        }

        let verdict = if rejected.is_empty() {
            ts.version_info = version;
            ts.acked_once = true;
            ts.nack = None;
            Verdict::Ack
        } else {
            let status = Status {
                code: INVALID_ARGUMENT,
                message: format!(
                    "rejected {} of {} {ty} resources (version {version_info:?}):\n{}",
                    rejected.len(),
                    resources.len(),
                    rejected.join("\n")
                ),
                details: Vec::new(),
            };
            tracing::warn!(%ty, version = version_info, detail = %status.message, "NACK");
            ts.nack = Some(status.clone());
            Verdict::Nack(status)
        };
        if self.structure_changed {
            self.structure_changed = false;
            self.resolve_subscriptions(now);
        }
        verdict
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
            let value = self.types[index(ty)]
                .entries
                .get(&name)
                .and_then(|e| e.value.as_ref());
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

    // ---- what to send -----------------------------------------------------------------

    pub(crate) fn type_mut(&mut self, ty: ResourceType) -> TypeMut<'_, C::Value> {
        TypeMut {
            ts: &mut self.types[index(ty)],
        }
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

/// Read access to one type's protocol state, for the wire-format modules.
pub(crate) struct TypeView<'a, V> {
    ts: &'a TypeState<V>,
}

impl<V> TypeView<'_, V> {
    pub(crate) fn wildcard(&self) -> bool {
        self.ts.wildcard
    }
    pub(crate) fn subscribed_names(&self) -> Vec<String> {
        self.ts.subscribed_names()
    }
    pub(crate) fn version_info(&self) -> &str {
        &self.ts.version_info
    }
    /// Versions of the resources held (delta's `initial_resource_versions`).
    pub(crate) fn held_versions(&self) -> HashMap<String, String> {
        self.ts
            .entries
            .iter()
            .filter(|(_, e)| e.value.is_some())
            .map(|(n, e)| (n.to_string(), e.version.to_string()))
            .collect()
    }
}

/// Mutable access to one type's request bookkeeping, for the wire-format modules.
pub(crate) struct TypeMut<'a, V> {
    ts: &'a mut TypeState<V>,
}

impl<V> TypeMut<'_, V> {
    pub(crate) fn view(&self) -> TypeView<'_, V> {
        TypeView { ts: self.ts }
    }
    pub(crate) fn sent_on_stream(&self) -> bool {
        self.ts.sent_on_stream
    }
    pub(crate) fn mark_sent(&mut self) {
        self.ts.sent_on_stream = true;
        self.ts.names_dirty = false;
    }
    pub(crate) fn names_dirty(&self) -> bool {
        self.ts.names_dirty
    }
    pub(crate) fn has_interest(&self) -> bool {
        self.ts.has_interest()
    }
    /// The owed reply (nonce and NACK detail), if any; clears it.
    pub(crate) fn take_reply(&mut self) -> Option<(String, Option<Status>)> {
        if !self.ts.owe_reply {
            return None;
        }
        self.ts.owe_reply = false;
        Some((self.ts.nonce.clone(), self.ts.nack.take()))
    }
    pub(crate) fn nonce(&self) -> &str {
        &self.ts.nonce
    }
    pub(crate) fn take_delta_changes(&mut self) -> (Vec<String>, Vec<String>) {
        let sub = std::mem::take(&mut self.ts.delta_subscribe);
        let unsub = std::mem::take(&mut self.ts.delta_unsubscribe);
        (
            sub.into_iter().map(|n| n.to_string()).collect(),
            unsub.into_iter().map(|n| n.to_string()).collect(),
        )
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

fn raw_hash(raw: &Any) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.type_url.hash(&mut h);
    raw.value.hash(&mut h);
    h.finish()
}
