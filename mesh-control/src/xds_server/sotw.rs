//! State-of-the-world ADS streams.
//!
//! Per type the stream keeps the subscription (wildcard or names) and what it last sent.
//! A request whose nonce is not the last one sent for its type is stale and ignored, as the
//! spec says; an ACK that changes nothing gets no answer; a subscription change gets the
//! current resources; a config change gets every type whose content changed for this
//! client. After clusters are sent, endpoints are re-sent too: Envoy warms an updated
//! cluster only once it has (re)received its endpoints.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::stream::{StreamCtx, WILDCARD, push_order};

const CLUSTER_URL: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const ENDPOINT_URL: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    /// The first request had no names (legacy wildcard): an empty list keeps meaning "all".
    legacy_wildcard: bool,
    names: BTreeSet<String>,
    /// Last nonce sent; an empty string before the first response.
    nonce: String,
    /// What the last response held: name -> resource version.
    sent: BTreeMap<String, String>,
    sent_version: String,
}

type Tx = mpsc::Sender<Result<DiscoveryResponse, Status>>;

pub(crate) async fn run<C: Send + Sync + 'static>(
    mut ctx: StreamCtx<C>,
    mut requests: Streaming<DiscoveryRequest>,
    tx: Tx,
) {
    let mut types: HashMap<String, TypeState> = HashMap::new();
    loop {
        let request = tokio::select! {
            r = requests.next() => r,
            changed = ctx.config.changed(), if ctx.node.is_some() => {
                if changed.is_err() {
                    break; // the server is gone
                }
                if ctx.refresh().await && push_changes(&mut ctx, &mut types, &tx).await.is_err() {
                    break;
                }
                continue;
            }
            () = tx.closed() => break,
        };
        let Some(request) = ctx.admit(request, |r| r.node.as_ref(), &tx).await else {
            break;
        };
        if handle(&mut ctx, &mut types, request, &tx).await.is_err() {
            break;
        }
    }
}

/// Applies one request; answers it when the spec says so. `Err` when the client is gone.
async fn handle<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    types: &mut HashMap<String, TypeState>,
    request: DiscoveryRequest,
    tx: &Tx,
) -> Result<(), ()> {
    let type_url = request.type_url;
    ctx.admit_type(
        &type_url,
        "DiscoveryRequest without type_url on an ADS stream",
        tx,
    )
    .await?;
    let first = !types.contains_key(&type_url);
    let t = types.entry(type_url.clone()).or_default();
    if !request.response_nonce.is_empty() {
        if request.response_nonce != t.nonce {
            tracing::trace!(stream = ctx.id, %type_url, nonce = %request.response_nonce, "stale nonce ignored");
            return Ok(());
        }
        match &request.error_detail {
            Some(err) => ctx.record_nack(
                &type_url,
                &request.version_info,
                &request.response_nonce,
                &err.message,
            ),
            None => ctx.record_ack(&type_url, &request.version_info, &request.response_nonce),
        }
    }
    let names = request.resource_names;
    if first && names.is_empty() {
        t.legacy_wildcard = true;
    } else if !names.is_empty() {
        t.legacy_wildcard = false;
    }
    let wildcard = names.iter().any(|n| n == WILDCARD) || (names.is_empty() && t.legacy_wildcard);
    let names: BTreeSet<String> = names.into_iter().filter(|n| n != WILDCARD).collect();
    let changed = first || wildcard != t.wildcard || names != t.names;
    t.wildcard = wildcard;
    t.names = names;
    if !changed {
        return Ok(());
    }
    ctx.record_subscription(&type_url, t.wildcard, t.names.iter().cloned().collect());
    respond(ctx, &type_url, t, true, tx).await.map(|_| ())
}

/// Sends every subscribed type whose content changed (endpoints again after clusters).
async fn push_changes<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    types: &mut HashMap<String, TypeState>,
    tx: &Tx,
) -> Result<(), ()> {
    let mut clusters_sent = false;
    for type_url in push_order(types.keys()) {
        let Some(t) = types.get_mut(&type_url) else {
            continue;
        };
        let force = type_url == ENDPOINT_URL && clusters_sent;
        let sent = respond(ctx, &type_url, t, force, tx).await?;
        if type_url == CLUSTER_URL {
            clusters_sent = sent;
        }
    }
    Ok(())
}

/// Sends the type's current resources for the subscription, unless `force` is false and
/// the client already has exactly them. `Ok(true)` when something was sent.
async fn respond<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    type_url: &str,
    t: &mut TypeState,
    force: bool,
    tx: &Tx,
) -> Result<bool, ()> {
    let Some(resources) = ctx.resources.clone() else {
        return Ok(false); // nothing generated yet: the config is broken for this node
    };
    let typ = resources.get(type_url);
    let selected: Vec<(&String, &super::VersionedResource)> = match typ {
        None => Vec::new(),
        Some(typ) if t.wildcard => typ.resources.iter().collect(),
        Some(typ) => t
            .names
            .iter()
            .filter_map(|n| typ.resources.get_key_value(n))
            .collect(),
    };
    let sent: BTreeMap<String, String> = selected
        .iter()
        .map(|(n, r)| ((*n).clone(), r.version.clone()))
        .collect();
    let version = typ.map(|t| t.version.clone()).unwrap_or_default();
    if !force && !t.nonce.is_empty() && sent == t.sent {
        return Ok(false);
    }
    let nonce = ctx.nonce();
    let response = DiscoveryResponse {
        version_info: version.clone(),
        resources: selected.iter().map(|(_, r)| r.resource.clone()).collect(),
        type_url: type_url.to_owned(),
        nonce: nonce.clone(),
        ..Default::default()
    };
    ctx.record_sent(
        type_url,
        &version,
        &nonce,
        response.resources.len(),
        t.wildcard,
        t.names.iter().cloned().collect(),
    );
    t.nonce = nonce;
    t.sent = sent;
    t.sent_version = version;
    tx.send(Ok(response)).await.map_err(|_| ())?;
    Ok(true)
}
