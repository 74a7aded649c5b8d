//! Per-client sync status and the NACK log, as data for debug endpoints (istiod's
//! `/debug/syncz`) and for tests that wait until every client has ACKed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Notify;

use mesh_xds::resource::ResourceType;

/// Which ADS variant a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// State of the world.
    Sotw,
    /// Incremental.
    Delta,
}

/// Sync status of one type on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeSync {
    /// Subscribed to every resource of the type.
    pub wildcard: bool,
    /// Names subscribed explicitly.
    pub subscribed: Vec<String>,
    /// Version of the last response sent (SotW `version_info`, delta `system_version_info`).
    pub sent_version: String,
    /// Nonce of the last response sent.
    pub sent_nonce: String,
    /// Resources in the last response sent.
    pub sent_resources: usize,
    /// Last version the client accepted.
    pub acked_version: String,
    /// Nonce the client last accepted.
    pub acked_nonce: String,
    /// Number of NACKs of this type.
    pub nacks: u64,
    /// The client's reason for the last NACK, until it accepts a later response.
    pub last_nack: Option<String>,
}

impl TypeSync {
    /// Whether the client has accepted the last response sent (a NACKed type is not synced).
    pub fn synced(&self) -> bool {
        self.sent_nonce.is_empty()
            || (self.acked_nonce == self.sent_nonce && self.last_nack.is_none())
    }
}

/// One connected client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClientSync {
    /// Stream id (unique for the server's life).
    pub id: u64,
    /// The node's id (empty before its first request).
    pub node_id: String,
    /// The node's cluster.
    pub node_cluster: String,
    /// The generator's key for this node (nodes with one key share their resources).
    pub key: String,
    /// SotW or delta.
    pub kind: StreamKind,
    /// Remote address, when known.
    pub peer: Option<String>,
    /// Connection time (seconds since the Unix epoch).
    pub connected_at: u64,
    /// Config generation of the resources last pushed to the client.
    pub generation: u64,
    /// Per type, by short name (`LDS`, ...) or type URL.
    pub types: BTreeMap<String, TypeSync>,
}

impl ClientSync {
    /// Whether the client has the current config generation and accepted every response.
    pub fn synced_to(&self, generation: u64) -> bool {
        self.generation == generation && self.types.values().all(TypeSync::synced)
    }
}

/// A rejected response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NackRecord {
    /// When (seconds since the Unix epoch).
    pub at: u64,
    /// Stream id.
    pub client: u64,
    /// The node's id.
    pub node_id: String,
    /// Type URL.
    pub type_url: String,
    /// Version the client still holds (`version_info` of the NACK).
    pub version: String,
    /// Nonce rejected.
    pub nonce: String,
    /// The client's reason (`error_detail.message`).
    pub reason: String,
}

/// Everything the debug endpoint shows, at one point in time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerStatus {
    /// Generation of the config being served (1 for the first).
    pub generation: u64,
    /// Connected clients, by stream id.
    pub clients: Vec<ClientSync>,
    /// Most recent NACKs, oldest first.
    pub nacks: Vec<NackRecord>,
}

impl ServerStatus {
    /// Whether every connected client has the current generation and has ACKed it.
    pub fn all_synced(&self) -> bool {
        self.clients.iter().all(|c| c.synced_to(self.generation))
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn type_name(type_url: &str) -> String {
    ResourceType::from_type_url(type_url)
        .map(|t| t.short_name().to_owned())
        .unwrap_or_else(|| type_url.to_owned())
}

/// `s` cut to at most `max` bytes (on a character boundary), marked when cut.
pub(crate) fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes, truncated)", &s[..end], s.len()).into()
}

/// The shared registry streams report into.
#[derive(Debug)]
pub(crate) struct Registry {
    clients: Mutex<HashMap<u64, ClientSync>>,
    nacks: Mutex<VecDeque<NackRecord>>,
    nack_log: usize,
    nacks_per_node_type: usize,
    /// Woken on every ACK, connect and disconnect.
    pub(crate) changed: Notify,
}

impl Registry {
    pub(crate) fn new(options: &super::ServerOptions) -> Self {
        Registry {
            clients: Mutex::default(),
            nacks: Mutex::default(),
            nack_log: options.nack_log,
            nacks_per_node_type: options.nacks_per_node_type,
            changed: Notify::new(),
        }
    }

    pub(crate) fn insert(&self, client: ClientSync) {
        lock(&self.clients).insert(client.id, client);
        self.changed.notify_waiters();
    }

    pub(crate) fn remove(&self, id: u64) {
        lock(&self.clients).remove(&id);
        self.changed.notify_waiters();
    }

    pub(crate) fn update(&self, id: u64, f: impl FnOnce(&mut ClientSync)) {
        if let Some(c) = lock(&self.clients).get_mut(&id) {
            f(c);
        }
        self.changed.notify_waiters();
    }

    /// Keeps the last `nacks_per_node_type` NACKs of each node and type, and the last
    /// `nack_log` overall.
    pub(crate) fn nack(&self, record: NackRecord) {
        if self.nack_log == 0 || self.nacks_per_node_type == 0 {
            return;
        }
        let mut log = lock(&self.nacks);
        let same = |r: &NackRecord| r.node_id == record.node_id && r.type_url == record.type_url;
        if log.iter().filter(|r| same(r)).count() >= self.nacks_per_node_type
            && let Some(i) = log.iter().position(same)
        {
            log.remove(i);
        }
        while log.len() >= self.nack_log {
            log.pop_front();
        }
        log.push_back(record);
    }

    pub(crate) fn status(&self, generation: u64) -> ServerStatus {
        let mut clients: Vec<ClientSync> = lock(&self.clients).values().cloned().collect();
        clients.sort_by_key(|c| c.id);
        ServerStatus {
            generation,
            clients,
            nacks: lock(&self.nacks).iter().cloned().collect(),
        }
    }

    /// The version last sent of a type to one client.
    pub(crate) fn status_of(&self, id: u64, type_url: &str) -> Option<String> {
        lock(&self.clients)
            .get(&id)
            .and_then(|c| c.types.get(&type_name(type_url)))
            .map(|t| t.sent_version.clone())
    }

    pub(crate) fn all_synced(&self, generation: u64) -> (usize, bool) {
        let clients = lock(&self.clients);
        (
            clients.len(),
            clients.values().all(|c| c.synced_to(generation)),
        )
    }
}

/// Locks a mutex, ignoring poisoning (the data is status, never left half-written).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
