//! The admin endpoint of the load driver's workload (mesh-admin's admin server):
//! `/stats/prometheus` (Istio's standard metrics of every workload in the process, both
//! reporters; the library's own; `mesh_cluster_*` of every workload's clusters),
//! `/config_dump` (every xDS resource the driver holds, and its xDS status: the xDS
//! client's under istiod, in embedded mode what an xDS client holding the in-process
//! source's resources would report),
//! `/clusters` (every workload's clusters: endpoints with EDS health and outlier
//! ejection), `/certs`, `/ready`, `/healthz`, `POST /logging?filter=`, plus the demo's own
//! `/stats` (JSON counters); and CSDS on the admin gRPC port.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::routing::get;
use axum::{Json, Router};
use envoy_types::pb::envoy::config::core::v3::Node;
use mesh_admin::config_dump::snapshot_json;
use mesh_admin::csds::CsdsService;
use mesh_admin::{
    Admin, IdentityCollector, LogFilterFn, XdsCollector, XdsStatusCache, XdsStatusSource,
};
use mesh_control::local::LocalSource;
use mesh_core::config::ConfigSnapshot;
use mesh_core::model::EndpointAddress;
use mesh_xds::client::ClientStatus;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::DemoError;
use crate::options::DemoOptions;
use crate::stats::Stats;
use crate::workload::Workload;

static LOG_FILTER: OnceLock<LogFilterFn> = OnceLock::new();

/// The driver's workload name (its clusters' `workload` in `/clusters`).
const DRIVER: &str = "loadgen-v1";

/// Lets `POST /logging?filter=` change the process's log filter through `f` (see
/// [`mesh_admin::reload_log_filter`]). Set once, before [`crate::run`].
pub fn set_log_filter(f: LogFilterFn) {
    let _ = LOG_FILTER.set(f);
}

/// Where the admin servers listen.
#[derive(Clone, Copy, Debug)]
pub struct AdminAddrs {
    /// HTTP admin endpoint.
    pub http: SocketAddr,
    /// Admin gRPC (CSDS).
    pub grpc: SocketAddr,
}

