//! Starts the cases, runs every load on every case for several interleaved rounds, and
//! collects the measurements.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::TrustDomain;
use mesh_tls::dev_ca::DevCa;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::alloc::{self, Snapshot};
use crate::cases::ExternalRun;
use crate::cases::{
    Case, CaseId, EnvoyHbone, EnvoyPair, GrpcGoPair, GrpcMesh, GrpcTonicMtls, Hbone, HyperH1,
    HyperMtls, InProcessMesh, ProxyPair, ProxyPairConfig,
};
use crate::loadgen::{self, Lane, Load};
use crate::procstat::{self, CpuMeter};

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Rounds; each round runs every load on every case.
    pub rounds: usize,
    /// Measured time per case, load and round.
    pub duration: Duration,
    /// Unmeasured run before each measurement, on the same connections.
    pub warmup: Duration,
    /// Which cases.
    pub cases: Vec<CaseId>,
    /// Which loads.
    pub loads: Vec<Load>,
    /// The Envoy binary (case 5).
    pub envoy_bin: Option<PathBuf>,
    /// The grpc-go proxyless workload, `interop/grpc-go-xds` (case 10).
    pub grpc_go_bin: Option<PathBuf>,
    /// The proxy binary (case 4).
    pub proxy: ProxyPairConfig,
    /// HTTP/2 connections per endpoint of the in-process mesh's pool (case 3); `None`: the
    /// pool's default (one per runtime worker thread).
    pub mesh_h2_connections: Option<usize>,
}

impl Options {
    /// The full harness: 5 rounds of 3 s per case and load.
    pub fn full() -> Self {
        Self {
            rounds: 5,
            duration: Duration::from_secs(3),
            warmup: Duration::from_millis(500),
            cases: CaseId::ALL.to_vec(),
            loads: Load::ALL.to_vec(),
            envoy_bin: None,
            grpc_go_bin: None,
            proxy: ProxyPairConfig::default(),
            mesh_h2_connections: None,
        }
    }

    /// A smoke run: one short round.
    pub fn quick() -> Self {
        Self {
            rounds: 1,
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            ..Self::full()
        }
    }
}

/// One case at one load in one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measurement {
    /// The case.
    pub case: CaseId,
    /// The load.
    pub load: Load,
    /// Round number, from 0.
    pub round: usize,
    /// Latency percentiles in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest latency.
    pub max_us: f64,
    /// Successful requests per second.
    pub rps: f64,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// CPU time of the harness process (load generator, app, in-process client and server).
    pub cpu_harness_ms: f64,
    /// CPU time of the case's other processes (proxies).
    pub cpu_proxies_ms: f64,
    /// All CPU time divided by successful requests, in microseconds.
    pub cpu_us_per_req: f64,
    /// Resident memory of each proxy process after the run, in bytes.
    pub rss: Vec<(String, u64)>,
    /// Heap allocations per successful request of every process involved (the harness's
    /// counting allocator, plus the proxies' `count-allocs` counters); `None` where a
    /// process could not be counted (Envoy, grpc-go, a proxy built without the feature).
    #[serde(default)]
    pub allocs_per_req: Option<f64>,
    /// Bytes those allocations requested, per successful request.
    #[serde(default)]
    pub alloc_bytes_per_req: Option<f64>,
}

/// A case as set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseInfo {
    /// The case.
    pub case: CaseId,
    /// What is measured, or `None` when it could not start.
    pub description: Option<String>,
    /// Why the case was not measured.
    pub not_measured: Option<String>,
}

/// Everything a harness run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Start time, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall-clock length of the run.
    pub wall_secs: f64,
    /// Logical CPUs.
    pub cpus: usize,
    /// 1-minute load average before and after.
    pub load_average: (Option<f64>, Option<f64>),
    /// Rounds.
    pub rounds: usize,
    /// Measured seconds per case, load and round.
    pub duration_secs: f64,
    /// The cases.
    pub cases: Vec<CaseInfo>,
    /// The measurements, in the order taken.
    pub measurements: Vec<Measurement>,
}

