//! `mesh-bench`: runs the harness and writes the results (see `scripts/bench`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_bench::cases::CaseId;
use mesh_bench::harness::{self, Options, Results};
use mesh_bench::loadgen::Load;
use mesh_bench::{Error, criterion, report, svg};

const USAGE: &str = "usage: mesh-bench [--quick (short defaults; other flags still apply)] [--rounds N] [--duration SECS] [--warmup SECS]
                  [--cases 1,2,...,12]  (6, 7, 10: unary gRPC, tonic mTLS / mesh / grpc-go pair; 8: hyper mTLS h1; 9: mesh h2; 11: HBONE in-process; 12: Envoy HBONE pair)
                  [--loads seq,rate,sat] [--envoy PATH] [--proxy PATH] [--grpc-go PATH]
                  [--mesh-h2-connections N]  (case 9's pool; default one per worker thread)
                  [--json OUT.json] [--docs docs/performance.md] [--svg docs/performance-bench.svg]
                  [--criterion-dir target/criterion --criterion-since UNIX_SECS]
                  [--from-json IN.json]   (only rewrite docs/svg from a saved run)
       mesh-bench --cold-start N   (N cold starts of mesh-proxy, Envoy and an in-process workload, interleaved)
       mesh-bench --idle [--idle-secs S]   (idle footprint: app with and without the mesh, idle proxies)
       mesh-bench --churn [--rounds N] [--duration SECS]   (case 9's p99 at 2,000 rps, quiet vs churned; default 3 x 10 s)
Envoy defaults to $MESH_ENVOY_BIN, the proxy to $MESH_PROXY_BIN, grpc-go-xds to $MESH_GRPC_GO_XDS_BIN.";

struct Args {
    opts: Options,
    json: Option<PathBuf>,
    docs: Option<PathBuf>,
    svg: Option<PathBuf>,
    criterion_dir: Option<PathBuf>,
    criterion_since: SystemTime,
    from_json: Option<PathBuf>,
    cold_start: Option<usize>,
    idle: bool,
    idle_secs: Duration,
    churn: bool,
    rounds_set: bool,
    duration_set: bool,
}

fn parse() -> Result<Args, Error> {
    // `--quick` picks the defaults the other flags then change, wherever it stands.
    let quick = std::env::args().any(|a| a == "--quick");
    let mut a = Args {
        opts: if quick {
            Options::quick()
        } else {
            Options::full()
        },
        json: None,
        docs: None,
        svg: None,
        criterion_dir: None,
        criterion_since: UNIX_EPOCH,
        from_json: None,
        cold_start: None,
        idle: false,
        idle_secs: Duration::from_secs(10),
        churn: false,
        rounds_set: false,
        duration_set: false,
    };
    a.opts.envoy_bin = std::env::var_os("MESH_ENVOY_BIN").map(PathBuf::from);
    a.opts.proxy.bin = std::env::var_os("MESH_PROXY_BIN").map(PathBuf::from);
    a.opts.grpc_go_bin = std::env::var_os("MESH_GRPC_GO_XDS_BIN").map(PathBuf::from);
    let mut it = std::env::args().skip(1);
    let secs = |v: String| -> Result<Duration, Error> {
        Ok(Duration::try_from_secs_f64(v.parse()?).map_err(|e| format!("{v}: {e}"))?)
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--quick" => {}
            "--rounds" => {
                a.opts.rounds = value()?.parse()?;
                a.rounds_set = true;
            }
            "--duration" => {
                a.opts.duration = secs(value()?)?;
                a.duration_set = true;
            }
            "--warmup" => a.opts.warmup = secs(value()?)?,
            "--cases" => {
                a.opts.cases = value()?
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse()
                            .ok()
                            .and_then(CaseId::from_number)
                            .ok_or_else(|| format!("--cases: {n:?} is not a case number 1-12"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--loads" => {
                a.opts.loads = value()?
                    .split(',')
                    .map(|l| match l.trim() {
                        "seq" => Ok(Load::ALL[0]),
                        "rate" => Ok(Load::ALL[1]),
                        "sat" => Ok(Load::ALL[2]),
                        other => Err(format!("--loads: {other:?} is not seq, rate or sat")),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--envoy" => a.opts.envoy_bin = Some(value()?.into()),
            "--proxy" => a.opts.proxy.bin = Some(value()?.into()),
            "--grpc-go" => a.opts.grpc_go_bin = Some(value()?.into()),
            "--mesh-h2-connections" => a.opts.mesh_h2_connections = Some(value()?.parse()?),
            "--json" => a.json = Some(value()?.into()),
            "--docs" => a.docs = Some(value()?.into()),
            "--svg" => a.svg = Some(value()?.into()),
            "--criterion-dir" => a.criterion_dir = Some(value()?.into()),
            "--criterion-since" => {
                a.criterion_since = UNIX_EPOCH + Duration::from_secs(value()?.parse()?);
            }
            "--from-json" => a.from_json = Some(value()?.into()),
            "--cold-start" => a.cold_start = Some(value()?.parse()?),
            "--idle" => a.idle = true,
            "--churn" => a.churn = true,
            "--idle-secs" => a.idle_secs = secs(value()?)?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}").into()),
        }
    }
    Ok(a)
}

fn write_outputs(a: &Args, results: &Results) -> Result<(), Error> {
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(results)?)?;
    }
    let rows = report::summarize(results);
    if let Some(p) = &a.svg {
        std::fs::write(p, svg::plot(&rows))?;
    }
    let estimates = match &a.criterion_dir {
        Some(dir) => criterion::read(dir, a.criterion_since)?,
        None => Vec::new(),
    };
    let link = a
        .svg
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    let section = report::markdown(results, &estimates, link.as_deref());
    match &a.docs {
        Some(p) => report::write_section(p, &section)?,
        None => println!("{section}"),
    }
    Ok(())
}

fn main() {
    // First thing: the cold-start child's clock starts here.
    let main_ns = mesh_bench::coldstart::workload::now_ns();
    #[cfg(feature = "dhat-heap")]
    let _sites = mesh_bench::alloc::profile_sites();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--idle-child") {
        // One of the idle footprint's apps (see mesh_bench::idle), started by `--idle`.
        if let Err(e) = mesh_bench::idle::child(&args[1..]) {
            eprintln!("mesh-bench --idle-child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if args.first().map(String::as_str) == Some("--cold-start-child") {
        // The in-process workload of the cold start (see mesh_bench::coldstart::workload).
        if let Err(e) = mesh_bench::coldstart::workload::child(main_ns, &args[1..]) {
            eprintln!("mesh-bench --cold-start-child: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let Err(e) = real_main() {
        eprintln!("mesh-bench: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<(), Error> {
    let args = parse()?;
    if let Some(n) = args.cold_start {
        return cold_start(&args, n);
    }
    if args.idle {
        return idle(&args);
    }
    if args.churn {
        return churn(&args);
    }
    let results = match &args.from_json {
        Some(p) => serde_json::from_str(&std::fs::read_to_string(p)?)?,
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(harness::run(&args.opts))?,
    };
    write_outputs(&args, &results)
}

/// Prints the cold-start table (markdown) for `n` starts of each proxy and of the
/// in-process workload, and the workload's milestones.
fn cold_start(args: &Args, n: usize) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let la = mesh_bench::procstat::load_average();
    let exe = std::env::current_exe()?;
    let all = runtime.block_on(mesh_bench::coldstart::run(
        args.opts.proxy.bin.as_deref(),
        args.opts.envoy_bin.as_deref(),
        Some(&exe),
        n,
    ))?;
    println!(
        "Cold start, {n} starts each, interleaved; 1-minute load average {} before, {} after\n",
        la.map_or("?".into(), |v| format!("{v:.2}")),
        mesh_bench::procstat::load_average().map_or("?".into(), |v| format!("{v:.2}")),
    );
    println!("| proxy | median | max | min |");
    println!("|---|---|---|---|");
    for c in &all {
        let min = c.millis.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "| {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            c.name,
            c.median(),
            c.max(),
            min
        );
    }
    for c in all.iter().filter(|c| !c.milestones.is_empty()) {
        println!("\n{}: milestones after spawn, median of {n}\n", c.name);
        println!("| milestone | median | max |");
        println!("|---|---|---|");
        for (k, (name, _)) in c.milestones[0].fields().iter().enumerate() {
            let v: Vec<f64> = c.milestones.iter().map(|m| m.fields()[k].1).collect();
            let max = v.iter().copied().fold(0.0, f64::max);
            let median = report::median(v);
            println!("| {name} | {median:.1} ms | {max:.1} ms |");
        }
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&all)?)?;
    }
    Ok(())
}

/// Prints the idle footprint table (markdown).
fn idle(args: &Args) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = runtime.block_on(mesh_bench::idle::run(
        args.opts.proxy.bin.as_deref(),
        args.opts.envoy_bin.as_deref(),
        args.idle_secs,
    ))?;
    println!("{}", run.markdown());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&run)?)?;
    }
    Ok(())
}

/// Prints the tail-under-churn table (markdown).
fn churn(args: &Args) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Long enough for a rotation in every churned run unless asked otherwise.
    let rounds = if args.rounds_set { args.opts.rounds } else { 3 };
    let secs = if args.duration_set {
        args.opts.duration
    } else {
        Duration::from_secs(10)
    };
    let run = runtime.block_on(mesh_bench::churn::run(rounds, secs))?;
    println!("{}", run.markdown());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&run)?)?;
    }
    Ok(())
}
