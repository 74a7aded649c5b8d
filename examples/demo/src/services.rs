//! The Bookinfo services, as axum apps behind MeshAcceptor (mTLS, PeerIdentity), each
//! with Istio's destination-side metrics (`reporter="destination"`) and, on their calls,
//! the source-side ones (`reporter="source"`), as a sidecar records both.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh::hbone::HBONE_PORT;
use mesh_route::client::{MeshClient, Upstream};
use mesh_telemetry::metrics::directory::follow_config;
use mesh_telemetry::metrics::{IstioMetricsLayer, IstioMetricsService, ServiceInfo};
use mesh_tls::PeerIdentity;
use mesh_tls::server::serve_with_shutdown;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::{Layer, ServiceExt};

use crate::DemoError;
use crate::stats::{Stats, directory, workload_info};
use crate::workload::Workload;

/// productpage's address as clients see it.
pub const PRODUCTPAGE: &str = "productpage.default.svc.cluster.local:9080";
const REVIEWS: &str = "reviews.default.svc.cluster.local:9080";
const RATINGS: &str = "ratings.default.svc.cluster.local:9080";
const DETAILS: &str = "details.default.svc.cluster.local:9080";

/// A workload of the config (`workloads.yaml`).
pub struct Spec {
    /// `app` label.
    pub name: &'static str,
    /// `version` label.
    pub version: &'static str,
    /// Service account.
    pub account: &'static str,
    /// Listening port.
    pub port: u16,
}

/// The workloads of examples/config/bookinfo/workloads.yaml.
pub const BOOKINFO: &[Spec] = &[
    Spec {
        name: "ratings",
        version: "v1",
        account: "ratings",
        port: 19085,
    },
    Spec {
        name: "reviews",
        version: "v1",
        account: "reviews",
        port: 19082,
    },
    Spec {
        name: "reviews",
        version: "v2",
        account: "reviews",
        port: 19083,
    },
    Spec {
        name: "reviews",
        version: "v3",
        account: "reviews",
        port: 19084,
    },
    Spec {
        name: "details",
        version: "v1",
        account: "details",
        port: 19081,
    },
    Spec {
        name: "productpage",
        version: "v1",
        account: "productpage",
        port: 19080,
    },
];

#[derive(Clone)]
struct App {
    id: String,
    version: &'static str,
    client: IstioMetricsService<MeshClient>,
    stats: Arc<Stats>,
}

impl App {
    fn saw(&self, peer: &PeerIdentity) {
        self.stats.peer(&peer.to_string(), &self.id);
    }

    /// GET `http://{target}{path}` through the mesh, forwarding `end-user`.
    async fn call(
        &self,
        target: &str,
        path: &str,
        end_user: Option<&http::HeaderValue>,
    ) -> Result<(Value, Option<Upstream>, Option<PeerIdentity>), String> {
        let mut req = http::Request::get(format!("http://{target}{path}"));
        if let Some(u) = end_user {
            req = req.header("end-user", u);
        }
        let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let resp = match self.client.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => return Err(format!("{target}: {e}")),
        };
        let status = resp.status();
        let upstream = resp.extensions().get::<Upstream>().cloned();
        let peer = resp.extensions().get::<PeerIdentity>().cloned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "{target}: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let v = serde_json::from_slice(&body).map_err(|e| format!("{target}: {e}"))?;
        Ok((v, upstream, peer))
    }
}

type Reply = Result<Json<Value>, (StatusCode, String)>;

fn bad_gateway(e: String) -> (StatusCode, String) {
    (StatusCode::BAD_GATEWAY, e)
}

/// 503s ratings answered on purpose (see [`ratings_503_percent`]).
pub(crate) static RATINGS_503: AtomicU64 = AtomicU64::new(0);

