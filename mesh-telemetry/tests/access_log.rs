//! Access logs: off by default; Envoy's default format and JSON when enabled.

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use mesh_telemetry::access_log::{AccessLogConfig, AccessLogLayer, Format};
use mesh_telemetry::metrics::ResponseFlags;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

async fn call(config: AccessLogConfig) -> Vec<String> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let mut svc = AccessLogLayer::new(config)
        .with_sink(move |l| sink.lock().unwrap().push(l.to_string()))
        .layer(service_fn(|_req: Request<()>| async {
            let mut r = Response::builder()
                .status(503)
                .header("content-length", "19")
                .body(())
                .unwrap();
            r.extensions_mut().insert(ResponseFlags("UO"));
            Ok::<_, BoxError>(r)
        }));
    let req = Request::builder()
        .method("POST")
        .uri("http://reviews:9080/reviews/1?x=1")
        .header("content-length", "7")
        .header("user-agent", "curl/8")
        .header("x-request-id", "abc")
        .body(())
        .unwrap();
    svc.ready().await.unwrap().call(req).await.unwrap();
    lines.lock().unwrap().clone()
}

#[tokio::test]
async fn off_by_default() {
    assert!(call(AccessLogConfig::default()).await.is_empty());
}

#[tokio::test]
async fn envoy_default_format() {
    let lines = call(AccessLogConfig {
        enabled: true,
        format: Format::Envoy,
    })
    .await;
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    let rest = line.split_once("] ").unwrap().1;
    assert!(
        line.starts_with('[') && line[1..].find('Z') == Some(23),
        "{line}"
    );
    let rest = rest.split_once(" \"curl").unwrap().0;
    let dur_end = rest.rfind(" - ").unwrap();
    let (head, _) = rest.split_at(dur_end);
    let (head, _duration) = head.rsplit_once(' ').unwrap();
    assert_eq!(head, "\"POST /reviews/1?x=1 HTTP/1.1\" 503 UO 7 19");
    assert!(
        line.ends_with("\"curl/8\" \"abc\" \"reviews:9080\" \"-\""),
        "{line}"
    );
}

#[tokio::test]
async fn json_format() {
    let lines = call(AccessLogConfig {
        enabled: true,
        format: Format::Json,
    })
    .await;
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/reviews/1?x=1");
    assert_eq!(v["response_code"], 503);
    assert_eq!(v["response_flags"], "UO");
    assert_eq!(v["bytes_received"], 7);
    assert_eq!(v["bytes_sent"], 19);
    assert_eq!(v["x_forwarded_for"], serde_json::Value::Null);
}
