//! The admin server over real TCP, and CSDS read by a client not written here (Python
//! grpcio).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_admin::csds::CsdsService;
use mesh_admin::{Admin, IdentityCollector, XdsStatusCache};
use mesh_telemetry::metrics::IstioMetrics;
use mesh_tls::IdentityStore;
use mesh_xds::ResourceType;
use mesh_xds::client::{ClientStatus, ResourceState, ResourceStatus};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn status(ready: bool) -> ClientStatus {
    let r = |kind, name: &str, state, version: &str, err: Option<&str>| ResourceStatus {
        kind,
        name: name.into(),
        state,
        version: version.into(),
        last_error: err.map(Into::into),
        last_update: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        has_value: true,
    };
    ClientStatus {
        connected: true,
        ready,
        resources: vec![
            r(
                ResourceType::Listener,
                "reviews.default.svc.cluster.local:9080",
                ResourceState::Acked,
                "1",
                None,
            ),
            r(
                ResourceType::Cluster,
                "outbound|9080||reviews.default.svc.cluster.local",
                ResourceState::Nacked,
                "1",
                Some("cluster: unsupported lb_policy"),
            ),
        ],
        type_versions: vec![(ResourceType::Listener, "1".into())],
    }
}

/// One HTTP/1.1 request with a plain TCP client: (status, body).
async fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

async fn start(admin: Admin) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(admin.serve(listener));
    addr
}

#[tokio::test]
async fn endpoints_answer_over_tcp() {
    let mut registry = Registry::default();
    let metrics = IstioMetrics::new();
    metrics.register(&mut registry);
    let store = IdentityStore::new();
    registry
        .sub_registry_with_prefix("mesh")
        .register_collector(Box::new(IdentityCollector::new(store.clone())));
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new("info"));
    let _subscriber = {
        use tracing_subscriber::prelude::*;
        tracing_subscriber::registry().with(filter)
    };
    let admin = Admin::new()
        .with_registry(Arc::new(registry))
        .with_identity(store)
        .with_xds(XdsStatusCache::fixed(status(true)))
        .with_config_dump(|| serde_json::json!({"listeners": ["reviews"]}))
        .with_clusters(|| serde_json::json!({"outbound|9080||reviews": {"endpoints": [{"address": "10.0.0.1:9080", "health": "HEALTHY", "ejected": false}]}}))
        .with_log_filter(mesh_admin::reload_log_filter(handle));
    let addr = start(admin).await;

    assert_eq!(http(addr, "GET", "/healthz").await, (200, "OK\n".into()));
    let (code, body) = http(addr, "GET", "/ready").await;
    assert_eq!(code, 503, "no certificate yet: {body}");
    assert!(body.contains("no valid workload certificate"), "{body}");

    let (code, body) = http(addr, "GET", "/stats/prometheus").await;
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE mesh_identity_rotations_total counter"),
        "{body}"
    );
    assert!(
        body.contains("mesh_identity_certificate_state{state=\"initializing\"} 1"),
        "{body}"
    );

    let (code, body) = http(addr, "GET", "/config_dump").await;
    assert_eq!(code, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["config"]["listeners"][0], "reviews");
    assert_eq!(
        dump["xds_client"]["resources"][1]["client_status"],
        "NACKED"
    );
    assert_eq!(
        dump["xds_client"]["resources"][1]["error_state"],
        "cluster: unsupported lb_policy"
    );

    let (code, body) = http(addr, "GET", "/clusters").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"ejected\": false"), "{body}");

    let (code, body) = http(addr, "GET", "/certs").await;
    assert_eq!(code, 200);
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(certs["state"], "initializing");

    let (code, body) = http(addr, "POST", "/logging?filter=mesh_xds=debug").await;
    assert_eq!((code, body.as_str()), (200, "log filter: mesh_xds=debug\n"));
    let (code, body) = http(addr, "POST", "/logging?filter==[").await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("invalid log filter"), "{body}");
    let (code, _) = http(addr, "GET", "/nope").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn ready_needs_xds_acks() {
    let addr = start(Admin::new().with_xds(XdsStatusCache::fixed(status(false)))).await;
    let (code, body) = http(addr, "GET", "/ready").await;
    assert_eq!(code, 503);
    assert!(body.contains("xDS"), "{body}");
    let addr = start(Admin::new().with_xds(XdsStatusCache::fixed(status(true)))).await;
    assert_eq!(http(addr, "GET", "/ready").await, (200, "LIVE\n".into()));
}

#[tokio::test]
async fn python_grpcio_reads_csds() {
    let pythonpath = mesh_test_support::require_peer!("MESH_GRPCIO_PYTHONPATH");
    let python = std::env::var("MESH_GRPCIO_PYTHON").unwrap_or_else(|_| "python3".into());
    let node = envoy_types::pb::envoy::config::core::v3::Node {
        id: "sidecar~10.0.0.2~productpage-v1.default~default.svc.cluster.local".into(),
        ..Default::default()
    };
    let csds = CsdsService::new(XdsStatusCache::fixed(status(true)), Some(node));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(csds.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../interop/csds/csds_client.py"
    );
    for mode in ["fetch", "stream"] {
        let out = tokio::process::Command::new(&python)
            .arg(script)
            .arg(addr.to_string())
            .arg(mode)
            .env("PYTHONPATH", &pythonpath)
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let config = &v["configs"][0];
        assert_eq!(
            config["node_id"],
            "sidecar~10.0.0.2~productpage-v1.default~default.svc.cluster.local"
        );
        let res = &config["resources"];
        assert_eq!(
            res[0]["type_url"],
            "type.googleapis.com/envoy.config.listener.v3.Listener"
        );
        assert_eq!(res[0]["name"], "reviews.default.svc.cluster.local:9080");
        assert_eq!(res[0]["client_status"], "ACKED");
        assert_eq!(res[0]["version_info"], "1");
        assert_eq!(res[1]["client_status"], "NACKED");
        assert_eq!(res[1]["error_details"], "cluster: unsupported lb_policy");
    }
}
