//! Cost of the telemetry layers per request: the same in-memory service with and without
//! them, in the same run. `cargo bench -p mesh-telemetry --bench telemetry`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures::executor::block_on;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use mesh_core::SpiffeId;
use mesh_core::extensions::PeerIdentity;
use mesh_telemetry::metrics::{IstioMetrics, IstioMetricsLayer, ServiceInfo, WorkloadInfo};
use mesh_telemetry::trace::{Propagation, TraceLayer};
use tower::{BoxError, Layer, Service, ServiceExt};

async fn app<B>(_req: Request<B>) -> Result<Response<Full<Bytes>>, BoxError> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello world"))))
}

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .uri("http://reviews.default.svc.cluster.local:9080/reviews/1")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    req.extensions_mut().insert(PeerIdentity(
        SpiffeId::new("spiffe://cluster.local/ns/default/sa/productpage").unwrap(),
    ));
    req
}

fn run<S, B>(svc: &mut S)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    block_on(async {
        let resp = svc.ready().await.unwrap().call(request()).await.unwrap();
        black_box(resp.into_body().collect().await.unwrap());
    })
}

fn bench(c: &mut Criterion) {
    let metrics = IstioMetrics::new();
    let mut g = c.benchmark_group("telemetry_per_request");
    let mut off = tower::service_fn(app::<Full<Bytes>>);
    g.bench_function("off", |b| b.iter(|| run(&mut off)));
    let mut source =
        IstioMetricsLayer::source(&metrics, WorkloadInfo::default()).layer(tower::service_fn(app));
    g.bench_function("istio_metrics_source", |b| b.iter(|| run(&mut source)));
    let mut dest = IstioMetricsLayer::destination(
        &metrics,
        WorkloadInfo::default(),
        ServiceInfo::from_host("reviews.default.svc.cluster.local"),
    )
    .layer(tower::service_fn(app));
    g.bench_function("istio_metrics_destination", |b| b.iter(|| run(&mut dest)));
    let mut all = tower::ServiceBuilder::new()
        .layer(TraceLayer::server(Propagation::Both))
        .layer(IstioMetricsLayer::destination(
            &metrics,
            WorkloadInfo::default(),
            ServiceInfo::from_host("reviews.default.svc.cluster.local"),
        ))
        .service(tower::service_fn(app));
    g.bench_function("trace_and_istio_metrics_destination", |b| {
        b.iter(|| run(&mut all))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
