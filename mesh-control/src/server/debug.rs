//! Debug endpoints, like istiod's: JSON over plain HTTP on a loopback port.
//!
//! | path | content |
//! |---|---|
//! | `/debug/syncz` | every connected client: node, generator key, per type the versions and nonces sent and acked, NACKs |
//! | `/debug/syncz?summary` | counts only: generation, clients, clients synced to it, NACKs |
//! | `/debug/nackz` | the most recent NACKs with the clients' reasons |
//! | `/debug/configz` | the config in force (services, workloads, routing and security resources) |
//! | `/debug/config_status` | the watcher: generation, rejected edits and the errors of the last one |

use std::convert::Infallible;
use std::sync::Arc;

use crate::xds_server::XdsServer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Stopped;
use crate::istio::{MeshConfig, Named, WatchStatus};

#[derive(Clone)]
pub(crate) struct DebugState {
    pub(crate) xds: XdsServer<MeshConfig>,
    pub(crate) config: watch::Receiver<Arc<MeshConfig>>,
    pub(crate) status: watch::Receiver<WatchStatus>,
}

pub(crate) async fn serve(listener: TcpListener, state: DebugState, mut stopped: Stopped) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "debug endpoint accept failed");
                    continue;
                }
            },
            () = stopped.wait() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn handle<B>(state: &DebugState, req: &Request<B>) -> Response<Full<Bytes>> {
    let body = match req.uri().path() {
        "/debug/syncz" if req.uri().query() == Some("summary") => {
            let s = state.xds.status();
            json!({
                "generation": s.generation,
                "clients": s.clients.len(),
                "synced": s.clients.iter().filter(|c| c.synced_to(s.generation)).count(),
                "nacks": s.nacks.len(),
            })
        }
        "/debug/syncz" => serde_json::to_value(state.xds.status()).unwrap_or(Value::Null),
        "/debug/nackz" => serde_json::to_value(state.xds.status().nacks).unwrap_or(Value::Null),
        "/debug/configz" => configz(&state.config.borrow()),
        "/debug/config_status" => {
            let s = state.status.borrow();
            json!({
                "generation": s.generation,
                "rejected": s.rejected,
                "last_error": s.last_error.as_ref().map(|e| e.to_string()),
                "warnings": s.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        }
        "/" | "/debug" => json!({
            "endpoints": ["/debug/syncz", "/debug/nackz", "/debug/configz", "/debug/config_status"]
        }),
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(b"not found\n")))
                .unwrap_or_default();
        }
    };
    let mut text = serde_json::to_string_pretty(&body).unwrap_or_default();
    text.push('\n');
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_default()
}

fn named<T: serde::Serialize>(items: &[Arc<Named<T>>]) -> Vec<Value> {
    items
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "namespace": n.namespace,
                "origin": n.origin.to_string(),
                "spec": serde_json::to_value(&n.spec).unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn configz(config: &MeshConfig) -> Value {
    let services: Vec<Value> = config
        .services
        .values()
        .map(|s| {
            json!({
                "host": s.host,
                "namespace": s.namespace,
                "defined_by": s.defined_by.to_string(),
                "ports": serde_json::to_value(&s.ports).unwrap_or(Value::Null),
                "workloads": s.workloads.iter().map(|w| json!({
                    "name": w.name,
                    "address": w.entry.address,
                    "ports": w.entry.ports,
                    "labels": w.entry.labels,
                    "identity": w.identity_path(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "services": services,
        "virtual_services": named(&config.virtual_services),
        "destination_rules": named(&config.destination_rules),
        "peer_authentications": named(&config.peer_authentications),
        "authorization_policies": named(&config.authorization_policies),
    })
}
