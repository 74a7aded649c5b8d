//! The admin endpoint: `/ready`, `/config_dump` (the driver's current xDS snapshot) and
//! `/stats`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use mesh_core::model::{ListenerKind, RouteSource};
use mesh_route::client::MeshClient;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::DemoError;
use crate::stats::Stats;

#[derive(Clone)]
struct Admin {
    client: MeshClient,
    stats: Arc<Stats>,
}

async fn ready(State(a): State<Admin>) -> (StatusCode, &'static str) {
    if a.client.xds().is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn config_dump(State(a): State<Admin>) -> Json<Value> {
    let s = a.client.xds().snapshot();
    let mut listeners = serde_json::Map::new();
    for (name, l) in s.listeners.iter() {
        let v = match &l.kind {
            ListenerKind::Client(hcm) => match &hcm.route_source {
                RouteSource::Rds(r) => json!({ "rds": r }),
                RouteSource::Inline(r) => json!({ "inline_routes": r.name }),
            },
            ListenerKind::Server(_) => json!({ "server": true }),
        };
        listeners.insert(name.to_string(), v);
    }
    let mut routes = serde_json::Map::new();
    for (name, rc) in s.route_configs.iter() {
        let vhosts: Vec<Value> = rc
            .virtual_hosts
            .iter()
            .map(|vh| {
                json!({
                    "name": vh.name,
                    "domains": vh.domains,
                    "routes": vh.routes.iter().map(|r| format!("{}: {:?}", r.name, r.route_match.path)).collect::<Vec<_>>(),
                })
            })
            .collect();
        routes.insert(name.to_string(), json!(vhosts));
    }
    let mut clusters = serde_json::Map::new();
    for (name, c) in s.clusters.iter() {
        let eds = c
            .discovery
            .eds_name(&c.name)
            .and_then(|n| s.endpoints.get(n));
        let endpoints: Vec<String> = eds
            .map(|a| {
                a.localities
                    .iter()
                    .flat_map(|l| l.endpoints.iter())
                    .map(|e| format!("{:?} {:?}", e.address, e.health))
                    .collect()
            })
            .unwrap_or_default();
        clusters.insert(
            name.to_string(),
            json!({
                "lb_policy": format!("{:?}", c.lb_policy),
                "tls": c.tls.as_ref().map(|t| format!("{:?}", t.validation.san_matchers)),
                "endpoints": endpoints,
            }),
        );
    }
    Json(json!({ "listeners": listeners, "route_configs": routes, "clusters": clusters }))
}

async fn stats(State(a): State<Admin>) -> Json<Value> {
    let c = a.stats.counts();
    Json(json!({
        "requests": c.by_route.iter().map(|((r, s), n)| json!({"route": r, "subset": s, "count": n})).collect::<Vec<_>>(),
        "peers": c.peers.iter().map(|((cl, sv), n)| json!({"client": cl, "server": sv, "count": n})).collect::<Vec<_>>(),
        "errors": c.errors.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
    }))
}

/// Serves the admin endpoint until `stop`; returns its address.
pub async fn serve(
    addr: SocketAddr,
    client: MeshClient,
    stats_: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, DemoError> {
    let app = Router::new()
        .route("/ready", get(ready))
        .route("/config_dump", get(config_dump))
        .route("/stats", get(stats))
        .with_state(Admin {
            client,
            stats: stats_,
        });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| DemoError(format!("admin: cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| DemoError(format!("admin: {e}")))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(local)
}
