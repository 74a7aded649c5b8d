//! Bodies of real HTTP/2 calls through both reporters: bytes counted, a response read to
//! its end recorded as such, and one dropped before its end recorded as a downstream
//! disconnect (`DC`). HTTP/2 bodies are where the layer asks the size hint before
//! `is_end_stream` (which locks the connection's streams), so these calls run over hyper's
//! HTTP/2 client and server on a real socket.

mod support;

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo};
use prometheus_client::registry::Registry;
use support::{series, workload_info};
use tower::{BoxError, Layer, Service, ServiceExt};

type AppBody = UnsyncBoxBody<Bytes, BoxError>;

const FLAGS_OK: &str = "response_flags=\"-\"";
const FLAGS_DC: &str = "response_flags=\"DC\"";

/// `/small`: 1,000 bytes; `/echo`: the request's bytes back; `/stream`: 100 bytes, then a
/// body that never ends.
async fn app(
    req: Request<impl http_body::Body<Data = Bytes>>,
) -> Result<Response<AppBody>, BoxError> {
    let path = req.uri().path().to_owned();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|_| "body")?
        .to_bytes();
    let out: AppBody = match path.as_str() {
        "/small" => Full::new(Bytes::from(vec![b'x'; 1000]))
            .map_err(|e| match e {})
            .boxed_unsync(),
        "/echo" => Full::new(body).map_err(|e| match e {}).boxed_unsync(),
        _ => {
            let first = futures::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from(vec![
                    b'y';
                    100
                ])))]);
            StreamBody::new(first.chain(futures::stream::pending())).boxed_unsync()
        }
    };
    Ok(Response::new(out))
}

/// The value of the sample of `name` whose labels contain all `needles`.
fn value(text: &str, name: &str, needles: &[&str]) -> Option<f64> {
    series(text, name, needles)?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn http2_bodies_are_counted_and_an_early_drop_is_a_downstream_disconnect() {
    let mut registry = Registry::default();
    let metrics = IstioMetrics::new();
    metrics.register(&mut registry);

    // Server: hyper's HTTP/2 server, the destination reporter around the app.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = IstioMetricsLayer::destination(
        &metrics,
        workload_info("reviews"),
        ServiceInfo::from_host("reviews.default.svc.cluster.local"),
    )
    .layer(tower::service_fn(app));
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(server))
            .await
            .ok();
    });

    // Client: hyper's HTTP/2 client, the source reporter around it.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, AppBody>(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut client = IstioMetricsLayer::source(&metrics, workload_info("productpage")).layer(
        tower::service_fn(move |req: Request<_>| {
            let mut sender = sender.clone();
            let req = req.map(|b: mesh_telemetry::metrics::MeteredBody<AppBody>| b.boxed_unsync());
            async move { sender.send_request(req).await }
        }),
    );
    let request = |method: &str, path: &str, body: AppBody| {
        Request::builder()
            .method(method)
            .uri(format!(
                "http://reviews.default.svc.cluster.local:9080{path}"
            ))
            .body(body)
            .unwrap()
    };
    let empty = || {
        Empty::<Bytes>::new()
            .map_err(|e: Infallible| match e {})
            .boxed_unsync()
    };

    let resp = client
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/small", empty()))
        .await
        .unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        1000
    );

    let body = Full::new(Bytes::from(vec![b'z'; 300]))
        .map_err(|e| match e {})
        .boxed_unsync();
    let resp = client
        .ready()
        .await
        .unwrap()
        .call(request("POST", "/echo", body))
        .await
        .unwrap();
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes().len(),
        300
    );

    let resp = client
        .ready()
        .await
        .unwrap()
        .call(request("GET", "/stream", empty()))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.data_ref().map(|d| d.len()), Some(100));
    drop(body);

    // The server side records when its response body is dropped (the stream reset reaches
    // it); wait (up to 10 s, for a loaded machine) for all of its calls.
    let mut text = String::new();
    for _ in 0..1000 {
        text.clear();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let done = ["source", "destination"].iter().all(|r| {
            let rep = format!("reporter=\"{r}\"");
            let count = value(&text, "istio_request_bytes_count", &[&rep, FLAGS_OK]);
            count == Some(2.0) && value(&text, "istio_requests_total", &[&rep, FLAGS_DC]).is_some()
        });
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for r in ["source", "destination"] {
        let rep = format!("reporter=\"{r}\"");
        let at = |name: &str, flags: &str| {
            value(&text, name, &[&rep, flags])
                .unwrap_or_else(|| panic!("{r}: no {name} with {flags} in\n{text}"))
        };
        // The two calls read to their end: recorded as completed, with their bytes.
        assert_eq!(at("istio_requests_total", FLAGS_OK), 2.0, "{r}");
        assert_eq!(at("istio_request_bytes_sum", FLAGS_OK), 300.0, "{r}");
        assert_eq!(at("istio_response_bytes_sum", FLAGS_OK), 1300.0, "{r}");
        // The body dropped after its first 100 bytes: a downstream disconnect.
        assert_eq!(at("istio_requests_total", FLAGS_DC), 1.0, "{r}");
        assert_eq!(at("istio_response_bytes_sum", FLAGS_DC), 100.0, "{r}");
    }
}
