//! Delta (incremental) ADS streams.
//!
//! Per type the stream keeps the subscription and the version of every resource the
//! client holds (seeded from `initial_resource_versions` on a reconnect, so nothing it
//! already has is sent again). A response carries only resources whose version differs
//! from the client's, and `removed_resources` for those it holds that are gone. ACK/NACK
//! and subscription changes are independent: a stale nonce is not an ACK, but its
//! subscription changes still apply.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use futures::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::stream::{StreamCtx, WILDCARD, push_order};

#[derive(Debug, Default)]
struct TypeState {
    wildcard: bool,
    names: BTreeSet<String>,
    /// Name -> version of what the client holds (as far as the server knows).
    held: HashMap<String, String>,
    /// Last nonce sent.
    nonce: String,
}

type Tx = mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>;

pub(crate) async fn run<C: Send + Sync + 'static>(
    mut ctx: StreamCtx<C>,
    mut requests: Streaming<DeltaDiscoveryRequest>,
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

/// Sends each subscribed type what changed in the new config. `Err` when the client is gone.
async fn push_changes<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    types: &mut HashMap<String, TypeState>,
    tx: &Tx,
) -> Result<(), ()> {
    for type_url in push_order(types.keys()) {
        if let Some(t) = types.get_mut(&type_url) {
            respond(ctx, &type_url, t, false, tx).await?;
        }
    }
    Ok(())
}

async fn handle<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    types: &mut HashMap<String, TypeState>,
    request: DeltaDiscoveryRequest,
    tx: &Tx,
) -> Result<(), ()> {
    let type_url = request.type_url;
    ctx.admit_type(&type_url, "DeltaDiscoveryRequest without type_url", tx)
        .await?;
    let first = !types.contains_key(&type_url);
    let t = types.entry(type_url.clone()).or_default();
    if first {
        t.held = request.initial_resource_versions;
        // An empty first subscription is the legacy wildcard.
        t.wildcard = request.resource_names_subscribe.is_empty();
    }
    if !request.response_nonce.is_empty() && request.response_nonce == t.nonce {
        let version = ""; // delta ACKs carry no version; the registry keeps the sent one
        match &request.error_detail {
            Some(err) => ctx.record_nack(&type_url, version, &request.response_nonce, &err.message),
            None => {
                let sent = ctx
                    .server
                    .inner
                    .registry
                    .status_of(ctx.id, &type_url)
                    .unwrap_or_default();
                ctx.record_ack(&type_url, &sent, &request.response_nonce);
            }
        }
    }
    let mut changed = first;
    for name in request.resource_names_subscribe {
        changed = true;
        if name == WILDCARD {
            t.wildcard = true;
        } else {
            // A re-subscription asks for the resource again.
            t.held.remove(&name);
            t.names.insert(name);
        }
    }
    for name in request.resource_names_unsubscribe {
        changed = true;
        if name == WILDCARD {
            t.wildcard = false;
        } else {
            t.names.remove(&name);
        }
        if !t.wildcard {
            t.held.remove(&name);
        }
    }
    if !changed {
        return Ok(());
    }
    if !t.wildcard {
        // Forget what is no longer subscribed: it is not updated any more.
        let names = &t.names;
        t.held.retain(|n, _| names.contains(n));
    }
    ctx.record_subscription(&type_url, t.wildcard, t.names.iter().cloned().collect());
    respond(ctx, &type_url, t, first, tx).await.map(|_| ())
}

/// Sends what differs from what the client holds. `force` sends even an empty response
/// (the first answer of a type, so a subscriber to an empty type is not left waiting).
async fn respond<C: Send + Sync + 'static>(
    ctx: &mut StreamCtx<C>,
    type_url: &str,
    t: &mut TypeState,
    force: bool,
    tx: &Tx,
) -> Result<bool, ()> {
    let Some(resources) = ctx.resources.clone() else {
        return Ok(false);
    };
    let typ = resources.get(type_url);
    let mut resources = Vec::new();
    if let Some(typ) = typ {
        let wanted: Box<dyn Iterator<Item = (&String, &super::VersionedResource)>> = if t.wildcard {
            Box::new(typ.resources.iter())
        } else {
            Box::new(
                t.names
                    .iter()
                    .filter_map(|n| typ.resources.get_key_value(n)),
            )
        };
        for (name, r) in wanted {
            if t.held.get(name) != Some(&r.version) {
                resources.push(Resource {
                    name: name.clone(),
                    version: r.version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                });
            }
        }
    }
    let mut removed: Vec<String> = t
        .held
        .keys()
        .filter(|n| typ.is_none_or(|typ| !typ.resources.contains_key(*n)))
        .cloned()
        .collect();
    removed.sort();
    if resources.is_empty() && removed.is_empty() && !force {
        return Ok(false);
    }
    for r in &resources {
        t.held.insert(r.name.clone(), r.version.clone());
    }
    for n in &removed {
        t.held.remove(n);
    }
    let version = typ.map(|t| t.version.clone()).unwrap_or_default();
    let nonce = ctx.nonce();
    ctx.record_sent(
        type_url,
        &version,
        &nonce,
        resources.len(),
        t.wildcard,
        t.names.iter().cloned().collect(),
    );
    t.nonce = nonce.clone();
    let response = DeltaDiscoveryResponse {
        system_version_info: version,
        resources,
        type_url: type_url.to_owned(),
        removed_resources: removed,
        nonce,
        ..Default::default()
    };
    tx.send(Ok(response)).await.map_err(|_| ())?;
    Ok(true)
}