/// `DEMO_RATINGS_503_PERCENT` (for scripts/soak): ratings answers 503 to this share of
/// requests, an upstream failing now and then whose failures the VirtualService's
/// retries (`gateway-error`) must hide. Default 0.
fn ratings_503_percent() -> u64 {
    static PERCENT: OnceLock<u64> = OnceLock::new();
    *PERCENT.get_or_init(|| {
        std::env::var("DEMO_RATINGS_503_PERCENT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    })
}

async fn ratings(State(app): State<App>, Extension(peer): Extension<PeerIdentity>) -> Reply {
    app.saw(&peer);
    let percent = ratings_503_percent();
    if percent > 0 {
        // A hash of a counter: uniform enough, and no RNG dependency.
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let roll = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), n) % 100;
        if roll < percent {
            RATINGS_503.fetch_add(1, Ordering::Relaxed);
            return Err((StatusCode::SERVICE_UNAVAILABLE, "injected 503".into()));
        }
    }
    Ok(Json(json!({ "stars": 4, "ratings_version": app.version })))
}

async fn details(State(app): State<App>, Extension(peer): Extension<PeerIdentity>) -> Reply {
    app.saw(&peer);
    Ok(Json(
        json!({ "author": "William Shakespeare", "year": 1595 }),
    ))
}

async fn reviews(
    State(app): State<App>,
    Extension(peer): Extension<PeerIdentity>,
    headers: HeaderMap,
) -> Reply {
    app.saw(&peer);
    // v1 shows no stars; v2 and v3 ask ratings, as in Bookinfo.
    let stars = if app.version == "v1" {
        Value::Null
    } else {
        let (v, _, _) = app
            .call(RATINGS, "/ratings/0", headers.get("end-user"))
            .await
            .map_err(bad_gateway)?;
        v["stars"].clone()
    };
    Ok(Json(json!({ "version": app.version, "stars": stars })))
}

async fn productpage(
    State(app): State<App>,
    Extension(peer): Extension<PeerIdentity>,
    headers: HeaderMap,
) -> Reply {
    app.saw(&peer);
    let user = headers.get("end-user");
    let (reviews, details) = tokio::join!(
        app.call(REVIEWS, "/reviews/0", user),
        app.call(DETAILS, "/details/0", user)
    );
    let (reviews, upstream, server) = reviews.map_err(bad_gateway)?;
    let (details, _, _) = details.map_err(bad_gateway)?;
    Ok(Json(json!({
        "reviews": reviews,
        "reviews_cluster": upstream.as_ref().map(|u| u.cluster.to_string()),
        "reviews_route": upstream.as_ref().map(|u| u.route.to_string()),
        "reviews_server": server.map(|p| p.to_string()),
        "details": details,
    })))
}

/// Binds the workload's port and serves its app over mTLS until `stop`; with `hbone` (the
/// workload's address in ambient mode) it binds there and also serves the app through
/// HBONE on `<hbone>:15008`.
pub async fn serve(
    spec: &Spec,
    w: Workload,
    hbone: Option<IpAddr>,
    stats: Arc<Stats>,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, DemoError> {
    // Source-side metrics of this service's calls; the callee's workload labels follow
    // the config (the task ends with the process).
    let source = IstioMetricsLayer::source(
        &stats.telemetry().metrics,
        workload_info(spec.name, spec.account, spec.version),
    );
    let _follow = follow_config(source.resolver().clone(), w.mesh.source(), directory());
    let app = App {
        id: w.id.to_string(),
        version: spec.version,
        client: source.layer(w.mesh.mesh_client()),
        stats: stats.clone(),
    };
    let router = match spec.name {
        "ratings" => Router::new().route("/ratings/{id}", get(ratings)),
        "reviews" => Router::new().route("/reviews/{id}", get(reviews)),
        "details" => Router::new().route("/details/{id}", get(details)),
        _ => Router::new().route("/productpage", get(productpage)),
    }
    .with_state(app.clone());
    // Istio's destination-side metrics: this service's labels, the caller's from its
    // verified SPIFFE ID (and its workload from the directory).
    let metrics = w.mesh.inbound_metrics(ServiceInfo::from_host(&format!(
        "{}.default.svc.cluster.local",
        spec.name
    )));
    metrics.resolver().set_directory(directory());
    let service = metrics.layer(router);
    let ip = hbone.unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let addr = SocketAddr::new(ip, spec.port);
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        DemoError(format!(
            "{} {}: cannot listen on {addr}: {e}",
            spec.name, spec.version
        ))
    })?;
    // Resolve the targets this service calls before taking traffic.
    let targets: &[&str] = match spec.name {
        "productpage" => &[REVIEWS, DETAILS],
        "reviews" if spec.version != "v1" => &[RATINGS],
        _ => &[],
    };
    for t in targets {
        w.mesh
            .resolve(t)
            .await
            .map_err(|e| DemoError(format!("{} {}: {e}", spec.name, spec.version)))?;
    }
    let mut tasks = Vec::new();
    if let Some(ip) = hbone {
        let server = w
            .mesh
            .hbone_server()
            .http(spec.port, service.clone())
            .build();
        stats.hbone_server(server.metrics().clone());
        let addr = SocketAddr::new(ip, HBONE_PORT);
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            DemoError(format!(
                "{} {}: cannot listen on {addr} (--hbone needs 127.0.20.0/24 on the loopback, as Linux has): {e}",
                spec.name, spec.version
            ))
        })?;
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = server.serve(listener, stopped).await {
                tracing::warn!(error = %e, "HBONE server ended");
            }
        }));
    }
    let acceptor = w.mesh.acceptor();
    tasks.push(tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = serve_with_shutdown(listener, acceptor, service, stopped).await {
            tracing::warn!(error = %e, "server ended");
        }
    }));
    Ok(tasks)
}