async fn demo_stats(State(stats): State<Arc<Stats>>) -> Json<Value> {
    let c = stats.counts();
    Json(json!({
        "requests": c.by_route.iter().map(|((r, s), n)| json!({"route": r, "subset": s, "count": n})).collect::<Vec<_>>(),
        "peers": c.peers.iter().map(|((cl, sv), n)| json!({"client": cl, "server": sv, "count": n})).collect::<Vec<_>>(),
        "errors": c.errors.iter().map(|(s, n)| json!({"status": s, "count": n})).collect::<Vec<_>>(),
        // For scripts/soak: a task leak shows as a count that keeps growing.
        "tokio_alive_tasks": tokio::runtime::Handle::current().metrics().num_alive_tasks(),
        "ratings_503_injected": crate::services::RATINGS_503.load(std::sync::atomic::Ordering::Relaxed),
        "control_plane_restarts": crate::istiod::RESTARTS.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

fn health_name(h: mesh_core::model::HealthStatus) -> &'static str {
    use mesh_core::model::HealthStatus::*;
    match h {
        Unknown => "UNKNOWN",
        Healthy => "HEALTHY",
        Unhealthy => "UNHEALTHY",
        Draining => "DRAINING",
        Timeout => "TIMEOUT",
        Degraded => "DEGRADED",
    }
}

/// `/clusters`: every workload's clusters whose live state is tracked (balancer, breaker,
/// outlier detection; `"workload"` names the client), then every other cluster of the
/// driver's (`workload`) xDS config with its EDS endpoints and health
/// (`failed_outlier_check` null: no live state to read yet).
fn clusters(tracked: Value, workload: &str, snapshot: &ConfigSnapshot) -> Value {
    let mut statuses = tracked["cluster_statuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let known: Vec<String> = statuses
        .iter()
        .filter(|c| c["workload"] == workload)
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let mut names: Vec<_> = snapshot.clusters.keys().cloned().collect();
    names.sort();
    for name in names
        .into_iter()
        .filter(|n| !known.iter().any(|k| **k == **n))
    {
        let Some(c) = snapshot.clusters.get(&name) else {
            continue;
        };
        let cla = c
            .discovery
            .eds_name(&c.name)
            .and_then(|n| snapshot.endpoints.get(n));
        let hosts: Vec<Value> = cla
            .iter()
            .flat_map(|a| a.localities.iter())
            .flat_map(|l| l.endpoints.iter().map(move |e| (l, e)))
            .map(|(l, e)| {
                let (address, port) = match &e.address {
                    EndpointAddress::Socket(s) => (s.ip().to_string(), s.port()),
                    EndpointAddress::Dns { host, port } => (host.to_string(), *port),
                };
                json!({
                    "address": {"socket_address": {"address": address, "port_value": port}},
                    "health_status": {
                        "eds_health_status": health_name(e.health),
                        "failed_outlier_check": null,
                    },
                    "weight": e.weight,
                    "priority": l.priority,
                })
            })
            .collect();
        statuses.push(json!({ "name": &*name, "workload": workload, "host_statuses": hosts }));
    }
    json!({ "cluster_statuses": statuses })
}

/// The in-process source's status, in the xDS client's vocabulary.
struct LocalStatus(LocalSource);

impl XdsStatusSource for LocalStatus {
    fn client_status(&self) -> Option<Arc<ClientStatus>> {
        Some(Arc::new(self.0.status()))
    }
}

/// Starts the admin HTTP and gRPC servers for `driver` until `stop`.
pub async fn serve(
    opts: &DemoOptions,
    driver: &Workload,
    stats: Arc<Stats>,
    stop: watch::Receiver<bool>,
) -> Result<AdminAddrs, DemoError> {
    let (cache, refresh): (Arc<dyn XdsStatusSource>, _) = match (driver.mesh.xds(), &driver.local) {
        (Some(xds), _) => {
            let (cache, refresh) = XdsStatusCache::spawn(xds.clone(), Duration::from_secs(1));
            (cache, Some(refresh))
        }
        (None, Some(local)) => (Arc::new(LocalStatus(local.clone())), None),
        (None, None) => return Err(DemoError("admin: the driver has no config status".into())),
    };
    let source = driver.mesh.source().clone();

    let mut registry = Registry::default();
    let telemetry = stats.telemetry().clone();
    telemetry.metrics.register(&mut registry);
    {
        let mesh = registry.sub_registry_with_prefix("mesh");
        mesh.register_collector(Box::new(IdentityCollector::new(
            driver.mesh.identity().clone(),
        )));
        mesh.register_collector(Box::new(XdsCollector::new(cache.clone())));
    }
    telemetry.upstream.register(&mut registry);

    let dump_source = source.clone();
    let upstream = telemetry.upstream.clone();
    let mut admin = Admin::new()
        .with_registry(Arc::new(registry))
        .with_identity(driver.mesh.identity().clone())
        .with_xds(cache.clone())
        .with_config_dump(move || snapshot_json(&dump_source.snapshots().borrow().clone()))
        .with_clusters(move || {
            let snapshot = source.snapshots().borrow().clone();
            clusters(upstream.clusters_json(), DRIVER, &snapshot)
        });
    if let Some(f) = LOG_FILTER.get() {
        admin = admin.with_log_filter(f.clone());
    }
    let admin = Arc::new(admin);
    let app = Router::new()
        .route("/stats", get(demo_stats))
        .with_state(stats)
        .fallback(move |req: Request| {
            let admin = admin.clone();
            async move { admin.handle(&req) }
        });

    let listener = tokio::net::TcpListener::bind(opts.admin_addr)
        .await
        .map_err(|e| DemoError(format!("admin: cannot listen on {}: {e}", opts.admin_addr)))?;
    let http = listener
        .local_addr()
        .map_err(|e| DemoError(format!("admin: {e}")))?;
    let grpc_listener = tokio::net::TcpListener::bind(opts.admin_grpc_addr)
        .await
        .map_err(|e| {
            DemoError(format!(
                "admin gRPC: cannot listen on {}: {e}",
                opts.admin_grpc_addr
            ))
        })?;
    let grpc = grpc_listener
        .local_addr()
        .map_err(|e| DemoError(format!("admin gRPC: {e}")))?;

    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let http_stop = stopped(stop.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(http_stop)
            .await;
    });
    let node = Node {
        id: format!(
            "sidecar~{}~loadgen-v1.default~default.svc.cluster.local",
            http.ip()
        ),
        cluster: "loadgen.default".into(),
        ..Default::default()
    };
    let csds = CsdsService::new(cache, Some(node)).into_server();
    let grpc_stop = stopped(stop);
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc_listener);
        let _ = tonic::transport::Server::builder()
            .add_service(csds)
            .serve_with_incoming_shutdown(incoming, grpc_stop)
            .await;
        if let Some(r) = refresh {
            r.abort();
        }
    });
    Ok(AdminAddrs { http, grpc })
}
