//! Subscriptions: the targets and the dependency walk from them to the desired set of
//! every type.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;

use crate::client::status::ResourceState;
use crate::resource::ResourceType;

use super::{Codec, Entry, State, index};

impl<C: Codec> State<C> {
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
    pub(super) fn resolve_subscriptions(&mut self, now: Instant) {
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
        let mut fetch_timeouts = HashMap::new();
        while let Some((ty, name)) = stack.pop() {
            if !desired[index(ty)].insert(name.clone()) {
                continue;
            }
            if let Some(entry) = self.ty(ty).entries.get(&name)
                && entry.value.is_some()
            {
                stack.extend(entry.dependencies.iter().cloned());
                for (t, n, d) in entry.fetch_timeouts.iter() {
                    fetch_timeouts.insert((*t, n.clone()), *d);
                }
            }
        }
        self.fetch_timeouts = fetch_timeouts;
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
                // What the snapshot shows of it goes too: its value, or the stand-in the
                // codec published for it while it did not exist (a cluster's empty endpoints).
                if entry.value.is_some() || entry.state == ResourceState::DoesNotExist {
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
}
