//! The admin port: mesh-admin's admin server over this proxy's registry, identity,
//! xDS status (the xDS client's, or in static mode the in-process source's) and a config
//! view.

use std::sync::Arc;

use mesh_admin::{Admin, XdsStatusSource};
use mesh_control::istio::WatchStatus;
use mesh_control::local::LocalSource;
use mesh_core::config::{ConfigSnapshot, ConfigSource};
use mesh_core::model::{EndpointAddress, ListenerKind, RouteSource};
use mesh_tls::IdentityStore;
use mesh_xds::client::ClientStatus;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The admin server for this proxy. `settings` is shown in `/config_dump`, and in static
/// mode the directory watcher's status (`watch`).
pub(crate) fn admin(
    registry: Arc<Registry>,
    identity: IdentityStore,
    source: Arc<dyn ConfigSource>,
    xds_status: Arc<dyn XdsStatusSource>,
    settings: Value,
    watch: Option<watch::Receiver<WatchStatus>>,
) -> Admin {
    Admin::new()
        .with_registry(registry)
        .with_identity(identity)
        .with_xds(Arc::new(SidecarXdsStatus(xds_status)))
        .with_clusters({
            let source = source.clone();
            move || clusters_json(&source.snapshots().borrow().clone())
        })
        .with_config_dump(move || {
            let mut dump = json!({
                "proxy": settings,
                "xds": snapshot_json(&source.snapshots().borrow().clone()),
            });
            if let Some(w) = &watch {
                let s = w.borrow();
                dump["mesh_config"] = json!({
                    "generation": s.generation,
                    "rejected_edits": s.rejected,
                    "last_error": s.last_error.as_ref().map(|e| e.to_string()),
                });
            }
            dump
        })
}

/// Static mode's status: what an xDS client holding the in-process source's resources
/// would report (`connected` once the first generation is in, resources `ACKED`, `NACKED`
/// with the translation's reason, or `DOES_NOT_EXIST`; versions are content hashes).
pub(crate) struct LocalStatus(pub(crate) LocalSource);

impl XdsStatusSource for LocalStatus {
    fn client_status(&self) -> Option<Arc<ClientStatus>> {
        Some(Arc::new(self.0.status()))
    }
}

/// The xDS status for `/ready` and `/config_dump`, counting a client that has subscribed
/// to nothing yet as ready: an outbound-only sidecar subscribes on its first request, and
/// must not stay unready until then.
struct SidecarXdsStatus(Arc<dyn XdsStatusSource>);

impl XdsStatusSource for SidecarXdsStatus {
    fn client_status(&self) -> Option<Arc<ClientStatus>> {
        let s = self.0.client_status()?;
        if s.ready || !s.resources.is_empty() {
            return Some(s);
        }
        let mut idle = (*s).clone();
        idle.ready = true;
        Some(Arc::new(idle))
    }
}

/// Listeners, routes and clusters with their endpoints, as the proxy sees them now.
fn snapshot_json(s: &ConfigSnapshot) -> Value {
    let listeners: serde_json::Map<String, Value> = s
        .listeners
        .iter()
        .map(|(name, l)| {
            let v = match &l.kind {
                ListenerKind::Client(hcm) => match &hcm.route_source {
                    RouteSource::Rds(r) => json!({ "client": { "rds": r } }),
                    RouteSource::Inline(r) => json!({ "client": { "inline_routes": r.name } }),
                },
                ListenerKind::Server(server) => json!({ "server": {
                    "address": server.address.to_string(),
                    "tls": server.filter_chains.iter().map(|c| c.tls.is_some()).collect::<Vec<_>>(),
                }}),
            };
            (name.to_string(), v)
        })
        .collect();
    let routes: serde_json::Map<String, Value> = s
        .route_configs
        .iter()
        .map(|(name, rc)| {
            let vhosts: Vec<Value> = rc
                .virtual_hosts
                .iter()
                .map(|vh| json!({ "name": vh.name, "domains": vh.domains, "routes": vh.routes.len() }))
                .collect();
            (name.to_string(), json!(vhosts))
        })
        .collect();
    json!({ "listeners": listeners, "route_configs": routes, "clusters": clusters_json(s) })
}

/// Each cluster with whether it is mTLS and its endpoint addresses.
fn clusters_json(s: &ConfigSnapshot) -> Value {
    let clusters: serde_json::Map<String, Value> = s
        .clusters
        .iter()
        .map(|(name, c)| {
            let endpoints: Vec<String> = c
                .discovery
                .eds_name(&c.name)
                .and_then(|n| s.endpoints.get(n))
                .map(|a| {
                    a.localities
                        .iter()
                        .flat_map(|l| l.endpoints.iter())
                        .map(|e| match &e.address {
                            EndpointAddress::Socket(a) => a.to_string(),
                            EndpointAddress::Dns { host, port } => format!("{host}:{port}"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                name.to_string(),
                json!({ "mtls": c.tls.is_some(), "endpoints": endpoints }),
            )
        })
        .collect();
    Value::Object(clusters)
}
