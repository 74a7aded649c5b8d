//! Applying a response: decode, accept or reject each resource, deletions, and the
//! ACK/NACK verdict.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::SystemTime;

use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;
use tokio::time::Instant;

use crate::client::status::ResourceState;
use crate::resource::{Rejection, ResourceType};

use super::{Codec, Entry, Response, State, Verdict, index};

/// gRPC's `INVALID_ARGUMENT`, the code of a NACK's `error_detail`.
const INVALID_ARGUMENT: i32 = 3;

impl<C: Codec> State<C> {
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
                    entry.fetch_timeouts = d
                        .fetch_timeouts
                        .into_iter()
                        .map(|(t, n, d)| (t, Arc::from(n), d))
                        .collect();
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
                } else if e.value.is_some()
                    || !matches!(
                        e.state,
                        ResourceState::DoesNotExist | ResourceState::Requested
                    )
                {
                    // A resource never received is left to its does-not-exist timer (as
                    // grpc-go does): the response may answer a request sent before it was
                    // asked for.
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
                e.fetch_timeouts = Box::new([]);
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
}

fn raw_hash(raw: &Any) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    raw.type_url.hash(&mut h);
    raw.value.hash(&mut h);
    h.finish()
}
