//! `mesh-proxy`: flags -> [`mesh_proxy::start`], serve until SIGTERM or Ctrl-C, drain.

use std::process::ExitCode;

use mesh_xds::bootstrap::Bootstrap;

// The heap (see src/heap.rs): jemalloc unless built without the `jemalloc` feature, counted
// with `count-allocs`.
#[cfg(feature = "jemalloc")]
use tikv_jemallocator::Jemalloc as Heap;

#[cfg(all(feature = "count-allocs", not(feature = "jemalloc")))]
use std::alloc::System as Heap;

#[cfg(feature = "count-allocs")]
#[global_allocator]
static GLOBAL: mesh_alloc_count::Counting<Heap> = mesh_alloc_count::Counting::new(Heap);

#[cfg(all(feature = "jemalloc", not(feature = "count-allocs")))]
#[global_allocator]
static GLOBAL: Heap = Heap;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", mesh_proxy::USAGE);
        return ExitCode::SUCCESS;
    }
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("--config {}: {e}", p.display()))
    };
    let opts = match mesh_proxy::parse_args(&args, read) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mesh-proxy: {e}\n\n{}", mesh_proxy::USAGE);
            return ExitCode::from(2);
        }
    };
    let otlp =
        match mesh_proxy::otel::otlp_config(&opts.tracing, &opts.node, |k| std::env::var(k).ok()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mesh-proxy: {e}");
                return ExitCode::from(2);
            }
        };
    // The environment is read here only: the bootstrap when no flag names one.
    let env_bootstrap =
        if opts.bootstrap.is_none() && opts.node.xds.is_empty() && opts.mesh_config.is_none() {
            match Bootstrap::from_env() {
                Ok(b) => Some(b),
                Err(e) => {
                    eprintln!("mesh-proxy: {e}");
                    return ExitCode::from(2);
                }
            }
        } else {
            None
        };
    // One worker: a single-threaded runtime (no cross-thread wakeups, like Envoy's
    // --concurrency 1); more: a work-stealing pool of that many threads.
    let mut runtime = match opts.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mesh-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The exporter's gRPC channel is created on the runtime.
    let exporter = {
        let _in_runtime = runtime.enter();
        match mesh_proxy::otel::install(otlp.as_ref()) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("mesh-proxy: {e}");
                return ExitCode::from(2);
            }
        }
    };
    runtime.block_on(async move {
        let drain_timeout = opts.drain_timeout;
        let proxy = tokio::select! {
            r = mesh_proxy::start(opts, env_bootstrap) => match r {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("mesh-proxy: {e}");
                    return ExitCode::FAILURE;
                }
            },
            s = stop_signal() => {
                eprintln!("mesh-proxy: {s} before startup finished");
                return ExitCode::FAILURE;
            }
        };
        let signal = stop_signal().await;
        tracing::info!(%signal, timeout = ?drain_timeout, "draining");
        if proxy.drain(drain_timeout).await {
            tracing::info!("drained");
        } else {
            tracing::warn!(timeout = ?drain_timeout, "drain timeout: closing open connections");
        }
        // Send the spans still batched (the drained requests' included); blocking, and on
        // a one-thread runtime the export needs this thread's reactor, hence the pool.
        if let Some(e) = exporter {
            match tokio::task::spawn_blocking(move || e.shutdown()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("mesh-proxy: {e}"),
                Err(e) => eprintln!("mesh-proxy: span export: {e}"),
            }
        }
        ExitCode::SUCCESS
    })
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C), whichever comes first.
async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
