//! Delta (incremental) wire format: `DeltaDiscoveryRequest`s from the state, and
//! `DeltaDiscoveryResponse`s into it.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::time::Instant;

use super::state::{Codec, Incoming, Response, State, Verdict};
use crate::resource::ResourceType;

/// The wildcard resource name of delta xDS.
const WILDCARD: &str = "*";

/// The requests owed now. On a new stream each wanted type is subscribed afresh with
/// `initial_resource_versions` of what the client holds, so the server sends only what
/// changed; afterwards ACK/NACKs and subscription changes are separate requests.
pub(crate) fn requests<C: Codec>(
    state: &mut State<C>,
    node: &Node,
    node_sent: &mut bool,
) -> Vec<DeltaDiscoveryRequest> {
    let mut out = Vec::new();
    for ty in ResourceType::ALL {
        let mut t = state.type_mut(ty);
        let mut node_once = || {
            let n = (!*node_sent).then(|| node.clone());
            *node_sent = true;
            n
        };
        if !t.sent_on_stream() {
            if !t.has_interest() {
                continue;
            }
            let view = t.view();
            let subscribe = if view.wildcard() {
                vec![WILDCARD.to_owned()]
            } else {
                view.subscribed_names()
            };
            let initial_resource_versions = view.held_versions();
            let _ = t.take_delta_changes();
            let _ = t.take_reply();
            t.mark_sent();
            out.push(DeltaDiscoveryRequest {
                node: node_once(),
                type_url: ty.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                initial_resource_versions,
                ..Default::default()
            });
            continue;
        }
        if let Some((nonce, error_detail)) = t.take_reply() {
            out.push(DeltaDiscoveryRequest {
                node: node_once(),
                type_url: ty.type_url().to_owned(),
                response_nonce: nonce,
                error_detail,
                ..Default::default()
            });
        }
        let (subscribe, unsubscribe) = t.take_delta_changes();
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            out.push(DeltaDiscoveryRequest {
                node: node_once(),
                type_url: ty.type_url().to_owned(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            });
        }
    }
    out
}

/// Applies a response; `None` when its type is not one the client speaks.
pub(crate) fn apply<C: Codec>(
    state: &mut State<C>,
    response: &DeltaDiscoveryResponse,
    now: Instant,
) -> Option<(ResourceType, Verdict)> {
    let Some(ty) = ResourceType::from_type_url(&response.type_url) else {
        tracing::warn!(type_url = %response.type_url, "ignoring a delta response of an unknown type");
        return None;
    };
    // A resource without a body only refreshes a TTL; nothing to apply.
    let incoming: Vec<Incoming<'_>> = response
        .resources
        .iter()
        .filter_map(|r| {
            r.resource.as_ref().map(|raw| Incoming {
                name: (!r.name.is_empty()).then_some(r.name.as_str()),
                version: Some(r.version.as_str()),
                raw,
            })
        })
        .collect();
    let verdict = state.apply(
        Response {
            ty,
            version_info: &response.system_version_info,
            nonce: &response.nonce,
            resources: &incoming,
            removed: &response.removed_resources,
            full_state: false,
        },
        now,
    );
    Some((ty, verdict))
}
