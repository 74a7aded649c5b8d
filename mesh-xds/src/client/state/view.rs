//! What the wire-format modules see of one type's state when building requests.

use std::collections::HashMap;

use envoy_types::pb::google::rpc::Status;

use crate::resource::ResourceType;

use super::{Codec, State, TypeState, index};

impl<C: Codec> State<C> {
    pub(crate) fn type_mut(&mut self, ty: ResourceType) -> TypeMut<'_, C::Value> {
        TypeMut {
            ts: &mut self.types[index(ty)],
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
