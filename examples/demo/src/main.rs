//! `demo`: Bookinfo in one process (see the crate docs of `demo` and docs/getting-started.md).

use std::process::ExitCode;

use demo::{DemoOptions, parse_args};
use mesh_telemetry::otlp::{OtlpConfig, OtlpExporter};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, reload};

// jemalloc, as a production service in the mesh should run: less CPU per request than
// glibc's allocator under load (docs/performance.md, "Session 11: the allocator").
// ANCHOR: heap
#[global_allocator]
static HEAP: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
// ANCHOR_END: heap

#[tokio::main]
async fn main() -> ExitCode {
    let opts: DemoOptions = match parse_args(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            println!("{}", demo::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("demo: {e}\n\n{}", demo::USAGE);
            return ExitCode::from(2);
        }
    };
    // Logs (filter changeable on the admin endpoint: POST /logging?filter=...) and, with
    // --otlp, the request spans exported to an OpenTelemetry collector.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let (filter, reload) = reload::Layer::new(filter);
    demo::set_log_filter(mesh_admin::reload_log_filter(reload));
    let exporter = match &opts.otlp {
        Some(endpoint) => match OtlpExporter::new(&OtlpConfig {
            endpoint: endpoint.clone(),
            service_name: "bookinfo-demo".into(),
            ..Default::default()
        }) {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("demo: --otlp: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let spans = exporter.as_ref().map(|e| {
        e.layer()
            .with_filter(Targets::new().with_target("mesh_telemetry", tracing::Level::INFO))
    });
    tracing_subscriber::registry()
        .with(spans)
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        .init();
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let result = demo::run(opts, ctrl_c).await;
    if let Some(e) = exporter {
        // Send the spans still buffered (blocks until the collector answers or times out).
        let _ = tokio::task::spawn_blocking(move || e.shutdown()).await;
    }
    match result {
        Ok(summary) => {
            println!("{}", summary.render());
            if summary.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}