async fn start_case(
    id: CaseId,
    ca: &DevCa,
    ca_dir: &std::path::Path,
    opts: &Options,
) -> Result<Arc<dyn Case>, Error> {
    Ok(match id {
        CaseId::HyperH1 => Arc::new(HyperH1::start().await?),
        CaseId::HyperMtls => Arc::new(HyperMtls::start(ca, true).await?),
        CaseId::HyperMtlsH1 => Arc::new(HyperMtls::start(ca, false).await?),
        CaseId::Mesh => Arc::new(InProcessMesh::start(ca, ca_dir, false, None).await?),
        CaseId::MeshH2 => {
            Arc::new(InProcessMesh::start(ca, ca_dir, true, opts.mesh_h2_connections).await?)
        }
        CaseId::ProxyPair => Arc::new(ProxyPair::start(&opts.proxy, ca, ca_dir).await?),
        CaseId::EnvoyPair => {
            let bin = opts
                .envoy_bin
                .as_ref()
                .ok_or("no Envoy binary (set MESH_ENVOY_BIN or pass --envoy)")?;
            Arc::new(EnvoyPair::start(bin, ca).await?)
        }
        CaseId::GrpcTonicMtls => Arc::new(GrpcTonicMtls::start(ca).await?),
        CaseId::GrpcMesh => Arc::new(GrpcMesh::start(ca, ca_dir).await?),
        CaseId::GrpcGoPair => {
            let bin = opts.grpc_go_bin.as_ref().ok_or(
                "no grpc-go-xds binary (set MESH_GRPC_GO_XDS_BIN or pass --grpc-go; \
                 scripts/peers/grpc-go-xds.sh builds it)",
            )?;
            Arc::new(GrpcGoPair::start(bin, ca, ca_dir).await?)
        }
        CaseId::Hbone => Arc::new(Hbone::start(ca).await?),
        CaseId::EnvoyHbone => {
            let bin = opts
                .envoy_bin
                .as_ref()
                .ok_or("no Envoy binary (set MESH_ENVOY_BIN or pass --envoy)")?;
            Arc::new(EnvoyHbone::start(bin, ca).await?)
        }
    })
}

