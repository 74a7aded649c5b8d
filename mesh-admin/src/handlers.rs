//! The admin endpoints: [`Admin::serve`] and [`Admin::handle`].

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::body::Incoming;
use mesh_tls::IdentityStatus;
use mesh_tls::server::{
    ConnectionAddrs, ConnectionLimiter, ConnectionLimits, Drain, LimitedListener,
    serve_connection_with_limits,
};
use mesh_xds::client::ClientStatus;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::server::Admin;
use crate::unix_seconds as unix;

impl Admin {
    /// Serves the admin endpoints on `listener` until the returned future is dropped, under
    /// the default [`ConnectionLimits`] (connection cap, header-read timeout; accept errors
    /// back off).
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let admin = Arc::new(self);
        let limits = Arc::new(ConnectionLimits::default());
        let mut listener =
            LimitedListener::new(listener, ConnectionLimiter::new(limits.max_connections));
        loop {
            let (stream, remote, permit) = listener.accept().await;
            let Ok(local) = stream.local_addr() else {
                continue;
            };
            let admin = admin.clone();
            let limits = limits.clone();
            tokio::spawn(async move {
                let svc = tower::service_fn(move |req: http::Request<Incoming>| {
                    let resp = admin.handle(&req);
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
                let addrs = ConnectionAddrs { remote, local };
                serve_connection_with_limits(stream, svc, addrs, None, Drain::never(), &limits)
                    .await;
                drop(permit);
            });
        }
    }

    /// Answers one admin request (what [`serve`](Self::serve) does per request).
    pub fn handle<B>(&self, req: &http::Request<B>) -> http::Response<Full<Bytes>> {
        route(self, req.method(), req.uri())
    }
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<String>) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.into())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json_resp(v: &Value) -> Resp {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn query_param<'a>(uri: &'a Uri, key: &str) -> Option<&'a str> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The xDS client status as JSON (CSDS's vocabulary).
fn xds_status_json(s: &ClientStatus) -> Value {
    json!({
        "connected": s.connected,
        "ready": s.ready,
        "type_versions": s.type_versions.iter()
            .map(|(t, v)| (t.type_url().to_string(), Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>(),
        "resources": s.resources.iter().map(|r| json!({
            "type_url": r.kind.type_url(),
            "name": r.name,
            "client_status": r.state.as_str(),
            "version_info": r.version,
            "error_state": r.last_error,
            "last_updated": r.last_update.map(unix),
            "has_value": r.has_value,
        })).collect::<Vec<_>>(),
    })
}

fn certs(admin: &Admin) -> Resp {
    let Some(store) = &admin.identity else {
        return text(StatusCode::NOT_FOUND, "no identity configured\n");
    };
    let stats = store.stats();
    let (state, id, not_after, reason) = match store.status() {
        IdentityStatus::Initializing => ("initializing", None, None, None),
        IdentityStatus::Available { id, not_after } => {
            ("available", Some(id), Some(unix(not_after)), None)
        }
        IdentityStatus::Unavailable { reason } => ("unavailable", None, None, Some(reason)),
    };
    // Only public facts: the key never leaves the store.
    let chain_len = store.latest().map(|c| c.chain.len());
    json_resp(&json!({
        "state": state,
        "spiffe_id": id,
        "not_after": not_after,
        "chain_length": chain_len,
        "rotations": stats.rotations,
        "failures": stats.failures,
        "last_error": stats.last_error,
        "unavailable_reason": reason,
    }))
}

/// Why the workload is not ready, or `None` when it is.
fn not_ready(admin: &Admin) -> Option<String> {
    let mut why = Vec::new();
    if let Some(store) = &admin.identity
        && store.current().is_none()
    {
        why.push("no valid workload certificate".to_string());
    }
    if let Some(xds) = &admin.xds {
        match xds.client_status() {
            Some(s) if s.ready => {}
            _ => why.push("xDS: first responses not all acknowledged".to_string()),
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The registry in Prometheus' text format, or the error status and message.
fn exposition(admin: &Admin) -> Result<String, (StatusCode, &'static str)> {
    let Some(registry) = &admin.registry else {
        return Err((StatusCode::NOT_FOUND, "no metrics registry configured\n"));
    };
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry).map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
    })?;
    Ok(out)
}

fn route(admin: &Admin, method: &Method, uri: &Uri) -> Resp {
    match (method, uri.path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "OK\n"),
        (&Method::GET, "/ready") => match not_ready(admin) {
            None => text(StatusCode::OK, "LIVE\n"),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("NOT READY: {why}\n"),
            ),
        },
        (&Method::GET, "/stats/prometheus") => match exposition(admin) {
            Ok(out) => {
                let mut r = text(StatusCode::OK, out);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    ),
                );
                r
            }
            Err((status, why)) => text(status, why),
        },
        (&Method::GET, "/graph") => {
            let mut r = text(StatusCode::OK, crate::graph::PAGE);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        (&Method::GET, "/graph.json") => match exposition(admin) {
            Ok(out) => json_resp(&admin.graph.read(&out, std::time::Instant::now())),
            Err((status, why)) => text(status, why),
        },
        (&Method::GET, "/config_dump") => {
            let mut dump = serde_json::Map::new();
            if let Some(f) = &admin.config_dump {
                dump.insert("config".into(), f());
            }
            if let Some(s) = admin.xds.as_ref().and_then(|x| x.client_status()) {
                dump.insert("xds_client".into(), xds_status_json(&s));
            }
            json_resp(&Value::Object(dump))
        }
        (&Method::GET, "/clusters") => match &admin.clusters {
            Some(f) => json_resp(&f()),
            None => text(StatusCode::NOT_FOUND, "no cluster view configured\n"),
        },
        (&Method::GET, "/certs") => certs(admin),
        (&Method::POST, "/logging") => {
            let Some(set) = &admin.log_filter else {
                return text(StatusCode::NOT_FOUND, "log level changes are not enabled\n");
            };
            let Some(spec) = query_param(uri, "filter").or_else(|| query_param(uri, "level"))
            else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "POST /logging?filter=<tracing filter, e.g. info,mesh_xds=debug>\n",
                );
            };
            match set(spec) {
                Ok(now) => text(StatusCode::OK, format!("log filter: {now}\n")),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
        (_, path) => text(
            StatusCode::NOT_FOUND,
            format!(
                "no admin endpoint {path}; endpoints: /stats/prometheus /graph /graph.json \
                 /config_dump /clusters /certs /ready /healthz POST /logging?filter=\n"
            ),
        ),
    }
}
