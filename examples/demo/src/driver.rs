//! The load driver: open loop at a fixed rate to productpage, live table every second.
//! Its client records Istio's source-side metrics and starts a trace per request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use mesh_route::client::MeshClient;
use mesh_telemetry::metrics::directory::follow_config;
use mesh_telemetry::metrics::{IstioMetricsLayer, IstioMetricsService};
use mesh_telemetry::trace::{Propagation, TraceLayer, TraceService};
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt};

use crate::options::DemoOptions;
use crate::services::PRODUCTPAGE;
use crate::stats::{Stats, Summary, directory, table, workload_info};
use crate::workload::Workload;

/// Most requests in flight; beyond it the driver sheds (counted as errors with status 0).
const MAX_IN_FLIGHT: usize = 512;

/// The driver's client: a trace per request, Istio's metrics, then the mesh.
type Client = TraceService<IstioMetricsService<MeshClient>>;

/// Wraps the driver's MeshClient; its metrics labels follow its config and know Bookinfo's
/// workloads (until the returned task is aborted).
fn client(driver: &Workload, stats: &Stats) -> (Client, tokio::task::JoinHandle<()>) {
    let metrics = IstioMetricsLayer::source(
        &stats.telemetry().metrics,
        workload_info("loadgen", "loadgen", "v1"),
    );
    let follow = follow_config(
        metrics.resolver().clone(),
        driver.mesh.source(),
        directory(),
    );
    let client =
        TraceLayer::client(Propagation::Both).layer(metrics.layer(driver.mesh.mesh_client()));
    (client, follow)
}

async fn one(client: Client, jason: bool, stats: Arc<Stats>) {
    let mut req = http::Request::get(format!("http://{PRODUCTPAGE}/productpage"));
    if jason {
        req = req.header("end-user", "jason");
    }
    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
        return;
    };
    let start = Instant::now();
    let resp = match client.oneshot(req).await {
        Ok(r) => r,
        Err(e) => {
            stats.error(0, &e.to_string());
            return;
        }
    };
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return stats.error(status.as_u16(), &format!("response body: {e}")),
    };
    let micros = start.elapsed().as_micros() as u64;
    let parsed: Option<serde_json::Value> = status
        .is_success()
        .then(|| serde_json::from_slice(&body).ok())
        .flatten();
    match parsed
        .as_ref()
        .and_then(|v| v["reviews"]["version"].as_str())
    {
        Some(subset) => stats.request(if jason { "jason" } else { "split" }, subset, micros),
        None => stats.error(status.as_u16(), &String::from_utf8_lossy(&body)),
    }
}

/// Drives load until the duration passes or `interrupt` completes.
pub async fn drive(
    opts: &DemoOptions,
    driver: &Workload,
    stats: &Arc<Stats>,
    interrupt: impl std::future::Future<Output = ()>,
) -> Summary {
    let start = Instant::now();
    let deadline = opts.duration.map(|d| start + d);
    let period = Duration::from_secs_f64(1.0 / f64::from(opts.rate));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut second = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut interrupt = std::pin::pin!(interrupt);
    let mut i: u64 = 0;
    let (client, follow) = client(driver, stats);
    let mut last_total = 0u64;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            () = &mut interrupt => break,
            _ = tick.tick() => {
                let jason = (i % 100) < u64::from(opts.jason_percent);
                i += 1;
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    stats.error(0, "shed by the driver: too many requests in flight");
                    continue;
                };
                let (client, stats) = (client.clone(), stats.clone());
                tokio::spawn(async move {
                    one(client, jason, stats).await;
                    drop(permit);
                });
            }
            _ = second.tick() => {
                if !opts.quiet {
                    let c = stats.take_window();
                    let total: u64 = c.by_route.values().sum();
                    println!(
                        "t={:>4.1}s  {:>5} req/s  p50 {:>6.2} ms  p90 {:>6.2} ms  p99 {:>6.2} ms  errors {}  retries {}\n{}",
                        start.elapsed().as_secs_f64(),
                        total - last_total,
                        c.window.percentile_ms(50.0),
                        c.window.percentile_ms(90.0),
                        c.window.percentile_ms(99.0),
                        c.errors.values().sum::<u64>(),
                        c.retries,
                        table(&c)
                    );
                    last_total = total;
                }
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    follow.abort();
    // Let the requests in flight finish (bounded).
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        in_flight.acquire_many(MAX_IN_FLIGHT as u32),
    )
    .await;
    Summary {
        counts: stats.counts(),
        seconds,
    }
}