/// Runs the harness on the current (multi-threaded) runtime. Progress goes to stderr.
pub async fn run(opts: &Options) -> Result<Results, Error> {
    let started = SystemTime::now();
    let wall = std::time::Instant::now();
    let load_before = procstat::load_average();
    let ca = DevCa::new(TrustDomain::new("cluster.local")?)?;
    let ca_dir = tempfile::tempdir()?;
    ca.save(ca_dir.path())?;

    let mut infos = Vec::new();
    let mut cases: Vec<Arc<dyn Case>> = Vec::new();
    for &id in &opts.cases {
        match start_case(id, &ca, ca_dir.path(), opts).await {
            Ok(case) => {
                infos.push(CaseInfo {
                    case: id,
                    description: Some(case.describe()),
                    not_measured: None,
                });
                cases.push(case);
            }
            Err(e) => {
                eprintln!("case {id}: not measured: {e}");
                infos.push(CaseInfo {
                    case: id,
                    description: None,
                    not_measured: Some(e.to_string()),
                });
            }
        }
    }

    let mut measurements = Vec::new();
    for round in 0..opts.rounds {
        for &load in &opts.loads {
            // Interleave: rotate the case order every round so drift in the machine's load
            // does not always favour the same case.
            let n = cases.len().max(1);
            for k in 0..cases.len() {
                let case = &cases[(k + round) % n];
                if !case.supports(load) {
                    continue;
                }
                let m = measure(case.as_ref(), load, round, opts).await?;
                eprintln!(
                    "round {round} {load:<32} {:<24} p50 {:>8.0} us  p99 {:>8.0} us  {:>8.0} rps  {:>6.1} us CPU/req  {:>6} allocs/req  errors {}",
                    case.id().label(),
                    m.p50_us,
                    m.p99_us,
                    m.rps,
                    m.cpu_us_per_req,
                    m.allocs_per_req.map_or("-".into(), |a| format!("{a:.1}")),
                    m.errors
                );
                measurements.push(m);
            }
        }
    }
    drop(cases);
    Ok(Results {
        started_unix: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        wall_secs: wall.elapsed().as_secs_f64(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        load_average: (load_before, procstat::load_average()),
        rounds: opts.rounds,
        duration_secs: opts.duration.as_secs_f64(),
        cases: infos,
        measurements,
    })
}

async fn connect(case: &dyn Case, n: usize) -> Result<Vec<Box<dyn Lane>>, Error> {
    futures::future::try_join_all((0..n).map(|_| case.connect())).await
}

async fn measure(
    case: &dyn Case,
    load: Load,
    round: usize,
    opts: &Options,
) -> Result<Measurement, Error> {
    if let Some(run) = case.run_load(load, opts.warmup, opts.duration) {
        return measure_external(case, load, round, run).await;
    }
    let mut lanes = connect(case, load.connections())
        .await
        .map_err(|e| format!("case {}: connecting: {e}", case.id()))?;
    if !opts.warmup.is_zero() {
        lanes = loadgen::run(lanes, load, opts.warmup).await.1;
    }
    let procs = case.processes();
    let pids: Vec<u32> = procs.iter().map(|(_, p)| *p).collect();
    let meter = CpuMeter::start(&pids)?;
    let allocs_before = counted_allocs(case).await;
    let (sample, lanes) = loadgen::run(lanes, load, opts.duration).await;
    let (own, others) = meter.stop()?;
    let per_req = allocs_before
        .zip(counted_allocs(case).await)
        .and_then(|(a, b)| b.per_request_since(a, sample.ok));
    drop(lanes);
    let rss = procs
        .iter()
        .map(|(name, pid)| Ok((name.clone(), procstat::pid_rss(*pid)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let total = own + others;
    Ok(Measurement {
        case: case.id(),
        load,
        round,
        p50_us: sample.quantile_us(0.50),
        p90_us: sample.quantile_us(0.90),
        p99_us: sample.quantile_us(0.99),
        max_us: sample.latency.max() as f64,
        rps: sample.rps(),
        ok: sample.ok,
        errors: sample.errors,
        first_error: sample.first_error.clone(),
        cpu_harness_ms: own.as_secs_f64() * 1e3,
        cpu_proxies_ms: others.as_secs_f64() * 1e3,
        cpu_us_per_req: if sample.ok == 0 {
            0.0
        } else {
            total.as_secs_f64() * 1e6 / sample.ok as f64
        },
        rss,
        allocs_per_req: per_req.map(|p| p.0),
        alloc_bytes_per_req: per_req.map(|p| p.1),
    })
}

/// The harness's allocation counters plus the case's processes' (`None` when any process
/// is not counted).
async fn counted_allocs(case: &dyn Case) -> Option<Snapshot> {
    let own = alloc::snapshot()?;
    if case.processes().is_empty() {
        return Some(own);
    }
    let others = case.process_allocations().await?;
    Some(Snapshot {
        allocs: own.allocs + others.allocs,
        bytes: own.bytes + others.bytes,
    })
}

/// One measurement of a case that generates its own load: its figures, its load
/// generator's CPU plus the case's processes' (the harness does nothing meanwhile).
async fn measure_external(
    case: &dyn Case,
    load: Load,
    round: usize,
    run: futures::future::BoxFuture<'_, Result<ExternalRun, Error>>,
) -> Result<Measurement, Error> {
    let procs = case.processes();
    let pids: Vec<u32> = procs.iter().map(|(_, p)| *p).collect();
    let meter = CpuMeter::start(&pids)?;
    let r = run
        .await
        .map_err(|e| format!("case {}: load: {e}", case.id()))?;
    // The server's CPU is metered over the whole run, warm-up included: slightly high.
    let (_own, others) = meter.stop()?;
    let rss = procs
        .iter()
        .map(|(name, pid)| Ok((name.clone(), procstat::pid_rss(*pid)?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let cpu_ms = r.cpu_ms + others.as_secs_f64() * 1e3;
    Ok(Measurement {
        case: case.id(),
        load,
        round,
        p50_us: r.p50_us,
        p90_us: r.p90_us,
        p99_us: r.p99_us,
        max_us: r.max_us,
        rps: r.rps,
        ok: r.ok,
        errors: r.errors,
        first_error: r.first_error,
        cpu_harness_ms: 0.0,
        cpu_proxies_ms: cpu_ms,
        cpu_us_per_req: if r.ok == 0 {
            0.0
        } else {
            cpu_ms * 1e3 / r.ok as f64
        },
        rss,
        allocs_per_req: None,
        alloc_bytes_per_req: None,
    })
}
