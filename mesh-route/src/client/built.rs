//! What the client derives from a config snapshot (a router per client listener, the
//! clusters' balancers, pools and services), and the task that rebuilds it when the
//! source publishes a new snapshot, so that requests only ever load the latest build.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use mesh_core::config::ConfigSnapshot;
use mesh_core::model::{
    ClusterSpecifier, FaultConfig, FilterOverride, FilterOverrides, HttpFilterConfig, ListenerKind,
    RouteAction, RouteConfig,
};
use mesh_tls::IdentityStore;
use tokio::sync::{oneshot, watch};

use super::{ClusterStack, Inner, MeshClientConfig};
use crate::Router;
use crate::cluster::ClusterSet;
use crate::router::RouterOptions;

/// Routers and clusters of one snapshot.
#[derive(Default)]
pub(super) struct Built {
    pub(super) snapshot: Arc<ConfigSnapshot>,
    /// Router per listener name (client listeners whose routes are present).
    pub(super) routers: HashMap<Arc<str>, Arc<Router>>,
    /// Routers by listener with the route config they were built from, to share the ones
    /// whose config did not change.
    by_config: HashMap<Arc<str>, (Arc<RouteConfig>, ListenerDefaults, Arc<Router>)>,
    pub(super) clusters: ClusterSet,
}

/// Builds from `snapshot`, reusing what `previous` built from unchanged resources.
pub(super) fn build(
    snapshot: Arc<ConfigSnapshot>,
    previous: &Built,
    identity: &IdentityStore,
    config: &MeshClientConfig,
    stack: &dyn ClusterStack,
) -> Built {
    let mut routers = HashMap::new();
    let mut by_config = HashMap::new();
    for name in snapshot.listeners.keys() {
        let Some(rc) = snapshot.route_config_of(name) else {
            continue;
        };
        let defaults = listener_defaults(&snapshot, name);
        let reused = previous
            .by_config
            .get(name)
            .filter(|(old, old_defaults, _)| {
                (Arc::ptr_eq(old, &rc) || **old == *rc) && *old_defaults == defaults
            });
        let options = RouterOptions {
            filter_defaults: defaults.0.clone(),
            max_stream_duration: defaults.1,
            host_port_mode: config.host_port_mode,
            suppress_envoy_headers: defaults.2,
        };
        let router = match reused {
            Some((_, _, r)) => Arc::clone(r),
            None => {
                match Router::with_options(&without_absent_rate_limits(&rc, &defaults.0), options) {
                    Ok(r) => Arc::new(r),
                    Err(e) => {
                        tracing::warn!(listener = %name, error = %e, "route configuration unusable");
                        continue;
                    }
                }
            }
        };
        by_config.insert(name.clone(), (rc.clone(), defaults, router.clone()));
        routers.insert(name.clone(), router);
    }
    let marked = super::hbone_hosts::mark(&snapshot, &config.hbone_hosts);
    let clusters = ClusterSet::build(
        &marked,
        &previous.clusters,
        identity,
        config.pool.clone(),
        stack,
    );
    Built {
        snapshot,
        routers,
        by_config,
        clusters,
    }
}

/// What a listener's connection manager gives routes that do not say otherwise: its HTTP
/// filter configs that act on requests (a fault filter that injects something, a local
/// rate limit), its `max_stream_duration` and its router's `suppress_envoy_headers`.
type ListenerDefaults = (FilterOverrides, Option<std::time::Duration>, bool);

fn listener_defaults(snapshot: &ConfigSnapshot, listener: &str) -> ListenerDefaults {
    let Some(ListenerKind::Client(hcm)) = snapshot.listeners.get(listener).map(|l| &l.kind) else {
        return ListenerDefaults::default();
    };
    let filters = hcm
        .http_filters
        .iter()
        .filter_map(|f| match &f.config {
            HttpFilterConfig::Fault(cfg) if *cfg != FaultConfig::default() => {
                Some((f.name.clone(), FilterOverride::Fault(cfg.clone())))
            }
            // Kept even without a bucket, so routes may override it; the layer skips those.
            HttpFilterConfig::LocalRateLimit(cfg) => {
                Some((f.name.clone(), FilterOverride::LocalRateLimit(cfg.clone())))
            }
            _ => None,
        })
        .collect();
    let suppress = hcm.http_filters.iter().any(|f| {
        matches!(
            f.config,
            HttpFilterConfig::Router(r) if r.suppress_envoy_headers
        )
    });
    (filters, hcm.max_stream_duration, suppress)
}

/// The route table without local rate limit overrides keyed by a name that is no
/// `local_ratelimit` filter of the listener: Envoy only looks per-route configs up for the
/// filters in the chain, so such an override does nothing there either.
fn without_absent_rate_limits(
    rc: &Arc<RouteConfig>,
    defaults: &FilterOverrides,
) -> Arc<RouteConfig> {
    let mut removed = false;
    let mut strip = |m: &mut FilterOverrides| {
        let before = m.len();
        m.retain(|k, v| {
            !matches!(v, FilterOverride::LocalRateLimit(_))
                || matches!(defaults.get(k), Some(FilterOverride::LocalRateLimit(_)))
        });
        removed |= m.len() != before;
    };
    let mut out = (**rc).clone();
    for vh in &mut out.virtual_hosts {
        strip(&mut vh.filter_overrides);
        for r in &mut vh.routes {
            strip(&mut r.filter_overrides);
            if let RouteAction::Forward(f) = &mut r.action
                && let ClusterSpecifier::Weighted(ws) = &mut f.cluster
            {
                for w in ws {
                    strip(&mut w.filter_overrides);
                }
            }
        }
    }
    // Keep the original (and its `Arc`s) when nothing was removed.
    if removed { Arc::new(out) } else { rc.clone() }
}

/// The longest an update waits for the connections to the endpoints it adds.
const WARM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Rebuilds on every new snapshot until the client is dropped (`stop` fires) or the source
/// closes. The build is published with one atomic store, then announced on `applied`.
pub(super) async fn rebuild_on_change(
    inner: Weak<Inner>,
    mut snapshots: watch::Receiver<Arc<ConfigSnapshot>>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            changed = snapshots.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
        let snapshot = snapshots.borrow_and_update().clone();
        let Some(inner) = inner.upgrade() else { return };
        let previous = inner.built.load_full();
        if Arc::ptr_eq(&previous.snapshot, &snapshot) {
            continue;
        }
        // Endpoints the update adds are connected first, so no request waits for their
        // handshakes; bounded, so that one that does not answer delays the update (and the
        // removals in it) no longer than WARM_TIMEOUT, and then gets its requests as any.
        let _ = tokio::time::timeout(WARM_TIMEOUT, previous.clusters.warm(&snapshot)).await;
        let next = build(
            snapshot.clone(),
            &previous,
            &inner.identity,
            &inner.config,
            &*inner.stack,
        );
        inner.built.store(Arc::new(next));
        inner.applied.send_replace(snapshot);
    }
}
