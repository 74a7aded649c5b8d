//! State-of-the-world wire format: `DiscoveryRequest`s from the state, and
//! `DiscoveryResponse`s into it.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::time::Instant;

use super::state::{Codec, Incoming, Response, State, Verdict};
use crate::resource::ResourceType;

/// The requests owed now: first requests of each wanted type on a new stream, ACKs and
/// NACKs, and changed subscriptions. A SotW request always carries the whole name list.
pub(crate) fn requests<C: Codec>(
    state: &mut State<C>,
    node: &Node,
    node_sent: &mut bool,
) -> Vec<DiscoveryRequest> {
    let mut out = Vec::new();
    for ty in ResourceType::ALL {
        let mut t = state.type_mut(ty);
        let first = !t.sent_on_stream();
        let wanted = t.has_interest();
        let needs_names = (first && wanted) || (!first && t.names_dirty());
        let reply = t.take_reply();
        if reply.is_none() && !needs_names {
            continue;
        }
        let wildcard = t.view().wildcard();
        let names = if wildcard {
            Vec::new()
        } else {
            t.view().subscribed_names()
        };
        // An empty list means "everything" for LDS and CDS (legacy wildcard): never send
        // it for a type we subscribe to by name.
        if names.is_empty() && !wildcard && ty.sotw_full_state() {
            t.mark_sent();
            continue;
        }
        let version_info_first = first && reply.is_none();
        let (nonce, error_detail) = reply.unwrap_or_else(|| (t.nonce().to_owned(), None));
        // A new stream starts from nothing, so the server sends the full state.
        let version_info = if version_info_first {
            String::new()
        } else {
            t.view().version_info().to_owned()
        };
        t.mark_sent();
        out.push(DiscoveryRequest {
            version_info,
            node: (!*node_sent).then(|| node.clone()),
            resource_names: names,
            type_url: ty.type_url().to_owned(),
            response_nonce: nonce,
            error_detail,
            ..Default::default()
        });
        *node_sent = true;
    }
    out
}

/// Applies a response; `None` when its type is not one the client speaks.
pub(crate) fn apply<C: Codec>(
    state: &mut State<C>,
    response: &DiscoveryResponse,
    now: Instant,
) -> Option<(ResourceType, Verdict)> {
    let Some(ty) = ResourceType::from_type_url(&response.type_url) else {
        tracing::warn!(type_url = %response.type_url, "ignoring a response of an unknown type");
        return None;
    };
    let incoming: Vec<Incoming<'_>> = response
        .resources
        .iter()
        .map(|raw| Incoming {
            name: None,
            version: None,
            raw,
        })
        .collect();
    let verdict = state.apply(
        Response {
            ty,
            version_info: &response.version_info,
            nonce: &response.nonce,
            resources: &incoming,
            removed: &[],
            full_state: ty.sotw_full_state(),
        },
        now,
    );
    Some((ty, verdict))
}
